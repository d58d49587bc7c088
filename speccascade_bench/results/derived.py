"""The runs evaluated from other runs' outputs instead of decoded: the sequence cascades at a deferral rate
(seq_cascade's `alpha`, chain_seq_cascade's `alphas`), whose deferrals rank a whole run's confidences.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

from ..decoding import deferral, router
from ..decoding.methods import DRAFTER, METHODS, MIDDLE, REFERENCE, resolve_hook
from ..files import ResultsError, write_atomic
from ..models.settings import chain_roles
from .record import ExampleRow, calls_of
from .rows import examples_dir, read_run
from .settings import MethodRun


def _one_model_rows(out: Path, roles: int) -> list[list[ExampleRow]]:
    """The rows of each model alone, smallest first, for a chain of `roles` models."""
    names = [DRAFTER, *(MethodRun(MIDDLE, {"level": level}).run_id for level in range(1, roles - 1)), REFERENCE]
    return [read_run(examples_dir(out) / f"{name}.jsonl")[0] for name in names]


def write_derived(out: Path, derived: list[MethodRun]) -> None:
    """Write each derived run's rows, whole, from the one-model runs in the results folder: the rows its method's
    derive hook (`MethodSpec.derive`, `module:function` in this layer) gives."""
    for run in derived:
        rows = resolve_hook(METHODS[run.method].derive, __package__)(out, run)
        path = examples_dir(out) / f"{run.run_id}.jsonl"
        write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                     tmp=path.with_suffix(".tmp"))


def seq_cascade_run(out: Path, run: MethodRun) -> list[dict]:
    """seq_cascade's derive hook: its rows at the run's deferral rate, from the folder's drafter and verifier."""
    drafter, verifier = _one_model_rows(out, 2)
    return seq_cascade_rows(drafter, verifier, run.params["alpha"], run.run_id, run.params)


def chain_seq_cascade_run(out: Path, run: MethodRun) -> list[dict]:
    """chain_seq_cascade's derive hook: its rows at the run's rates, from the folder's models alone."""
    rates = run.params["alphas"]
    return chain_seq_cascade_rows(_one_model_rows(out, len(rates) + 1), rates, run.run_id, run.params)


def chain_seq_cascade_rows(models: list[list[ExampleRow]], rates: list[float], run_id: str, params: dict) -> list[dict]:
    """The Chow cascade over a chain at a deferral rate per level, from each model's own outputs (`models`, smallest
    first): of the examples that reach model i, the `rates[i]` fraction with its lowest confidence
    (`sequence_confidence`) go on to model i + 1; the verifier keeps what reaches it. An example's latency is the
    sum of the models that decoded it, and so are its calls."""
    by_model = [{row.example_id: row for row in rows} for rows in models]
    shared = sorted(set.intersection(*(set(rows) for rows in by_model)))
    stops: dict[int, int] = {}  # example -> the model whose output it keeps
    reaching = shared
    for i, (rows, rate) in enumerate(zip(by_model, rates, strict=False)):
        order = sorted(reaching, key=lambda e: (sequence_confidence(rows[e], params), e))
        cut = round(rate * len(order))
        stops.update({e: i for e in order[cut:]})
        reaching = order[:cut]
    stops.update({e: len(models) - 1 for e in reaching})
    roles = chain_roles(len(models))
    out = []
    for example in shared:
        stop = stops[example]
        ran = [by_model[i][example] for i in range(stop + 1)]
        calls = {role: calls_of(ran[i], role) if i <= stop else 0 for i, role in enumerate(roles)}
        first = ran[0]
        out.append(replace(
            ran[-1], run_id=run_id, method="chain_seq_cascade", params=params,
            latency_s=sum(row.latency_s for row in ran), latency_trials_s=None, calls=calls, levels=None,
            deferred=float(ran[-1].output_tokens) if stop == len(models) - 1 else 0.0,
            confidence=first.confidence, token_logprobs=first.token_logprobs,
        ).to_json())
    return out


def seq_cascade_rows(drafter: list[ExampleRow], verifier: list[ExampleRow], rate: float, run_id: str,
                     params: dict) -> list[dict]:
    """Sequence-level Chow cascade at a deferral rate, from the drafter's and verifier's outputs: the
    `rate` fraction of examples with the lowest drafter confidence (`sequence_confidence`) are deferred.
    Latency of a deferred example is the drafter's plus the verifier's. The rows as lines hold them."""
    by_id = {row.example_id: row for row in verifier}
    common = [row for row in drafter if row.example_id in by_id]
    order = sorted(common, key=lambda row: (sequence_confidence(row, params), row.example_id))
    deferred_ids = {row.example_id for row in order[: round(rate * len(order))]}
    rows = []
    for draft in common:
        deferred = draft.example_id in deferred_ids
        other = by_id[draft.example_id]
        chosen = other if deferred else draft
        rows.append(replace(
            chosen, run_id=run_id, method="seq_cascade", params=params,
            latency_s=draft.latency_s + (other.latency_s if deferred else 0.0), latency_trials_s=None,
            calls={DRAFTER: calls_of(draft, DRAFTER), REFERENCE: calls_of(other, REFERENCE) if deferred else 0},
            deferred=float(chosen.output_tokens) if deferred else 0.0,
            confidence=draft.confidence, token_logprobs=draft.token_logprobs,
        ).to_json())
    return rows


def sequence_confidence(row: ExampleRow, params: dict) -> float:
    """A drafter row's confidence under seq_cascade's `sequence_score` (`deferral.sequence_score`). The mean is
    the row's `confidence`; the sum follows from it; a quantile needs the token log-probabilities, which rows
    recorded before they existed lack (a ResultsError: run the drafter again)."""
    score = params.get("sequence_score", "chow_average")
    if score == "chow_average":
        return row.confidence
    logprobs = row.token_logprobs
    if score == deferral.LEARNED and logprobs is not None:  # minus the router's probability that deferring pays
        features = router.sequence_features(logprobs)
        if not all(math.isfinite(value) for value in features):
            raise ResultsError(f"example {row.example_id} of {row.run_id or DRAFTER} has a token "
                               "log-probability that is not a finite number; the learned score cannot rank it")
        return -router.read_router(params["router"]).probability(features)
    if logprobs is None:
        if score == "chow_sum":
            return row.confidence * row.output_tokens
        run_id = row.run_id or DRAFTER
        raise ResultsError(f"the rows of {run_id} have no token_logprobs (recorded by an earlier version), which "
                           f"{score} needs; delete examples/{run_id}.jsonl to decode that model again")
    return deferral.sequence_score(logprobs, score, params.get("quantile"))
