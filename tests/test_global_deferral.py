"""The coupled deferral rules of docs/ALGORITHMS.md, "Global deferral": `round_opt` (a deferral priced by what a
rejection there costs its round) and `budget_opt` (a per-sequence deferral budget held by a dual variable). Their
decisions against hand computations, the state they carry between rounds (settled positions only), the sampler's
output against their targets (chi-square, fixed seeds), their extremes, and their reduction to `opt` when the
coupling is switched off."""

import numpy as np
import pytest
import torch

from speccascade_bench.config.run import load_run_config
from speccascade_bench.decoding import rules
from speccascade_bench.decoding.budget_rule import BudgetOpt
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.round_rule import RoundOpt, round_weights, tokens_lost
from speccascade_bench.decoding.rules import Dists
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.settings import ConfigError

from .helpers import EOS, prompt, tiny_pair
from .test_rule_distributions import (
    DRAFT_LOGITS,
    VERIFIER_LOGITS,
    _assert_not_sampled_from,
    _assert_sampled_from,
    _emitted_counts,
    _model_dists,
    _next_logits,
    _sampling_dist,
    _softmax,
    reference_target,
)

COUNTERS = ("tokens", "drafter_calls", "verifier_calls", "drafted", "accepted", "rounds", "deferred")


def _dists(q_max: list[float], p_max: list[float]) -> tuple[Dists, Dists]:
    """Rows over 3 tokens whose largest probabilities are q_max / p_max (the rest split evenly), scaled = unscaled."""
    def rows(tops):
        probs = torch.tensor([[top, (1 - top) / 2, (1 - top) / 2] for top in tops])
        return Dists(probs, probs)
    return rows(q_max), rows(p_max)


# ---- decisions against hand computations ------------------------------------------------------------------

def test_tokens_lost_and_round_weights_by_hand():
    # a = 0.8, k = 3: L_1 = 0.8 + 0.64 + 0.64, L_2 = 0.8 + 0.8, L_3 = 1 (the bonus), 0 at the bonus position
    assert tokens_lost(0.8, 3) == pytest.approx([2.08, 1.6, 1.0, 0.0])
    assert tokens_lost(0.5, 4) == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.0])  # sum a^m + a^n = 1 at a = 1/2
    mean = (2.08 + 1.6 + 1.0) / 3
    assert round_weights(0.8, 3, 1.0) == pytest.approx([2.08 / mean, 1.6 / mean, 1.0 / mean, 0.0])
    assert round_weights(0.8, 3, 0.5) == pytest.approx([0.5 + 0.5 * 2.08 / mean, 0.5 + 0.5 * 1.6 / mean,
                                                        0.5 + 0.5 / mean, 0.5])
    assert round_weights(0.8, 3, 0.0) == [1.0, 1.0, 1.0, 1.0]
    assert sum(round_weights(0.37, 5, 1.0)[:5]) == pytest.approx(5.0)  # they average 1 over the drafted positions


def test_round_opt_decides_by_position_and_estimates_acceptance_from_its_rounds():
    # q = (0.4, 0.3, 0.3), p = (0.7, 0.15, 0.15) at every row: margin max p - max q = 0.3, TV distance 0.3
    draft, verifier = _dists([0.4, 0.4, 0.4, 0.4], [0.7, 0.7, 0.7, 0.7])
    tv = 0.3
    rule = RoundOpt(alpha=1.2, gamma=3, coupling=1.0, acceptance=0.8)
    weights = round_weights(0.8, 3, 1.0)  # [1.333, 1.026, 0.641, 0]
    expected = [0.3 > 1.2 * tv * w for w in weights]  # 0.3 > 0.48, 0.369, 0.231, 0
    assert expected == [False, False, True, True]
    assert rule.decide(draft, verifier, 3).tolist() == expected
    assert RoundOpt(1.2, 3, coupling=0.0).decide(draft, verifier, 3).tolist() == [False] * 4  # opt: 0.3 > 0.36? no
    # the acceptance estimate: the prior as one round of gamma drafts, then accepted over judged drafts
    assert rule.acceptance == pytest.approx(0.8)
    rule.settle(accepted=1, judged=3, bonus_kept=False)  # a rejection at the second draft: 2 drafts judged
    assert rule.acceptance == pytest.approx((2.4 + 1) / (3 + 2))
    rule.settle(accepted=3, judged=3, bonus_kept=True)  # all accepted: 3 judged
    assert rule.acceptance == pytest.approx((2.4 + 1 + 3) / (3 + 2 + 3))
    later = [0.3 > 1.2 * tv * w for w in round_weights((2.4 + 1 + 3) / 8, 3, 1.0)]  # a = 0.8: the same weights
    assert rule.decide(draft, verifier, 3).tolist() == later
    rule.settle(accepted=0, judged=3, bonus_kept=False)  # a rejection at the first draft: a = 6.4 / 9
    assert rule.decide(draft, verifier, 3).tolist() == [0.3 > 1.2 * tv * w for w in round_weights(6.4 / 9, 3, 1.0)]
    assert rule.decide(*_dists([0.4, 0.4], [0.7, 0.7]), 1).tolist() == [False, True]  # k = 1: w = (1, 0)


