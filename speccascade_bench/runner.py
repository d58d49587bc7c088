"""`scb run`: decode every selected example with every configured method run, timing each, and append
the results per example so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .config import ConfigError, MethodRun, RunConfig, TaskConfig, validate_resources
from .data import DataError, Example, load_examples
from .decoding import decode
from .lm import StaticShapes
from .methods import DRAFTER, METHODS, REFERENCE
from .presets import is_preset
from .prompts import PromptFormat, cut_at_stop, prompt_ids
from .results import (
    CALL_COSTS_FILE,
    LOCK_FILE,
    ExampleWriter,
    ResultsError,
    RunLock,
    check_output,
    check_resume,
    clean,
    device_kind,
    device_kinds,
    examples_dir,
    manifest_config,
    read_run,
    seq_cascade_rows,
    start_manifest,
    write_atomic,
    write_json_atomic,
    write_summary,
)
from .scoring import Scorer
from .timing import timed, wide_call_cost

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (run_id, done, total)
PROBE_POSITIONS = 256  # call costs are probed within the first this many output positions
PROBE_EXAMPLES = 3  # ... of this many examples


@dataclass(frozen=True)
class RunOptions:
    output: Path | None = None
    limit: int | None = None
    device: str | None = None
    methods: tuple[str, ...] | None = None
    fresh: bool = False
    allow_code_execution: bool = False  # pass_at_1: run model-written code in the sandbox


def plan(config: RunConfig, methods: tuple[str, ...] | None = None) -> tuple[list[MethodRun], list[MethodRun]]:
    """The method runs to decode and the seq_cascade deferral-rate runs derived from drafter/verifier.

    The verifier is always decoded (it is the latency reference); the drafter too when a deferral-rate
    seq_cascade needs it."""
    runs = [r for r in config.methods if methods is None or r.method in methods]
    if methods is not None:
        unknown = set(methods) - {r.method for r in config.methods}
        if unknown:
            raise ConfigError(config.file, "methods", f"--methods names {', '.join(sorted(unknown))}, which the "
                              f"config does not configure (it has {', '.join(config.method_names())})")
    derived = [r for r in runs if METHODS[r.method].derived_by in r.params]
    decoded = [r for r in runs if r not in derived]
    needed = [REFERENCE] + ([DRAFTER] if derived else [])
    for name in reversed(needed):
        if not any(r.method == name for r in decoded):
            decoded.insert(0, MethodRun(name, {}))
    return decoded, derived


def static_shapes(config: RunConfig, runs: list[MethodRun]) -> StaticShapes:
    """The static cache sizes of a run: its token limits, and compiled steps up to the longest
    verification (draft length + 1) of any method run."""
    gammas = {int(r.params.get("draft_length", config.decoding.draft_length)) for r in runs}
    gammas.add(config.decoding.draft_length)
    mode = None if config.models.compile == "none" else config.models.compile
    return shapes_for(config.decoding.max_new_tokens, config.task.max_source_tokens, gammas, mode)


def shapes_for(max_new_tokens: int, max_source_tokens: int, gammas, compile_mode: str | None) -> StaticShapes:
    """Static cache sizes for these token limits, with compiled steps of one token and of every draft length
    + 1 (a verification; an encoder-decoder verifier's first forward scores the start token and a full draft)."""
    widths = sorted({1} | {int(g) + 1 for g in gammas})
    return StaticShapes(max_new_tokens, max_source_tokens, max(widths), tuple(widths), compile_mode)


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, driver=_nvidia_driver())
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _record(example: Example, run: MethodRun, result, prediction: str, latencies: list[float],
            input_tokens: int) -> dict:
    return {
        "example_id": example.example_id, "run_id": run.run_id, "method": run.method, "params": run.params,
        "prediction": prediction, "reference": example.reference, "references": list(example.references),
        "output_tokens": result.output_length, "input_tokens": input_tokens,
        "latency_s": sum(latencies) / len(latencies),
        "latency_trials_s": latencies, "drafter_calls": result.drafter_calls,
        "verifier_calls": result.verifier_calls, "drafted": result.drafted, "accepted": result.accepted,
        "rounds": result.rounds, "accepted_per_round": result.accepted_per_round, "rejections": result.rejections,
        "deferred": result.deferred,
        "confidence": result.confidence,
    }


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

    def manifest_fields(self) -> dict:
        """The manifest's entries besides the config, hardware and versions."""
        models = self.config.models
        return {"limit": self.limit, "dtype": models.dtype,
                "random_weights": [role for role in ("drafter", "verifier") if is_preset(getattr(models, role))]}


