"""Planning a run before any model loads: the method runs a config asks for, every check of its inputs
(files, model positions, chat templates, the code sandbox), the output folder and the examples (`prepare`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..decoding.methods import DRAFTER, METHODS, MIDDLE, REFERENCE
from ..files import ResultsError
from ..models.cached import StaticShapes
from ..models.presets import PREFIX, T5_V1_1_SHAPES, is_preset, preset_shape
from ..results.folder import check_output
from ..results.manifest import folder_tracking_key, manifest_config
from ..results.settings import MethodRun, RunConfig
from ..settings import ConfigError, short, suggest
from ..tasks.data import DataError, Example, check_local_task
from ..tasks.examples import load_examples
from ..tasks.metrics import CODE_METRICS
from ..tasks.prompts import PromptFormat, prompt_ids, prompt_tokens
from ..tasks.settings import TaskConfig, looks_like_path
from ..tasks.sources import source_of
from .routers import check_routers
from .settings import RunOptions

log = logging.getLogger(__name__)

PROBE_POSITIONS = 256  # call costs are probed within the first this many output positions

PROBE_EXAMPLES = 3  # ... of this many examples


def plan(config: RunConfig, methods: tuple[str, ...] | None = None) -> tuple[list[MethodRun], list[MethodRun]]:
    """The method runs to decode and the deferral-rate runs (seq_cascade's, chain_seq_cascade's) derived from the
    one-model runs.

    The verifier is always decoded (it is the latency reference); the drafter too when a deferral-rate run
    needs it; in a chain, every model alone."""
    runs = [r for r in config.methods if methods is None or r.method in methods]
    if methods is not None:
        unknown = sorted(set(methods) - {r.method for r in config.methods})
        if unknown:
            hint = suggest(unknown[0][:100], config.method_names())
            raise ConfigError(config.file, "methods", f"--methods names {', '.join(unknown)}, which the config does "
                              f"not configure{hint}; it has {', '.join(config.method_names())}")
    derived = [r for r in runs if METHODS[r.method].derived_by in r.params]
    decoded = [r for r in runs if r not in derived]
    chain = config.models.middle
    # A chain decodes each model alone: its per-call cost, and the outputs a chain_seq_cascade rate reads.
    needed = [MethodRun(REFERENCE, {})]
    if derived or chain:
        needed.insert(0, MethodRun(DRAFTER, {}))
    needed[1:1] = [MethodRun(MIDDLE, {"level": level}) for level in range(1, len(chain) + 1)]
    for run in reversed(needed):
        if not any(r.run_id == run.run_id for r in decoded):
            decoded.insert(0, run)
    return decoded, derived


def draft_lengths(runs: list[MethodRun]) -> set[int]:
    """Every draft length of the runs (each level's of a chain method)."""
    found = set()
    for run in runs:
        for name in ("draft_length", "draft_lengths"):
            value = run.params.get(name)
            found.update(int(v) for v in (value if isinstance(value, list | tuple) else [value]) if v is not None)
    return found


def static_shapes(config: RunConfig, runs: list[MethodRun]) -> StaticShapes:
    """The static cache sizes of a run: its token limits, and compiled steps up to the longest
    verification (draft length + 1) of any method run."""
    gammas = draft_lengths(runs) | {config.decoding.draft_length}
    mode = None if config.models.compile == "none" else config.models.compile
    return shapes_for(config.decoding.max_new_tokens, config.task.max_source_tokens, gammas, mode)


def shapes_for(max_new_tokens: int, max_source_tokens: int, gammas, compile_mode: str | None) -> StaticShapes:
    """Static cache sizes for these token limits, with compiled steps of one token and of every draft length
    + 1 (a verification; an encoder-decoder verifier's first forward scores the start token and a full draft)."""
    widths = sorted({1} | {int(g) + 1 for g in gammas})
    return StaticShapes(max_new_tokens, max_source_tokens, max(widths), tuple(widths), compile_mode)


@dataclass
class Job:
    """One config's run, checked and planned before anything is written: the method runs to decode and to
    derive, the selected examples and the results folder. `resolved` is the config as the manifest records it."""

    config: RunConfig
    out: Path
    decoded: list[MethodRun]
    derived: list[MethodRun]
    examples: list[Example]
    resolved: dict
    limit: int | None = None
    allow_code_execution: bool = False
    # This `scb run`'s start (UTC), recorded in every row it times (`worker.session`): a resume's rows are told
    # apart from the rows they are compared with
    session: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())
    tracking_key: str | None = None  # ties the folder to its experiment-tracker run (`results.manifest.tracking_key`)

    def manifest_fields(self) -> dict:
        """The manifest's entries besides the config, hardware and versions."""
        models = self.config.models
        key = {"tracking_key": self.tracking_key} if self.tracking_key else {}
        return {"limit": self.limit, "dtype": models.dtype, **key,
                "random_weights": [role for role, name in zip(models.roles, models.chain, strict=True)
                                   if is_preset(name)]}


