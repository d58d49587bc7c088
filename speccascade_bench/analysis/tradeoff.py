"""Reading a quality-latency curve the way the paper's Table 2 does.

A curve is its measured points (relative latency, quality), taken in order of latency and joined by
straight lines. Values read between two measured points are interpolated and marked as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    value: float
    interpolated: bool

    def text(self, fmt: str = "{:.3f}") -> str:
        return fmt.format(self.value) + (" (interp.)" if self.interpolated else "")


def _sorted(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return sorted((float(x), float(y)) for x, y in points)


def latency_to_match(points: Sequence[tuple[float, float]], quality: float) -> Reading | None:
    """The lowest relative latency at which the curve reaches `quality`, or None if it never does."""
    curve = _sorted(points)
    for i, (latency, q) in enumerate(curve):
        if q >= quality:
            if i == 0:
                return Reading(latency, False)
            prev_latency, prev_q = curve[i - 1]
            share = (quality - prev_q) / (q - prev_q)
            crossing = prev_latency + share * (latency - prev_latency)
            return Reading(crossing, crossing != latency)
    return None


def best_quality_within(points: Sequence[tuple[float, float]], max_latency: float = 1.0) -> Reading | None:
    """The best quality the curve reaches at relative latency <= max_latency, or None if no part of it
    is that fast."""
    curve = _sorted(points)
    best: Reading | None = None
    for i, (latency, q) in enumerate(curve):
        if latency <= max_latency:
            if best is None or q > best.value:
                best = Reading(q, False)
        elif i > 0 and curve[i - 1][0] < max_latency:
            prev_latency, prev_q = curve[i - 1]
            at_limit = prev_q + (q - prev_q) * (max_latency - prev_latency) / (latency - prev_latency)
            if best is None or at_limit > best.value:
                best = Reading(at_limit, True)
    return best


def acceptance_probability(accepted: int, rejections: int) -> float:
    """The per-position acceptance probability a of Leviathan et al.'s formula: accepted draft tokens
    over the draft positions the verifier judged (each accepted one, plus the rejected one that ends a
    round). Draft tokens after a rejection are never judged, so accepted / drafted is lower."""
    judged = accepted + rejections
    return accepted / judged if judged else math.nan


def drafter_calls_per_round(params: dict, gamma: int) -> int:
    """Drafter calls of one speculative round: gamma, plus one for a method whose bonus token is drawn from
    its target (a speculative cascade's `bonus: target`: it needs the drafter's distribution at the bonus
    position)."""
    return gamma + 1 if params.get("bonus") == "target" else gamma


def leviathan_speedup(acceptance: float, gamma: int, cost_ratio: float, drafter_calls: int | None = None,
                      verify_cost: float = 1.0) -> float:
    """Leviathan et al.'s expected wall-time improvement over the verifier alone, from the acceptance
    rate a, the draft length gamma and the per-call cost ratio c (drafter / verifier):
    `(1 - a^(gamma+1)) / ((1 - a)(gamma c + 1))`. `drafter_calls` replaces gamma in the cost of a round
    for a method that calls the drafter more often (a speculative cascade whose bonus token is drawn
    from its target needs the drafter's distribution at the bonus position: gamma + 1 calls).

    The formula prices the verifier call that scores a round's gamma + 1 positions at one verifier step.
    `verify_cost` r replaces that 1 where the machine charges more (`(gamma c + r)` in the denominator):
    the bound a loop can reach on hardware where a wider call costs r steps."""
    calls = gamma if drafter_calls is None else drafter_calls
    if acceptance >= 1.0:
        return (gamma + 1) / (calls * cost_ratio + verify_cost)
    return (1 - acceptance ** (gamma + 1)) / ((1 - acceptance) * (calls * cost_ratio + verify_cost))


def rounds_to_settle(acceptance: float, gamma: int, wanted: int) -> float:
    """The expected rounds a level needs to settle at least `wanted` tokens when each round drafts `gamma` and
    accepts each with probability a: a round settles k tokens (k - 1 accepted, then a replacement) with
    probability a^(k-1)(1 - a) for k <= gamma, and gamma + 1 with a^gamma; R(m) = 1 + sum_k P(k) R(m - k),
    R(m <= 0) = 0."""
    settles = [acceptance ** (k - 1) * (1 - acceptance) for k in range(1, gamma + 1)] + [acceptance ** gamma]
    rounds = [0.0] * (wanted + 1)
    for m in range(1, wanted + 1):
        rounds[m] = 1.0 + sum(p * rounds[m - k] for k, p in enumerate(settles, start=1) if m - k > 0)
    return rounds[wanted]


def chain_speedup(acceptances: Sequence[float], gammas: Sequence[int], costs: Sequence[float],
                  bonus_rows: bool = False, horizontal: int | None = None) -> float:
    """The expected speed-up of a chain of models over its largest alone (docs/ALGORITHMS.md, "The chain's
    predicted speed-up"): level j (1..n) drafts `gammas[j-1]` tokens of level j - 1 per round and accepts each
    with probability `acceptances[j-1]`; `costs` are each model's per-call cost in verifier steps (the
    verifier's, 1, last). Settling m tokens at level 0 costs m c_0; at level j >= 1 it takes
    `rounds_to_settle(a_j, gamma_j, m)` rounds of cost D_{j-1} + c_j, where D_{j-1}, the cost of one draft from
    level j - 1, is that of settling gamma_j tokens there (gamma_j + 1 when the bonus is drawn from the target,
    `bonus_rows`). The top level settles E = (1 - a_n^(gamma_n + 1)) / (1 - a_n) tokens per round of cost
    D_{n-1} + 1: the speed-up is E / (D_{n-1} + 1), Leviathan et al.'s `leviathan_speedup` on a pair. With
    `horizontal` h (CS Drafting's horizontal cascade) the top level's draft is h tokens of level n - 1 and the
    rest of level 0: D_{n-1} = S_{n-1}(h) + (gamma_n - h + b) c_0. NaN when any input is."""
    if len(acceptances) != len(gammas) or len(costs) != len(gammas) + 1:
        raise ValueError("a chain of n + 1 models has n acceptances and draft lengths, and n + 1 costs")
    if any(isinstance(v, float) and math.isnan(v) for v in (*acceptances, *costs)):
        return math.nan

    def settling(level: int, wanted: int) -> float:  # the cost of settling `wanted` tokens at `level`
        if level == 0:
            return wanted * costs[0]
        gamma = gammas[level - 1]
        round_cost = settling(level - 1, gamma + bonus_rows) + costs[level]
        return rounds_to_settle(acceptances[level - 1], gamma, wanted) * round_cost

    top, gamma = acceptances[-1], gammas[-1]
    settled = gamma + 1 if top >= 1.0 else (1 - top ** (gamma + 1)) / (1 - top)
    if horizontal is not None and len(gammas) > 1 and horizontal < gamma:
        draft = settling(len(gammas) - 1, horizontal) + (gamma - horizontal + bonus_rows) * costs[0]
    else:
        draft = settling(len(gammas) - 1, gamma + bonus_rows)
    return settled / (draft + costs[-1])


def per_call_cost(seconds: Sequence[float], calls: Sequence[int]) -> float:
    """The measured cost of one forward call of a model: the total time of its one-model runs over their
    total forward calls (NaN without calls)."""
    total_calls = sum(calls)
    return sum(seconds) / total_calls if total_calls else math.nan