def prepare(config: RunConfig, options: RunOptions = RunOptions()) -> Job:
    """Check a run and plan it: the config's resources, the method runs, the output folder (`check_output`)
    and the examples. Loads no model and writes nothing."""
    if options.device:
        config = replace(config, models=replace(config.models, device=options.device))
    validate_resources(config)
    if config.task.metric == "pass_at_1" and not options.allow_code_execution:
        raise ConfigError(config.file, "task.metric", "pass_at_1 runs model-written code; it runs only with "
                          "--allow-code-execution, in a sandboxed process per example (read the README's "
                          "'Code execution' section first)")
    if config.task.metric == "pass_at_1":
        from .sandbox import probe

        why = probe()
        if why:
            raise ConfigError(config.file, "task.metric", f"pass_at_1 needs the code sandbox, which cannot be set up "
                              f"on this machine: {why}")
    decoded, derived = plan(config, options.methods)
    out = Path(options.output or config.output)
    check_output(out)
    try:
        examples = load_examples(config.task, config.decoding.seed, options.limit)
    except DataError as exc:
        if exc.key is None:
            raise
        raise ConfigError(config.file, f"task.{exc.key}", str(exc)) from None
    if not examples:
        raise ResultsError("the task selected no examples")
    check_positions(config)
    if config.task.chat:
        check_chat_template(config, examples[0])
    return Job(config, out, decoded, derived, examples, manifest_config(config), options.limit,
               options.allow_code_execution)


def prompt_format(task: TaskConfig) -> PromptFormat:
    """How a task's prompts are laid out: its token budget, delimiters and chat turns."""
    return PromptFormat(task.max_source_tokens, task.target_delimiter, task.fewshot.delimiter if task.fewshot else "",
                        task.chat, task.system)


def check_chat_template(config: RunConfig, example: Example) -> None:
    """A chat task's tokenizer has a chat template that takes the task's turns (Gemma 2's refuses a system
    turn); checked on one example's prompt, with the tokenizer alone, before any model loads."""
    from .lm import load_tokenizer

    models = config.models
    name = models.tokenizer or ("byt5" if is_preset(models.verifier) else models.verifier)
    tokenizer = load_tokenizer(name)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(config.file, "task.chat", f"the tokenizer {name!r} has no chat template; set chat: false or "
                          "use an instruction-tuned model's tokenizer")
    task = config.task
    try:
        prompt_ids(tokenizer, example.parts, prompt_format(task), decoder_only=True)
    except Exception as exc:  # jinja raises its own errors from a template's raise_exception
        key = "task.system" if task.system is not None else "task.chat"
        raise ConfigError(config.file, key, f"the tokenizer's chat template refused the prompt: "
                          f"{' '.join(str(exc).split())}") from None


