"""A run config's `methods` list: each entry's parameters checked against the method registry and its grid of
values expanded into method runs.

A parameter takes one value or a list of values to sweep. A chain method's per-level parameter takes one value
per level (a level is an adjacent pair of models: drafter->middle1, ..., ->verifier): one value for every level,
a list of one value per level, or a list of such lists to sweep.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..decoding.deferral import ONE_HOT_RULES
from ..decoding.deferral import RULES as DEFERRAL_RULES
from ..decoding.methods import METHODS, MIDDLE, MethodSpec, Param, alpha_param
from ..results.settings import MethodRun
from ..settings import ConfigError, Section, short, suggest
from .reader import as_list

MAX_RUNS = 10_000

MAX_SWEEP = 1000


def _value(s: Section, param: Param, checked: Param, value: Any, where: str = "") -> int | float:
    kind = int if param.integer else float
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise s.error(param.name, f"must be {kind.__name__}{where} or a list of them, got {short(value)}")
    problem = checked.check(float(value))
    if problem:
        raise s.error(param.name, f"{problem}{where}")
    return kind(value)


def _sweep(s: Section, param: Param, checked: Param, value: Any, rule: str | None) -> list:
    """A numeric method parameter's values (one value, or a list to sweep), each of its kind and in the range
    of `checked` (alpha's range depends on the deferral rule)."""
    values = as_list(value)
    if not values:
        raise s.error(param.name, "must not be an empty list")
    if len(values) > MAX_SWEEP:
        raise s.error(param.name, f"sweeps {len(values)} values; at most {MAX_SWEEP}")
    where = f" for rule {rule!r}" if rule else ""
    return [_value(s, param, checked, v, where) for v in values]


def _levels_text(roles: tuple[str, ...]) -> str:
    return ", ".join(f"{a}->{b}" for a, b in zip(roles, roles[1:], strict=False))


def _per_level_choice(s: Section, param: Param, roles: tuple[str, ...]) -> list[str]:
    """A per-level choice (the rules of a chain cascade): one name for every level, or one per level."""
    levels = len(roles) - 1
    value = s.data.get(param.name, ... if param.required else param.default)
    if value is ...:
        raise s.error(param.name, f"is required: one of {param.range_text()} per level ({_levels_text(roles)})")
    values = [value] * levels if isinstance(value, str) else value
    if not isinstance(values, list) or len(values) != levels:
        raise s.error(param.name, f"needs one name per level ({levels}: {_levels_text(roles)}), got {short(value)}")
    for item in values:
        if item not in param.choices:
            raise s.error(param.name, f"unknown value {short(item)}{suggest(str(item)[:100], param.choices)}; "
                          f"known: {param.range_text()}")
    return list(values)


def _per_level_sweep(s: Section, spec: MethodSpec, param: Param, rules: list[str] | None,
                     roles: tuple[str, ...]) -> list[list]:
    """A per-level numeric parameter's settings: each a list of one value per level."""
    levels = len(roles) - 1
    value = s.data[param.name]
    if not isinstance(value, list):
        settings = [[value] * levels]
    elif value and all(isinstance(v, list) for v in value):
        settings = value
    elif any(isinstance(v, list) for v in value):
        raise s.error(param.name, "mixes values and lists: give one value per level, or a list of such lists to "
                      "sweep")
    else:
        settings = [value]
    if not settings:
        raise s.error(param.name, "must not be an empty list")
    if len(settings) > MAX_SWEEP:
        raise s.error(param.name, f"sweeps {len(settings)} settings; at most {MAX_SWEEP}")
    checked = []
    for setting in settings:
        if len(setting) != levels:
            raise s.error(param.name, f"has {len(setting)} values, but the chain has {levels} level"
                          f"{'s' if levels > 1 else ''} ({_levels_text(roles)}): give one value per level, or a "
                          "list of such lists to sweep")
        row = []
        for level, item in enumerate(setting):
            rule = rules[level] if rules and param.name == "alphas" else None
            limits = alpha_param(spec.name, rule) if param.name == "alphas" else param
            where = f" at level {level + 1} ({roles[level]}->{roles[level + 1]}" + (f", rule {rule!r})" if rule
                                                                                   else ")")
            row.append(_value(s, param, limits, item, where))
        checked.append(row)
    return checked


def _grid(s: Section, spec: MethodSpec, entry: dict, choices: dict, roles: tuple[str, ...]) -> dict[str, list]:
    """Each numeric parameter's values to sweep (defaults included)."""
    grid: dict[str, list] = {}
    rule = choices.get("rule")
    for param in spec.params:
        if param.choices or param.path:
            continue
        if param.needs and choices.get(param.needs[0]) != param.needs[1]:
            if param.name in entry:
                raise s.error(param.name, f"applies only with {param.needs[0]}: {param.needs[1]}")
            continue
        if param.name not in entry:
            if param.required or (param.needs and param.default is None):
                raise s.error(param.name, f"is required for {spec.name}"
                              + (f" with {param.needs[0]}: {param.needs[1]}" if param.needs else ""))
            if param.default is not None:
                grid[param.name] = [param.default]
            continue
        if param.per_level:
            grid[param.name] = _per_level_sweep(s, spec, param, choices.get("rules"), roles)
        else:
            checked = alpha_param(spec.name, rule) if param.name == "alpha" else param
            grid[param.name] = _sweep(s, param, checked, entry[param.name], rule)
    if spec.one_of:
        given = [p for p in spec.one_of if p in grid]
        if len(given) != 1:
            problem = "not both" if given else f"{spec.name} needs one"
            raise s.error(given[-1] if given else spec.one_of[0], f"give either {' or '.join(spec.one_of)}, {problem}")
    return grid


def _entry_runs(file: Path, prefix: str, entry: dict, default_gamma: int,
                roles: tuple[str, ...]) -> Iterator[MethodRun]:
    """The method runs of one entry of `methods`, one at a time (a grid may be far too large to list)."""
    name = entry.get("method")
    if not isinstance(name, str):
        raise ConfigError(file, f"{prefix}.method", "is required (a method name)")
    if name not in METHODS:
        raise ConfigError(file, f"{prefix}.method", f"unknown method {short(name)}"
                          f"{suggest(name[:100], METHODS)}; known: {', '.join(METHODS)}")
    spec = METHODS[name]
    s = Section(file, prefix, entry, ("method", *(p.name for p in spec.params)))
    choices = {p.name: (_per_level_choice(s, p, roles) if p.per_level else
                        s.choice(p.name, p.choices, ... if p.required else p.default))
               for p in spec.params if p.choices}
    grid = _grid(s, spec, entry, choices, roles)
    learned = [rule for rule in choices.get("rules") or [] if DEFERRAL_RULES[rule].uses_router]
    if learned:
        raise s.error("rules", f"{learned[0]!r} is fitted on a pair (`scb fit-router`); a chain's levels take "
                      "the rules that need no router")
    coupled = [rule for rule in choices.get("rules") or [] if DEFERRAL_RULES[rule].coupled]
    if coupled:
        raise s.error("rules", f"{coupled[0]!r} couples the positions of a pair's rounds; a chain's levels draft "
                      "again after a higher level's rejection, so its round positions and running estimates are "
                      "not a level's own (docs/ALGORITHMS.md, \"Global deferral\"): give a per-position rule")
    if choices.get("drafter", "model") != "model" and "rules" in choices:
        _check_one_hot_cascade(s, choices)
    paths = {param.name: _path(s, param, entry, choices) for param in spec.params if param.path}
    paths = {name: value for name, value in paths.items() if value is not None}
    if name == MIDDLE and any(level > len(roles) - 2 for level in grid["level"]):
        middles = len(roles) - 2
        raise s.error("level", f"the models have {middles} middle model{'' if middles == 1 else 's'}"
                      + (f" (levels 1 to {middles})" if middles else ": give a chain of three or more models"))
    if "draft_length" not in grid and spec.param("draft_length"):
        grid["draft_length"] = [default_gamma]
    if "draft_lengths" not in grid and spec.param("draft_lengths"):
        grid["draft_lengths"] = [[default_gamma] * (len(roles) - 1)]
    if "horizontal" in grid:
        _check_horizontal(s, grid, roles)
    keys = list(grid)
    return (MethodRun(name, {**choices, **paths, **dict(zip(keys, combo, strict=True))})
            for combo in itertools.product(*(grid[k] for k in keys)))


SAFE_STEM = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _path(s: Section, param: Param, entry: dict, choices: dict) -> str | None:
    """A file parameter (a router): a path whose file name names the run (checked, with the file itself, before any
    model loads: `run.routers`); required, and only allowed, where its `needs` choice is made."""
    wanted = param.needs is None or choices.get(param.needs[0]) == param.needs[1]
    if param.name not in entry:
        if wanted and param.needs:
            raise s.error(param.name, f"is required with {param.needs[0]}: {param.needs[1]} (a file of `scb "
                          "fit-router`)")
        return None
    if not wanted:
        raise s.error(param.name, f"applies only with {param.needs[0]}: {param.needs[1]}")
    value = entry[param.name]
    if not isinstance(value, str) or not value.strip():
        raise s.error(param.name, f"must be a file's path, got {short(value)}")
    if not SAFE_STEM.fullmatch(Path(value).stem):
        raise s.error(param.name, f"{short(value)}: the file's name (without its suffix) names the run: use 1 to 64 "
                      "letters, digits, `_`, `.` or `-`")
    return value


def _check_one_hot_cascade(s: Section, choices: dict) -> None:
    """A chain cascade whose bottom drafter has no model: its q is one-hot at each draft, and a level that keeps a
    draft passes that one-hot row up, so every level's rule must decide with it (`deferral.ONE_HOT_RULES`); and it
    has no q after its drafts, which a bonus drawn from the target needs."""
    drafter = choices["drafter"]
    for level, rule in enumerate(choices["rules"], 1):
        if rule not in ONE_HOT_RULES:
            raise s.error("rules", f"{rule!r} (level {level}) reads the drafts' q, which {drafter} makes one-hot "
                          "(max q = 1), and a level that keeps a draft passes it up so: at alpha >= 0 it would never "
                          f"defer, below 0 it decides by p alone. Give {' or '.join(ONE_HOT_RULES)} at every level, "
                          "which read p at the draft (docs/ALGORITHMS.md, \"Drafters\")")
    if choices.get("bonus", "target") == "target":
        raise s.error("bonus", f"target draws the bonus token from the first level's target, which needs the "
                      f"drafter's q after its drafts; {drafter} has none: set bonus: verifier")


def _check_horizontal(s: Section, grid: dict[str, list], roles: tuple[str, ...]) -> None:
    """CS Drafting's horizontal cascade needs a model between the drafter and the verifier, and fewer positions
    from the level below than the verifier's draft length (else it changes nothing)."""
    if len(roles) < 3:
        raise s.error("horizontal", "needs a chain of three or more models: on a pair every draft comes from the "
                      "drafter already")
    shortest = min(gammas[-1] for gammas in grid["draft_lengths"])
    if max(grid["horizontal"]) >= shortest:
        raise s.error("horizontal", f"must be below the verifier's draft length ({shortest}, the last of "
                      "draft_lengths): the positions past it are the ones the drafter drafts")


def read_methods(file: Path, data: Any, default_gamma: int, roles: tuple[str, ...]) -> tuple[MethodRun, ...]:
    """The method runs of a config's `methods` list for models with `roles`: every entry's parameter grid
    expanded, each run once."""
    if not isinstance(data, list) or not data:
        raise ConfigError(file, "methods", "must be a non-empty list of {method: ..., ...} entries")
    runs: list[MethodRun] = []
    run_ids: set[str] = set()
    for i, entry in enumerate(data):
        prefix = f"methods[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, prefix, f"must be a mapping, got {type(entry).__name__}")
        for run in _entry_runs(file, prefix, entry, default_gamma, roles):
            if run.run_id in run_ids:
                raise ConfigError(file, prefix, f"duplicates the method run {run.run_id!r}")
            runs.append(run)
            run_ids.add(run.run_id)
            if len(runs) > MAX_RUNS:
                raise ConfigError(file, prefix, f"the methods expand to more than {MAX_RUNS} method runs")
    return tuple(runs)
