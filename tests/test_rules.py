"""The pure maths: scaled distributions, deferral rules on hand-computed examples and at their extremes,
cascade targets, and the speculative sampler's output distribution (statistical tests, fixed seeds). These
run at temperature 1; tests/test_rule_distributions.py checks the cascades at other temperatures and with a
nucleus, against a reference computed from the paper's equations."""

import math

import pytest
import torch
from scipy.stats import chisquare

from speccascade_bench.decoding import deferral, rules
from speccascade_bench.decoding.rules import Dists

Q = torch.tensor([[0.6, 0.3, 0.1]])
P = torch.tensor([[0.2, 0.7, 0.1]])


def dists(probs, scaled=None):
    return Dists(probs, probs if scaled is None else scaled)


def test_scaled_probs_greedy_is_one_hot_at_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert torch.equal(rules.scaled_probs(logits, 0.0), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_scaled_probs_temperature_and_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.allclose(rules.scaled_probs(logits, 1.0), torch.tensor([0.5, 0.3, 0.15, 0.05]))
    sharp = rules.scaled_probs(logits, 0.5)
    assert torch.allclose(sharp, torch.tensor([0.25, 0.09, 0.0225, 0.0025]) / 0.365)
    # top_p 0.75: 0.5 + 0.3 reaches it, so the nucleus is the first two tokens
    assert torch.allclose(rules.scaled_probs(logits, 1.0, top_p=0.75), torch.tensor([0.625, 0.375, 0, 0]))
    assert torch.allclose(rules.scaled_probs(logits, 1.0, top_p=0.1), torch.tensor([1.0, 0, 0, 0]))


def test_tv_distance():
    assert torch.allclose(deferral.tv_distance(P, Q), torch.tensor([0.4]))


def test_chow_hand_computed_and_extremes():
    draft, verifier = dists(Q), dists(P)
    assert deferral.defer_chow(draft, verifier, 0.3).item() is True   # 0.6 < 0.7
    assert deferral.defer_chow(draft, verifier, 0.5).item() is False  # 0.6 >= 0.5
    assert deferral.defer_chow(draft, verifier, 1.0).item() is False  # never at alpha 1
    assert deferral.defer_chow(draft, verifier, 0.0).item() is True   # any non-one-hot q defers at alpha 0


def test_diff_hand_computed_and_extremes():
    draft, verifier = dists(Q), dists(P)
    assert deferral.defer_diff(draft, verifier, 0.05).item() is True   # 0.6 < 0.65
    assert deferral.defer_diff(draft, verifier, 0.15).item() is False  # 0.6 >= 0.55
    sure = dists(torch.tensor([[1.0, 0.0, 0.0]]))
    assert deferral.defer_diff(sure, dists(torch.tensor([[1.0, 0.0, 0.0]])), -1.0).item() is True  # always
    assert deferral.defer_diff(dists(torch.tensor([[0.34, 0.33, 0.33]])), sure, 1.0).item() is False  # never


def test_opt_uses_scaled_tv_and_equals_diff_when_tv_is_one():
    draft, verifier = dists(Q), dists(P)
    # TV = 0.4: defer iff 0.6 < 0.7 - 0.4 alpha  <=>  alpha < 0.25
    assert deferral.defer_opt(draft, verifier, 0.2).item() is True
    assert deferral.defer_opt(draft, verifier, 0.3).item() is False
    assert deferral.defer_opt(draft, verifier, -1e6).item() is True
    assert deferral.defer_opt(draft, verifier, 1e6).item() is False
    # at tau 0 with different argmaxes the scaled TV is 1 and OPT equals Diff
    greedy_q = Dists(Q, torch.tensor([[1.0, 0, 0]]))
    greedy_p = Dists(P, torch.tensor([[0, 1.0, 0]]))
    for alpha in (-0.5, 0.05, 0.1, 0.15, 0.5):
        assert deferral.defer_opt(greedy_q, greedy_p, alpha) == deferral.defer_diff(greedy_q, greedy_p, alpha)


def test_token_rules_hand_computed():
    draft, verifier = dists(Q), dists(P)
    # v1: q(v) < 0.7 - 0.2 = 0.5 -> tokens 1 and 2
    assert deferral.token_defer_v1(draft, verifier, 0.2).tolist() == [[False, True, True]]
    # v2: p(v) < 0.7 - 0.2 = 0.5 -> tokens 0 and 2
    assert deferral.token_defer_v2(draft, verifier, 0.2).tolist() == [[True, False, True]]
    # v3: p(v) < 0.5 * 0.7 = 0.35 -> tokens 0 and 2
    assert deferral.token_defer_v3(draft, verifier, 0.5).tolist() == [[True, False, True]]
    # extremes
    assert not deferral.token_defer_v3(draft, verifier, 1.0).any()
    assert deferral.token_defer_v1(draft, verifier, -1.0).all()
    assert deferral.token_defer_v2(draft, verifier, -1.0).all()
    assert not deferral.token_defer_v1(draft, verifier, 1.0).any()


def test_cascade_targets_hand_computed():
    pi = rules.cascade_target(Q, P, torch.tensor([True]))
    assert torch.allclose(pi, P)
    pi = rules.cascade_target(Q, P, torch.tensor([False]))
    assert torch.allclose(pi, Q)
    # token target with r = [0, 1, 1]: eta = 0.4; pi = [0.6, 0, 0] + 0.4 * [0.2, 0.7, 0.1]
    pi = rules.token_cascade_target(Q, P, torch.tensor([[False, True, True]]))
    assert torch.allclose(pi, torch.tensor([[0.68, 0.28, 0.04]]))
    assert torch.allclose(pi.sum(), torch.tensor(1.0))


def test_token_v3_at_tau_zero_equals_greedy_lossy():
    """At tau 0 the token_v3 cascade and greedy lossy decoding accept exactly the same drafts."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        q = torch.softmax(3 * torch.randn(2, 5, generator=generator), -1)
        p = torch.softmax(3 * torch.randn(2, 5, generator=generator), -1)
        alpha = float(torch.rand(1, generator=generator))
        draft = Dists(q, rules.scaled_probs(q.log(), 0.0))
        verifier = Dists(p, rules.scaled_probs(p.log(), 0.0))
        x = draft.scaled[0].argmax()
        cascade = rules.cascade_rule_target("token_v3", alpha)(draft, verifier)
        lossy = rules.lossy_target(alpha, 1.0, greedy=True)(draft.head(1), verifier)
        assert cascade.accept[0, x] == lossy.accept[0, x]
        if cascade.accept[0, x] == 0:
            assert torch.equal(rules.normalize(cascade.residual[0]), lossy.residual[0])


# ---- statistical tests of the generic sampler ---------------------------------------------------------

N_DRAWS = 20000
DRAFT = torch.tensor([0.45, 0.25, 0.15, 0.10, 0.05])
VERIFY = torch.tensor([0.10, 0.40, 0.05, 0.30, 0.15])
DRAFT_BONUS = torch.tensor([0.30, 0.30, 0.20, 0.10, 0.10])
VERIFY_BONUS = torch.tensor([0.05, 0.15, 0.50, 0.20, 0.10])


def _run_rounds(target_fn, needs_draft_at_bonus, seed=1234):
    """N one-draft rounds over fixed distributions; returns first-token and bonus-token counts."""
    generator = torch.Generator().manual_seed(seed)
    draft_rows = [DRAFT, DRAFT_BONUS] if needs_draft_at_bonus else [DRAFT]
    draft = Dists(torch.stack(draft_rows), torch.stack(draft_rows))
    verifier = Dists(torch.stack([VERIFY, VERIFY_BONUS]), torch.stack([VERIFY, VERIFY_BONUS]))
    target = target_fn(draft, verifier)
    first, bonus = torch.zeros(5), torch.zeros(5)
    # every round's draft drawn at once: independent of the rounds' own draws, as in a decode
    drafts = torch.multinomial(DRAFT, N_DRAWS, replacement=True, generator=generator)
    for draft_token, token in zip(drafts[:, None], drafts.tolist(), strict=True):
        outcome = rules.verify_round(draft_token, draft.scaled[:1], target, generator)
        if outcome.accepted == 1:
            first[token] += 1
            bonus[outcome.next_token] += 1
        else:
            first[outcome.next_token] += 1
    return first, bonus


def _assert_matches(counts, expected):
    expected = expected / expected.sum()
    support = expected > 0
    assert counts[~support].sum() == 0, "sampled a token the target gives probability 0"
    result = chisquare(counts[support].numpy(), (expected[support] * counts.sum()).numpy())
    assert result.pvalue > 1e-3, f"frequencies {counts / counts.sum()} vs target {expected}"


def test_lossless_sampler_matches_verifier():
    first, bonus = _run_rounds(rules.lossless_target, False)
    _assert_matches(first, VERIFY)
    _assert_matches(bonus, VERIFY_BONUS)


def test_sampler_detects_a_wrong_distribution():
    """The statistical check itself has power: the drafter's distribution is not the verifier's."""
    first, _ = _run_rounds(rules.lossless_target, False)
    with pytest.raises(AssertionError):
        _assert_matches(first, DRAFT)


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 1.0), (0.5, 0.5), (0.0, 1.0)])
def test_lossy_sampler_matches_tran_thien_distribution(alpha, beta):
    first, bonus = _run_rounds(rules.lossy_target(alpha, beta, greedy=False), False)
    accept = torch.minimum(DRAFT, VERIFY / (1 - alpha))
    residual = rules.normalize((VERIFY - beta * DRAFT).clamp_min(0))
    expected = accept + (1 - accept.sum()) * residual
    _assert_matches(first, expected)
    _assert_matches(bonus, VERIFY_BONUS)


@pytest.mark.parametrize(("rule", "alpha"), [("chow", 0.6), ("diff", 0.1), ("opt", 0.5), ("opt", -0.5),
                                             ("token_v1", 0.1), ("token_v2", 0.1), ("token_v3", 0.5)])
def test_cascade_sampler_matches_target(rule, alpha):
    target_fn = rules.cascade_rule_target(rule, alpha)
    draft = Dists(torch.stack([DRAFT, DRAFT_BONUS]), torch.stack([DRAFT, DRAFT_BONUS]))
    verifier = Dists(torch.stack([VERIFY, VERIFY_BONUS]), torch.stack([VERIFY, VERIFY_BONUS]))
    pi, _ = rules.cascade_mixture(rule, alpha, draft, verifier)
    if deferral.RULES[rule].per_token:  # a genuine mixture, neither model's distribution
        assert not torch.allclose(pi[0], DRAFT) and not torch.allclose(pi[0], VERIFY)
    first, bonus = _run_rounds(target_fn, True)
    _assert_matches(first, pi[0])
    _assert_matches(bonus, pi[1])


def test_acceptance_probability_is_estimated_per_judged_position():
    """Rounds of 4 drafts with the same draft and verifier distributions at every position accept each
    judged draft with probability alpha = sum(min(q, p)) = 0.55. accepted / (accepted + rejections)
    recovers alpha, and the mean tokens per round is Leviathan's (1 - alpha^5) / (1 - alpha); accepted /
    drafted does not estimate alpha (drafts after a rejection are never judged)."""
    from speccascade_bench.analysis.summary import _acceptance_prob
    from speccascade_bench.results.record import ExampleRow

    gamma, rounds = 4, 4000
    alpha = float(torch.minimum(DRAFT, VERIFY).sum())
    generator = torch.Generator().manual_seed(99)
    draft = Dists(DRAFT.repeat(gamma, 1), DRAFT.repeat(gamma, 1))
    target = rules.lossless_target(draft, Dists(VERIFY.repeat(gamma + 1, 1), VERIFY.repeat(gamma + 1, 1)))
    rows, tokens = [], 0
    for _ in range(rounds):
        drafts = torch.multinomial(DRAFT, gamma, replacement=True, generator=generator)
        outcome = rules.verify_round(drafts, draft.scaled, target, generator)
        rows.append(ExampleRow(accepted=outcome.accepted, rejections=int(outcome.accepted < gamma)))
        tokens += outcome.accepted + 1
    accepted = sum(row.accepted for row in rows)
    assert _acceptance_prob(rows) == pytest.approx(alpha, abs=0.02)
    assert tokens / rounds == pytest.approx((1 - alpha ** (gamma + 1)) / (1 - alpha), rel=0.03)
    assert accepted / (gamma * rounds) < alpha - 0.2
    assert math.isnan(_acceptance_prob([ExampleRow(accepted=3)]))  # recorded without rejections