def prepare(config: RunConfig, options: RunOptions | None = None) -> Job:
    """Check a run and plan it: the config's resources, the method runs, the output folder (`check_output`)
    and the examples. Loads no model and writes nothing."""
    options = options or RunOptions()
    if options.device:
        config = replace(config, models=replace(config.models, device=options.device))
    validate_resources(config)
    if config.task.metric in CODE_METRICS and not options.allow_code_execution:
        raise ConfigError(config.file, "task.metric", f"{config.task.metric} runs model-written code; it runs only "
                          "with --allow-code-execution, in a sandboxed process per example (read docs/tasks.md, "
                          "'Code execution' section first)")
    if config.task.metric in CODE_METRICS:
        check_sandbox(config)
    decoded, derived = plan(config, options.methods)
    out = Path(options.output or config.output)
    check_output(out)
    source = source_of(config.task)
    rendered_chat = config.task.chat and source.renders_prompts  # the source renders the turns itself (lm-eval)
    tokenizer = chat_tokenizer(config) if rendered_chat else None
    try:
        examples = load_examples(config.task, config.decoding.seed, options.limit, tokenizer)
    except DataError as exc:
        if exc.key is None:
            raise
        raise ConfigError(config.file, f"task.{exc.key}", str(exc)) from None
    if not examples:
        raise ResultsError("the task selected no examples")
    source.check_examples(config.task, examples, config.decoding.max_new_tokens)
    check_routers(config, [*decoded, *derived], examples)
    readable = dict(_readable_configs(config))  # read once: each read of a hub name off-line waits on the hub
    config = model_context(config, readable)
    check_positions(config, readable)
    run_tokenizer = _run_tokenizer(config.models)  # read once, for the chain's check and the prompts' lengths
    check_chain(config, readable, run_tokenizer)
    if config.task.chat and not rendered_chat:
        check_chat_template(config, examples[0], chat_tokenizer(config))
    resolved = manifest_config(config)
    cut = prompts_cut(config, examples, readable, tokenizer if tokenizer is not None else run_tokenizer[1])
    if cut is not None:
        resolved["prompts_cut"] = cut
    return Job(config, out, decoded, derived, examples, resolved, options.limit, options.allow_code_execution,
               tracking_key=folder_tracking_key(out, options.fresh))


def prompts_cut(config: RunConfig, examples: list[Example], readable: dict, tokenizer) -> dict | None:
    """How many of the examples' prompts task.max_source_tokens cuts, and by how many tokens (the most, the mean
    over the cut ones), said in the log once, before any model loads; None when the run's tokenizer (`tokenizer`,
    None when it cannot be read here: a hub name off-line) or the verifier's config is not at hand."""
    verifier = readable.get("verifier")
    if tokenizer is None or verifier is None:
        return None
    layout = prompt_format(config.task)
    cuts = [prompt_tokens(tokenizer, example.parts, layout, not verifier.is_encoder_decoder)[2] for example in examples]
    cut = [tokens for tokens in cuts if tokens]
    record = {"examples": len(cut), "of": len(cuts), "most_tokens": max(cut, default=0),
              "mean_tokens": round(sum(cut) / len(cut), 1) if cut else 0.0}
    if cut:
        log.warning("task.max_source_tokens (%d) cuts the prompts of %d of %d examples, by up to %d tokens (mean %.1f)",
                    config.task.max_source_tokens, len(cut), len(cuts), record["most_tokens"], record["mean_tokens"])
    return record


def prompt_format(task: TaskConfig) -> PromptFormat:
    """How a task's prompts are laid out: its token budget, delimiters and chat turns (a source that renders its
    prompts, lm-eval, gives them turns included: they are text here)."""
    rendered = source_of(task).renders_prompts
    return PromptFormat(task.max_source_tokens, task.target_delimiter, task.fewshot.delimiter if task.fewshot else "",
                        task.chat and not rendered, task.system, keep_lead=not rendered)


