"""A results folder as the analysis reads it: once (`read_results`), its manifest and the rows of every run it
names, each row with only the fields a summary reads (`SUMMARY_FIELDS`), and the first examples' outputs that the
page shows (`first_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..decoding.methods import DRAFTER, MIDDLE, REFERENCE
from ..files import ResultsError
from ..results.folder import read_manifest
from ..results.record import ExampleRow
from ..results.rows import MAX_ROW_BYTES, load_examples
from ..results.settings import MethodRun

# The fields of a row that a summary reads (the rest, token statistics and lm-eval's records, is left unread)
SUMMARY_FIELDS = ("example_id", "run_id", "method", "params", "prediction", "reference", "output_tokens",
                  "latency_s", "latency_trials_s", "calls", "levels", "drafted",
                  "accepted", "rounds", "rejections", "deferred", "score", "worker")

SAMPLES = 3  # the examples whose outputs by every run a summary keeps (`frame.attrs["samples"]`, for the page)


@dataclass
class Results:
    """A results folder as read once: its manifest and its runs' rows (SUMMARY_FIELDS) by run id."""

    manifest: dict
    runs: dict[str, list[ExampleRow]]


def read_results(results: Path, max_bytes: int = MAX_ROW_BYTES) -> Results:
    """The folder's manifest and every run it names (`load_examples`, each line at most `max_bytes`): a results
    file of a run the manifest does not name (`method_runs`), or whose rows' params are not the manifest's, is
    refused."""
    manifest = read_manifest(results, max_bytes)
    return Results(manifest, load_examples(results, method_runs(results, manifest), max_bytes, SUMMARY_FIELDS))


def method_runs(results: Path, manifest: dict) -> list[dict]:
    """The method runs a folder may hold: its manifest's (`config.methods`), and the runs of each model alone that
    `scb run` decodes besides them (`run.plan.plan`: the verifier, the drafter, a chain's middle models)."""
    methods = manifest["config"].get("methods")
    if methods is None:
        raise ResultsError(f"{results}/manifest.json names no method runs (config.methods); restore it from a copy")
    middle = manifest["config"]["models"].get("middle") or []
    alone = [MethodRun(REFERENCE, {}), MethodRun(DRAFTER, {}),
             *(MethodRun(MIDDLE, {"level": level}) for level in range(1, len(middle) + 1))]
    named = {run["run_id"] for run in methods}
    return methods + [{"run_id": run.run_id, "method": run.method, "params": run.params} for run in alone
                      if run.run_id not in named]


def first_samples(runs: dict[str, list[ExampleRow]]) -> list[tuple[int, str, list[tuple[str, str, Any]]]]:
    """The first SAMPLES examples of runs that share their examples: (example id, the reference, each run's
    (run id, output, score or None))."""
    if not runs:
        return []
    picked = sorted(row.example_id for row in next(iter(runs.values())))[:SAMPLES]
    by_id = {run_id: {row.example_id: row for row in rows if row.example_id in picked}
             for run_id, rows in runs.items()}
    return [(example, next(iter(by_id.values()))[example].reference,
             [(run_id, rows[example].prediction, rows[example].score) for run_id, rows in by_id.items()])
            for example in picked]
