"""Typed, strictly validated YAML configs for `scb run` and `scb finetune`.

Every error names the file and the dotted key. Each section of a config is a dataclass whose fields are
the section's keys: a field's type, default and valid range are written once, on the field, and the
reader derives the allowed keys, the type checks and the defaults from it. Loading never touches a model
or a dataset; the checks that need the filesystem are in `validate_resources`.
"""

from __future__ import annotations

import itertools
import math
import re
import reprlib
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from . import metrics
from .data import DataError, check_local_fields, looks_like_path
from .methods import METHODS, alpha_param, suggest
from .presets import PREFIX, T5_V1_1_SHAPES, is_preset, preset_shape
from .prompts import TemplateError, template_fields

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
CACHES = ("dynamic", "static")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
METRICS = metrics.METRICS
NORMALIZERS = tuple(metrics.NORMALIZERS)  # answer normalisation of exact_match and f1
PATTERN_METRICS = (*metrics.ANSWER_METRICS, "pass_at_1")  # an answer_pattern's metrics (the code of pass_at_1)
# A run or variant name: it becomes a folder name, so no separators, no leading dot, nothing empty.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # values in a loaded config, aliases expanded: bounds any walk over it
MAX_MESSAGE = 400

_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict, _repr.maxlevel = 60, 60, 4, 4, 2


def short(value: Any) -> str:
    """A repr of a config value bounded in size, whatever the value (a 1 MB string, an alias bomb)."""
    return _repr.repr(value)


class ConfigError(ValueError):
    """A config problem, located by file and dotted key."""

    def __init__(self, file: str | Path, key: str, message: str):
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        key = key if len(key) <= 100 else key[:100] + "..."
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")

    def __reduce__(self):  # pickled as its three parts (a Ray worker's error reaches the command)
        return type(self), (self.file, self.key, self.message)


def option(default: Any = MISSING, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, choices: tuple[str, ...] = (), pattern: re.Pattern | None = None,
           section: str = "", internal: bool = False) -> Any:
    """A config field: its default (none: required), its valid range or choices, the name pattern a string
    must match, the section it is read from (for flat dataclasses such as FinetuneConfig), or `internal`
    for a field that is not a key of the file."""
    metadata = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices,
                "pattern": pattern, "section": section, "internal": internal}
    return field(default=default, metadata=metadata)


_KINDS = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "tuple": tuple}
MAX_STRINGS = 64  # items of a list of strings (stop strings)


def _kind(f: Field) -> tuple[type, bool]:
    """The Python type of a field's value and whether it may be null, from its annotation."""
    text = str(f.type)
    nullable = text.endswith("| None")
    base = text.removesuffix("| None").strip().split("[")[0]
    return _KINDS.get(base) or globals()[base], nullable  # a section's dataclass, e.g. FewshotConfig


def keys_of(cls, section: str = "") -> tuple[str, ...]:
    """The keys a config section accepts: its dataclass's fields (those of `section` for a flat one)."""
    return tuple(f.name for f in fields(cls) if not f.metadata.get("internal")
                 and f.metadata.get("section", "") == section)


