"""The run config of `scb run`: typed, strictly validated YAML, with variants and method lists.

Every error names the file and the dotted key. Each section of a config is a dataclass whose fields are
the section's keys: a field's type, default and valid range are written once, on the field, and the
reader derives the allowed keys, the type checks and the defaults from it. Loading never touches a model
or a dataset; the checks that need the filesystem are in `validate_resources`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..decoding.methods import METHODS, Param, alpha_param
from ..decoding.settings import MIN_TEMPERATURE, DecodingConfig
from ..models.settings import ModelsConfig
from ..run.settings import MethodRun, RunConfig, TimingConfig
from ..settings import ConfigError, _Section, keys_of, short, suggest
from ..tasks import kinds, metrics
from ..tasks.prompts import TemplateError, template_fields
from ..tasks.settings import PATTERN_METRICS, TaskConfig, looks_like_path
from .reader import _as_list, _read_yaml


def _sweep(s: _Section, param: Param, checked: Param, value: Any, rule: str | None) -> list:
    """A numeric method parameter's values (one value, or a list to sweep), each of its kind and in the range
    of `checked` (alpha's range depends on the deferral rule)."""
    values = _as_list(value)
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
    return [kind(v) for v in values]


def _methods(file: Path, data: Any, default_gamma: int) -> tuple[MethodRun, ...]:
    """The method runs of a config's `methods` list: every entry's parameter grid expanded, each run once."""
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
            if param.needs and choices.get(param.needs[0]) != param.needs[1]:
                if param.name in entry:
                    raise s.error(param.name, f"applies only with {param.needs[0]}: {param.needs[1]}")
                continue
            if param.name not in entry:
                if param.required or param.needs:
                    raise s.error(param.name, f"is required for {name}"
                                  + (f" with {param.needs[0]}: {param.needs[1]}" if param.needs else ""))
                if param.default is not None:
                    grid[param.name] = [param.default]
                continue
            grid[param.name] = _sweep(s, param, checked, entry[param.name], rule)
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


def _row_function(section: _Section, file: Path, spec: str) -> str:
    """`task.process` as the run records it (a file beside the config made absolute), once it is found."""
    where, sep, name = spec.rpartition(":")
    if sep and where.endswith(".py") and not Path(where).expanduser().is_absolute():
        spec = f"{(file.parent / where).resolve()}:{name}"
    try:
        kinds.resolve(spec)
    except ValueError as exc:
        raise section.error("process", str(exc)) from None
    return spec


def read_task(file: Path, data: Any, **defaults: Any) -> TaskConfig:
    """The `task` section, with the checks that span its keys."""
    section = _Section(file, "task", data, keys_of(TaskConfig))
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
