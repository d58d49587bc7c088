"""The deferral rules of the speculative cascades: one registry, one function per rule.

A rule decides, from the drafter's and the verifier's distributions (`rules.Dists`: unscaled `probs` and
scaled `scaled`, each [n, V]) and its alpha, where the cascade defers to the verifier: per position (`[n]`
booleans; the target there is the verifier's distribution, elsewhere the drafter's) or per token (`[n, V]`
booleans r(v); the target is the token-level mixture of paper eq. 11). Decisions read the unscaled
distributions; the OPT rule's TV term the scaled ones (docs/ALGORITHMS.md).

Adding a rule is one function with `@deferral_rule(name, alpha=(low, high))`, here or in any module imported
before a config is read: configs accept its name for `spec_cascade`'s `rule` at once, with its alpha range,
and the speculative loop uses it. A *coupled* rule (`coupled=True`: `round_rule`, `budget_rule`) decides with
state carried across positions and rounds of one decode: the decorated object is then a class, made once per
decode as `cls(alpha, gamma, **params)` (its `params`: `RuleParam`s, which `spec_cascade` accepts with that
rule), with `decide(draft, verifier, k)` for a round's rows (its k drafted positions, then the bonus position) and
`settle(accepted, judged, bonus_kept)` once the round is judged (only the positions it keeps may change the
state). The rules are tensor expressions, so this module does not import torch and configs are checked without it
(the tensors go unannotated: `draft` and `verifier` are `rules.Dists`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RuleParam:
    """A parameter of a coupled rule beyond alpha: `spec_cascade` takes it with that rule (a number in
    [low, high]; None is unbounded), `default` where it may be left out."""

    name: str
    description: str
    low: float | None = None
    high: float | None = None
    default: float | None = None
    tag: str = ""  # its prefix in a run id; default: its name


@dataclass(frozen=True)
class DeferralRule:
    name: str
    alpha: tuple[float | None, float | None]  # the valid range of alpha; None is unbounded
    per_token: bool  # r(v) per token ([n, V]) rather than one decision per position ([n])
    decide: Callable[..., Any]  # (draft: Dists, verifier: Dists, alpha[, router]) -> bool tensor, or [n] weights;
    #                             for a coupled rule, the class of its per-decode state (see above)
    uses_router: bool = False  # a learned rule: decide also takes the router, and returns weights in [0, 1]
    coupled: bool = False  # decisions depend on earlier positions and rounds of the decode (a pair's loop only)
    params: tuple[RuleParam, ...] = ()


RULES: dict[str, DeferralRule] = {}  # the registry, in order of registration


def deferral_rule(name: str, alpha: tuple[float | None, float | None] = (None, None), per_token: bool = False,
                  uses_router: bool = False, coupled: bool = False, params: tuple[RuleParam, ...] = ()):
    """Register the decorated function (a class for a coupled rule) as the deferral rule `name` with its alpha
    range."""

    def register(decide: Callable) -> Callable:
        if name in RULES:
            raise ValueError(f"the deferral rule {name!r} is registered twice")
        if params and not coupled:
            raise ValueError(f"the deferral rule {name!r}: parameters beyond alpha are for coupled rules")
        if coupled and (per_token or uses_router):
            raise ValueError(f"the deferral rule {name!r}: a coupled rule decides per position, without a router")
        RULES[name] = DeferralRule(name, alpha, per_token, decide, uses_router, coupled, tuple(params))
        return decide

    return register


SEQUENCE_SCORES = ("chow_average", "chow_sum", "chow_quantile")

LEARNED = "learned"  # the learned sequence score and token rule (`decoding.router`)


def sequence_score(token_logprobs: Sequence[float], score: str = "chow_average",
                   quantile: float | None = None) -> float:
    """A whole output's confidence from the drafter's log-probabilities of its own tokens (higher is surer), the
    scores of Gupta et al. (2024): `chow_average` their mean, `chow_sum` their sum (it favours short outputs),
    `chow_quantile` their `quantile`-quantile, linearly interpolated between the sorted values (at a low
    quantile the least confident tokens decide, whatever the length). An empty output scores 0."""
    values = list(token_logprobs)  # summed in output order, as a run sums them while decoding
    if not values:
        return 0.0
    if score == "chow_sum":
        return sum(values)
    if score == "chow_average":
        return sum(values) / len(values)
    values.sort()
    if score != "chow_quantile":
        raise ValueError(f"unknown sequence score {score!r}; known: {', '.join(SEQUENCE_SCORES)}")
    if quantile is None or not 0.0 <= quantile <= 1.0:
        raise ValueError(f"chow_quantile needs a quantile in [0, 1], got {quantile}")
    position = quantile * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (position - low) * (values[high] - values[low])


def tv_distance(a, b):
    """Total variation distance per position: [..., V] x [..., V] -> [...]."""
    return 0.5 * (a - b).abs().sum(-1)


def chow_defers(draft_probs, alpha: float):
    """Eq. 2 on unscaled drafter probabilities [..., V] -> [...]: defer iff max q < 1 - alpha."""
    return draft_probs.amax(-1) < 1.0 - alpha


@deferral_rule("chow", alpha=(0.0, 1.0))
def defer_chow(draft, verifier, alpha: float):
    """Eq. 2: defer iff max q < 1 - alpha (the verifier is not consulted)."""
    return chow_defers(draft.probs, alpha)


@deferral_rule("diff", alpha=(-1.0, 1.0))
def defer_diff(draft, verifier, alpha: float):
    """Eq. 5: defer iff max q < max p - alpha."""
    return draft.probs.amax(-1) < verifier.probs.amax(-1) - alpha


@deferral_rule("opt")
def defer_opt(draft, verifier, alpha: float):
    """Eq. 10: defer iff max q < max p - alpha * D_TV(p^tau, q^tau)."""
    return draft.probs.amax(-1) < opt_threshold(draft, verifier, alpha)


def opt_threshold(draft, verifier, alpha: float, weights=None):
    """OPT's threshold on max q (Eq. 10): max p - alpha * D_TV(p^tau, q^tau), the price of a deferral at each
    position times `weights` where given (`round_opt`); the one spelling of it for `opt` and the coupled rules."""
    price = alpha * tv_distance(verifier.scaled, draft.scaled)
    return verifier.probs.amax(-1) - (price if weights is None else price * weights)


@deferral_rule("token_v1", alpha=(-1.0, 1.0), per_token=True)
def token_defer_v1(draft, verifier, alpha: float):
    """Eq. 13: r(v) iff q(v) < max p - alpha."""
    return draft.probs < verifier.probs.amax(-1, keepdim=True) - alpha


@deferral_rule("token_v2", alpha=(-1.0, 1.0), per_token=True)
def token_defer_v2(draft, verifier, alpha: float):
    """Eq. 14: r(v) iff p(v) < max p - alpha."""
    return verifier.probs < verifier.probs.amax(-1, keepdim=True) - alpha


# The rules that still decide when q is one-hot at the draft x (a drafter without a model, prompt lookup): a token
# rule's mixture is then q where r(x) is false and p where it is true, so a level defers a position iff r(x).
# token_v2 and token_v3 read p at x and defer where the verifier disfavours the draft. The rules that read q never
# defer at their usual alphas (max q = q(x) = 1): chow (1 < 1 - alpha), diff and token_v1 (1 < max p - alpha, only
# for alpha < 0, and then by p alone), opt (1 - max p < -alpha * (1 - p(x)), likewise); a learned rule's features
# of q are constant and out of its training; the coupled rules price opt's threshold. So those are refused there,
# at every level of a chain: a level that keeps a draft passes its one-hot row up.
ONE_HOT_RULES = ("token_v2", "token_v3")


@deferral_rule("token_v3", alpha=(0.0, 1.0), per_token=True)
def token_defer_v3(draft, verifier, alpha: float):
    """Eq. 15: r(v) iff p(v) < (1 - alpha) * max p."""
    return verifier.probs < (1.0 - alpha) * verifier.probs.amax(-1, keepdim=True)