def check_positions(config: RunConfig) -> None:
    """Each model with a bounded number of positions (its config's max_position_embeddings; T5's are relative
    and unbounded) can hold the longest sequence a run may build: a prompt of task.max_source_tokens (prompts
    are cut to it), then decoding.max_new_tokens and one more position (decoder-only), or either one alone
    (encoder-decoder). Read from each model's config file, without weights, before any model loads; a model
    whose config cannot be read here (a hub name off-line) is left to the model loader's own error."""
    from transformers import AutoConfig

    task, decoding = config.task, config.decoding
    for role in ("drafter", "verifier"):
        name = getattr(config.models, role)
        if is_preset(name):
            continue
        try:
            model_config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError):
            continue
        limit = getattr(model_config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            continue
        where = f"the {limit} positions of the {role} {name!r} (its config's max_position_embeddings)"
        most_new = limit - 1 if model_config.is_encoder_decoder else limit - 2  # a decoder-only prompt needs one
        if decoding.max_new_tokens > most_new:
            raise ConfigError(config.file, "decoding.max_new_tokens", f"{decoding.max_new_tokens} new tokens do not "
                              f"fit {where}; set it to at most {most_new}")
        room = limit if model_config.is_encoder_decoder else limit - decoding.max_new_tokens - 1
        if task.max_source_tokens > room:
            raise ConfigError(config.file, "task.max_source_tokens", f"a prompt of up to {task.max_source_tokens} "
                              f"tokens and {decoding.max_new_tokens} new ones do not fit {where}, and positions past "
                              f"it give garbage; set task.max_source_tokens to at most {room}")


def done_examples(job: Job) -> dict[str, set[int]]:
    """The examples each decoded method run already has in the (locked) results folder: what a resume skips.
    Read as `scb report` reads them (`results.read_run`): rows of another run or conflicting rows are refused."""
    return {run.run_id: {row["example_id"] for row in read_run(examples_dir(job.out) / f"{run.run_id}.jsonl")[0]}
            for run in job.decoded}


def remaining(job: Job, done: dict[str, set[int]]) -> list[tuple[Example, list[MethodRun]]]:
    """Each example that some method run has still to decode, with those runs, in the examples' order."""
    todo = []
    for example in job.examples:
        runs = [run for run in job.decoded if example.example_id not in done[run.run_id]]
        if runs:
            todo.append((example, runs))
    return todo


def run(config: RunConfig, options: RunOptions = RunOptions(), progress: Progress | None = None) -> Path:
    """Decode, time and record; returns the results directory. Every input is checked before a model
    loads; finished examples are skipped on a re-run."""
    return run_job(prepare(config, options), options.fresh, progress)


def run_job(job: Job, fresh: bool = False, progress: Progress | None = None) -> Path:
    """Decode, time and record a prepared run in this process; returns the results directory."""
    from .lm import load_pair, resolve_device

    models = job.config.models
    device = resolve_device(models.device)
    hardware = device_info(device)
    with results_folder(job.out, fresh):
        check_resume(job.out, job.resolved, hardware)
        todo = remaining(job, done_examples(job))
        pair = load_pair(models.drafter, models.verifier, models.tokenizer, models.device, models.dtype)
        session = Session(job.config, pair, job.decoded, device, job.examples[0], worker_label(hardware), progress,
                          Scorer(job.config.task, job.allow_code_execution, hidden=(job.out.resolve(),)))
        write_results(start_manifest, job.out, job.resolved, hardware, **job.manifest_fields())
        if todo:
            costs = session.warm_up(job.examples, progress)
            write_results(write_call_costs, job.out, costs, len(job.examples[:PROBE_EXAMPLES]))
        _decode_all(session, job.out, todo, progress)
        finish(job)
    return job.out


def finish(job: Job) -> None:
    """After every example is decoded: the derived runs' files, and the summary unless the examples ran on
    more than one kind of device (`scb report --mix-devices` then writes it)."""
    write_results(_write_derived, job.out, job.derived)
    kinds = device_kinds(job.out)
    if len(kinds) > 1:
        log.warning("%s: examples ran on %d kinds of device (%s); no summary.csv: `scb report --mix-devices` "
                    "reports them together", job.out, len(kinds), ", ".join(kinds))
        write_results(lambda out: (out / "summary.csv").unlink(missing_ok=True), job.out)  # it would be stale
        return
    write_results(write_summary, job.out)


def worker_label(hardware: dict, device: str | None = None) -> dict:
    """Where an example ran, as its rows record it (`worker`): the host, the device and the device kind
    (results.device_kind), which tells `scb report` whether latencies may be compared."""
    return {"host": platform.node(), "device": device or hardware["device"], "kind": device_kind(hardware)}


def write_results(function, out: Path, *args, **kwargs):
    """Call a function that writes into the results folder; an OSError becomes a ResultsError."""
    try:
        return function(out, *args, **kwargs)
    except OSError as exc:
        raise ResultsError(f"cannot write the results to {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def results_folder(out: Path, fresh: bool):
    """Hold the results folder for a run: create it, lock it (results.RunLock) and, with `fresh`, delete
    what earlier runs wrote there. A folder this run created is removed again if the run fails before
    writing anything into it; an unwritable folder is a ResultsError."""
    created = not out.exists()
    lock = RunLock(out)
    try:
        write_results(lambda path: path.mkdir(parents=True, exist_ok=True), out)
        write_results(lambda path: lock.acquire(), out)
        if fresh and check_output(out):
            write_results(clean, out)
        yield
    except BaseException:
        if created and lock.held and {entry.name for entry in out.iterdir()} == {LOCK_FILE}:
            (out / LOCK_FILE).unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


class Session:
    """A model pair set up to decode the examples of one run: static caches sized for its method runs (with
    compiled steps when configured), the warm-up and call-cost probe, and the per-example work
    (`decode_example`) that `run_job` and the Ray workers of `distributed` share. `worker` (`worker_label`)
    is added to every row."""

    def __init__(self, config: RunConfig, pair, runs: list[MethodRun], device: torch.device, sample: Example,
                 worker: dict, progress: Progress | None = None, scorer: Scorer | None = None):
        self.config, self.pair, self.runs, self.device, self.worker = config, pair, runs, device, worker
        self.scorer = scorer or Scorer(config.task)
        task = config.task
        pair.stop = task.stop
        self.layout = prompt_format(task)  # a chat task's template was checked by `prepare`
        if config.models.cache == "static":
            if progress and config.models.compile != "none":
                progress("compiling decode steps", 0, 0)
            pair.use_static_caches(static_shapes(config, runs), self.encode(sample))

    def prompt(self, example: Example) -> tuple[torch.Tensor, int]:
        """An example's prompt as [1, L] ids on the pair's device (`prompts.prompt_ids`), and how many shots
        it kept."""
        ids, shots = prompt_ids(self.pair.tokenizer, example.parts, self.layout, not self.pair.is_encoder_decoder)
        return torch.tensor([ids], dtype=torch.long, device=self.pair.device), shots

    def encode(self, example: Example) -> torch.Tensor:
        return self.prompt(example)[0]

    def _decode(self, input_ids: torch.Tensor, example_id: int, run: MethodRun):
        # The same seed for every method and trial of an example, wherever it runs: common random numbers.
        generator = torch.Generator(device=self.device).manual_seed(self.config.decoding.seed * 1_000_003 + example_id)
        return decode(run.method, self.pair, input_ids, self.config.decoding, run.params, generator)

    def warm_up(self, examples: list[Example], progress: Progress | None = None) -> dict[str, float]:
        """Decode the first `timing.warmup` of `examples` with every method run, untimed and unrecorded; then
        measure the call costs (`call_costs`) on the first PROBE_EXAMPLES of them and return them."""
        for example in examples[: self.config.timing.warmup]:
            input_ids = self.encode(example)
            for run in self.runs:
                self._decode(input_ids, example.example_id, run)
        if progress:
            progress("measuring call costs", 0, 0)
        return call_costs(self.pair, self.config, self.runs, [self.encode(ex) for ex in examples[:PROBE_EXAMPLES]])

    def decode_example(self, example: Example, runs: list[MethodRun],
                       on_row: Callable[[dict], None] | None = None) -> list[dict]:
        """Decode one example with each of `runs` in turn, each timed over `timing.trials` (the device idle at
        both ends of every trial); returns the example's rows. `on_row` gets each row as its run finishes."""
        input_ids, shots = self.prompt(example)
        rows = []
        for run in runs:
            latencies = []
            for _ in range(self.config.timing.trials):
                result, seconds = timed(lambda r=run: self._decode(input_ids, example.example_id, r), self.device)
                latencies.append(seconds)
            prediction = cut_at_stop(self.pair.decode(result.tokens), self.pair.stop)
            row = _record(example, run, result, prediction, latencies, int(input_ids.shape[1]))
            row["shots"] = shots
            row["score"], detail = self.scorer.score(example, prediction)
            if detail is not None:
                row["verdict"] = detail
            row["worker"] = self.worker
            rows.append(row)
            if on_row:
                on_row(row)
        return rows


def _decode_all(session: Session, out: Path, todo: list[tuple[Example, list[MethodRun]]],
                progress: Progress | None) -> None:
    """Decode, time and append the `todo` examples to the (locked) results folder, each line on disk before
    the next method run starts."""
    total = sum(len(runs) for _, runs in todo)
    finished = 0
    writers = {run.run_id: ExampleWriter(examples_dir(out) / f"{run.run_id}.jsonl") for run in session.runs}

    def write(row: dict) -> None:
        nonlocal finished
        writers[row["run_id"]].write(row)
        finished += 1
        if progress:
            progress(row["run_id"], finished, total)

    try:
        if progress and todo:
            progress(todo[0][1][0].run_id, 0, total)
        for example, runs in todo:
            session.decode_example(example, runs, write)
        if progress:
            progress("", total, total)
    finally:
        for writer in writers.values():
            writer.close()


def call_costs(pair, config: RunConfig, runs: list[MethodRun], inputs: list[torch.Tensor]) -> dict[str, float]:
    """What one verifier call over gamma + 1 positions costs, in one-token verifier steps, for each draft length
    gamma of the runs (`timing.wide_call_cost`, from three positions spread over the output length); the
    summary prices Leviathan et al.'s prediction with it. Draft lengths too long for the outputs are left out."""
    gammas = sorted({int(r.params["draft_length"]) for r in runs if "draft_length" in r.params})
    costs = {}
    for gamma in gammas:
        # A position and a call must fit in the outputs; positions past PROBE_POSITIONS are not probed.
        room = min(config.decoding.max_new_tokens, PROBE_POSITIONS) - gamma - 1
        if room < 1:  # outputs too short to time a call over gamma + 1 positions after the first
            continue
        positions = tuple(sorted({max(1, room * k // 4) for k in (1, 2, 3)}))
        costs[str(gamma)] = wide_call_cost(pair, "verifier", inputs, gamma + 1, positions, repeats=5)
    return costs


def write_call_costs(out: Path, costs: dict[str, float], inputs: int) -> None:
    """Write measured call costs to CALL_COSTS_FILE (nothing when no draft length could be timed)."""
    if costs:
        write_json_atomic(out / CALL_COSTS_FILE, {"verify_call_cost": costs, "inputs": inputs})


def _write_derived(out: Path, derived: list[MethodRun]) -> None:
    drafter = read_run(examples_dir(out) / f"{DRAFTER}.jsonl")[0]
    verifier = read_run(examples_dir(out) / f"{REFERENCE}.jsonl")[0]
    for run in derived:
        rows = seq_cascade_rows(drafter, verifier, run.params["alpha"], run.run_id, run.params)
        path = examples_dir(out) / f"{run.run_id}.jsonl"
        write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                     tmp=path.with_suffix(".tmp"))