def chat_tokenizer(config: RunConfig):
    """A chat task's tokenizer (the run's, which the pair will load), refused in one line without a chat template;
    loaded alone, before any model."""
    from ..models.loading import load_tokenizer

    models = config.models
    name = models.tokenizer or ("byt5" if is_preset(models.verifier) else models.verifier)
    tokenizer = load_tokenizer(name)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(config.file, "task.chat", f"the tokenizer {name!r} has no chat template; set chat: false or "
                          "use an instruction-tuned model's tokenizer")
    return tokenizer


def check_chat_template(config: RunConfig, example: Example, tokenizer) -> None:
    """A chat task's chat template takes the task's turns (Gemma 2's refuses a system turn); checked on one
    example's prompt, with the tokenizer alone (`chat_tokenizer`), before any model loads."""
    task = config.task
    try:
        prompt_ids(tokenizer, example.parts, prompt_format(task), decoder_only=True)
    except Exception as exc:  # jinja raises its own errors from a template's raise_exception
        key = "task.system" if task.system is not None else "task.chat"
        raise ConfigError(config.file, key, f"the tokenizer's chat template refused the prompt: "
                          f"{' '.join(str(exc).split())}") from None


def check_sandbox(config: RunConfig, where: str = "on this machine") -> None:
    """A pass_at_1 run's code sandbox can be set up `where` it will run (`tasks.sandbox.probe`), before any model
    loads there; a ConfigError on task.metric says why not."""
    from ..tasks.sandbox import describe, probe

    why = probe()
    if why:
        raise ConfigError(config.file, "task.metric", f"pass_at_1 needs the code sandbox, which cannot be set up "
                          f"{where}: {why}")
    line, complete = describe()
    log.log(logging.INFO if complete else logging.WARNING, "%s %s", line, where)


def _readable_configs(config: RunConfig):
    """(role, transformers config) of each model whose config file can be read here, without weights (presets and
    hub names off-line are left out)."""
    from transformers import AutoConfig

    for role, name in zip(config.models.roles, config.models.chain, strict=True):
        if is_preset(name):
            continue
        try:
            yield role, AutoConfig.from_pretrained(name)
        except (OSError, ValueError):
            continue


def _run_tokenizer(models):
    """The run's tokenizer (its name and the tokenizer) when it can be read here without the hub: `byt5` or a
    local folder; else (None, None), and the model loader checks it."""
    from ..models.loading import ModelLoadError, load_tokenizer

    name = models.tokenizer or ("byt5" if is_preset(models.verifier) else models.verifier)
    if name != "byt5" and not Path(name).expanduser().is_dir():
        return None, None
    try:
        return name, load_tokenizer(name)
    except (ModelLoadError, OSError, ValueError):
        return None, None


def check_chain(config: RunConfig, readable: dict, run_tokenizer: tuple) -> None:
    """The models share a vocabulary, special tokens and architecture family (`check_compatible`, on their config
    files; embedding tables of different sizes pass when the run's tokenizer fits the smaller, or when the
    tokenizer is on the hub, which the loader then checks), and in a chain every model folder that holds a
    tokenizer holds the run's tokenizer; checked before any model loads, on what can be read here (`readable`:
    role -> the configs `_readable_configs` read; `run_tokenizer`: the (name, tokenizer) `_run_tokenizer` read; a
    ConfigError on the models' key)."""
    from ..models.loading import ModelLoadError, check_compatible, load_tokenizer

    models = config.models
    key = "models.chain" if models.middle else "models.drafter"
    name, tokenizer = run_tokenizer
    if "verifier" in readable:
        verifier = readable["verifier"]
        for role, model_config in readable.items():
            tokens = len(tokenizer) if tokenizer is not None else min(model_config.vocab_size, verifier.vocab_size)
            try:
                if role != "verifier":
                    check_compatible(model_config, verifier, (role, "verifier"), tokens=tokens)
            except ModelLoadError as exc:
                raise ConfigError(config.file, key, str(exc)) from None
    if not models.middle or tokenizer is None:
        return
    vocab = tokenizer.get_vocab()
    for role, model in zip(models.roles, models.chain, strict=True):
        if model == name or not (looks_like_path(model) and Path(model).expanduser().is_dir()):
            continue
        try:
            theirs = load_tokenizer(model).get_vocab()
        except (ModelLoadError, OSError, ValueError):
            continue  # a folder without tokenizer files uses the run's
        if theirs != vocab:
            raise ConfigError(config.file, key, f"the {role} {model!r} has another tokenizer than the run's {name!r} "
                              f"({len(theirs)} tokens against {len(vocab)}, or the same count mapped otherwise): "
                              "every model of a chain must share one")


