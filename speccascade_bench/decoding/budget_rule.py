"""`budget_opt`: OPT under a per-sequence deferral budget, held by a dual variable updated online over the prefix
(docs/ALGORITHMS.md, "Global deferral", rule (b)).

The user asks for a deferral rate rho per sequence. The constraint mean_t r_t <= rho enters the objective with a
multiplier mu >= 0, and its online dual ascent adapts the threshold to the prefix: at position t,

    defer iff max q < max p - alpha * D_TV(p^tau, q^tau) - mu_t,    mu_{t+1} = max(0, mu_t + eta * (r_t - rho)),

from mu_1 = 0. With eta = 0 the dual stays 0 and the rule is OPT exactly. Only settled positions update mu: the
positions of a round after its first rejection are discarded, and so are their updates. Within a round the update
runs position by position on the device (each decision needs the last one's mu); mu_t depends on the decisions at
earlier positions only, a function of the prefix, so the sampler stays exact to the target it defines.
"""

from __future__ import annotations

from .deferral import RuleParam, deferral_rule, opt_threshold


@deferral_rule("budget_opt", coupled=True, params=(
    RuleParam("rho", "budget_opt: the deferral rate per sequence the budget allows", 0.0, 1.0, tag="rho"),
    RuleParam("eta", "budget_opt: the dual variable's step (0: opt exactly; larger: the rate held closer to rho, "
              "the threshold moving faster)", 0.0, 10.0, default=0.1, tag="eta"),
))
class BudgetOpt:
    """One decode's budgeted OPT: its dual variable mu, and the values mu takes through the round being judged."""

    def __init__(self, alpha: float, gamma: int, rho: float, eta: float = 0.1):
        self.alpha, self.rho, self.eta = alpha, rho, eta
        self.mu = 0.0  # a Python number until the first round makes it a device scalar
        self._through_round: list = []

    def decide(self, draft, verifier, k: int):
        """Defer at the round's rows, one after the other, each against the dual left by the rows before it."""
        import torch

        threshold = opt_threshold(draft, verifier, self.alpha)
        q_max = draft.probs.amax(-1)
        mu, trajectory, decisions = self.mu, [self.mu], []
        for row in range(q_max.shape[0]):
            defer = q_max[row] < threshold[row] - mu
            decisions.append(defer)
            mu = (mu + self.eta * (defer.to(q_max.dtype) - self.rho)).clamp_min(0.0)
            trajectory.append(mu)
        self._through_round = trajectory
        return torch.stack(decisions)

    def settle(self, accepted: int, judged: int, bonus_kept: bool) -> None:
        """Keep mu after the round's settled positions: the accepted drafts, then the replacement's (or the kept
        bonus's) position."""
        settled = accepted + (accepted < judged or bonus_kept)
        self.mu = self._through_round[min(settled, len(self._through_round) - 1)]
