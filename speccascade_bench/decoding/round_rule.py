"""`round_opt`: OPT with each deferral priced at what a rejection there costs its round (docs/ALGORITHMS.md, "Global
deferral", rule (a)).

OPT (paper eq. 10) defers at a position iff max q < max p - alpha * D_TV(p^tau, q^tau): the rejection a deferral
risks is priced the same wherever it falls. Under speculative execution it is not: a rejection at drafted position
i of a round of k drafts discards the drafts after i and the bonus token, which the round had already paid for. With
an acceptance rate a, it loses L_i = a + a^2 + ... + a^(k-i) + a^(k-i) tokens in expectation (L_k = 1, the bonus),
and nothing at the bonus position, whose token is drawn from the target without a test. `round_opt` defers iff

    max q < max p - alpha * D_TV(p^tau, q^tau) * w_i,   w_i = 1 - c + c * L_i / mean(L_1, ..., L_k),

with the coupling c in [0, 1]: c = 0 is OPT exactly; at c = 1 a deferral costs the most at a round's first position
and nothing at its bonus position. The weights average 1 over a round's drafted positions, so alpha keeps OPT's scale.
`a` is estimated from the decode's own earlier rounds (accepted over judged drafts, starting from the prior
`acceptance` counted as one round of drafts) and L_i from the position in the round: both are known before the
round drafts, so the target at every position is a function of the history and the sampler stays exact to it.
"""

from __future__ import annotations

from .deferral import RuleParam, deferral_rule, opt_threshold


def tokens_lost(acceptance: float, k: int) -> list[float]:
    """L_i for the k drafted positions of a round and its bonus position (k + 1 values): the tokens a rejection at
    position i discards in expectation, the later drafts accepted at rate `acceptance` and the bonus; 0 at the bonus
    position."""
    return [sum(acceptance ** m for m in range(1, k - i + 1)) + acceptance ** (k - i) for i in range(1, k + 1)] + [0.0]


def round_weights(acceptance: float, k: int, coupling: float) -> list[float]:
    """w_i for the k drafted positions and the bonus position: 1 - c + c * L_i / mean(L_1..L_k)."""
    lost = tokens_lost(acceptance, k)
    mean = sum(lost[:k]) / k
    return [1.0 - coupling + coupling * value / mean for value in lost]


@deferral_rule("round_opt", coupled=True, params=(
    RuleParam("coupling", "round_opt: how much a deferral's price follows what a rejection there costs its round "
              "(0: opt exactly; 1: all of it)", 0.0, 1.0, default=1.0, tag="c"),
    RuleParam("acceptance", "round_opt: the acceptance rate assumed before the first round (then estimated from the "
              "decode's rounds, this prior counting as one round of drafts)", 0.0, 1.0, default=0.7, tag="acc"),
))
class RoundOpt:
    """One decode's round-aware OPT: its running acceptance estimate."""

    def __init__(self, alpha: float, gamma: int, coupling: float = 1.0, acceptance: float = 0.7):
        self.alpha, self.coupling = alpha, coupling
        self.accepted, self.judged = acceptance * gamma, float(gamma)  # the prior as one round of gamma drafts

    @property
    def acceptance(self) -> float:
        return self.accepted / self.judged

    def weights(self, k: int) -> list[float]:
        return round_weights(self.acceptance, k, self.coupling)

    def decide(self, draft, verifier, k: int):
        """Defer at the round's rows (k drafted positions, then the bonus position when given): [n] booleans."""
        import torch

        n = draft.probs.shape[0]
        weights = torch.tensor(self.weights(k)[:n], dtype=draft.probs.dtype, device=draft.probs.device)
        return draft.probs.amax(-1) < opt_threshold(draft, verifier, self.alpha, weights)

    def settle(self, accepted: int, judged: int, bonus_kept: bool) -> None:
        """Count the round's tested drafts: the accepted ones and the rejected one, if any."""
        self.accepted += accepted
        self.judged += accepted + (accepted < judged)
