"""Experiment trackers: `scb run --log` and `scb report --log` send a results folder to MLflow or Weights & Biases.

What goes there (`folder_record`) is read from the folder as `scb report` wrote it: one tracker run per folder (its
settings as parameters; commit, versions and device as tags; summary.csv, summary.json, report.md, report.html,
the manifest and the figures as artifacts; the per-example latencies as a table), and each method run of the
summary under it (its parameters; quality with its interval, relative latency, speed-up, acceptance, deferral and
relative cost as metrics). How a command talks to them: `trackers.Trackers`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..decoding.methods import PARAMETERS
from ..files import ResultsError
from ..results.folder import CALL_COSTS_FILE, MANIFEST_FILE, read_manifest
from ..results.manifest import tracking_key
from ..results.record import ExampleRow
from ..settings import ConfigError
from .html import HTML_FILE
from .report import REPORT_FILE
from .results import read_results
from .summary import SUMMARY_FILE, SUMMARY_FLOAT
from .summary_json import SUMMARY_JSON_FILE

log = logging.getLogger(__name__)

# The trackers `--log` names: the module each needs, and what `--log NAME=VALUE` gives it
TRACKERS = {"mlflow": ("mlflow", "TRACKING_URI"), "wandb": ("wandb", "PROJECT")}

# A method run's metrics: the summary's columns, in its units (see docs/results.md); a column that is empty for a
# run (no interval below 10 examples, no acceptance for a model alone) is left out of that run
METRICS = ("n", "quality", "quality_vs_verifier", "quality_ci_low", "quality_ci_high", "latency_mean_s",
           "latency_p50_s", "relative_latency", "relative_latency_median", "relative_latency_low",
           "relative_latency_high", "speedup", "acceptance_rate", "acceptance_prob", "tokens_per_round",
           "deferral_rate", "relative_cost", "output_tokens_mean")

FIGURES = ("*.png", "*.svg", "*.pdf")  # `scb plot`'s figures, where it drew them into the folder


class TrackingError(ConfigError):
    """A `--log` value that names no tracker, or a tracker whose library is not installed or cannot take it."""

    def __init__(self, message: str) -> None:
        super().__init__("--log", "", message)

    def __reduce__(self):
        return type(self), (self.message,)


@dataclass(frozen=True)
class Target:
    """A tracker to log to: `kind` (mlflow, wandb) and what `--log kind=VALUE` gave (a tracking URI, a project)."""

    kind: str
    where: str | None = None

    def __str__(self) -> str:
        return self.kind if self.where is None else f"{self.kind}={self.where}"


def parse_targets(values: list[str] | tuple[str, ...] | None) -> tuple[Target, ...]:
    """The trackers of `--log` values (`mlflow`, `mlflow=URI`, `wandb`, `wandb=PROJECT`), each library checked
    installed; a TrackingError in one line otherwise."""
    targets: dict[str, Target] = {}
    for value in values or ():
        kind, given, where = value.partition("=")
        kind = kind.strip().lower()
        if kind not in TRACKERS:
            raise TrackingError(f"unknown tracker {kind[:40]!r} in {value[:100]!r}; give "
                                + " or ".join(f"{name}[={what}]" for name, (_, what) in TRACKERS.items()))
        if given and not where.strip():
            raise TrackingError(f"{value!r} names no {TRACKERS[kind][1]}; give {kind} alone for the default")
        if kind in targets:
            raise TrackingError(f"{kind} is named twice; give one --log {kind}[={TRACKERS[kind][1]}]")
        if importlib.util.find_spec(TRACKERS[kind][0]) is None:
            raise TrackingError(f"--log {kind} needs the {TRACKERS[kind][0]} library: pip install "
                                f"'speccascade-bench[{kind}]'")
        targets[kind] = Target(kind, where.strip() or None)
    return tuple(targets.values())


@dataclass
class MethodRecord:
    """One method run of a folder as a tracker gets it: its run id, parameters and metrics."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass
class FolderRecord:
    """A results folder as a tracker gets it (`folder_record`)."""

    folder: Path
    name: str
    key: str
    params: dict[str, str]
    tags: dict[str, str]
    runs: list[MethodRecord]
    artifacts: list[Path]
    latencies: pd.DataFrame = field(repr=False)


