"""The checks of a run's routers (learned deferral, `decoding.router`) before any model loads: each router file is
one, of the level its method reads, fitted on this run's pair and tokenizer, and on examples that the run does not
evaluate.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..decoding.methods import METHODS
from ..decoding.router import Router, RouterError, read_router
from ..models.fingerprint import weights_fingerprint
from ..results.manifest import tokenizer_of
from ..results.settings import MethodRun, RunConfig
from ..settings import ConfigError
from ..tasks.data import Example


def same_model(a: str | None, b: str | None) -> bool:
    """Two model names that name the same model: equal, local folders that are the same folder, or local folders
    whose weights and config are the same bytes (a copy; `weights_fingerprint`)."""
    if a is None or b is None:
        return False
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    if not (Path(a).exists() and Path(b).exists()):
        return False
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    first = weights_fingerprint(a)
    return first is not None and first == weights_fingerprint(b)


def check_router(config: RunConfig, run: MethodRun, examples: list[Example],
                 fingerprints: dict | None = None) -> Router:
    """The router of a method run, checked (a ConfigError naming the config, the run and what does not fit).
    `fingerprints` keeps the models' weights fingerprints between the calls of one check (`check_routers`)."""
    field = f"methods ({run.run_id}).router"
    path = run.params["router"]
    try:
        router = read_router(path)
    except OSError as exc:
        raise ConfigError(config.file, field, f"{path} cannot be read ({exc.strerror or exc}); write it with `scb "
                          "fit-router`") from None
    except RouterError as exc:
        raise ConfigError(config.file, field, str(exc)) from None
    level = METHODS[run.method].router_level
    if router.level != level:
        raise ConfigError(config.file, field, f"{path} is a {router.level}-level router; {run.method} needs a "
                          f"{level}-level one (`scb fit-router --level {level}`)")
    fitted = router.fitted
    pair = fitted.get("pair") if isinstance(fitted.get("pair"), dict) else {}
    models = config.models
    for role, name in (("drafter", models.drafter), ("verifier", models.verifier)):
        if not same_model(pair.get(role), name):
            raise ConfigError(config.file, field, f"{path} was fitted with the {role} {pair.get(role)!r}, not this "
                              f"run's {name!r}; fit a router on this pair's outputs")
    recorded = fitted.get("weights") or {}
    fingerprints = {} if fingerprints is None else fingerprints
    for role, name in (("drafter", models.drafter), ("verifier", models.verifier)):
        if role not in recorded:
            continue
        if name not in fingerprints:
            fingerprints[name] = weights_fingerprint(name)
        if fingerprints[name] not in (None, recorded[role]):  # none: no local folder to compare
            raise ConfigError(config.file, field, f"{path} was fitted with other weights of the {role} {name!r} (its "
                              "files changed since the fitting run); fit a router on this pair's outputs")
    if not same_model(fitted.get("tokenizer"), tokenizer_of(models.tokenizer, models.verifier)):
        raise ConfigError(config.file, field, f"{path} was fitted with the tokenizer {fitted.get('tokenizer')!r}, "
                          f"not this run's {tokenizer_of(models.tokenizer, models.verifier)!r}")
    task = fitted.get("task") if isinstance(fitted.get("task"), dict) else {}
    same_split = (same_model(task.get("dataset"), config.task.dataset) and task.get("subset") == config.task.subset
                  and task.get("split") == config.task.split)
    if same_split:
        fitted_ids = set(fitted.get("examples") or [])
        overlap = sorted(fitted_ids & {example.example_id for example in examples})
        if overlap:
            raise ConfigError(config.file, field, f"{path} was fitted on {len(fitted_ids)} examples of "
                              f"{config.task.dataset} ({config.task.split}), and this run evaluates {len(overlap)} of "
                              f"them (example {overlap[0]}): evaluate on another split, or fit on one")
    return router


def check_routers(config: RunConfig, runs: list[MethodRun], examples: list[Example]) -> None:
    """`check_router` for every method run that names a router, each model's weights fingerprinted once."""
    fingerprints: dict = {}
    for run in runs:
        if "router" in run.params:
            check_router(config, run, examples, fingerprints)