class _Section:
    """Reads one mapping of a config, tracking which keys were used, so that unknown keys are errors."""

    def __init__(self, file: Path, prefix: str, data: Any, allowed: tuple[str, ...]):
        self.file, self.prefix = file, prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, prefix or "(top level)", f"must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                raise ConfigError(file, self.key(short(key) if not isinstance(key, str) else key),
                                  f"unknown key{suggest(str(key)[:100], allowed)}; allowed: {', '.join(allowed)}")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def get(self, name: str, kind: type | tuple, default: Any = ..., *, nullable: bool = False) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(name, f"must be {names}, got {type(value).__name__} {short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value}")
        return value

    def strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        """A list of non-empty strings (one string is a list of one)."""
        value = self.get(name, (list, str), default)
        items = [value] if isinstance(value, str) else list(value)
        if len(items) > MAX_STRINGS:
            raise self.error(name, f"has {len(items)} items; at most {MAX_STRINGS}")
        for item in items:
            if not isinstance(item, str) or not item:
                raise self.error(name, f"must be a list of non-empty strings, got {short(item)}")
        return tuple(items)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"unknown value {short(value)}{suggest(value[:100], choices)}; choose from "
                             f"{', '.join(choices)}")
        return value

    def number(self, name: str, kind: type, default: Any = ..., *, low=None, high=None, low_open=False,
               high_open=False, nullable=False):
        value = self.get(name, kind, default, nullable=nullable)
        if value is None:
            return None
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            interval = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
            raise self.error(name, f"must be in {interval}, got {value:g}")
        return value

    def fields(self, cls, section: str = "", only: tuple[str, ...] | None = None, **defaults: Any) -> dict[str, Any]:
        """The fields of `cls` (those of `section` for a flat one, or just `only`), each read with its type,
        range and default; `defaults` overrides a field's default for this kind of file."""
        values = {}
        for f in fields(cls):
            meta = f.metadata
            if meta.get("internal") or meta.get("section", "") != section or only is not None and f.name not in only:
                continue
            kind, nullable = _kind(f)
            default = defaults.get(f.name, ... if f.default is MISSING else f.default)
            if meta.get("choices"):
                values[f.name] = self.choice(f.name, meta["choices"], default)
            elif kind is tuple:
                values[f.name] = self.strings(f.name, default)
            elif is_dataclass(kind):
                value = self.get(f.name, dict, default, nullable=nullable)
                if isinstance(value, dict):
                    value = kind(**_Section(self.file, self.key(f.name), value, keys_of(kind)).fields(kind))
                values[f.name] = value
            elif kind in (int, float):
                values[f.name] = self.number(f.name, kind, default, low=meta.get("low"), high=meta.get("high"),
                                             low_open=meta.get("low_open"), high_open=meta.get("high_open"),
                                             nullable=nullable)
            else:
                value = values[f.name] = self.get(f.name, kind, default, nullable=nullable)
                if kind is str and value is not None and default is ... and not value.strip():
                    raise self.error(f.name, "must not be empty")
                if kind is str and value is not None and meta.get("pattern") and not meta["pattern"].match(value):
                    raise self.error(f.name, f"{short(value)} must be letters, digits, '_', '.', '+' or '-', "
                                     "starting with a letter or digit")
        return values


@dataclass(frozen=True)
class FewshotConfig:
    """Few-shot examples of a task: `n` rows drawn with `seed` (or the first `n` after `offset` rows, with
    `order: first`) from another `split` of the task's dataset or from a local file (`dataset`); each is
    rendered with the task's prompt, then `task.target_delimiter` and its target (`target`, default the
    task's target field; a list gives its first item). Shots are joined, and followed by the evaluated
    prompt, with `delimiter`."""

    n: int = option(low=0, high=1000)
    split: str | None = option(None)
    dataset: str | None = option(None)
    seed: int = option(1234, low=0, high=2**32 - 1)
    order: str = option("random", choices=("random", "first"))
    offset: int = option(0, low=0, high=10_000_000)  # with order: first, the rows skipped before the first shot
    target: str | None = option(None)
    delimiter: str = option("\n\n")

    @property
    def is_local(self) -> bool:
        return self.dataset is not None


