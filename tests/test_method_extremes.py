"""The equivalences docs/ALGORITHMS.md states that tests/test_decoding.py does not already check: the remaining
extremes of the deferral rules at temperature 0, beta's irrelevance to greedy lossy decoding, token_cascade as
the Chow speculative cascade decoded token by token, OPT at alpha 0 as Diff at alpha 0 when sampling, token_v3 at
alpha 0, and the deferral-rate extremes of seq_cascade."""

import pytest
import torch

from speccascade_bench.decoding import rules
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.rules import Dists
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.results.derived import seq_cascade_rows
from speccascade_bench.results.record import ExampleRow

from .helpers import prompt, tiny_pair

SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module", params=["t5", "llama"])
def pairs(request):
    return [tiny_pair(request.param, seed) for seed in (0, 1)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # every test here decodes tiny models
    yield


def _decode(method, pair, seed, temperature=0.0, **params):
    settings = DecodingConfig(max_new_tokens=24, temperature=temperature, draft_length=4)
    return decode(method, pair, prompt(seed), settings, params, torch.Generator().manual_seed(seed))


def test_greedy_extremes_of_the_rules(pairs):
    differ = 0
    for pair in pairs:
        for seed in SEEDS:
            drafter, verifier = _decode("drafter", pair, seed).tokens, _decode("verifier", pair, seed).tokens
            differ += drafter != verifier
            # never defer: the drafter's greedy output
            for rule, alpha in [("token_v1", 1.0), ("token_v2", 1.0), ("opt", 1e9)]:
                assert _decode("spec_cascade", pair, seed, rule=rule, alpha=alpha).tokens == drafter, rule
            # defer wherever the drafter is not certain (chow), or every token but the verifier's argmax
            # (token_v3): the verifier's greedy output
            for rule in ("chow", "token_v3"):
                assert _decode("spec_cascade", pair, seed, rule=rule, alpha=0.0).tokens == verifier, rule
            # greedy lossy decoding ignores beta
            for alpha in (0.3, 0.7):
                lenient = [_decode("lossy_spec_decode", pair, seed, alpha=alpha, beta=beta).tokens
                           for beta in (0.0, 0.5, 1.0)]
                assert lenient[0] == lenient[1] == lenient[2]
    assert differ > 0, "the drafter and the verifier agree everywhere; the extremes were not told apart"


def test_token_cascade_is_the_chow_speculative_cascade_at_temperature_0(pairs):
    """Both emit, at every position, the drafter's argmax when max q >= 1 - alpha and the verifier's otherwise;
    and both count one deferral per position handed to the verifier."""
    mixed = 0
    for pair in pairs:
        for seed in SEEDS:
            for alpha in (0.2, 0.5, 0.8):
                token = _decode("token_cascade", pair, seed, alpha=alpha)
                spec = _decode("spec_cascade", pair, seed, rule="chow", alpha=alpha)
                assert token.tokens == spec.tokens
                assert token.deferred == spec.deferred
                mixed += 0 < token.deferred < len(token.tokens)
    assert mixed > 0, "no case deferred some positions and not others"


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_opt_at_alpha_0_is_diff_at_alpha_0_when_sampling(pairs, temperature):
    """With alpha 0 OPT's TV term vanishes: the same decisions, so the same samples from the same seed."""
    for pair in pairs:
        for seed in SEEDS:
            opt = _decode("spec_cascade", pair, seed, temperature, rule="opt", alpha=0.0)
            diff = _decode("spec_cascade", pair, seed, temperature, rule="diff", alpha=0.0)
            assert (opt.tokens, opt.deferred, opt.accepted_per_round) == \
                (diff.tokens, diff.deferred, diff.accepted_per_round)


def _row(example_id, confidence, prediction, latency, tokens, drafter_calls, verifier_calls):
    return ExampleRow(example_id=example_id, confidence=confidence, prediction=prediction, latency_s=latency,
                      output_tokens=tokens, calls={"drafter": drafter_calls, "verifier": verifier_calls})


def test_seq_cascade_deferral_rate_extremes_and_order():
    drafter = [_row(i, confidence, f"d{i}", 1.0, 3, 4, 0) for i, confidence in enumerate([-0.5, -2.0, -0.1, -1.0])]
    verifier = [_row(i, None, f"v{i}", 5.0, 6, 0, 7) for i in range(4)]

    def chosen(rate):
        rows = seq_cascade_rows(drafter, verifier, rate, "run", {"alpha": rate})
        return {row["example_id"]: row for row in rows}

    kept = chosen(0.0)
    assert [kept[i]["prediction"] for i in range(4)] == ["d0", "d1", "d2", "d3"]
    assert all(row["deferred"] == 0 and row["calls"]["verifier"] == 0 and row["latency_s"] == 1.0
               for row in kept.values())
    deferred = chosen(1.0)
    assert [deferred[i]["prediction"] for i in range(4)] == ["v0", "v1", "v2", "v3"]
    assert all(row["deferred"] == 6 and row["calls"] == {"drafter": 4, "verifier": 7}
               and row["latency_s"] == 6.0 for row in deferred.values())
    half = chosen(0.5)  # the two least confident drafter outputs: examples 1 and 3
    assert [half[i]["prediction"] for i in range(4)] == ["d0", "v1", "d2", "v3"]


def test_token_v3_at_alpha_0_is_the_verifier_only_when_greedy():
    """Every token but the verifier's argmax a is deferred, so pi = q(a) [v = a] + (1 - q(a)) p: the verifier's
    one-hot argmax at temperature 0, but not the verifier's distribution when sampling."""
    draft_logits = torch.tensor([[1.0, 0.2, -0.5, 0.4]])
    verifier_logits = torch.tensor([[0.1, 1.5, 0.3, -1.0]])
    for temperature in (0.0, 1.0):
        draft = Dists.from_logits(draft_logits, temperature)
        verifier = Dists.from_logits(verifier_logits, temperature)
        pi, _ = rules.cascade_mixture("token_v3", 0.0, draft, verifier)
        top = int(verifier_logits.argmax())
        expected = (1 - draft.scaled[0, top]) * verifier.scaled[0]
        expected[top] += draft.scaled[0, top]
        assert torch.allclose(pi[0], expected)
        if temperature == 0:
            assert torch.equal(pi, verifier.scaled)
        else:
            assert (pi - verifier.scaled).abs().max() > 0.05
