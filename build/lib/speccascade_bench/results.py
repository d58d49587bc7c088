"""The results directory: its files, how they are written, and the summary derived from them.

    manifest.json           resolved config, versions, device, dtype, git commit, start time
    examples/<run_id>.jsonl one line per example and method run, appended and flushed as it finishes
    call_costs.json         what a verifier call over gamma + 1 positions costs in one-token steps (r), per gamma
    summary.csv             one row per method run (written by `scb run` and `scb report`)
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pandas as pd

from .metrics import corpus_score
from .tradeoff import acceptance_probability, drafter_calls_per_round, leviathan_speedup

EXAMPLE_FIELDS = (
    "example_id", "run_id", "method", "params", "prediction", "reference", "output_tokens", "input_tokens",
    "latency_s", "latency_trials_s", "drafter_calls", "verifier_calls", "drafted", "accepted", "rounds",
    "accepted_per_round", "rejections", "deferred", "confidence",
)
SUMMARY_COLUMNS = (
    "run_id", "method", "rule", "alpha", "threshold", "beta", "bonus", "draft_length", "temperature", "n", "metric",
    "quality", "latency_mean_s", "latency_p50_s", "latency_std_s", "trial_cv", "relative_latency", "speedup",
    "acceptance_rate", "acceptance_prob", "tokens_per_round", "deferral_rate", "output_tokens_mean",
    "drafter_calls_mean", "verifier_calls_mean", "cost_ratio", "predicted_speedup", "verify_cost",
    "predicted_speedup_at_r", "relative_cost",
)
CALL_COSTS_FILE = "call_costs.json"


class ResultsError(RuntimeError):
    """A results directory is missing files or holds another run."""


def examples_dir(results: Path) -> Path:
    return results / "examples"


def read_lines(path: Path) -> list[dict]:
    """The complete lines of a results file; a torn last line (an interrupted write) is ignored."""
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write: the example will be decoded again
            rows.append(json.loads(line))
    return rows


def repair(path: Path) -> None:
    """Cut a torn last line, so that appending starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)


class ExampleWriter:
    """Appends one JSON line per finished example and forces it to disk."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair(path)
        self._file = path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_manifest(results: Path) -> dict:
    path = results / "manifest.json"
    if not path.exists():
        raise ResultsError(f"{results} is not a results directory: manifest.json not found")
    return json.loads(path.read_text())


def load_examples(results: Path) -> dict[str, list[dict]]:
    """All example lines by run_id, each run's lines deduplicated by example_id (last wins)."""
    folder = examples_dir(results)
    if not folder.is_dir():
        raise ResultsError(f"{results} has no examples/ folder")
    runs = {}
    for path in sorted(folder.glob("*.jsonl")):
        by_id = {row["example_id"]: row for row in read_lines(path)}
        if by_id:
            runs[path.stem] = [by_id[i] for i in sorted(by_id)]
    return runs


def _acceptance_prob(rows: list[dict]) -> float:
    """`acceptance_probability` over a run's rows; NaN for results recorded without `rejections`."""
    if any("rejections" not in row for row in rows):
        return math.nan
    return acceptance_probability(sum(row["accepted"] for row in rows), sum(row["rejections"] for row in rows))


def _trial_cv(rows: list[dict]) -> float:
    """The spread of repeated timings: the mean over examples of the standard deviation of an example's
    timed trials over their mean (NaN with one trial per example, or for derived runs)."""
    spreads = []
    for row in rows:
        trials = row.get("latency_trials_s") or []
        if len(trials) > 1:
            mean = sum(trials) / len(trials)
            spreads.append(statistics.pstdev(trials) / mean if mean > 0 else math.nan)
    return _mean(spreads) if spreads else math.nan


