"""The maths of every method: pure functions over probability tensors, randomness passed in.

Shapes: `[n, V]` is n positions over a vocabulary of V tokens. "Unscaled" distributions are
softmax(logits); "scaled" ones are softmax(logits / temperature), one-hot at the argmax when the
temperature is 0, then restricted to the nucleus when top_p < 1. Deferral decisions use unscaled
distributions; sampling, mixtures and the OPT TV term use scaled ones (docs/ALGORITHMS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .deferral import RULES


def scaled_probs(logits: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """[..., V] logits -> [..., V] sampling distribution at `temperature` (0 = greedy) with nucleus `top_p`."""
    logits = logits.float()
    if temperature == 0:  # one-hot at the argmax (scattered: `one_hot` reads the ids' range on the host)
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # keeps at least the top token
    nucleus = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return nucleus / nucleus.sum(-1, keepdim=True)


@dataclass(frozen=True)
class Dists:
    """One model's distributions at n positions: `probs` unscaled [n, V], `scaled` for sampling [n, V]."""

    probs: Tensor
    scaled: Tensor

    @classmethod
    def from_logits(cls, logits: Tensor, temperature: float, top_p: float = 1.0) -> Dists:
        return cls(torch.softmax(logits.float(), dim=-1), scaled_probs(logits, temperature, top_p))

    def head(self, n: int) -> Dists:
        return Dists(self.probs[:n], self.scaled[:n])

    def __len__(self) -> int:
        return self.probs.shape[0]


def sample(probs: Tensor, generator: torch.Generator | None) -> int:
    """One token id from a [V] distribution (need not be normalised)."""
    return int(torch.multinomial(probs, 1, generator=generator))


def normalize(weights: Tensor) -> Tensor:
    return weights / weights.sum(-1, keepdim=True)


def cascade_target(draft_scaled: Tensor, verifier_scaled: Tensor, defer: Tensor) -> Tensor:
    """Eq. 6: pi = (1 - r) q^tau + r p^tau, with r [n] in {0, 1} (in [0, 1] for the learned rule)."""
    r = defer.to(draft_scaled.dtype).unsqueeze(-1)
    return (1.0 - r) * draft_scaled + r * verifier_scaled


def token_cascade_target(draft_scaled: Tensor, verifier_scaled: Tensor, token_defer: Tensor) -> Tensor:
    """Eq. 11: pi(v) = q^tau(v) (1 - r(v)) + p^tau(v) * eta, eta = sum_u r(u) q^tau(u)."""
    r = token_defer.to(draft_scaled.dtype)
    eta = (r * draft_scaled).sum(-1, keepdim=True)
    return draft_scaled * (1.0 - r) + verifier_scaled * eta


@dataclass(frozen=True)
class Target:
    """What one verification round needs at its k drafted positions and its bonus position.

    accept:   [k, V]  draft x_i is accepted with probability min(1, accept[i, x_i] / q^tau_i(x_i))
    residual: [k, V]  unnormalised distribution of the replacement at the first rejection
    bonus:    [V]     distribution of the bonus token when all k drafts are accepted; None when the
                      drafter's distribution at the bonus position was not computed (the bonus would
                      be discarded: EOS or the token limit is reached inside the draft)
    deferral: [k + 1] (or [k]) the probability that each position is deferred to the verifier
    rows:     the distribution each settled position's token follows (k + 1 positions), where a level above reads
              them as its drafts' distributions (a chain's lower levels); None where nothing reads them
    """

    accept: Tensor
    residual: Tensor
    bonus: Tensor | None
    deferral: Tensor
    rows: Dists | None = None


# A target function maps drafter Dists [k or k + 1 positions] and verifier Dists [k + 1] to a Target.
TargetFn = Callable[[Dists, Dists], Target]


def mixture_target(pi: Tensor, draft: Dists, verifier: Dists, deferral: Tensor,
                    bonus_from_verifier: bool = False) -> Target:
    """The generic sampler's target for a distribution pi [k or k + 1, V] (paper Alg. 4). The bonus token
    comes from pi at the bonus position when pi covers it, else optionally from the verifier."""
    k = len(verifier) - 1
    bonus = pi[k] if pi.shape[0] > k else None
    if bonus is None and bonus_from_verifier:
        bonus = verifier.scaled[k]
        deferral = torch.cat([deferral, deferral.new_ones(1)])
    return Target(accept=pi[:k], residual=(pi[:k] - draft.scaled[:k]).clamp_min(0.0), bonus=bonus,
                  deferral=deferral)