@dataclass(frozen=True)
class TaskConfig:
    """What a task decodes and how it is scored. The model's input is `prefix` + the few-shot examples +
    either the row's `source` field or, with `prompt`, a template over the row's fields (`{question}`,
    `{translation[en]}`); `target` is the reference field, a string or a list of accepted answers."""

    dataset: str = option()
    target: str = option()
    source: str | None = option(None)
    prompt: str | None = option(None)
    subset: str | None = option(None)
    split: str = option("test")  # a fine-tuning config's default is "train"
    revision: str | None = option(None)
    prefix: str = option("")
    fewshot: FewshotConfig | None = option(None)
    target_delimiter: str = option(" ")
    chat: bool = option(False)
    system: str | None = option(None)
    stop: tuple[str, ...] = option(())
    metric: str = option("bleu", choices=METRICS)
    answer_pattern: str | None = option(None)
    normalize: str = option("squad", choices=NORMALIZERS)
    tests: str | None = option(None)
    test_setup: str | None = option(None)
    code_timeout_s: float = option(10.0, low=0.1, high=600.0)
    code_memory_mb: int = option(1024, low=64, high=65_536)
    limit: int | None = option(None, low=1, high=10_000_000)
    max_source_tokens: int = option(512, low=1, high=131_072)

    @property
    def is_local(self) -> bool:
        return looks_like_path(self.dataset)

    def fields_used(self) -> tuple[str, ...]:
        """The dataset fields the task reads from an evaluated row (dotted for nested ones)."""
        used = [self.source] if self.source else list(template_fields(self.prompt))
        return tuple(dict.fromkeys(used + [f for f in (self.target, self.tests, self.test_setup) if f]))


@dataclass(frozen=True)
class ModelsConfig:
    drafter: str = option()
    verifier: str = option()
    tokenizer: str | None = option(None)
    dtype: str = option("float32", choices=DTYPES)
    device: str = option("auto", choices=DEVICES)
    cache: str = option("dynamic", choices=CACHES)
    compile: str = option("none", choices=COMPILE_MODES)


MIN_TEMPERATURE = 0.01  # below it (but above 0, which is greedy) logits / temperature overflow


@dataclass(frozen=True)
class DecodingConfig:
    """How every method of a run decodes. `draft_length` is the default gamma of the speculative methods;
    a method entry may override it."""

    max_new_tokens: int = option(64, low=1, high=32_768)
    temperature: float = option(0.0, low=0.0, high=100.0)
    top_p: float = option(1.0, low=1e-6, high=1.0)
    draft_length: int = option(5, low=1, high=64)
    seed: int = option(0, low=0, high=2**32 - 1)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = option(2, low=0, high=1000)
    trials: int = option(1, low=1, high=100)


@dataclass(frozen=True)
class MethodRun:
    """One method at one parameter setting: a curve point. `run_id` names its results file: the method,
    then each parameter in the registry's order (numbers after their tag, a required choice as its value,
    an optional choice as `name_value` when it is not the default)."""

    method: str
    params: dict[str, Any]

    @property
    def run_id(self) -> str:
        parts = [self.method]
        for param in METHODS[self.method].params:
            if param.name not in self.params:
                continue
            value = self.params[param.name]
            number = "" if param.choices else f"{param.tag or param.name}{_number_text(value)}"
            text = param.label(value, number, "_")
            if text is not None:
                parts.append(text)
        return "-".join(parts)