def seq_cascade_rows(drafter: list[dict], verifier: list[dict], rate: float, run_id: str,
                     params: dict) -> list[dict]:
    """Sequence-level Chow cascade at a deferral rate, from the drafter's and verifier's outputs: the
    `rate` fraction of examples with the lowest drafter confidence are deferred. Latency of a deferred
    example is the drafter's plus the verifier's."""
    by_id = {row["example_id"]: row for row in verifier}
    common = [row for row in drafter if row["example_id"] in by_id]
    order = sorted(common, key=lambda row: (row["confidence"], row["example_id"]))
    deferred_ids = {row["example_id"] for row in order[: round(rate * len(order))]}
    rows = []
    for draft in common:
        deferred = draft["example_id"] in deferred_ids
        chosen = by_id[draft["example_id"]] if deferred else draft
        other = by_id[draft["example_id"]]
        rows.append({
            **chosen,
            "run_id": run_id, "method": "seq_cascade", "params": params,
            "latency_s": draft["latency_s"] + (other["latency_s"] if deferred else 0.0),
            "latency_trials_s": None,
            "drafter_calls": draft["drafter_calls"],
            "verifier_calls": other["verifier_calls"] if deferred else 0,
            "deferred": float(chosen["output_tokens"]) if deferred else 0.0,
            "confidence": draft["confidence"],
        })
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def summarize(results: Path) -> pd.DataFrame:
    """One row per method run, from the results files only."""
    manifest = read_manifest(results)
    metric = manifest["config"]["task"]["metric"]
    temperature = manifest["config"]["decoding"]["temperature"]
    runs = load_examples(results)
    costs_path = results / CALL_COSTS_FILE
    verify_costs = json.loads(costs_path.read_text())["verify_call_cost"] if costs_path.exists() else {}
    verifier = {row["example_id"]: row["latency_s"] for row in runs.get("verifier", [])}
    step_cost = {}
    for role in ("drafter", "verifier"):
        rows = runs.get(role, [])
        calls = sum(row[f"{role}_calls"] for row in rows)
        step_cost[role] = sum(row["latency_s"] for row in rows) / calls if calls else math.nan
    cost_ratio = step_cost["drafter"] / step_cost["verifier"]
    verifier_cost = _mean(row["verifier_calls"] for row in runs.get("verifier", [])) * step_cost["verifier"]
    records = []
    for run_id, rows in runs.items():
        params = rows[0]["params"]
        latencies = pd.Series([row["latency_s"] for row in rows])
        common = [row for row in rows if row["example_id"] in verifier]
        relative = (_mean(r["latency_s"] for r in common) / _mean(verifier[r["example_id"]] for r in common)
                    if common else math.nan)
        drafted = sum(row["drafted"] for row in rows)
        accepted = sum(row["accepted"] for row in rows)
        n_rounds = sum(row["rounds"] for row in rows)
        tokens = sum(row["output_tokens"] for row in rows)
        acceptance = accepted / drafted if drafted else math.nan
        acceptance_prob = _acceptance_prob(rows)
        gamma = params.get("draft_length")
        predicted = predicted_at_r = math.nan
        verify_cost = verify_costs.get(str(gamma), math.nan) if gamma else math.nan
        if gamma and drafted and not math.isnan(cost_ratio) and not math.isnan(acceptance_prob):
            calls = drafter_calls_per_round(rows[0]["method"], params, gamma)
            predicted = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls)
            predicted_at_r = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls, verify_cost)
        records.append({
            "run_id": run_id,
            "method": rows[0]["method"],
            "rule": params.get("rule"),
            "alpha": params.get("alpha"),
            "threshold": params.get("threshold"),
            "beta": params.get("beta"),
            "bonus": params.get("bonus"),
            "draft_length": gamma,
            "temperature": temperature,
            "n": len(rows),
            "metric": metric,
            "quality": corpus_score(metric, [r["prediction"] for r in rows], [r["reference"] for r in rows]),
            "latency_mean_s": latencies.mean(),
            "latency_p50_s": latencies.median(),
            "latency_std_s": latencies.std(ddof=0),
            "trial_cv": _trial_cv(rows),
            "relative_latency": relative,
            "speedup": 1.0 / relative if relative else math.nan,
            "acceptance_rate": acceptance,
            "acceptance_prob": acceptance_prob,
            "tokens_per_round": tokens / n_rounds if n_rounds else math.nan,
            "deferral_rate": sum(row["deferred"] for row in rows) / tokens if tokens else math.nan,
            "output_tokens_mean": tokens / len(rows),
            "drafter_calls_mean": _mean(row["drafter_calls"] for row in rows),
            "verifier_calls_mean": _mean(row["verifier_calls"] for row in rows),
            "cost_ratio": cost_ratio,
            "predicted_speedup": predicted,
            "verify_cost": verify_cost,
            "predicted_speedup_at_r": predicted_at_r,
            # Machine-independent view: counted calls weighted by the measured per-call costs.
            "relative_cost": (_mean(row["drafter_calls"] for row in rows) * step_cost["drafter"]
                              + _mean(row["verifier_calls"] for row in rows) * step_cost["verifier"])
            / verifier_cost,
        })
    order = {"verifier": 0, "drafter": 1, "spec_decode": 2, "lossy_spec_decode": 3, "token_cascade": 4,
             "seq_cascade": 5, "bild": 6, "spec_cascade": 7}
    frame = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    frame["_order"] = frame["method"].map(order)
    frame = frame.sort_values(["_order", "rule", "bonus", "draft_length", "beta", "alpha", "threshold"],
                              na_position="first", kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def write_summary(results: Path) -> pd.DataFrame:
    frame = summarize(results)
    frame.to_csv(results / "summary.csv", index=False, float_format="%.6g")
    return frame


def with_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `curve` column: the curve each row belongs to (see `group_key`)."""
    return frame.assign(curve=[group_key(row) for _, row in frame.iterrows()])


def group_key(row) -> str:
    """The curve a summary row belongs to: its method and every parameter but the swept one."""
    parts = [row["method"]]
    if isinstance(row.get("rule"), str):
        parts.append(row["rule"])
    if row["method"] in ("lossy_spec_decode", "bild") and not pd.isna(row.get("beta")):
        parts.append(f"beta={row['beta']:g}")
    if row.get("bonus") == "verifier":
        parts.append("bonus=verifier")
    return " ".join(parts)