def lossless_target(draft: Dists, verifier: Dists) -> Target:
    """Speculative sampling (Leviathan et al. Alg. 1): pi = p^tau."""
    return mixture_target(verifier.scaled, draft, verifier, torch.zeros(len(verifier), device=verifier.probs.device))


def lossy_target(alpha: float, beta: float, greedy: bool) -> TargetFn:
    """Tran-Thien lossy speculative decoding; at temperature 0, Leviathan's greedy lenience."""

    def target(draft: Dists, verifier: Dists) -> Target:
        k = len(verifier) - 1
        no_deferral = torch.zeros(k + 1, device=verifier.probs.device)
        if greedy:
            p = verifier.probs[:k]
            accept = (p >= (1.0 - alpha) * p.amax(-1, keepdim=True)).to(p.dtype)
            return Target(accept, verifier.scaled[:k], verifier.scaled[k], no_deferral)
        p_scaled, q_scaled = verifier.scaled[:k], draft.scaled[:k]
        return Target(
            accept=p_scaled / (1.0 - alpha),
            residual=(p_scaled - beta * q_scaled).clamp_min(0.0),
            bonus=verifier.scaled[k],
            deferral=no_deferral,
        )

    return target


def cascade_mixture(rule: str, alpha: float, draft: Dists, verifier: Dists, router=None) -> tuple[Tensor, Tensor]:
    """The target pi [n, V] of a registered deferral rule (`deferral.RULES`) and each position's deferral
    probability [n]: r in {0, 1} for a per-position rule, its weight in [0, 1] for a learned one (with its
    `router`), the deferred drafter mass eta for a per-token one."""
    mix, decided, deferral = cascade_decision(rule, alpha, draft, verifier, router)
    return mix(draft.scaled, verifier.scaled, decided), deferral


def cascade_decision(rule: str, alpha: float, draft: Dists, verifier: Dists,
                     router=None) -> tuple[Callable[[Tensor, Tensor, Tensor], Tensor], Tensor, Tensor]:
    """The one reading of the rule registry, for a pair's cascade (`cascade_mixture`) and a chain's levels
    (`chain.cascade_level`): how the rule mixes two distributions (`cascade_target` or `token_cascade_target`), its
    decisions at n positions (per position, or per token [n, V]) and each position's deferral probability [n]."""
    if rule not in RULES:
        raise ValueError(f"unknown deferral rule {rule!r}")
    spec = RULES[rule]
    if spec.uses_router and router is None:
        raise ValueError(f"the deferral rule {rule!r} needs a router")
    if spec.coupled:
        raise ValueError(f"the deferral rule {rule!r} decides with a decode's state (`cascade_rule_target`)")
    decided = spec.decide(draft, verifier, alpha, router) if spec.uses_router else spec.decide(draft, verifier, alpha)
    if not spec.per_token:
        return cascade_target, decided, decided.float()
    return token_cascade_target, decided, (decided.float() * draft.scaled).sum(-1)


class CoupledTarget:
    """The target function of a coupled deferral rule (`deferral`) for one decode: the rule's state decides each
    round's rows, and `settle` tells it which of them the round kept (the speculative loop calls it once a round)."""

    def __init__(self, rule: str, alpha: float, gamma: int, params: dict, bonus_from_verifier: bool):
        self.state = RULES[rule].decide(alpha, gamma, **params)
        self.bonus_from_verifier = bonus_from_verifier

    def __call__(self, draft: Dists, verifier: Dists) -> Target:
        head = verifier.head(len(draft))
        decided = self.state.decide(draft, head, len(verifier) - 1)
        return mixture_target(cascade_target(draft.scaled, head.scaled, decided), draft, verifier, decided.float(),
                              self.bonus_from_verifier)

    def settle(self, accepted: int, judged: int, bonus_kept: bool) -> None:
        self.state.settle(accepted, judged, bonus_kept)