def test_budget_opt_updates_its_dual_row_by_row_and_keeps_the_settled_rows_only():
    # alpha 0: defer iff max p - max q > mu. Margins 0.3, 0.3, 0.05, 0.3; eta 0.2, rho 0.25:
    # mu 0 -> defer, mu 0.15 -> defer, mu 0.30 -> not (0.05), mu 0.25 -> defer, mu 0.40
    draft, verifier = _dists([0.4, 0.4, 0.4, 0.4], [0.7, 0.7, 0.45, 0.7])
    rule = BudgetOpt(alpha=0.0, gamma=3, rho=0.25, eta=0.2)
    assert rule.decide(draft, verifier, 3).tolist() == [True, True, False, True]
    assert [float(mu) for mu in rule._through_round] == pytest.approx([0.0, 0.15, 0.30, 0.25, 0.40])
    rule.settle(accepted=1, judged=3, bonus_kept=False)  # rejected at the second draft: rows 1 and 2 settle
    assert float(rule.mu) == pytest.approx(0.30)
    # the next round starts from mu 0.30: margins 0.35 -> defer (mu 0.45), 0.35 -> not (mu 0.40)
    assert rule.decide(*_dists([0.4, 0.4], [0.75, 0.75]), 1).tolist() == [True, False]
    rule.settle(accepted=1, judged=1, bonus_kept=True)  # all accepted and the bonus kept: both rows settle
    assert float(rule.mu) == pytest.approx(0.40)
    rule.settle(accepted=1, judged=1, bonus_kept=False)  # the bonus discarded (the limit): one row settles
    assert float(rule.mu) == pytest.approx(0.45)
    frozen = BudgetOpt(alpha=0.0, gamma=3, rho=0.25, eta=0.0)  # eta 0: the dual never moves, opt at alpha
    assert frozen.decide(draft, verifier, 3).tolist() == [True, True, True, True]
    assert {float(mu) for mu in frozen._through_round} == {0.0}


# ---- the sampler against each rule's target (chi-square) ----------------------------------------------------

SETTINGS = [(1.0, 1.0), (0.5, 1.0), (1.0, 0.8)]  # (temperature, top_p)
ACCEPTANCE = 0.7  # round_opt's prior: the first round's estimate


