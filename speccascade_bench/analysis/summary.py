"""The summary of a results folder, one row per method run: quality with a paired bootstrap interval
against the verifier on the same examples, latency, acceptance and the cost model's predictions.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

import pandas as pd

from ..decoding.methods import DRAFTER, METHODS, PARAMETERS, REFERENCE
from ..files import ResultsError, refuse_link, write_file
from ..run.folder import read_call_costs, read_manifest
from ..run.manifest import device_kinds
from ..run.rows import load_examples
from ..tasks.metrics import BootstrapInterval, corpus_score, paired_bootstrap
from .tradeoff import acceptance_probability, drafter_calls_per_round, leviathan_speedup, per_call_cost

SCORED_METRICS = ("exact_match", "f1", "pass_at_1")  # their quality is the mean of the rows' `score`

BOOTSTRAP_RESAMPLES = 1000

CONFIDENCE = 0.95

MIN_BOOTSTRAP_EXAMPLES = 10  # fewer examples give no interval: a resample of 2 examples says nothing

SUMMARY_COLUMNS = (
    "run_id", "method", *PARAMETERS, "temperature", "n", "metric",
    "quality", "quality_vs_verifier", "quality_ci_low", "quality_ci_high", "latency_mean_s", "latency_p50_s",
    "latency_std_s", "trial_cv", "relative_latency", "speedup",
    "acceptance_rate", "acceptance_prob", "tokens_per_round", "deferral_rate", "output_tokens_mean",
    "drafter_calls_mean", "verifier_calls_mean", "cost_ratio", "predicted_speedup", "verify_cost",
    "predicted_speedup_at_r", "relative_cost",
)


log = logging.getLogger(__name__)


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


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def shared_examples(runs: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], int]:
    """Every run's rows restricted to the examples that all runs recorded (so that qualities and latencies
    are compared on the same examples, whatever was interrupted or limited), and how many recorded
    examples that leaves out."""
    if not runs:
        return runs, 0
    shared = set.intersection(*({row["example_id"] for row in rows} for rows in runs.values()))
    kept = {run_id: [row for row in rows if row["example_id"] in shared] for run_id, rows in runs.items()}
    left_out = sum(len(rows) for rows in runs.values()) - sum(len(rows) for rows in kept.values())
    return {run_id: rows for run_id, rows in kept.items() if rows}, left_out


def summarize(results: Path) -> pd.DataFrame:
    """One row per method run, from the results files only, over the examples every run recorded
    (`shared_examples`; `frame.attrs["unshared_rows"]` counts the rows left out)."""
    manifest = read_manifest(results)
    metric = manifest["config"]["task"]["metric"]
    temperature = manifest["config"]["decoding"]["temperature"]
    runs, unshared = shared_examples(load_examples(results))
    verify_costs = read_call_costs(results)
    verifier = {row["example_id"]: row["latency_s"] for row in runs.get(REFERENCE, [])}
    step_cost = {}
    for method, role in ((DRAFTER, "drafter"), (REFERENCE, "verifier")):  # the one-model runs give per-call costs
        rows = runs.get(method, [])
        step_cost[role] = per_call_cost([row["latency_s"] for row in rows], [row[f"{role}_calls"] for row in rows])
    cost_ratio = step_cost["drafter"] / step_cost["verifier"]
    verifier_cost = _mean(row["verifier_calls"] for row in runs.get(REFERENCE, [])) * step_cost["verifier"]
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
            calls = drafter_calls_per_round(params, gamma)
            predicted = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls)
            predicted_at_r = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls, verify_cost)
        records.append({
            "run_id": run_id,
            "method": rows[0]["method"],
            **{name: params.get(name) for name in PARAMETERS},
            "temperature": temperature,
            "n": len(rows),
            "metric": metric,
            "quality": quality(results, metric, rows),
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
    reference_rows = runs.get(REFERENCE)
    for record in records:
        if reference_rows:
            interval = quality_difference(metric, runs[record["run_id"]], reference_rows)
            record.update(quality_vs_verifier=interval.difference, quality_ci_low=interval.low,
                          quality_ci_high=interval.high)
    frame = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    frame["_order"] = frame["method"].map({name: i for i, name in enumerate(METHODS)})  # the registry's order
    frame["_curve"] = [group_key(row) for _, row in frame.iterrows()]
    frame = frame.sort_values(["_order", "_curve", "draft_length", *PARAMETERS], na_position="first", kind="stable")
    frame = frame.drop(columns=["_order", "_curve"]).reset_index(drop=True)
    frame.attrs["unshared_rows"] = unshared
    return frame


def quality(results: Path, metric: str, rows: list[dict]) -> float:
    """A run's quality: the corpus score of its predictions, or for exact_match, f1 and pass_at_1 the mean of
    the rows' scores (computed at run time with the task's answer pattern and normalisation, or the sandbox)."""
    if metric in SCORED_METRICS:
        unscored = [row["example_id"] for row in rows if "score" not in row]
        if unscored:
            raise ResultsError(f"{results}: {len(unscored)} lines of {rows[0]['run_id']} have no score (example "
                               f"{unscored[0]}); {metric} is scored per example when it is decoded")
        return _mean(row["score"] for row in rows)
    return corpus_score(metric, [r["prediction"] for r in rows], [r["reference"] for r in rows])


def quality_difference(metric: str, rows: list[dict], reference_rows: list[dict]) -> BootstrapInterval:
    """A run's quality minus the verifier's on the same examples, with a paired bootstrap interval
    (CONFIDENCE, BOOTSTRAP_RESAMPLES, seed 0): `metrics.paired_bootstrap` over the rows matched by example.
    NaN with fewer than MIN_BOOTSTRAP_EXAMPLES examples."""
    by_id = {row["example_id"]: row for row in reference_rows}
    pairs = [(row, by_id[row["example_id"]]) for row in rows if row["example_id"] in by_id]
    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    scored = metric in SCORED_METRICS
    if len(pairs) < MIN_BOOTSTRAP_EXAMPLES:
        return BootstrapInterval(math.nan, math.nan, math.nan, 0)
    return paired_bootstrap(metric, [r["prediction"] for r in ours], [r["prediction"] for r in theirs],
                            [r["reference"] for r in theirs],
                            [r["score"] for r in ours] if scored else None,
                            [r["score"] for r in theirs] if scored else None,
                            resamples=BOOTSTRAP_RESAMPLES, seed=0, confidence=CONFIDENCE)


SUMMARY_FILE = "summary.csv"


def write_summary(results: Path, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the summary (`summarize`, unless given) to SUMMARY_FILE, never through a link; returns it."""
    frame = summarize(results) if frame is None else frame
    refuse_link(results / SUMMARY_FILE)
    write_file(results / SUMMARY_FILE, frame.to_csv(index=False, float_format="%.6g"))
    return frame


def summary_after_run(results: Path) -> None:
    """What `scb run` writes last into a folder: the summary, unless its examples ran on more than one kind of
    device (`scb report --mix-devices` then reports them together), in which case an older summary.csv is
    deleted as stale."""
    kinds = device_kinds(results)
    if len(kinds) > 1:
        log.warning("%s: examples ran on %d kinds of device (%s); no summary.csv: `scb report --mix-devices` "
                    "reports them together", results, len(kinds), ", ".join(kinds))
        (results / SUMMARY_FILE).unlink(missing_ok=True)
        return
    write_summary(results)


def with_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `curve` column: the curve each row belongs to (see `group_key`)."""
    return frame.assign(curve=[group_key(row) for _, row in frame.iterrows()])


def group_key(row) -> str:
    """The curve a summary row belongs to: its method and the parameters that name a curve (the registry's
    `labels_curve`: a rule, beta, a non-default choice), not the swept one."""
    spec = METHODS.get(row["method"])
    parts = [row["method"]]
    for param in spec.params if spec else ():
        value = row.get(param.name)
        if not param.labels_curve or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = param.label(value, "" if param.choices else f"{param.name}={value:g}", "=")
        if text is not None:
            parts.append(text)
    return " ".join(parts)
