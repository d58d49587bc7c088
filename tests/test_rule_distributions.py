"""The output distribution of speculative cascades at temperatures other than 1, against a reference written
here from the paper's equations (Narasimhan et al., eqs. 2, 5, 6, 10, 11, 13-15) without the package's rule
functions: deferral decisions on the unscaled softmax(logits), mixtures and OPT's TV term on the sampling
distributions softmax(logits / tau), cut to the nucleus when top_p < 1. At tau = 1 the two coincide, so only
these cases can tell them apart. Every case also checks its own power: the sampled frequencies must reject
the references that decide on the scaled distributions or mix the unscaled ones. Fixed seeds throughout."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from speccascade_bench.decoding import rules
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.rules import Dists
from speccascade_bench.decoding.settings import DecodingConfig

from .helpers import EOS, VOCAB, prompt, tiny_pair

POSITION_RULES = ("chow", "diff", "opt")

# ---- the reference ----------------------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _sampling_dist(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """softmax(logits / tau) per row, kept on the smallest set of most likely tokens whose mass reaches top_p."""
    probs = _softmax(logits / temperature)
    if top_p >= 1.0:
        return probs
    nucleus = np.zeros_like(probs)
    for row, kept in zip(probs, nucleus, strict=True):
        mass = 0.0
        for token in np.argsort(-row, kind="stable"):
            if mass >= top_p:
                break
            kept[token] = row[token]
            mass += row[token]
    return nucleus / nucleus.sum(-1, keepdims=True)


def reference_target(rule, alpha, draft_logits, verifier_logits, temperature, top_p,
                     decide_on="unscaled", mix="scaled"):
    """The cascade's target pi [n, V] and its deferral r ([n, 1] for chow/diff/opt, [n, V] for the token
    rules), from logits [n, V]. `decide_on` and `mix` pick the distributions the decisions and the mixture
    (with OPT's TV term) use; the paper's are the defaults, the others give the wrong references."""
    draft_logits, verifier_logits = np.asarray(draft_logits, float), np.asarray(verifier_logits, float)
    unscaled = _softmax(draft_logits), _softmax(verifier_logits)
    scaled = (_sampling_dist(draft_logits, temperature, top_p), _sampling_dist(verifier_logits, temperature, top_p))
    q, p = unscaled if decide_on == "unscaled" else scaled
    q_mix, p_mix = scaled if mix == "scaled" else unscaled
    p_max = p.max(-1, keepdims=True)
    if rule in POSITION_RULES:
        q_max = q.max(-1, keepdims=True)
        if rule == "chow":  # eq. 2
            r = q_max < 1.0 - alpha
        elif rule == "diff":  # eq. 5
            r = q_max < p_max - alpha
        else:  # eq. 10
            tv = np.maximum(q_mix - p_mix, 0.0).sum(-1, keepdims=True)
            r = q_max < p_max - alpha * tv
        return np.where(r, p_mix, q_mix), r  # eq. 6
    if rule == "token_v1":  # eq. 13
        r = q < p_max - alpha
    elif rule == "token_v2":  # eq. 14
        r = p < p_max - alpha
    else:  # eq. 15
        r = p < (1.0 - alpha) * p_max
    eta = (q_mix * r).sum(-1, keepdims=True)
    return q_mix * ~r + p_mix * eta, r  # eq. 11


WRONG_CHOICES = [("scaled", "scaled"), ("unscaled", "unscaled"), ("scaled", "unscaled")]  # (decide_on, mix)

# ---- chi-square ---------------------------------------------------------------------------------------------


def _pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square p-value of token counts [V] against a distribution [V]; cells expected under 5 are pooled.
    0 when a token of probability 0 was drawn."""
    expected = probs / probs.sum() * counts.sum()
    if counts[expected == 0].sum() > 0:
        return 0.0
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    if keep.sum() < 2:
        return 1.0
    return float(chisquare(observed[keep], expected[keep]).pvalue)


def _assert_sampled_from(counts, probs, label=""):
    """Each row of counts [n, V] follows the matching row of probs [n, V]."""
    for position, (row, dist) in enumerate(zip(counts, probs, strict=True)):
        pvalue = _pvalue(row, dist)
        assert pvalue > 1e-3, f"{label} position {position}: frequencies {row / row.sum()} vs {dist} (p = {pvalue:.2g})"


def _assert_not_sampled_from(counts, probs, label=""):
    """Some row of counts [n, V] is far from the matching row of probs [n, V]."""
    pvalues = [_pvalue(row, dist) for row, dist in zip(counts, probs, strict=True)]
    assert min(pvalues) < 1e-6, f"{label}: cannot tell the sampler from {probs} (p = {pvalues})"


# ---- the generic sampler on fixed distributions ---------------------------------------------------------

# Three positions over six tokens: two drafted positions and the bonus position.
DRAFT_LOGITS = [[2.4, 0.7, -0.5, 1.6, 1.7, -0.9],
                [-0.1, 0.3, -1.2, -0.2, 1.2, 2.7],
                [-2.3, 0.8, -1.9, -0.8, 0.9, -1.3]]
VERIFIER_LOGITS = [[0.5, -0.6, 0.9, -1.8, 2.6, -1.2],
                   [-0.8, -1.6, 1.7, 0.6, 0.1, 2.0],
                   [-1.5, -1.2, 0.4, -1.0, -0.4, -0.2]]
ROUNDS = 20000

# For each rule and setting, an alpha at which the rule defers at some positions (or tokens) and not at
# others, and at which deciding on the scaled distributions would change some decision.
SETTINGS = [(0.5, 1.0), (1.7, 1.0), (1.7, 0.8)]  # (temperature, top_p)
ALPHAS = {
    "chow": (0.43, 0.43, 0.40),
    "diff": (0.03, -0.17, -0.18),
    "opt": (0.04, -0.55, -0.37),
    "token_v1": (0.10, 0.20, 0.21),
    "token_v2": (0.52, 0.52, 0.52),
    "token_v3": (0.65, 0.65, 0.65),
}
CASES = [(rule, *setting, alpha)
         for rule, alphas in ALPHAS.items() for setting, alpha in zip(SETTINGS, alphas, strict=True)]


def _emitted_counts(target: rules.Target, draft_scaled: torch.Tensor, seed: int, rounds: int = ROUNDS) -> np.ndarray:
    """Counts [k + 1, V] of the tokens each position emits over rounds of k drafts from draft_scaled [k, V]."""
    generator = torch.Generator().manual_seed(seed)
    counts = np.zeros((draft_scaled.shape[0] + 1, draft_scaled.shape[1]))
    # every round's drafts drawn at once [rounds, k]: independent of the rounds' own draws, as in a decode
    all_drafts = torch.multinomial(draft_scaled, rounds, replacement=True, generator=generator).T.contiguous()
    for drafts, tokens in zip(all_drafts, all_drafts.tolist(), strict=True):
        outcome = rules.verify_round(drafts, draft_scaled, target, generator)
        for position in range(outcome.accepted):
            counts[position, tokens[position]] += 1
        counts[outcome.accepted, outcome.next_token] += 1
    return counts


def _model_dists(temperature, top_p):
    draft = Dists.from_logits(torch.tensor(DRAFT_LOGITS), temperature, top_p)
    verifier = Dists.from_logits(torch.tensor(VERIFIER_LOGITS), temperature, top_p)
    return draft, verifier


@pytest.mark.parametrize(("rule", "temperature", "top_p", "alpha"), CASES)
def test_cascade_sampler_matches_the_papers_target(rule, temperature, top_p, alpha):
    pi, deferral = reference_target(rule, alpha, DRAFT_LOGITS, VERIFIER_LOGITS, temperature, top_p)
    assert deferral.any() and not deferral.all(), "the case should defer at some positions and not at others"
    if rule not in POSITION_RULES:
        eta = (_sampling_dist(np.array(DRAFT_LOGITS), temperature, top_p) * deferral).sum(-1)
        assert ((eta > 0) & (eta < 1)).any(), "the case should mix both models somewhere"
    draft, verifier = _model_dists(temperature, top_p)
    k = len(DRAFT_LOGITS) - 1
    target = rules.cascade_rule_target(rule, alpha)(draft, verifier)
    counts = _emitted_counts(target, draft.scaled[:k], seed=17)
    assert counts[k].sum() > 1000, "too few rounds reach the bonus position"
    _assert_sampled_from(counts, pi, rule)
    for decide_on, mix in WRONG_CHOICES:
        wrong, _ = reference_target(rule, alpha, DRAFT_LOGITS, VERIFIER_LOGITS, temperature, top_p, decide_on, mix)
        _assert_not_sampled_from(counts, wrong, f"{rule}, decisions on {decide_on}, mixture of {mix}")


# ---- the bonus token: from the target (exact, the default) or from the verifier (an approximation) -----------

def test_bonus_from_the_verifier_is_not_the_target_at_the_bonus_position():
    rule, alpha, temperature, top_p = "token_v1", 0.10, 0.5, 1.0
    pi, _ = reference_target(rule, alpha, DRAFT_LOGITS, VERIFIER_LOGITS, temperature, top_p)
    verifier_bonus = _sampling_dist(np.array(VERIFIER_LOGITS[-1:]), temperature, top_p)
    assert 0.5 * np.abs(pi[-1] - verifier_bonus[0]).sum() > 0.1, "the case should tell the two bonus sources apart"
    draft, verifier = _model_dists(temperature, top_p)
    k = len(DRAFT_LOGITS) - 1
    # As the decoder calls it: with the drafter at the bonus position for the target, without for the verifier.
    exact = rules.cascade_rule_target(rule, alpha)(draft, verifier)
    approximate = rules.cascade_rule_target(rule, alpha, bonus_from_verifier=True)(draft.head(k), verifier)
    exact_counts = _emitted_counts(exact, draft.scaled[:k], seed=23)
    approximate_counts = _emitted_counts(approximate, draft.scaled[:k], seed=23)
    _assert_sampled_from(exact_counts, pi, "bonus: target")
    _assert_sampled_from(approximate_counts[:k], pi[:k], "bonus: verifier, drafted positions")
    _assert_sampled_from(approximate_counts[k:], verifier_bonus, "bonus: verifier, bonus position")
    _assert_not_sampled_from(approximate_counts[k:], pi[k:], "bonus: verifier, bonus position")


# ---- whole decodes on tiny models --------------------------------------------------------------------------

def _next_logits(model, input_ids, generated):
    """The model's next-token logits [V] after the prompt and the generated tokens."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder_ids = torch.tensor([[model.config.decoder_start_token_id, *generated]])
            return model(input_ids=input_ids, decoder_input_ids=decoder_ids).logits[0, -1].double().numpy()
        ids = torch.cat([input_ids, torch.tensor([generated], dtype=torch.long)], 1)
        return model(input_ids=ids).logits[0, -1].double().numpy()


def _pair_target(pair, input_ids, generated, rule, alpha, temperature, top_p, decide_on="unscaled", mix="scaled"):
    draft_logits = _next_logits(pair.drafter, input_ids, generated)[None]
    verifier_logits = _next_logits(pair.verifier, input_ids, generated)[None]
    return reference_target(rule, alpha, draft_logits, verifier_logits, temperature, top_p, decide_on, mix)[0][0]


# Alphas at which each rule's decision at the first position differs between unscaled and scaled distributions
# (chow, opt) or at which the token rule's deferred set does.
@pytest.mark.parametrize(("family", "rule", "alpha"), [("t5", "chow", 0.58), ("llama", "opt", -0.25),
                                                        ("t5", "token_v2", 0.86)])
def test_first_token_of_a_decode_matches_the_papers_target(family, rule, alpha, one_thread):
    temperature, top_p, draws = 0.5, 0.9, 1000
    pair, ids = tiny_pair(family, seed=5, noise=0.8), prompt(3)
    settings = DecodingConfig(max_new_tokens=1, temperature=temperature, top_p=top_p, draft_length=3)
    params = {"rule": rule, "alpha": alpha}
    generator = torch.Generator().manual_seed(11)
    counts = np.zeros((1, VOCAB))
    for _ in range(draws):
        counts[0, decode("spec_cascade", pair, ids, settings, params, generator).tokens[0]] += 1
    _assert_sampled_from(counts, _pair_target(pair, ids, [], rule, alpha, temperature, top_p)[None], rule)
    for decide_on, mix in WRONG_CHOICES:
        wrong = _pair_target(pair, ids, [], rule, alpha, temperature, top_p, decide_on, mix)
        _assert_not_sampled_from(counts, wrong[None], f"{rule}, decisions on {decide_on}, mixture of {mix}")


@pytest.mark.parametrize("bonus", ["target", "verifier"])
def test_bonus_token_of_a_decode(bonus, one_thread):
    """Rounds of one draft that accept it emit a bonus token. Over such rounds, the pair (draft, bonus) has
    probability min(q(x), pi(x)) * pi(y | x) with the default bonus source; `bonus: verifier` replaces
    pi(y | x) by p(y | x), which the test tells apart."""
    rule, alpha, temperature, top_p, draws = "token_v1", 0.3, 0.7, 1.0, 1200
    pair, ids = tiny_pair("t5", seed=5, noise=0.8), prompt(3)
    settings = DecodingConfig(max_new_tokens=2, temperature=temperature, top_p=top_p, draft_length=1)
    generator = torch.Generator().manual_seed(5)
    counts = np.zeros((VOCAB, VOCAB))
    for _ in range(draws):
        result = decode("spec_cascade", pair, ids, settings, {"rule": rule, "alpha": alpha, "bonus": bonus},
                        generator)
        if result.accepted_per_round[0] == 1 and result.tokens[0] != EOS:
            counts[result.tokens[0], result.tokens[1]] += 1
    draft_first = _sampling_dist(_next_logits(pair.drafter, ids, [])[None], temperature, top_p)[0]
    accepted_first = np.minimum(draft_first, _pair_target(pair, ids, [], rule, alpha, temperature, top_p))
    accepted_first[EOS] = 0.0  # an accepted EOS ends the output without a bonus token
    exact, approximate = np.zeros((VOCAB, VOCAB)), np.zeros((VOCAB, VOCAB))
    for first in range(VOCAB):
        exact[first] = accepted_first[first] * _pair_target(pair, ids, [first], rule, alpha, temperature, top_p)
        verifier_next = _next_logits(pair.verifier, ids, [first])[None]
        approximate[first] = accepted_first[first] * _sampling_dist(verifier_next, temperature, top_p)[0]
    assert counts.sum() > 800
    if bonus == "target":
        _assert_sampled_from(counts.reshape(1, -1), exact.reshape(1, -1), "bonus: target")
    else:
        _assert_sampled_from(counts.reshape(1, -1), approximate.reshape(1, -1), "bonus: verifier")
        _assert_not_sampled_from(counts.reshape(1, -1), exact.reshape(1, -1), "bonus: verifier")