def _reference(rule: str, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The first round's target [3, V] (two drafts and the bonus) and its deferrals, written from the formulas."""
    draft_logits, verifier_logits = np.array(DRAFT_LOGITS), np.array(VERIFIER_LOGITS)
    q, p = _softmax(draft_logits), _softmax(verifier_logits)
    q_s, p_s = _sampling_dist(draft_logits, temperature, top_p), _sampling_dist(verifier_logits, temperature, top_p)
    tv = 0.5 * np.abs(q_s - p_s).sum(-1)
    margin = p.max(-1) - q.max(-1)
    if rule == "round_opt":  # alpha -0.3, coupling 1, k = 2: L = (a + a, 1, 0)
        lost = np.array([2 * ACCEPTANCE, 1.0, 0.0])
        defer = margin > -0.3 * tv * lost / lost[:2].mean()
    else:  # budget_opt: alpha -1, rho 0.2, eta 0.4, from mu = 0
        mu, defer = 0.0, []
        for row in range(3):
            defer.append(margin[row] + 1.0 * tv[row] > mu)
            mu = max(0.0, mu + 0.4 * (defer[-1] - 0.2))
        defer = np.array(defer)
    return np.where(defer[:, None], p_s, q_s), defer


RULE_PARAMS = {"round_opt": (-0.3, {"coupling": 1.0, "acceptance": ACCEPTANCE}),
               "budget_opt": (-1.0, {"rho": 0.2, "eta": 0.4})}
OPT_ALPHA = {"round_opt": -0.3, "budget_opt": -1.0}


@pytest.mark.parametrize(("temperature", "top_p"), SETTINGS)
@pytest.mark.parametrize("rule", ["round_opt", "budget_opt"])
def test_the_sampler_follows_the_coupled_rules_target(rule, temperature, top_p):
    pi, defer = _reference(rule, temperature, top_p)
    opt_pi, opt_defer = reference_target("opt", OPT_ALPHA[rule], DRAFT_LOGITS, VERIFIER_LOGITS, temperature, top_p)
    assert defer.any() and not defer.all(), "the case should defer at some positions and not at others"
    assert (defer != opt_defer[:, 0]).any(), "the case should tell the rule from opt"
    alpha, params = RULE_PARAMS[rule]
    draft, verifier = _model_dists(temperature, top_p)
    target = rules.cascade_rule_target(rule, alpha, gamma=2, params=params)(draft, verifier)
    assert target.deferral.tolist() == defer.astype(float).tolist()
    counts = _emitted_counts(target, draft.scaled[:2], seed=29)
    assert counts[2].sum() > 1000, "too few rounds reach the bonus position"
    _assert_sampled_from(counts, pi, rule)
    _assert_not_sampled_from(counts, opt_pi, f"{rule} against opt")


def _probs(model, input_ids, generated) -> np.ndarray:
    return _softmax(_next_logits(model, input_ids, generated))


def test_a_decode_samples_two_positions_of_a_budget_target(one_thread):
    """Whole decodes on the tiny T5 pair at temperature 1: the first two tokens (one round of two drafts) follow
    budget_opt's target, whose second position decides against the dual its first position's decision left."""
    from scipy.stats import chisquare

    pair, ids = tiny_pair("t5", seed=2, noise=0.8), prompt(3)
    alpha, rho, eta = 0.0, 0.0, 0.5

    def decides(q, p, mu):
        return q.max() < p.max() - alpha * 0.5 * np.abs(p - q).sum() - mu

    q1, p1 = _probs(pair.drafter, ids, []), _probs(pair.verifier, ids, [])
    defer1 = decides(q1, p1, 0.0)
    pi1, mu2 = (p1 if defer1 else q1), max(0.0, eta * (defer1 - rho))
    exact, second = {}, set()
    for a in np.flatnonzero(pi1 > 0):
        if a == EOS:
            exact[(int(a),)] = pi1[a]
            continue
        q2, p2 = _probs(pair.drafter, ids, [int(a)]), _probs(pair.verifier, ids, [int(a)])
        second.add((bool(decides(q2, p2, mu2)), bool(decides(q2, p2, 0.0))))
        for b, mass in enumerate(p2 if decides(q2, p2, mu2) else q2):
            exact[int(a), b] = pi1[a] * mass
    assert any(with_dual != without for with_dual, without in second), "the dual should change some decision"
    settings = DecodingConfig(max_new_tokens=2, temperature=1.0, draft_length=2)
    generator = torch.Generator().manual_seed(5)
    params = {"rule": "budget_opt", "alpha": alpha, "rho": rho, "eta": eta}
    samples = [tuple(decode("spec_cascade", pair, ids, settings, params, generator).tokens) for _ in range(600)]
    assert set(samples) <= set(exact), "every sample is an outcome of positive probability"
    outcomes = sorted(exact, key=lambda o: -exact[o])
    big = [o for o in outcomes if exact[o] * len(samples) >= 5]
    observed = [samples.count(o) for o in big] + [len(samples) - sum(samples.count(o) for o in big)]
    expected = [exact[o] * len(samples) for o in big] + [len(samples) * (1 - sum(exact[o] for o in big))]
    assert chisquare(observed, np.array(expected) * sum(observed) / sum(expected)).pvalue > 1e-3


# ---- extremes and the reduction to opt, on whole decodes --------------------------------------------------

def _run(pair, method, params, seed, temperature=0.0, top_p=1.0, max_new=20, gamma=4):
    settings = DecodingConfig(max_new_tokens=max_new, temperature=temperature, top_p=top_p, draft_length=gamma)
    result = decode(method, pair, prompt(seed), settings, params, torch.Generator().manual_seed(seed))
    return {name: getattr(result, name) for name in COUNTERS}


@pytest.fixture(scope="module")
def pairs():
    return {family: tiny_pair(family, seed=0) for family in ("t5", "llama")}


COUPLED = [("round_opt", {"coupling": 0.5}), ("budget_opt", {"rho": 0.3, "eta": 0.1})]


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_greedy_extremes_are_the_drafter_and_the_verifier(pairs, family, one_thread):
    pair = pairs[family]
    for seed in range(3):
        verifier, drafter = _run(pair, "verifier", {}, seed), _run(pair, "drafter", {}, seed)
        assert verifier["tokens"] != drafter["tokens"] or seed, "the pair should tell the extremes apart"
        for rule, params in COUPLED:
            always = _run(pair, "spec_cascade", {"rule": rule, "alpha": -1e6, **params}, seed)
            never = _run(pair, "spec_cascade", {"rule": rule, "alpha": 1e6, **params}, seed)
            assert always["tokens"] == verifier["tokens"], (rule, seed)
            assert never["tokens"] == drafter["tokens"], (rule, seed)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_with_the_coupling_off_each_rule_is_opt(pairs, family, one_thread):
    """round_opt at coupling 0 and budget_opt with eta 0 equal opt on every output and counter."""
    pair = pairs[family]
    for temperature, top_p in ((0.0, 1.0), (1.0, 1.0), (0.7, 0.9)):
        for alpha in (-0.4, 0.0, 0.3):
            for seed in range(3):
                opt = _run(pair, "spec_cascade", {"rule": "opt", "alpha": alpha}, seed, temperature, top_p)
                for rule, params in (("round_opt", {"coupling": 0.0, "acceptance": 0.3}),
                                     ("budget_opt", {"rho": 0.0, "eta": 0.0})):
                    got = _run(pair, "spec_cascade", {"rule": rule, "alpha": alpha, **params}, seed, temperature,
                               top_p)
                    assert got == opt, (rule, alpha, seed, temperature)


def test_the_budget_holds_the_realised_rate_near_rho(pairs, one_thread):
    """At an alpha where opt defers at most positions, the budget holds the deferral rate of each sequence of 19
    tokens or more near rho (a short one is dominated by its first positions, deferred before mu has grown)."""
    unbounded, rates = [], {0.1: [], 0.3: []}
    for family in ("t5", "llama"):
        for seed in range(12):
            opt = _run(pairs[family], "spec_cascade", {"rule": "opt", "alpha": -0.5}, seed, 1.0, max_new=40)
            if len(opt["tokens"]) >= 19:
                unbounded.append(opt["deferred"] / len(opt["tokens"]))
            for rho, kept in rates.items():
                params = {"rule": "budget_opt", "alpha": -0.5, "rho": rho, "eta": 0.5}
                run = _run(pairs[family], "spec_cascade", params, seed, 1.0, max_new=40)
                if len(run["tokens"]) >= 19:
                    kept.append(run["deferred"] / len(run["tokens"]))
    assert np.mean(unbounded) > 0.6
    for rho, kept in rates.items():
        assert len(kept) >= 3 and abs(np.mean(kept) - rho) < 0.1 and max(kept) < rho + 0.2, (rho, kept)


# ---- configs ------------------------------------------------------------------------------------------------

def _config(tmp_path, method: dict, chain: bool = False) -> ConfigError | object:
    import yaml

    models = {"chain": ["a", "b", "c"]} if chain else {"drafter": "a", "verifier": "b"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "task": {"dataset": "d.jsonl", "source": "s", "target": "t"},
                                    "models": models, "methods": [method]}))
    try:
        return load_run_config(path)
    except ConfigError as exc:
        return exc


