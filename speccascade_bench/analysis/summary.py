"""The summary of a results folder, one row per method run: quality with a paired bootstrap interval
against the verifier on the same examples, latency, acceptance and the cost model's predictions.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..decoding.methods import DRAFTER, METHODS, MIDDLE, PARAMETERS, REFERENCE
from ..files import write_file
from ..models.settings import chain_roles
from ..results.folder import read_call_costs
from ..results.record import ExampleRow
from ..results.record import calls_of as calls
from ..results.rows import MAX_ROW_BYTES
from ..tasks.bootstrap import BootstrapInterval
from .curves import ratio_interval
from .quality import BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_BOOTSTRAP_EXAMPLES, Qualities
from .results import Results, first_samples, read_results
from .tradeoff import acceptance_probability, chain_speedup, drafter_calls_per_round, leviathan_speedup, per_call_cost

log = logging.getLogger(__name__)

def _acceptance_prob(rows: list[ExampleRow]) -> float:
    """`acceptance_probability` over a run's rows; NaN for results recorded without `rejections`."""
    if any(row.rejections is None for row in rows):
        return math.nan
    return acceptance_probability(sum(row.accepted for row in rows), sum(row.rejections for row in rows))


def _trial_cv(rows: list[ExampleRow]) -> float:
    """The spread of repeated timings: the mean over examples of the standard deviation of an example's
    timed trials over their mean (NaN with one trial per example, or for derived runs)."""
    spreads = []
    for row in rows:
        trials = row.latency_trials_s or []
        if len(trials) > 1:
            mean = sum(trials) / len(trials)
            spreads.append(statistics.pstdev(trials) / mean if mean > 0 else math.nan)
    return _mean(spreads) if spreads else math.nan


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _session(row: ExampleRow) -> str | None:
    worker = row.worker
    return worker.get("session") if isinstance(worker, dict) else None


def timed_apart(runs: dict[str, list[ExampleRow]]) -> dict[str, int]:
    """Per method run, the examples on which it was timed by another `scb run` than the verifier (`worker.session`:
    a run added or finished by a resume): their relative latencies compare times from different processes, and
    perhaps a differently loaded machine. A row with a session beside a verifier row without one (recorded before
    rows had sessions) is apart too. A run derived from the one-model runs' outputs (a deferral-rate
    `seq_cascade`, whose latency sums theirs) is apart on the examples where one of those runs is."""
    verifier = {row.example_id: _session(row) for row in runs.get(REFERENCE, [])}

    def apart(row: ExampleRow) -> bool:
        ours, theirs = _session(row), verifier.get(row.example_id)
        return row.example_id in verifier and ours != theirs

    decoded = {run_id for run_id, rows in runs.items() if rows[0].latency_trials_s is not None}
    sources = {row.example_id for run_id in decoded for row in runs[run_id]
               if row.method in (DRAFTER, MIDDLE) and apart(row)}
    counts = {}
    for run_id, rows in runs.items():
        n = sum(1 for row in rows if (apart(row) if run_id in decoded else row.example_id in sources))
        if n:
            counts[run_id] = n
    return counts


def shared_examples(runs: dict[str, list[ExampleRow]]) -> tuple[dict[str, list[ExampleRow]], int]:
    """Every run's rows restricted to the examples that all runs recorded (so that qualities and latencies
    are compared on the same examples, whatever was interrupted or limited), and how many recorded
    examples that leaves out."""
    if not runs:
        return runs, 0
    shared = set.intersection(*({row.example_id for row in rows} for rows in runs.values()))
    kept = {run_id: [row for row in rows if row.example_id in shared] for run_id, rows in runs.items()}
    left_out = sum(len(rows) for rows in runs.values()) - sum(len(rows) for rows in kept.values())
    return {run_id: rows for run_id, rows in kept.items() if rows}, left_out


@dataclass
class Folder:
    """What the columns read besides a run's own rows: the folder's metric and temperature, the verifier's rows
    and latencies by example, each role's cost per forward call (from the one-model runs) and r per draft
    length (`call_costs.json`)."""

    results: Path
    metric: str
    temperature: float
    reference_rows: list[ExampleRow]
    step_cost: dict[str, float]
    verify_costs: dict[str, float]
    warmup: int | None = None  # the examples decoded untimed before timing (the config's `timing.warmup`)

    def __post_init__(self) -> None:
        self.verifier = {row.example_id: row.latency_s for row in self.reference_rows}
        self.cost_ratio = self.step_cost["drafter"] / self.step_cost["verifier"]
        self.verifier_cost = _mean(calls(row, "verifier") for row in self.reference_rows) * self.step_cost["verifier"]
        self.qualities = Qualities(self.results, self.metric, self.reference_rows)


