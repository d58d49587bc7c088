"""The run config of `scb run`: typed, strictly validated YAML, with variants and method lists.

Every error names the file and the dotted key. Each section of a config is a dataclass whose fields are
the section's keys: a field's type, default and valid range are written once, on the field, and the
reader derives the allowed keys, the type checks and the defaults from it. Loading never touches a model
or a dataset; the checks that need the filesystem are in `validate_resources`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..decoding.methods import refresh_rule_params
from ..decoding.settings import MIN_TEMPERATURE, DecodingConfig
from ..models.settings import ModelsConfig
from ..plugins import check_entries, load_plugins
from ..results.settings import RunConfig, TimingConfig
from ..run.routers import same_model
from ..settings import Collect, ConfigError, Section, each_error, keys_of, short, suggest
from ..tasks import kinds, metrics, patterns
from ..tasks.data import DataError
from ..tasks.prompts import TemplateError, template_fields
from ..tasks.settings import PATTERN_METRICS, TaskConfig, looks_like_path
from ..tasks.sources import RowSource, hook, source_of
from .methods import read_methods
from .overrides import apply_overrides, from_override
from .reader import read_yaml

VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def load_run_config(path: str | Path, variant: str | None = None, overrides: tuple[str, ...] = ()) -> RunConfig:
    """Parse and validate a run config, or one of its `variants`, with `scb run --set` overrides over it (over the
    variant's values too). Raises ConfigError naming the file and key (and the override that set it).

    A variant is a partial config under `variants.<name>` merged over the base (mappings merge key by
    key, anything else replaces). Its name is `<base name>-<variant>` and its output folder the base's
    with `-<variant>` appended, unless the variant sets them."""
    try:
        config = _load(Path(path), variant, tuple(overrides))
    except ConfigError as exc:
        raise each_error(exc, lambda error: from_override(error, tuple(overrides))) from None
    return replace(config, overrides=tuple(overrides))


def _load(file: Path, variant: str | None, overrides: tuple[str, ...]) -> RunConfig:
    data = read_yaml(file)
    variants = _variants(file, data)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "variants"}
    base = _run_config(file, apply_overrides(file, data, overrides), None, tuple(variants))
    if variant is None:
        return base
    if variant not in variants:
        known = ", ".join(variants) or "none"
        raise ConfigError(file, "variants", f"unknown variant {short(variant)}{suggest(variant[:100], variants)}; "
                          f"the config has: {known}")
    overlay = variants[variant] or {}
    merged = _merge(data, overlay)
    if "name" not in overlay:
        merged["name"] = f"{base.name}-{variant}"
    if "output" not in overlay:
        merged["output"] = f"{base.output.rstrip('/')}-{variant}"
    merged = apply_overrides(file, merged, overrides)
    try:
        return _run_config(file, merged, variant, tuple(variants))
    except ConfigError as exc:
        raise each_error(exc, lambda error: _in_variant(error, overlay, variant)) from None


def _in_variant(error: ConfigError, overlay: dict, variant: str) -> ConfigError:
    """A variant's error, located in the variant where the variant sets that key."""
    located = _has_key(overlay, error.key)
    key = f"variants.{variant}.{error.key}" if located else error.key
    return ConfigError(error.file, key, error.message if located else f"{error.message} (in variant {variant!r})")


def load_run_configs(path: str | Path, overrides: tuple[str, ...] = ()) -> list[RunConfig]:
    """The base config and every variant, each validated."""
    base = load_run_config(path, None, overrides)
    return [base] + [load_run_config(path, name, overrides) for name in base.variants]


def load_variants(path: str | Path, names: list[str] | None, overrides: tuple[str, ...] = ()) -> list[RunConfig]:
    """The configs of `scb run --variant` options: none is the base config, `all` every variant of the config
    (unless it has a variant of that name); a name given twice runs once."""
    base = load_run_config(path, None, overrides)
    if not names:
        return [base]
    chosen: list[str] = []
    for name in names:
        if name == "all" and "all" not in base.variants:
            if not base.variants:
                raise ConfigError(path, "variants", "--variant all: the config has no variants")
            chosen += base.variants
        else:
            chosen.append(name)
    return [load_run_config(path, name, overrides) for name in dict.fromkeys(chosen)]


def _variants(file: Path, data: Any) -> dict[str, dict]:
    if not isinstance(data, dict) or "variants" not in data:
        return {}
    variants = data["variants"]
    if not isinstance(variants, dict):
        raise ConfigError(file, "variants", f"must be a mapping of variant names to partial configs, got "
                          f"{type(variants).__name__}")
    for name, overlay in variants.items():
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            raise ConfigError(file, "variants", f"variant name {short(name)} must be letters, digits, '_' or '-'")
        if overlay is not None and not isinstance(overlay, dict):
            raise ConfigError(file, f"variants.{name}", f"must be a mapping, got {type(overlay).__name__}")
        if overlay and "variants" in overlay:
            raise ConfigError(file, f"variants.{name}.variants", "variants do not nest")
    return variants


def _merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has_key(data: Any, dotted: str) -> bool:
    """Whether the value at a dotted key such as `decoding.temperature` or `methods[2].alpha` comes from
    `data` (a variant's overlay; a list in it replaces the base's whole list)."""
    for part in re.findall(r"[^.\[\]]+", dotted):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
        if isinstance(data, list):
            return True
    return True


RECORDS = ("tokens",)  # `record`: what a run may record beyond its rows' usual fields


def _run_config(file: Path, data: Any, variant: str | None, variants: tuple[str, ...]) -> RunConfig:
    """A run config from its data, every section read on its own so that one pass reports each section's problems
    (`Collect`): the top level, the task, the models, the decoding, the timing and the methods."""
    collect = Collect()
    top = collect(Section, file, "", data, keys_of(RunConfig))
    if top is None and isinstance(data, dict):  # unknown top-level keys, kept; the known ones are read on
        top = Section(file, "", {k: v for k, v in data.items() if k in keys_of(RunConfig)}, keys_of(RunConfig))
    elif top is None:
        collect.done()
    plugins = check_entries(file, top.get("plugins", list, []))
    load_plugins(file, plugins)  # before the sections that name what plugins register
    refresh_rule_params()  # a plugin's coupled rule brings its parameters to spec_cascade
    name = collect(lambda: top.fields(RunConfig, only=("name",))["name"])
    task = collect(lambda: read_task(file, top.get("task", dict)))
    models = collect(lambda: read_models(file, top.get("models", dict)))
    decoding = collect(_read_decoding, file, top)
    timing = collect(lambda: TimingConfig(**Section(file, "timing", top.get("timing", dict, {}),
                                                    keys_of(TimingConfig)).fields(TimingConfig)))
    roles = models.roles if models is not None else ("drafter", "verifier")  # a pair's, where models are wrong
    methods = collect(lambda: read_methods(file, top.get("methods", list), (decoding or DecodingConfig()).draft_length,
                                           roles))
    output = collect(_read_output, top, name)
    record = collect(_read_record, top)
    collect.done()
    return RunConfig(name, task, models, methods, decoding, timing, output, record, plugins, str(file), variant,
                     variants, data)


def _read_decoding(file: Path, top: Section) -> DecodingConfig:
    d = Section(file, "decoding", top.get("decoding", dict, {}), keys_of(DecodingConfig))
    decoding = DecodingConfig(**d.fields(DecodingConfig))
    if 0 < decoding.temperature < MIN_TEMPERATURE:
        raise d.error("temperature", f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got "
                      f"{decoding.temperature:g}")
    return decoding


def _read_output(top: Section, name: str | None) -> str:
    output = top.get("output", str, f"results/{name}")
    if not output.strip():
        raise top.error("output", "must not be empty")
    return output


def _read_record(top: Section) -> tuple[str, ...]:
    record = top.get("record", list, [])
    unknown = [item for item in record if item not in RECORDS]
    if unknown:
        raise top.error("record", f"unknown record {short(unknown[0])}; known: {', '.join(RECORDS)}")
    return tuple(dict.fromkeys(record))


MAX_CHAIN = 8


def read_models(file: Path, data: Any) -> ModelsConfig:
    """The `models` section: a drafter and a verifier (with `middle`, a chain), or the whole chain as `chain`."""
    m = Section(file, "models", data, (*keys_of(ModelsConfig), "chain"))
    models = _read_models(m)
    if models.compile != "none" and models.cache != "static":
        raise m.error("compile", "needs cache: static (compiled steps need fixed cache shapes)")
    return models


def _read_models(m: Section) -> ModelsConfig:
    if "chain" not in m.data:
        models = ModelsConfig(**m.fields(ModelsConfig))
        if len(models.chain) > MAX_CHAIN:
            raise m.error("middle", f"makes a chain of {len(models.chain)} models; at most {MAX_CHAIN}")
        return _distinct(m, models)
    both = [key for key in ("drafter", "verifier", "middle") if key in m.data]
    if both:
        raise m.error(both[0], "give either chain (every model, smallest first) or drafter and verifier (with "
                      "middle), not both")
    chain = m.strings("chain")
    if len(chain) < 2:
        raise m.error("chain", f"names {len(chain)} model; a chain needs at least two, smallest first")
    if len(chain) > MAX_CHAIN:
        raise m.error("chain", f"names {len(chain)} models; at most {MAX_CHAIN}")
    return _distinct(m, ModelsConfig(**m.fields(ModelsConfig, drafter=chain[0], verifier=chain[-1],
                                                middle=chain[1:-1])))


def _distinct(m: Section, models: ModelsConfig) -> ModelsConfig:
    """`models`, unless two roles name the same model (a name or a folder twice): drafting with the model that
    verifies measures no cascade, and each role's counts and costs would be one model's."""
    for later in range(1, len(models.chain)):
        for earlier in range(later):
            if same_model(models.chain[earlier], models.chain[later]):
                roles = models.roles
                key = "chain" if "chain" in m.data else "middle" if roles[later].startswith("middle") else roles[later]
                raise m.error(key, f"the {roles[earlier]} and the {roles[later]} are the same model "
                              f"{short(models.chain[later])}: each role needs a model of its own")
    return models


def _row_function(section: Section, file: Path, spec: str) -> str:
    """`task.process` as the run records it (a file beside the config made absolute), once it is found."""
    where, sep, name = spec.rpartition(":")
    if sep and where.endswith(".py") and not Path(where).expanduser().is_absolute():
        spec = f"{(file.parent / where).resolve()}:{name}"
    try:
        kinds.resolve(spec)
    except ValueError as exc:
        raise section.error("process", str(exc)) from None
    return spec


HARNESS_KEYS = ("lm_eval", "num_fewshot", "fewshot_seed", "filter", "score", "data_files", "fewshot_as_multiturn")
# the keys an lm_eval task takes besides its own
HARNESS_SHARED = ("first", "max_source_tokens", "max_row_mb", "chat", "system")

# `task.limit` meant a random draw on a task defined here and the first documents on an lm-eval task: it is refused
# with a pointer to the two keys that replaced it, never read with one of its meanings
LIMIT_GONE = ("is gone: it drew N examples at random on a task defined here but took the first N documents of an "
              "lm-eval task; write task.sample: N for N examples drawn at random with decoding.seed, or "
              "task.first: N for the first N (an lm-eval task takes first only)")


def read_task(file: Path, data: Any, harness: bool = True, **defaults: Any) -> TaskConfig:
    """The `task` section, with the checks that span its keys; an lm-eval task (`lm_eval`, where `harness`
    allows one) is checked against lm-eval's registry."""
    if isinstance(data, dict) and "limit" in data:
        raise ConfigError(file, "task.limit", LIMIT_GONE)
    section = Section(file, "task", data, keys_of(TaskConfig))
    if section.data.get("sample") is not None and section.data.get("first") is not None:
        raise section.error("sample", "give sample (N drawn at random) or first (the first N), not both")
    if "lm_eval" in section.data:
        if not harness:
            raise section.error("lm_eval", "fine-tuning reads a task defined here (dataset, prompt, target), not an "
                                "lm-eval task")
        return _read_harness_task(section)
    _check_own_task_keys(section, defaults)
    task = TaskConfig(**section.fields(TaskConfig, **defaults))
    if task.process is not None:
        task = replace(task, process=_row_function(section, file, task.process))
    if (task.source is None) == (task.prompt is None):
        raise section.error("source", "give either source (a field) or prompt (a template over the fields), not "
                            + ("both" if task.source else "neither"))
    try:
        named = template_fields(task.prompt)
    except TemplateError as exc:
        raise section.error("prompt", str(exc)) from None
    if task.target in named:
        raise section.error("prompt", f"names the target field {task.target!r}: the answer would be in the prompt "
                            "(shots show their answers after the prompt by themselves)")
    _check_scoring(section, task)
    if task.system is not None and not task.chat:
        raise section.error("system", "is a chat turn: it needs chat: true")
    fewshot = task.fewshot
    if fewshot is not None and fewshot.n > 0 and (fewshot.split is None) == (fewshot.dataset is None):
        raise section.error("fewshot", "give either split (of the task's dataset) or dataset (a local file) to "
                            "draw the shots from, not " + ("both" if fewshot.split else "neither"))
    if fewshot is not None and fewshot.split is not None and task.is_local:
        raise section.error("fewshot.split", "a local data file is one split: draw the shots from a file with "
                            "fewshot.dataset (it may be the task's own file; the evaluated row is never its own shot)")
    if fewshot is not None and fewshot.offset and fewshot.order != "first":
        raise section.error("fewshot.offset", "skips rows before the first shot of order: first; random shots "
                            "are drawn from every row")
    if fewshot is not None and fewshot.is_local and not looks_like_path(fewshot.dataset):
        raise section.error("fewshot.dataset", f"{short(fewshot.dataset)} is not a local file; shots from the hub "
                            "come from a split of the task's dataset (fewshot.split)")
    return _source_checked(section, task)


def _source_checked(section: Section, task: TaskConfig) -> TaskConfig:
    """The task as its source (`tasks.sources`: a plugin's, lm-eval's) checks and completes it; its error names the
    task key at fault."""
    try:
        source = source_of(task)
        checked = hook(source, "check", task)
    except DataError as exc:  # a SourceError, or a plugin source's own error
        raise section.error(exc.key or "dataset", str(exc)) from None
    if not isinstance(checked, TaskConfig):
        raise section.error("dataset", f"the task source {source.name!r}: check() gave {type(checked).__name__}, "
                            "not the task (a TaskConfig)")
    if checked.sample is not None and not isinstance(source, RowSource):
        raise section.error("sample", f"the task source {source.name!r} gives its examples in its own order: take "
                            "the first N with task.first: N")
    return checked


def _check_scoring(section: Section, task: TaskConfig) -> None:
    """How a task defined here is scored: its answer pattern, metric, tests and normalisation fit together."""
    if task.answer_pattern is not None:
        if task.metric not in PATTERN_METRICS:
            raise section.error("answer_pattern", f"applies to {', '.join(PATTERN_METRICS)}, not to {task.metric}")
        try:
            groups = patterns.check_pattern(task.answer_pattern)
        except ValueError as exc:
            raise section.error("answer_pattern", str(exc)) from None
        if groups < 1:
            raise section.error("answer_pattern", "needs a group, e.g. '#### (-?[0-9.,]+)': its first group is "
                                "compared")
    if task.metric in metrics.CODE_METRICS and task.tests is None:
        raise section.error("tests", f"is required by metric {task.metric} (the field holding each example's tests)")
    if task.metric not in metrics.CODE_METRICS and (task.tests or task.test_setup):
        raise section.error("tests" if task.tests else "test_setup", "is used only by metrics that run code: "
                            f"{', '.join(metrics.CODE_METRICS)}")
    if "normalize" in section.data and task.metric not in metrics.ANSWER_METRICS:
        raise section.error("normalize", f"applies to {', '.join(metrics.ANSWER_METRICS)}, not to {task.metric}")
    if task.answer_select != "first" and (task.answer_pattern is None or task.metric not in metrics.ANSWER_METRICS):
        raise section.error("answer_select", "selects a match of answer_pattern for "
                            f"{', '.join(metrics.ANSWER_METRICS)}: give the pattern and such a metric")


def _check_own_task_keys(section: Section, defaults: dict) -> None:
    """A task defined here: no lm-eval keys, and a dataset and a target."""
    for key in HARNESS_KEYS:
        if key in section.data:
            raise section.error(key, "applies to lm-eval tasks only (task.lm_eval)")
    for key in ("dataset", "target"):
        if section.data.get(key) is None and key not in defaults:
            raise section.error(key, "is required")
        if isinstance(section.data.get(key), str) and not section.data[key].strip():
            raise section.error(key, "must not be empty")


def _read_harness_task(section: Section) -> TaskConfig:
    """An lm-eval task: its name, shot count and seed, the filter and metric of the score, local data files,
    the first documents (`first`) and prompt budget, and a chat template's turns (`chat`, `system`,
    `fewshot_as_multiturn`, as lm-eval's options); every other task key is lm-eval's to give."""
    if "sample" in section.data:
        raise section.error("sample", "an lm-eval task's documents are taken in order, as lm-eval's --limit takes "
                            "them: give task.first: N")
    for key in section.data:
        if key not in HARNESS_KEYS + HARNESS_SHARED:
            raise section.error(key, f"comes from lm-eval's task {short(section.data['lm_eval'])}; remove it (or drop "
                                "lm_eval and define the task here)")
    task = TaskConfig(**section.fields(TaskConfig))
    if not task.lm_eval.strip():
        raise section.error("lm_eval", "must not be empty")
    if task.system is not None and not task.chat:
        raise section.error("system", "is a chat turn (lm-eval's --system_instruction): it needs chat: true")
    if "fewshot_as_multiturn" in section.data and not task.chat:
        raise section.error("fewshot_as_multiturn", "lays out the shots as chat turns: it needs chat: true")
    if task.data_files is not None and not task.data_files:
        raise section.error("data_files", "is empty; give {split: file} for the splits the task reads")
    return _source_checked(section, task)