def test_configs_take_each_rules_parameters_with_it_only(tmp_path):
    config = _config(tmp_path, {"method": "spec_cascade", "rule": "budget_opt", "alpha": [0.0], "rho": [0.1, 0.2]})
    assert [run.run_id for run in config.methods] == ["spec_cascade-budget_opt-a0-g5-rho0.1-eta0.1",
                                                      "spec_cascade-budget_opt-a0-g5-rho0.2-eta0.1"]
    config = _config(tmp_path, {"method": "spec_cascade", "rule": "round_opt", "alpha": 0.2, "coupling": 0.5})
    assert [run.run_id for run in config.methods] == ["spec_cascade-round_opt-a0.2-g5-c0.5-acc0.7"]
    errors = {
        "methods[0].rho: is required for spec_cascade with rule: budget_opt":
            {"method": "spec_cascade", "rule": "budget_opt", "alpha": 0.0},
        "methods[0].rho: applies only with rule: budget_opt": {"method": "spec_cascade", "rule": "opt", "alpha": 0.0,
                                                               "rho": 0.2},
        "methods[0].coupling: must be in [0, 1], got 1.5": {"method": "spec_cascade", "rule": "round_opt",
                                                            "alpha": 0.0, "coupling": 1.5},
        "methods[0].eta: must be a finite number": {"method": "spec_cascade", "rule": "budget_opt", "alpha": 0.0,
                                                    "rho": 0.2, "eta": float("nan")},
    }
    for message, method in errors.items():
        error = _config(tmp_path, method)
        assert isinstance(error, ConfigError) and message in str(error), (message, error)
    error = _config(tmp_path, {"method": "chain_spec_cascade", "rules": ["opt", "round_opt"], "alphas": [0.1, 0.1]},
                    chain=True)
    assert isinstance(error, ConfigError) and "'round_opt' couples the positions of a pair's rounds" in str(error)