class Run:
    """One method run's rows (over the examples every run recorded), with the sums its columns share."""

    def __init__(self, run_id: str, rows: list[ExampleRow]):
        self.run_id, self.rows, self.params = run_id, rows, rows[0].params
        self.drafted = sum(row.drafted for row in rows)
        self.tokens = sum(row.output_tokens for row in rows)
        self.rounds = sum(row.rounds for row in rows)
        self.acceptance_prob = _acceptance_prob(rows)
        self.gamma = self.params.get("draft_length")
        self._versus: BootstrapInterval | None = None
        self._latency_interval: tuple[float, float] | None = None

    def mean(self, field: str) -> float:
        return _mean(getattr(row, field) for row in self.rows)

    def versus(self, folder: Folder) -> BootstrapInterval:
        """Its quality minus the verifier's on the same examples (`quality_difference`), computed once."""
        if self._versus is None:
            self._versus = folder.qualities.versus(self.rows)
        return self._versus

    def latency_interval(self, folder: Folder) -> tuple[float, float]:
        """`_latency_interval`, computed once."""
        if self._latency_interval is None:
            self._latency_interval = _latency_interval(folder, self)
        return self._latency_interval


def _paired_latencies(folder: Folder, run: Run) -> tuple[list[float], list[float]]:
    """The run's latencies and the verifier's, on the examples both decoded, in the run's order."""
    common = [row for row in run.rows if row.example_id in folder.verifier]
    return [row.latency_s for row in common], [folder.verifier[row.example_id] for row in common]


def _relative_latency(folder: Folder, run: Run) -> float:
    ours, theirs = _paired_latencies(folder, run)
    return _ratio(_mean(ours), _mean(theirs)) if ours else math.nan


def _median_ratio(folder: Folder, run: Run) -> float:
    """The median over examples of the run's latency over the verifier's on that example: unlike the ratio of means,
    no one slow example decides it."""
    ratios = [_ratio(a, b) for a, b in zip(*_paired_latencies(folder, run), strict=True)]
    return statistics.median(ratios) if ratios else math.nan


WEAK_EXAMPLES = 10  # fewer examples than this: no interval, and a mean that one example can move
WEAK_SHARE = 0.25  # one example holding more than this share of a run's time decides its mean latency


def _weak(folder: Folder, run: Run) -> str:
    """Why a run's numbers are weak, if they are: too few examples, no warm-up before timing (the first examples pay
    for one-time costs), or one example holding more than WEAK_SHARE of its time; "" when none holds."""
    notes = []
    if len(run.rows) < WEAK_EXAMPLES:
        notes.append(f"{len(run.rows)} examples")
    if folder.warmup == 0 and run.rows[0].latency_trials_s is not None:  # a decoded run, timed cold
        notes.append("no warm-up")
    latencies = [row.latency_s for row in run.rows]
    if len(latencies) > 1 and sum(latencies) > 0 and max(latencies) / sum(latencies) > WEAK_SHARE:
        notes.append(f"one example {100 * max(latencies) / sum(latencies):.0f}% of the time")
    return "; ".join(notes)


def _latency_interval(folder: Folder, run: Run) -> tuple[float, float]:
    """The spread of the relative latency across examples: a paired bootstrap interval (`curves.ratio_interval`,
    BOOTSTRAP_RESAMPLES, seed 0, CONFIDENCE) of the run's mean latency over the verifier's on the same examples."""
    ours, theirs = _paired_latencies(folder, run)
    if run.run_id == REFERENCE or len(ours) < MIN_BOOTSTRAP_EXAMPLES:
        return math.nan, math.nan
    return ratio_interval(ours, theirs, BOOTSTRAP_RESAMPLES, 0, CONFIDENCE)


def _verify_cost(folder: Folder, run: Run) -> float:
    return folder.verify_costs.get(str(run.gamma), math.nan) if run.gamma else math.nan