def cascade_rule_target(rule: str, alpha: float, bonus_from_verifier: bool = False, router=None,
                        gamma: int = 1, params: dict | None = None) -> TargetFn:
    """A speculative cascade's target (paper eqs. 6 and 11) for a named deferral rule. The bonus token
    is drawn from the target at the bonus position when the drafter's distribution there is given,
    else (with `bonus_from_verifier`) from the verifier's: an approximation, under which the bonus
    token no longer follows the target. A coupled rule's (with its draft length `gamma` and its `params`) is
    made for one decode: a `CoupledTarget`."""
    if rule not in RULES:
        raise ValueError(f"unknown deferral rule {rule!r}")
    if RULES[rule].coupled:
        return CoupledTarget(rule, alpha, gamma, params or {}, bonus_from_verifier)

    def target(draft: Dists, verifier: Dists) -> Target:
        pi, deferral = cascade_mixture(rule, alpha, draft, verifier.head(len(draft)), router)
        return mixture_target(pi, draft, verifier, deferral, bonus_from_verifier)

    return target


@dataclass(frozen=True)
class RoundOutcome:
    accepted: int           # drafts accepted, 0..k
    next_token: int | None  # the replacement or the bonus token; None when no bonus was available


def verify_round(draft_tokens: Tensor, draft_scaled: Tensor, target: Target,
                 generator: torch.Generator | None) -> RoundOutcome:
    """One round of the generic speculative sampler (paper Alg. 4) for k drafts, read on the host.

    draft_tokens [k] were sampled from draft_scaled [k, V]. The first draft that fails its acceptance
    test is replaced by a sample from the normalised residual; if all pass, a bonus token is sampled
    (`verify_on_device` draws it).
    """
    accepted, next_token = torch.cat(verify_on_device(draft_tokens, draft_scaled, target, generator)).tolist()
    no_bonus = accepted == draft_tokens.shape[0] and target.bonus is None
    return RoundOutcome(accepted, None if no_bonus else next_token)


def verify_on_device(draft_tokens: Tensor, draft_scaled: Tensor, target: Target,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """`verify_round` without a host read: the number of accepted drafts and the next token, as [1] tensors.

    The next token is drawn in every round: the replacement at the first rejection, else the bonus token (from
    a placeholder, to be discarded, when the target has no bonus distribution)."""
    k = draft_tokens.shape[0]
    positions = torch.arange(k, device=draft_tokens.device)
    draft_mass = draft_scaled[positions, draft_tokens]
    accept_prob = (target.accept[positions, draft_tokens] / draft_mass).clamp(max=1.0)
    uniforms = torch.rand(k, generator=generator, device=draft_scaled.device)
    passed = ~(uniforms >= accept_prob)
    accepted = passed.long().cumprod(0).sum().view(1)  # the drafts before the first rejection
    # A rejection of probability ~0 leaves no residual mass: fall back to the target itself there.
    empty = target.residual.sum(-1, keepdim=True) <= 0.0
    residual = torch.where(empty, target.accept.clamp_min(0.0), target.residual)
    bonus = target.bonus if target.bonus is not None else torch.ones_like(residual[0])
    choices = torch.cat([residual, bonus[None].to(residual.dtype)])  # [k + 1, V]
    next_token = torch.multinomial(choices.index_select(0, accepted), 1, generator=generator).view(1)
    return accepted, next_token


def bild_falls_back(draft_probs: Tensor, alpha: float) -> Tensor:
    """BiLD's fallback test on unscaled drafter probabilities [..., V] -> [...]: the drafter hands control to
    the verifier iff its max probability is below the fallback threshold alpha (so never at alpha 0)."""
    return draft_probs.amax(-1) < alpha


def bild_rollback_index(verifier_logits: Tensor, drafted_ids: Tensor, beta: float) -> int | None:
    """BiLD's rollback test on the verifier's logits (or log-probabilities) [k, V] at the positions of k
    drafted tokens `drafted_ids` [k]: the index of the first drafted token whose cross-entropy under the
    verifier, -log p(x) (unscaled), is above the rollback threshold beta; None when none is (or k is 0)."""
    if drafted_ids.numel() == 0:
        return None
    cross_entropy = -torch.log_softmax(verifier_logits.float(), -1).gather(-1, drafted_ids[:, None])[:, 0]
    above = (cross_entropy > beta).nonzero()
    return int(above[0]) if above.numel() else None