def positions_of(model_config) -> int | None:
    """A model's number of positions, as lm-eval's hf model reads it (`n_positions`, `max_position_embeddings`,
    `n_ctx`); None when unbounded or not given. An encoder-decoder's is its max_position_embeddings alone (T5's
    positions are relative, whatever its config's n_positions says)."""
    names = ("max_position_embeddings",) if model_config.is_encoder_decoder else \
        ("n_positions", "max_position_embeddings", "n_ctx")
    for attribute in names:
        value = getattr(model_config, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def model_context(config: RunConfig, readable: dict) -> RunConfig:
    """A task whose source keeps the model's context (`keeps_model_context`: lm-eval's, as its hf model keeps it)
    and whose config sets no task.max_source_tokens: its positions minus the generation budget
    (decoding.max_new_tokens), for the smallest decoder-only model of the run whose positions are known; otherwise
    the config as it is."""
    given = isinstance(config.raw.get("task"), dict) and "max_source_tokens" in config.raw["task"]
    if not source_of(config.task).keeps_model_context or given:
        return config
    rooms = [limit - config.decoding.max_new_tokens for model_config in readable.values()
             if not model_config.is_encoder_decoder and (limit := positions_of(model_config)) is not None]
    if not rooms or min(rooms) < 1:
        return config  # check_positions says what does not fit
    return replace(config, task=replace(config.task, max_source_tokens=min(rooms)))


def check_positions(config: RunConfig, readable: dict) -> None:
    """Each model with a bounded number of positions (`positions_of`; T5's are relative and unbounded) can hold
    the longest sequence a run may build: a prompt of task.max_source_tokens (prompts are cut to it), then
    decoding.max_new_tokens (decoder-only: the last output token is never fed back, so a prompt of positions minus
    max_new_tokens fits exactly, as lm-eval's hf model keeps it), or either one alone (encoder-decoder). Read from
    each model's config file, without weights, before any model loads (`readable`: role -> the configs
    `_readable_configs` read); a model whose config cannot be read here (a hub name off-line) is left to the model
    loader's own error."""
    task, decoding = config.task, config.decoding
    for role, model_config in readable.items():
        name = config.models.name_of(role)
        limit = positions_of(model_config)
        if limit is None:
            continue
        where = f"the {limit} positions of the {role} {name!r} (its config's max_position_embeddings)"
        most_new = limit - 1  # a decoder-only prompt needs one position; an encoder-decoder's start token one
        if decoding.max_new_tokens > most_new:
            raise ConfigError(config.file, "decoding.max_new_tokens", f"{decoding.max_new_tokens} new tokens do not "
                              f"fit {where}; set it to at most {most_new}")
        room = limit if model_config.is_encoder_decoder else limit - decoding.max_new_tokens
        if task.max_source_tokens > room:
            raise ConfigError(config.file, "task.max_source_tokens", f"a prompt of up to {task.max_source_tokens} "
                              f"tokens and {decoding.max_new_tokens} new ones do not fit {where}, and positions past "
                              f"it give garbage; set task.max_source_tokens to at most {room}")


def validate_resources(config: RunConfig) -> None:
    """Filesystem checks: local dataset and model paths exist, local data has the named fields."""
    file = config.file
    if config.task.is_local:
        check_local_task(file, "task.dataset", config.task)
    fewshot = config.task.fewshot
    if fewshot is not None and fewshot.n and fewshot.is_local:
        shots = replace(config.task, dataset=fewshot.dataset, target=fewshot.target or config.task.target, tests=None,
                        test_setup=None)
        check_local_task(file, "task.fewshot.dataset", shots)
    models = config.models
    for role, name in (*zip(models.roles, models.chain, strict=True), ("tokenizer", models.tokenizer)):
        key = "models.chain" if models.middle and role != "tokenizer" else f"models.{role}"
        if name and is_preset(name):
            if role == "tokenizer" or preset_shape(name) not in T5_V1_1_SHAPES:
                raise ConfigError(file, key, f"unknown shape preset {short(name)}"
                                  f"{suggest(preset_shape(name)[:100], T5_V1_1_SHAPES)}; presets: "
                                  + ", ".join(PREFIX + shape for shape in T5_V1_1_SHAPES))
        elif name and looks_like_path(name) and not Path(name).expanduser().exists():
            raise ConfigError(file, key, f"local model path not found: {name}")