def _level_acceptance(run: Run) -> list[float] | None:
    """A chain run's acceptance probability at each level (`acceptance_probability` of its rows' `levels`)."""
    levels = [row.levels for row in run.rows]
    if not levels or any(not isinstance(level, list) or len(level) != len(levels[0]) for level in levels):
        return None
    return [acceptance_probability(sum(row[j]["accepted"] for row in levels),
                                   sum(row[j]["rejections"] for row in levels)) for j in range(len(levels[0]))]


def _chain_predicted(folder: Folder, run: Run) -> float:
    """`chain_speedup` from a chain run's acceptance per level, its draft lengths and each model's measured cost."""
    acceptances, gammas = _level_acceptance(run), run.params.get("draft_lengths")
    if acceptances is None or not run.drafted or not isinstance(gammas, list) or len(gammas) != len(acceptances):
        return math.nan
    costs = [folder.step_cost.get(role, math.nan) / folder.step_cost["verifier"]
             for role in chain_roles(len(acceptances) + 1)]
    return chain_speedup(acceptances, gammas, costs,
                         run.params.get("bonus") == "target" and "rules" in run.params, run.params.get("horizontal"))


def _predicted(folder: Folder, run: Run, at_r: bool = False) -> float:
    """Leviathan et al.'s speed-up from the run's acceptance probability, gamma and the cost ratio (with the
    verifier call priced at its measured r when `at_r`), or a chain's (`chain_speedup`, not at r); NaN for a run
    that drafts nothing, and for a drafter without a model (prompt lookup: its rounds draft from 0 to gamma
    tokens, which the formula does not model)."""
    if "draft_lengths" in run.params:
        return math.nan if at_r else _chain_predicted(folder, run)
    spec = METHODS.get(run.rows[0].method)
    if spec is not None and "drafter" not in spec.roles:  # prompt lookup: drafts vary per round, and cost no call
        return math.nan
    if not (run.gamma and run.drafted) or math.isnan(folder.cost_ratio) or math.isnan(run.acceptance_prob):
        return math.nan
    calls = drafter_calls_per_round(run.params, run.gamma)
    return leviathan_speedup(run.acceptance_prob, run.gamma, folder.cost_ratio, calls,
                             _verify_cost(folder, run) if at_r else 1.0)


def _relative_cost(folder: Folder, run: Run) -> float:
    """Counted calls weighted by the measured per-call costs, relative to the verifier's: a view of the
    method that does not depend on this machine's overheads."""
    cost = sum(_mean(calls(row, role) for row in run.rows) * folder.step_cost[role] for role in folder.step_cost)
    return _ratio(cost, folder.verifier_cost)


def _param(value):
    """A parameter's summary cell: its value, or a chain's per-level values joined by `+`."""
    return _joined(value) if isinstance(value, list) else value


def _joined(values: list | None, fmt: str = "{}") -> str | None:
    """Per-level values as one cell: joined by `+`, as in run ids."""
    return None if values is None else "+".join(fmt.format(v) for v in values)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


Column = Callable[[Folder, Run], Any]
# The summary's columns in order, each with the one function that computes it (`summary.csv`).
COLUMNS: tuple[tuple[str, Column], ...] = (
    ("run_id", lambda f, r: r.run_id),
    ("method", lambda f, r: r.rows[0].method),
    *((name, lambda f, r, name=name: _param(r.params.get(name))) for name in PARAMETERS),
    ("temperature", lambda f, r: f.temperature),
    ("n", lambda f, r: len(r.rows)),
    ("metric", lambda f, r: f.metric),
    ("quality", lambda f, r: f.qualities.quality(r.rows)),
    ("quality_vs_verifier", lambda f, r: r.versus(f).difference),
    ("quality_ci_low", lambda f, r: r.versus(f).low),
    ("quality_ci_high", lambda f, r: r.versus(f).high),
    ("latency_mean_s", lambda f, r: r.mean("latency_s")),
    ("latency_p50_s", lambda f, r: statistics.median(row.latency_s for row in r.rows)),
    ("latency_std_s", lambda f, r: statistics.pstdev(row.latency_s for row in r.rows)),
    ("trial_cv", lambda f, r: _trial_cv(r.rows)),
    ("relative_latency", _relative_latency),
    ("relative_latency_median", _median_ratio),
    ("relative_latency_low", lambda f, r: r.latency_interval(f)[0]),
    ("relative_latency_high", lambda f, r: r.latency_interval(f)[1]),
    ("speedup", lambda f, r: _ratio(1.0, _relative_latency(f, r))),
    ("acceptance_rate", lambda f, r: _ratio(sum(row.accepted for row in r.rows), r.drafted)),
    ("acceptance_prob", lambda f, r: r.acceptance_prob),
    ("acceptance_by_level", lambda f, r: _joined(_level_acceptance(r), "{:.3f}")),
    ("tokens_per_round", lambda f, r: _ratio(r.tokens, r.rounds)),
    ("deferral_rate", lambda f, r: _ratio(sum(row.deferred for row in r.rows), r.tokens)),
    ("output_tokens_mean", lambda f, r: r.tokens / len(r.rows)),
    ("drafter_calls_mean", lambda f, r: _mean(calls(row, "drafter") for row in r.rows)),
    ("verifier_calls_mean", lambda f, r: _mean(calls(row, "verifier") for row in r.rows)),
    ("cost_ratio", lambda f, r: f.cost_ratio),
    ("predicted_speedup", _predicted),
    ("verify_cost", _verify_cost),
    ("predicted_speedup_at_r", lambda f, r: _predicted(f, r, at_r=True)),
    ("relative_cost", _relative_cost),
    ("weak", _weak),
)
SUMMARY_COLUMNS = tuple(name for name, _ in COLUMNS)