def _number_text(value: float) -> str:
    """A parameter value in a run id: short (`0.3`, `5`), and exact, so that two values never share an id."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


@dataclass(frozen=True)
class RunConfig:
    name: str = option(pattern=NAME)
    task: TaskConfig = option()
    models: ModelsConfig = option()
    methods: tuple[MethodRun, ...] = option()
    decoding: DecodingConfig = option(DecodingConfig())
    timing: TimingConfig = option(TimingConfig())
    output: str = option("")  # default results/<name>
    file: str = option("", internal=True)
    variant: str | None = option(None, internal=True)
    variants: tuple[str, ...] = option((), internal=True)
    raw: dict = field(default_factory=dict, compare=False, metadata={"internal": True})

    def method_names(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.methods))


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"duplicate key {short(key)} (line {line})")
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: the mapping constructor reports it
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_size(data: Any) -> None:
    """Walk the loaded config, aliases expanded, and refuse it past MAX_CONFIG_NODES values."""
    stack, count = [data], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ValueError(f"has more than {MAX_CONFIG_NODES} values once its aliases are expanded")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_yaml(text: str) -> Any:
    """Strict YAML: duplicate keys, files over MAX_CONFIG_BYTES and alias bombs are refused (yaml.YAMLError
    or ValueError)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    _check_size(data)
    return data


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(path, "", "config file not found")
    if path.is_dir():
        raise ConfigError(path, "", "is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(path, "", "is not a regular file (a device or a pipe?)")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(path, "", f"the config is larger than {MAX_CONFIG_BYTES} bytes")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the config: {exc.strerror or exc}") from None
    try:
        return parse_yaml(text)
    except _DuplicateKey as exc:
        raise ConfigError(path, "", str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise ConfigError(path, "", f"the config {exc}") from None


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _methods(file: Path, data: Any, default_gamma: int) -> tuple[MethodRun, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(file, "methods", "must be a non-empty list of {method: ..., ...} entries")
    runs: list[MethodRun] = []
    run_ids: set[str] = set()
    for i, entry in enumerate(data):
        prefix = f"methods[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, prefix, f"must be a mapping, got {type(entry).__name__}")
        name = entry.get("method")
        if not isinstance(name, str):
            raise ConfigError(file, f"{prefix}.method", "is required (a method name)")
        if name not in METHODS:
            raise ConfigError(file, f"{prefix}.method", f"unknown method {short(name)}"
                              f"{suggest(name[:100], METHODS)}; known: {', '.join(METHODS)}")
        spec = METHODS[name]
        s = _Section(file, prefix, entry, ("method", *(p.name for p in spec.params)))
        choices = {p.name: s.choice(p.name, p.choices, ... if p.required else p.default)
                   for p in spec.params if p.choices}
        rule = choices.get("rule")
        grid: dict[str, list] = {}
        for param in spec.params:
            if param.choices:
                continue
            checked = alpha_param(name, rule) if param.name == "alpha" else param
            if param.name not in entry:
                if param.required:
                    raise s.error(param.name, f"is required for {name}")
                if param.default is not None:
                    grid[param.name] = [param.default]
                continue
            values = _as_list(entry[param.name])
            if not values:
                raise s.error(param.name, "must not be an empty list")
            if len(values) > 1000:
                raise s.error(param.name, f"sweeps {len(values)} values; at most 1000")
            kind = int if param.integer else float
            for value in values:
                ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
                if isinstance(value, bool) or not ok:
                    raise s.error(param.name, f"must be {kind.__name__} or a list of them, got {short(value)}")
                problem = checked.check(float(value))
                if problem:
                    where = f" for rule {rule!r}" if rule else ""
                    raise s.error(param.name, f"{problem}{where}")
            grid[param.name] = [kind(v) for v in values]
        if spec.one_of:
            given = [p for p in spec.one_of if p in grid]
            if len(given) != 1:
                problem = "not both" if given else f"{name} needs one"
                raise s.error(given[-1] if given else spec.one_of[0],
                              f"give either {' or '.join(spec.one_of)}, {problem}")
        if "draft_length" not in grid and spec.param("draft_length"):
            grid["draft_length"] = [default_gamma]
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            params = {**choices, **dict(zip(keys, combo, strict=True))}
            run = MethodRun(name, params)
            if run.run_id in run_ids:
                raise ConfigError(file, prefix, f"duplicates the method run {run.run_id!r}")
            runs.append(run)
            run_ids.add(run.run_id)
            if len(runs) > 10_000:
                raise ConfigError(file, prefix, "the methods expand to more than 10000 method runs")
    return tuple(runs)


VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def load_run_config(path: str | Path, variant: str | None = None) -> RunConfig:
    """Parse and validate a run config, or one of its `variants`. Raises ConfigError naming the file and key.

    A variant is a partial config under `variants.<name>` merged over the base (mappings merge key by
    key, anything else replaces). Its name is `<base name>-<variant>` and its output folder the base's
    with `-<variant>` appended, unless the variant sets them."""
    file = Path(path)
    data = _read_yaml(file)
    variants = _variants(file, data)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "variants"}
    base = _run_config(file, data, None, tuple(variants))
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
    try:
        return _run_config(file, merged, variant, tuple(variants))
    except ConfigError as exc:
        located = _has_key(overlay, exc.key)
        key = f"variants.{variant}.{exc.key}" if located else exc.key
        message = exc.message if located else f"{exc.message} (in variant {variant!r})"
        raise ConfigError(file, key, message) from None


def load_run_configs(path: str | Path) -> list[RunConfig]:
    """The base config and every variant, each validated."""
    base = load_run_config(path)
    return [base] + [load_run_config(path, name) for name in base.variants]


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


def _run_config(file: Path, data: Any, variant: str | None, variants: tuple[str, ...]) -> RunConfig:
    top = _Section(file, "", data, keys_of(RunConfig))
    name = top.fields(RunConfig, only=("name",))["name"]
    task = read_task(file, top.get("task", dict))
    m = _Section(file, "models", top.get("models", dict), keys_of(ModelsConfig))
    models = ModelsConfig(**m.fields(ModelsConfig))
    if models.compile != "none" and models.cache != "static":
        raise m.error("compile", "needs cache: static (compiled steps need fixed cache shapes)")
    d = _Section(file, "decoding", top.get("decoding", dict, {}), keys_of(DecodingConfig))
    decoding = DecodingConfig(**d.fields(DecodingConfig))
    if 0 < decoding.temperature < MIN_TEMPERATURE:
        raise d.error("temperature", f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got "
                      f"{decoding.temperature:g}")
    t = _Section(file, "timing", top.get("timing", dict, {}), keys_of(TimingConfig))
    timing = TimingConfig(**t.fields(TimingConfig))
    methods = _methods(file, top.get("methods", list), decoding.draft_length)
    output = top.get("output", str, f"results/{name}")
    if not output.strip():
        raise top.error("output", "must not be empty")
    return RunConfig(name, task, models, methods, decoding, timing, output, str(file), variant, variants, data)


def read_task(file: Path, data: Any, **defaults: Any) -> TaskConfig:
    """The `task` section, with the checks that span its keys."""
    section = _Section(file, "task", data, keys_of(TaskConfig))
    task = TaskConfig(**section.fields(TaskConfig, **defaults))
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
    if task.answer_pattern is not None:
        if task.metric not in PATTERN_METRICS:
            raise section.error("answer_pattern", f"applies to {', '.join(PATTERN_METRICS)}, not to {task.metric}")
        try:
            groups = metrics.check_pattern(task.answer_pattern)
        except ValueError as exc:
            raise section.error("answer_pattern", str(exc)) from None
        if groups < 1:
            raise section.error("answer_pattern", "needs a group, e.g. '#### (-?[0-9.,]+)': its first group is "
                                "compared")
    if task.metric == "pass_at_1" and task.tests is None:
        raise section.error("tests", "is required by metric pass_at_1 (the field holding each example's tests)")
    if task.metric != "pass_at_1" and (task.tests or task.test_setup):
        raise section.error("tests" if task.tests else "test_setup", "is used only by metric pass_at_1")
    if "normalize" in section.data and task.metric not in metrics.ANSWER_METRICS:
        raise section.error("normalize", f"applies to {', '.join(metrics.ANSWER_METRICS)}, not to {task.metric}")
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
    return task


def plain(section: Any) -> dict:
    """A config section as plain JSON values (as a manifest records it)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value
    return convert(asdict(section))


RECORDED_SECTIONS = {"task": TaskConfig, "models": ModelsConfig, "decoding": DecodingConfig, "timing": TimingConfig}


def recorded_section(file: str | Path, key: str, values: Any) -> dict:
    """A section of a config as a results manifest records it (`config.<key>`), checked like a config file's
    (ConfigError) and completed with the defaults of keys added since it was written."""
    cls = RECORDED_SECTIONS[key]
    section = _Section(Path(file), f"config.{key}", values, keys_of(cls))
    return plain(cls(**section.fields(cls)))


def check_local_task(file: str | Path, key: str, task: TaskConfig) -> None:
    """A local data file of a config (named by its `key`, e.g. task.dataset) exists, is a regular file and
    has the task's source and target fields; a ConfigError naming the key at fault otherwise."""
    path = Path(task.dataset).expanduser()
    if not path.exists():
        raise ConfigError(file, key, f"local data file not found: {path}")
    if not path.is_file():
        raise ConfigError(file, key, f"{path} is not a regular file")
    try:
        check_local_fields(path, task)
    except DataError as exc:
        fewshot = key.startswith("task.fewshot")
        raise ConfigError(file, key if exc.key in (None, "dataset") or fewshot else f"task.{exc.key}",
                          str(exc)) from None


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
    for role in ("drafter", "verifier", "tokenizer"):
        name = getattr(config.models, role)
        if name and is_preset(name):
            if role == "tokenizer" or preset_shape(name) not in T5_V1_1_SHAPES:
                raise ConfigError(file, f"models.{role}", f"unknown shape preset {short(name)}"
                                  f"{suggest(preset_shape(name)[:100], T5_V1_1_SHAPES)}; presets: "
                                  + ", ".join(PREFIX + shape for shape in T5_V1_1_SHAPES))
        elif name and looks_like_path(name) and not Path(name).expanduser().exists():
            raise ConfigError(file, f"models.{role}", f"local model path not found: {name}")


MODEL_KINDS = ("seq2seq", "causal")  # what `scb finetune` trains: a T5-style or a Llama-style model


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning config: the top-level keys, then the `model` and `training` sections' fields."""

    name: str = option(pattern=NAME)
    task: TaskConfig = option()
    output: str = option()
    kind: str = option("seq2seq", choices=MODEL_KINDS, section="model")
    pretrained: str | None = option(None, section="model")
    architecture: dict[str, Any] | None = option(None, section="model")  # T5Config or LlamaConfig fields (kind)
    tokenizer: str | None = option(None, section="model")
    max_steps: int = option(1000, low=1, high=10_000_000, section="training")
    batch_size: int = option(32, low=1, high=65_536, section="training")
    gradient_accumulation_steps: int = option(1, low=1, high=65_536, section="training")
    gradient_checkpointing: bool = option(False, section="training")
    learning_rate: float = option(1e-3, low=0.0, high=1.0, low_open=True, section="training")
    warmup_steps: int = option(0, low=0, high=10_000_000, section="training")
    weight_decay: float = option(0.0, low=0.0, high=1.0, section="training")
    max_target_tokens: int = option(128, low=1, high=131_072, section="training")
    eval_split: str | None = option(None, section="training")
    eval_examples: int = option(200, low=1, high=10_000_000, section="training")
    eval_steps: int = option(500, low=1, high=10_000_000, section="training")
    save_steps: int = option(500, low=1, high=10_000_000, section="training")
    seed: int = option(0, low=0, high=2**32 - 1, section="training")
    save_dtype: str = option("float32", choices=DTYPES, section="training")
    bf16: str = option("auto", choices=("auto", "true", "false"), section="training")
    file: str = option("", internal=True)


# Sizes of a T5 or a Llama built from scratch (`model.architecture`): zero or huge values fail deep in torch or
# never end.
ARCHITECTURE_RANGES = {"d_model": (1, 65_536), "d_ff": (1, 262_144), "d_kv": (1, 4096), "num_heads": (1, 1024),
                       "num_layers": (1, 1000), "num_decoder_layers": (1, 1000),
                       "relative_attention_num_buckets": (1, 4096), "dropout_rate": (0, 1),
                       "hidden_size": (1, 65_536), "intermediate_size": (1, 262_144), "num_hidden_layers": (1, 1000),
                       "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024), "head_dim": (1, 4096),
                       "max_position_embeddings": (1, 1_048_576), "attention_dropout": (0, 1)}
# The architecture's config class per model.kind, and its keys that the tokenizer sets.
ARCHITECTURE_CLASSES = {"seq2seq": "T5Config", "causal": "LlamaConfig"}
FROM_TOKENIZER = {"seq2seq": ("vocab_size", "pad_token_id", "eos_token_id", "decoder_start_token_id"),
                  "causal": ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id")}


def _architecture_fields(kind: str = "seq2seq") -> set[str]:
    import transformers

    return set(getattr(transformers, ARCHITECTURE_CLASSES[kind])().to_dict())


RUN_ONLY_TASK_KEYS = ("fewshot", "chat", "system", "tests", "test_setup", "code_timeout_s", "code_memory_mb")


def is_finetune_config(path: str | Path) -> bool:
    """Whether a config file is a fine-tuning config (it has a `model` or `training` section), not a run
    config; the file is read and checked as `_read_yaml` does."""
    data = _read_yaml(Path(path))
    return isinstance(data, dict) and ("model" in data or "training" in data) and "models" not in data


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Parse and validate a fine-tuning config. Raises ConfigError naming the file and key."""
    file = Path(path)
    data = _read_yaml(file)
    top = _Section(file, "", data, ("name", "task", "model", "training", "output"))
    name = top.fields(FinetuneConfig, only=("name",))["name"]
    task = read_task(file, top.get("task", dict), split="train")
    for key in RUN_ONLY_TASK_KEYS:
        if key in (top.data.get("task") or {}):
            raise ConfigError(file, f"task.{key}", "is a key of run configs: fine-tuning trains on the prefix and the "
                              "source or prompt, followed by the target")
    if task.metric == "pass_at_1":
        raise ConfigError(file, "task.metric", "pass_at_1 runs code: fine-tuning evaluates with a text metric")
    m = _Section(file, "model", top.get("model", dict), keys_of(FinetuneConfig, "model"))
    model = m.fields(FinetuneConfig, "model")
    if (model["pretrained"] is None) == (model["architecture"] is None):
        raise m.error("pretrained", "give exactly one of pretrained (a hub name or path) or architecture "
                      "(T5Config fields, or LlamaConfig fields with kind causal, trained from scratch)")
    if model["architecture"] is not None:
        kind = model["kind"]
        known = _architecture_fields(kind)
        for key, value in model["architecture"].items():
            where = f"model.architecture.{short(key) if not isinstance(key, str) else key}"
            if key not in known:
                raise ConfigError(file, where, f"is not a {ARCHITECTURE_CLASSES[kind]} field (model.kind {kind})"
                                  f"{suggest(str(key)[:100], known)}")
            if key in FROM_TOKENIZER[kind]:
                raise ConfigError(file, where, "is set from the tokenizer; remove it")
            if not isinstance(value, int | float | str | bool) or isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(file, where, f"must be a finite number, a string or a boolean, got {short(value)}")
            low, high = ARCHITECTURE_RANGES.get(key, (0, 10_000_000))
            if isinstance(value, int | float) and not isinstance(value, bool) and not low <= value <= high:
                raise ConfigError(file, where, f"must be in [{low:g}, {high:g}], got {short(value)}")
        if model["tokenizer"] is None:
            raise m.error("tokenizer", "is required with architecture (e.g. byt5, or a hub name or path)")
    t = _Section(file, "training", top.get("training", dict, {}), keys_of(FinetuneConfig, "training"))
    output = top.get("output", str)
    if not output.strip():
        raise top.error("output", "must not be empty")
    return FinetuneConfig(name=name, task=task, output=output, **model,
                          **t.fields(FinetuneConfig, "training"), file=str(file))
