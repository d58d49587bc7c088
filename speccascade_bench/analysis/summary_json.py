"""summary.json: the summary for programs, beside summary.csv. One document holds the run's settings (task, models,
decoding, timing, versions, machine), every run's summary columns with their units (the quality's paired intervals
and the latency's among them), and the trade-off table, under a schema name and version that `scb report` checks
before it writes the file again."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..files import ResultsError, UnreadableFile, read_json, refuse_link, write_file

SUMMARY_JSON_FILE = "summary.json"
SCHEMA = "speccascade-bench summary"
SCHEMA_VERSION = 1
MAX_BYTES = 256 * 2**20

# Each summary column's unit; a parameter column (a method's parameter) has none.
UNITS = {
    "n": "examples", "quality": "metric", "quality_vs_verifier": "metric points",
    "quality_ci_low": "metric points", "quality_ci_high": "metric points",
    "latency_mean_s": "s", "latency_p50_s": "s", "latency_std_s": "s", "trial_cv": "ratio",
    "relative_latency": "ratio to the verifier", "relative_latency_median": "ratio to the verifier",
    "relative_latency_low": "ratio to the verifier", "relative_latency_high": "ratio to the verifier",
    "speedup": "times the verifier's speed", "acceptance_rate": "fraction", "acceptance_prob": "fraction",
    "acceptance_by_level": "fractions, one per level", "tokens_per_round": "tokens", "deferral_rate": "fraction",
    "output_tokens_mean": "tokens", "drafter_calls_mean": "calls", "verifier_calls_mean": "calls",
    "cost_ratio": "ratio", "predicted_speedup": "times the verifier's speed", "verify_cost": "one-token steps",
    "predicted_speedup_at_r": "times the verifier's speed", "relative_cost": "ratio to the verifier",
}


def _value(value):
    """A summary cell as JSON: NaN (no value) as null, numpy numbers as Python ones."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def summary_document(frame: pd.DataFrame, manifest: dict, tradeoff) -> dict:
    """The summary.json document: the settings from the manifest, the runs (`frame`) and the trade-off table
    (`report.tradeoff_rows`: the verifier's quality and the rows, or None)."""
    config = manifest["config"]
    settings = {key: config.get(key) for key in ("name", "task", "models", "decoding", "timing")}
    settings.update({key: manifest.get(key) for key in ("versions", "hardware", "started_at", "git_commit", "dtype")})
    target, rows = tradeoff if tradeoff is not None else (None, [])
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "settings": settings,
        "columns": {name: UNITS.get(name, "") for name in frame.columns},
        "runs": [{name: _value(row[name]) for name in frame.columns} for _, row in frame.iterrows()],
        "tradeoff": {"verifier_quality": target,
                     "columns": ["curve", "points", "latency_to_match_verifier", "speedup", "best_quality_within_1"],
                     "rows": [list(row) for row in rows]},
    }


def check_summary_json(results: Path) -> None:
    """A summary.json already in the folder is this suite's, of a known schema version; a ResultsError naming it
    otherwise (it is left as it is)."""
    path = results / SUMMARY_JSON_FILE
    if not path.exists() and not path.is_symlink():
        return
    refuse_link(path)
    try:
        data = read_json(path, MAX_BYTES, "the bound of a summary file")
    except (UnreadableFile, ValueError) as exc:
        raise ResultsError(f"{path}: not a summary this suite wrote ({' '.join(str(exc).split())[:200]}); move it "
                           "aside and report again") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultsError(f"{path}: not a summary this suite wrote (no schema {SCHEMA!r}); move it aside and report "
                           "again")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or not isinstance(data.get("runs"), list):
        raise ResultsError(f"{path}: summary schema version {str(version)[:20]} with runs "
                           f"{type(data.get('runs')).__name__}; this version writes and reads {SCHEMA_VERSION} with a "
                           "list: move it aside and report again")


def write_summary_json(results: Path, frame: pd.DataFrame, manifest: dict, tradeoff) -> None:
    import json

    write_file(results / SUMMARY_JSON_FILE, json.dumps(summary_document(frame, manifest, tradeoff), indent=1,
                                                       allow_nan=False) + "\n")