def summarize(results: Path, read: Results | None = None, max_bytes: int = MAX_ROW_BYTES) -> pd.DataFrame:
    """One row per method run (COLUMNS), from the results files only (`read_results`, unless `read` already holds
    them), over the examples every run recorded (`shared_examples`; `frame.attrs["unshared_rows"]` counts the rows
    left out), in the registry's order. `frame.attrs["timed_apart"]`: the runs timed in another `scb run` than the
    verifier on some examples (`timed_apart`), out of `frame.attrs["examples"]`; `frame.attrs["samples"]`: the
    first examples' outputs (`first_samples`)."""
    read = read or read_results(results, max_bytes)
    manifest = read.manifest
    runs, unshared = shared_examples(read.runs)
    step_cost = {"drafter": math.nan, "verifier": math.nan}
    for rows in runs.values():  # the one-model runs give each role's cost per forward call
        spec = METHODS.get(rows[0].method)
        roles = spec.roles_for((), rows[0].params) if spec and spec.baseline else ()
        if len(roles) == 1:
            step_cost[roles[0]] = per_call_cost([row.latency_s for row in rows],
                                                [calls(row, roles[0]) for row in rows])
    timing = manifest["config"].get("timing")
    folder = Folder(results, manifest["config"]["task"]["metric"], manifest["config"]["decoding"]["temperature"],
                    runs.get(REFERENCE, []), step_cost, read_call_costs(results),
                    timing.get("warmup") if isinstance(timing, dict) else None)
    folder.qualities.share(list(runs.values()))
    records = [{name: column(folder, run) for name, column in COLUMNS}
               for run in (Run(run_id, rows) for run_id, rows in runs.items())]
    frame = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    # the registry's order; a method it does not hold (a plugin's, reported without it) after its own
    frame["_order"] = frame["method"].map({name: i for i, name in enumerate(METHODS)}).fillna(len(METHODS))
    frame["_curve"] = [group_key(row) for _, row in frame.iterrows()]
    frame = frame.sort_values(["_order", "_curve", "draft_length", *PARAMETERS], na_position="first", kind="stable")
    frame = frame.drop(columns=["_order", "_curve"]).reset_index(drop=True)
    frame.attrs["unshared_rows"] = unshared
    frame.attrs["timed_apart"] = timed_apart(runs)
    frame.attrs["examples"] = len(runs.get(REFERENCE, []))
    frame.attrs["samples"] = first_samples(runs)
    return frame


SUMMARY_FILE = "summary.csv"
SUMMARY_FLOAT = "%.6g"  # the digits summary.csv keeps of a number


def write_summary(results: Path, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the summary (`summarize`, unless given) to SUMMARY_FILE, never through a link; returns it."""
    frame = summarize(results) if frame is None else frame
    write_file(results / SUMMARY_FILE, frame.to_csv(index=False, float_format=SUMMARY_FLOAT))
    return frame


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
        text = param.label(value, "" if param.choices or param.path else f"{param.name}={value:g}", "=")
        if text is not None:
            parts.append(text)
    return " ".join(parts)
