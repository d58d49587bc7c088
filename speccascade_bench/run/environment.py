"""`scb validate --check-env`: what a config needs of the machine it will run on, checked before a run is tried:
CUDA where the config asks for it, the hub models and datasets it names reachable (or cached), and room on the disk
for its results. Each check is one line; a problem line says what to change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..models.presets import is_preset
from ..results.settings import RunConfig
from ..tasks.settings import looks_like_path
from ..tasks.sources import DatasetSource, source_of

BYTES_PER_ROW = 4096  # a results line with its counters and output; `record: [tokens]` rows are larger
ROOM_MARGIN = 100 * 2**20  # besides the rows: the manifest, the summary, the report, the figures
HUB_TIMEOUT_S = 10.0
OFFLINE_SETTINGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def check_environment(config: RunConfig) -> tuple[list[str], list[str]]:
    """(lines that are fine, problem lines) for one config."""
    fine, problems = [], []
    for check in (_device, _hub_names, _room):
        for ok, line in check(config):
            (fine if ok else problems).append(line)
    return fine, problems


def _device(config: RunConfig):
    if config.models.device != "cuda":
        yield True, f"models.device: {config.models.device} (nothing to check)"
        return
    import torch

    if torch.cuda.is_available():
        yield True, f"models.device: cuda, {torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
    else:
        yield False, ("models.device: cuda, but this machine has no CUDA device torch can use (torch "
                      f"{torch.__version__}); set models.device: cpu or auto, or run where a GPU is")


def _hub_names(config: RunConfig):
    models = config.models
    named = [(f"models.{role}", name) for role, name in zip(models.roles, models.chain, strict=True)]
    if models.tokenizer:
        named.append(("models.tokenizer", models.tokenizer))
    named = [(key, name) for key, name in named if not looks_like_path(name) and not is_preset(name)]
    dataset = config.task.dataset
    on_hub = isinstance(source_of(config.task), DatasetSource) and dataset and not looks_like_path(dataset)
    datasets = [("task.dataset", dataset)] if on_hub else []  # not lm-eval's, nor a plugin source's
    offline = next((setting for setting in OFFLINE_SETTINGS if os.environ.get(setting, "") not in ("", "0")), None)
    for kind, entries in (("model", named), ("dataset", datasets)):
        for key, name in entries:
            yield _hub_name(key, name, kind, offline)


def _hub_name(key: str, name: str, kind: str, offline: str | None) -> tuple[bool, str]:
    from huggingface_hub import HfApi, try_to_load_from_cache

    cached = kind == "model" and isinstance(try_to_load_from_cache(name, "config.json"), str)
    if offline:
        if cached:
            return True, f"{key}: {name!r} is in the local cache ({offline} is set: the hub is not asked)"
        return False, (f"{key}: {name!r} cannot be checked: {offline} is set, so the hub is not asked, and it is not "
                       "in the local cache; unset it to check, or download the " + kind + " first")
    try:
        info = HfApi().model_info if kind == "model" else HfApi().dataset_info
        info(name, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # not found, gated, or no network: the hub's own words, in one line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if cached:
            return True, f"{key}: {name!r} is in the local cache (the hub did not answer: {reason})"
        return False, f"{key}: {name!r} is not reachable on the hub ({type(exc).__name__}: {reason})"
    return True, f"{key}: {name!r} found on the hub"


def _room(config: RunConfig):
    out = Path(config.output).expanduser()
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    examples = config.task.selected or 1000  # unknown until the data is read: a thousand examples assumed
    needed = examples * len(config.methods) * BYTES_PER_ROW * (8 if "tokens" in config.record else 1) + ROOM_MARGIN
    text = f"{free / 2**30:.1f} GiB free on the disk of {existing}, about {needed / 2**20:.0f} MiB needed"
    if free < needed:
        yield False, f"output: {text} ({examples} examples x {len(config.methods)} method runs); free some room " \
                     "or give --output on another disk"
    else:
        yield True, f"output: {text}"
