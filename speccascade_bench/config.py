"""Typed, strictly validated YAML configs for `scb run` and `scb finetune`.

Every error names the file and the dotted key. Loading never touches a model or a dataset; the checks
that need the filesystem (a local dataset or model path that does not exist, a field missing from a
local data file) run in `validate_resources`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .methods import METHODS, alpha_param, suggest
from .presets import PREFIX, T5_V1_1_SHAPES, is_preset, preset_shape

METRICS = ("bleu", "rouge2", "rougeL", "chrf")
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
CACHES = ("dynamic", "static")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
LOCAL_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class ConfigError(ValueError):
    """A config problem, located by file and dotted key."""

    def __init__(self, file: str | Path, key: str, message: str):
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


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
                raise ConfigError(file, self.key(str(key)), f"unknown key{suggest(str(key), allowed)}; "
                                  f"allowed: {', '.join(allowed)}")
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
            raise self.error(name, f"must be {names}, got {type(value).__name__} {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"unknown value {value!r}{suggest(value, choices)}; choose from "
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
            raise self.error(name, f"must be in {interval}, got {value}")
        return value


@dataclass(frozen=True)
class TaskConfig:
    dataset: str
    source: str
    target: str
    subset: str | None = None
    split: str = "test"
    revision: str | None = None
    prefix: str = ""
    metric: str = "bleu"
    limit: int | None = None
    max_source_tokens: int = 512

    @property
    def is_local(self) -> bool:
        return looks_like_path(self.dataset)


@dataclass(frozen=True)
class ModelsConfig:
    drafter: str
    verifier: str
    tokenizer: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    cache: str = "dynamic"
    compile: str = "none"


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    draft_length: int = 5
    seed: int = 0


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 2
    trials: int = 1


@dataclass(frozen=True)
class MethodRun:
    """One method at one parameter setting: a curve point. `run_id` names its results file."""

    method: str
    params: dict[str, Any]

    @property
    def run_id(self) -> str:
        parts = [self.method]
        for key in ("rule", "alpha", "threshold", "beta", "draft_length", "bonus"):
            if key in self.params and not (key == "bonus" and self.params[key] == "target"):
                value = self.params[key]
                short = {"alpha": "a", "threshold": "t", "beta": "b", "draft_length": "g"}.get(key, "")
                parts.append(f"{short}{value:g}" if isinstance(value, float | int) else f"{key}_{value}"
                             if key == "bonus" else str(value))
        return "-".join(parts)


@dataclass(frozen=True)
class RunConfig:
    name: str
    task: TaskConfig
    models: ModelsConfig
    decoding: DecodingConfig
    timing: TimingConfig
    methods: tuple[MethodRun, ...]
    output: str
    file: str = ""
    variant: str | None = None
    variants: tuple[str, ...] = ()
    raw: dict = field(default_factory=dict, compare=False)

    def method_names(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.methods))


def looks_like_path(name: str) -> bool:
    """A dataset or model given as a local path rather than a hub name."""
    if is_preset(name):
        return False
    return (name.startswith((".", "/", "~")) or name.endswith(LOCAL_DATA_SUFFIXES) or Path(name).exists()
            or name.count("/") > 1)


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(path, "", "config file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"not valid YAML: {exc}") from None


def _task(file: Path, data: Any, *, default_split: str) -> TaskConfig:
    s = _Section(file, "task", data, ("dataset", "subset", "split", "revision", "source", "target", "prefix",
                                      "metric", "limit", "max_source_tokens"))
    return TaskConfig(
        dataset=s.get("dataset", str),
        subset=s.get("subset", str, None, nullable=True),
        split=s.get("split", str, default_split),
        revision=s.get("revision", str, None, nullable=True),
        source=s.get("source", str),
        target=s.get("target", str),
        prefix=s.get("prefix", str, ""),
        metric=s.choice("metric", METRICS, "bleu"),
        limit=s.number("limit", int, None, low=1, nullable=True),
        max_source_tokens=s.number("max_source_tokens", int, 512, low=1),
    )


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _methods(file: Path, data: Any, default_gamma: int) -> tuple[MethodRun, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(file, "methods", "must be a non-empty list of {method: ..., ...} entries")
    runs: list[MethodRun] = []
    for i, entry in enumerate(data):
        prefix = f"methods[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, prefix, f"must be a mapping, got {type(entry).__name__}")
        name = entry.get("method")
        if not isinstance(name, str):
            raise ConfigError(file, f"{prefix}.method", "is required (a method name)")
        if name not in METHODS:
            raise ConfigError(file, f"{prefix}.method", f"unknown method {name!r}{suggest(name, METHODS)}; "
                              f"known: {', '.join(METHODS)}")
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
            kind = int if param.name == "draft_length" else float
            for value in values:
                ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
                if isinstance(value, bool) or not ok:
                    raise s.error(param.name, f"must be {kind.__name__} or a list of them, got {value!r}")
                problem = checked.check(float(value))
                if problem:
                    where = f" for rule {rule!r}" if rule else ""
                    raise s.error(param.name, f"{problem}{where}")
            grid[param.name] = [kind(v) for v in values]
        if name == "seq_cascade" and "alpha" in grid and "threshold" in grid:
            raise s.error("threshold", "give either alpha (deferral rate) or threshold, not both")
        if name == "seq_cascade" and not grid:
            raise s.error("alpha", "seq_cascade needs alpha (deferral rates) or threshold")
        if "draft_length" not in grid and spec.param("draft_length"):
            grid["draft_length"] = [default_gamma]
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            params = {**choices, **dict(zip(keys, combo, strict=True))}
            run = MethodRun(name, params)
            if any(r.run_id == run.run_id for r in runs):
                raise ConfigError(file, prefix, f"duplicates the method run {run.run_id!r}")
            runs.append(run)
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
        raise ConfigError(file, "variants", f"unknown variant {variant!r}{suggest(variant, variants)}; "
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
            raise ConfigError(file, "variants", f"variant name {name!r} must be letters, digits, '_' or '-'")
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
    top = _Section(file, "", data, ("name", "task", "models", "decoding", "methods", "timing", "output"))
    name = top.get("name", str)
    task = _task(file, top.get("task", dict), default_split="test")
    m = _Section(file, "models", top.get("models", dict),
                 ("drafter", "verifier", "tokenizer", "dtype", "device", "cache", "compile"))
    models = ModelsConfig(
        drafter=m.get("drafter", str), verifier=m.get("verifier", str),
        tokenizer=m.get("tokenizer", str, None, nullable=True),
        dtype=m.choice("dtype", DTYPES, "float32"), device=m.choice("device", DEVICES, "auto"),
        cache=m.choice("cache", CACHES, "dynamic"), compile=m.choice("compile", COMPILE_MODES, "none"),
    )
    if models.compile != "none" and models.cache != "static":
        raise m.error("compile", "needs cache: static (compiled steps need fixed cache shapes)")
    d = _Section(file, "decoding", top.get("decoding", dict, {}),
                 ("max_new_tokens", "temperature", "top_p", "draft_length", "seed"))
    decoding = DecodingConfig(
        max_new_tokens=d.number("max_new_tokens", int, 64, low=1),
        temperature=d.number("temperature", float, 0.0, low=0.0),
        top_p=d.number("top_p", float, 1.0, low=0.0, high=1.0, low_open=True),
        draft_length=d.number("draft_length", int, 5, low=1, high=64),
        seed=d.get("seed", int, 0),
    )
    t = _Section(file, "timing", top.get("timing", dict, {}), ("warmup", "trials"))
    timing = TimingConfig(warmup=t.number("warmup", int, 2, low=0), trials=t.number("trials", int, 1, low=1))
    methods = _methods(file, top.get("methods", list), decoding.draft_length)
    output = top.get("output", str, f"results/{name}")
    return RunConfig(name, task, models, decoding, timing, methods, output, str(file), variant, variants, data)


def validate_resources(config: RunConfig) -> None:
    """Filesystem checks: local dataset and model paths exist, local data has the named fields."""
    from .data import check_local_fields  # local import: reads a file header only

    file = config.file
    if config.task.is_local:
        path = Path(config.task.dataset).expanduser()
        if not path.exists():
            raise ConfigError(file, "task.dataset", f"local dataset file not found: {path}")
        check_local_fields(path, config.task, file)
    for role in ("drafter", "verifier", "tokenizer"):
        name = getattr(config.models, role)
        if name and is_preset(name):
            if role == "tokenizer" or preset_shape(name) not in T5_V1_1_SHAPES:
                raise ConfigError(file, f"models.{role}", f"unknown shape preset {name!r}"
                                  f"{suggest(preset_shape(name), T5_V1_1_SHAPES)}; presets: "
                                  + ", ".join(PREFIX + shape for shape in T5_V1_1_SHAPES))
        elif name and looks_like_path(name) and not Path(name).expanduser().exists():
            raise ConfigError(file, f"models.{role}", f"local model path not found: {name}")


@dataclass(frozen=True)
class FinetuneConfig:
    name: str
    task: TaskConfig
    pretrained: str | None
    architecture: dict[str, Any] | None
    tokenizer: str | None
    max_steps: int
    batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_target_tokens: int
    eval_split: str | None
    eval_examples: int
    eval_steps: int
    save_steps: int
    seed: int
    save_dtype: str
    bf16: str
    output: str
    file: str = ""


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Parse and validate a fine-tuning config. Raises ConfigError naming the file and key."""
    file = Path(path)
    data = _read_yaml(file)
    top = _Section(file, "", data, ("name", "task", "model", "training", "output"))
    name = top.get("name", str)
    task = _task(file, top.get("task", dict), default_split="train")
    m = _Section(file, "model", top.get("model", dict), ("pretrained", "architecture", "tokenizer"))
    pretrained = m.get("pretrained", str, None, nullable=True)
    architecture = m.get("architecture", dict, None, nullable=True)
    if (pretrained is None) == (architecture is None):
        raise m.error("pretrained", "give exactly one of pretrained (a hub name or path) or architecture "
                      "(T5Config fields, trained from scratch)")
    tokenizer = m.get("tokenizer", str, None, nullable=True)
    if architecture is not None and tokenizer is None:
        raise m.error("tokenizer", "is required with architecture (e.g. byt5, or a hub name or path)")
    t = _Section(file, "training", top.get("training", dict, {}),
                 ("max_steps", "batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
                  "learning_rate", "warmup_steps", "weight_decay", "max_target_tokens", "eval_split",
                  "eval_examples", "eval_steps", "save_steps", "seed", "save_dtype", "bf16"))
    return FinetuneConfig(
        name=name, task=task, pretrained=pretrained, architecture=architecture, tokenizer=tokenizer,
        max_steps=t.number("max_steps", int, 1000, low=1),
        batch_size=t.number("batch_size", int, 32, low=1),
        gradient_accumulation_steps=t.number("gradient_accumulation_steps", int, 1, low=1),
        gradient_checkpointing=t.get("gradient_checkpointing", bool, False),
        learning_rate=t.number("learning_rate", float, 1e-3, low=0.0, low_open=True),
        warmup_steps=t.number("warmup_steps", int, 0, low=0),
        weight_decay=t.number("weight_decay", float, 0.0, low=0.0),
        max_target_tokens=t.number("max_target_tokens", int, 128, low=1),
        eval_split=t.get("eval_split", str, None, nullable=True),
        eval_examples=t.number("eval_examples", int, 200, low=1),
        eval_steps=t.number("eval_steps", int, 500, low=1),
        save_steps=t.number("save_steps", int, 500, low=1),
        seed=t.get("seed", int, 0),
        save_dtype=t.choice("save_dtype", DTYPES, "float32"),
        bf16=t.choice("bf16", ("auto", "true", "false"), "auto"),
        output=top.get("output", str),
        file=str(file),
    )