def _number(value) -> float | None:
    if value is None or isinstance(value, str | bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else float(SUMMARY_FLOAT % number)  # as summary.csv holds it


def method_records(frame: pd.DataFrame) -> list[MethodRecord]:
    """Each summary row's parameters (the method, its set parameters and the temperature) and metrics (METRICS
    that it has)."""
    records = []
    for _, row in frame.iterrows():
        params = {"method": str(row["method"])}
        for name in (*PARAMETERS, "temperature"):
            value = row.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                params[name] = f"{value:g}" if isinstance(value, float) else str(value)
        metrics = {name: number for name in METRICS if (number := _number(row.get(name))) is not None}
        records.append(MethodRecord(str(row["run_id"]), params, metrics))
    return records


def folder_params(manifest: dict) -> dict[str, str]:
    """A folder's settings as tracker parameters: the task, the models, the decoding and the timing."""
    cfg = manifest["config"]
    task, models, decoding, timing = cfg["task"], cfg["models"], cfg["decoding"], cfg["timing"]
    params = {"name": cfg.get("name"), "variant": cfg.get("variant"),
              "task": task.get("lm_eval") or task.get("dataset"), "metric": task.get("metric"),
              "drafter": models.get("drafter"), "verifier": models.get("verifier"),
              "middle": ", ".join(models.get("middle") or []) or None, "dtype": manifest.get("dtype"),
              "temperature": decoding.get("temperature"), "top_p": decoding.get("top_p"),
              "draft_length": decoding.get("draft_length"), "max_new_tokens": decoding.get("max_new_tokens"),
              "seed": decoding.get("seed"), "warmup": timing.get("warmup"), "trials": timing.get("trials")}
    return {key: str(value) for key, value in params.items() if value is not None}


def folder_tags(folder: Path, manifest: dict) -> dict[str, str]:
    """A folder's provenance as tracker tags: the commit, the versions, the device, where the folder is."""
    hardware = manifest.get("hardware") or {}
    tags = {"git_commit": manifest.get("git_commit"), "device": hardware.get("device"),
            "device_name": hardware.get("gpu") or hardware.get("cpu"), "started_at": manifest.get("started_at"),
            "results_folder": str(folder.resolve()), "limit": manifest.get("limit")}
    tags.update({f"version.{name}": version for name, version in (manifest.get("versions") or {}).items()})
    return {key: str(value)[:5000] for key, value in tags.items() if value is not None}


def latency_table(folder: Path, runs: dict[str, list[ExampleRow]] | None = None) -> pd.DataFrame:
    """Every example's latency, a row per (run, example): run_id, example_id, latency_s, output_tokens; from the
    folder's rows as read already (`runs`), or as read now."""
    runs = read_results(folder).runs if runs is None else runs
    rows = [{"run_id": run_id, "example_id": row.example_id, "latency_s": row.latency_s,
             "output_tokens": row.output_tokens} for run_id, run_rows in runs.items() for row in run_rows]
    return pd.DataFrame(rows, columns=["run_id", "example_id", "latency_s", "output_tokens"])


def figures(folder: Path, drawn: Path | None, cfg: dict, frame: pd.DataFrame) -> list[Path]:
    """The folder's figures (`scb plot`'s, where it drew them into the folder), or, where it has none, its figures
    drawn now from its summary (`frame`) into `drawn` (PNG), or none where they cannot be drawn."""
    found = sorted(path for pattern in FIGURES for path in folder.glob(pattern) if path.is_file())
    if found or drawn is None:
        return found
    from .plot import plot_summary

    try:
        return [path for path in plot_summary(cfg, frame, drawn) if path.suffix == ".png"]
    except ValueError as exc:  # a summary with nothing to draw: the rest still goes
        log.info("%s: no figures for the trackers: %s", folder, exc)
        return []


def folder_record(folder: Path, frame: pd.DataFrame | None = None, drawn: Path | None = None,
                  runs: dict[str, list[dict]] | None = None) -> FolderRecord:
    """What a tracker gets of a folder: its summary (`frame`, or its summary.csv), manifest, rows (`runs`, where
    they were read already) and files (its figures drawn into `drawn` where it has none: `figures`)."""
    manifest = read_manifest(folder)
    if frame is None:
        if not (folder / SUMMARY_FILE).is_file():
            raise ResultsError(f"{folder} has no {SUMMARY_FILE} to log; run `scb report {folder}` first")
        frame = pd.read_csv(folder / SUMMARY_FILE)
    named = (SUMMARY_FILE, SUMMARY_JSON_FILE, REPORT_FILE, HTML_FILE, MANIFEST_FILE, CALL_COSTS_FILE)
    artifacts = [folder / name for name in named if (folder / name).is_file()]
    artifacts += figures(folder, drawn, manifest["config"], frame)
    return FolderRecord(folder, str(manifest["config"].get("name") or folder.name), tracking_key(manifest),
                        folder_params(manifest), folder_tags(folder, manifest), method_records(frame), artifacts,
                        latency_table(folder, runs))
