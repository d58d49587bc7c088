"""Methods over tiny random models of both families: exactness at temperature 0, extremes of every rule,
counters, and the distribution of speculative sampling's first token at temperature 1."""

import pytest
import torch
from scipy.stats import chisquare

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import ModelPair
from speccascade_bench.models.loading import ModelLoadError, check_compatible

from .helpers import EOS, VOCAB, perturbed, prompt, tiny_llama, tiny_pair, tiny_t5

FAMILIES = ["t5", "llama"]
SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module", params=FAMILIES)
def pairs(request):
    return [tiny_pair(request.param, seed) for seed in (0, 1)]


def _generate(model, input_ids, max_new_tokens):
    out = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=EOS,
                         pad_token_id=0)
    start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    return out[0, start:].tolist()


def _drafter_after(pair, input_ids, first, max_new):
    """The drafter's greedy output when the first token is given: that token, then the drafter's continuation."""
    if first == EOS:
        return [first]
    kwargs = dict(max_new_tokens=max_new - 1, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    if pair.is_encoder_decoder:
        out = pair.drafter.generate(input_ids, decoder_input_ids=torch.tensor([[pair.start_token_id, first]]), **kwargs)
        return out[0, 1:].tolist()
    ids = torch.cat([input_ids, torch.tensor([[first]])], 1)
    out = pair.drafter.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)  # the token may be the pad id
    return out[0, input_ids.shape[1]:].tolist()


def _greedy(method, pair, seed, gamma=5, max_new=24, **params):
    settings = DecodingConfig(max_new_tokens=max_new, temperature=0.0, draft_length=gamma)
    return decode(method, pair, prompt(seed), settings, params, torch.Generator().manual_seed(seed))


def test_autoregressive_equals_generate(pairs):
    for pair in pairs:
        for seed in SEEDS:
            for role in ("verifier", "drafter"):
                result = _greedy(role, pair, seed)
                assert result.tokens == _generate(getattr(pair, role), prompt(seed), 24)


@pytest.mark.parametrize("gamma", [1, 3, 5, 8])
def test_spec_decode_greedy_equals_verifier(pairs, gamma):
    ended_inside = 0
    for pair in pairs:
        for seed in SEEDS:
            for max_new in (7, 24):
                expected = _generate(pair.verifier, prompt(seed), max_new)
                result = _greedy("spec_decode", pair, seed, gamma, max_new)
                assert result.tokens == expected
                assert len(result.tokens) <= max_new
                assert EOS not in result.tokens[:-1]
                ended_inside += EOS in result.tokens
    assert ended_inside > 0, "no case reached EOS; the EOS paths were not exercised"


def test_greedy_extremes_of_every_method(pairs):
    for pair in pairs:
        for seed in SEEDS:
            drafter, verifier = _greedy("drafter", pair, seed).tokens, _greedy("verifier", pair, seed).tokens
            spec = _greedy("spec_decode", pair, seed).tokens
            assert spec == verifier
            for rule, alpha in [("diff", 1.0), ("chow", 1.0), ("token_v3", 1.0), ("diff", 0.999)]:
                assert _greedy("spec_cascade", pair, seed, rule=rule, alpha=alpha).tokens == drafter, rule
            for rule, alpha in [("diff", -1.0), ("token_v1", -1.0), ("token_v2", -1.0), ("opt", -1e9)]:
                assert _greedy("spec_cascade", pair, seed, rule=rule, alpha=alpha).tokens == verifier, rule
            assert _greedy("token_cascade", pair, seed, alpha=1.0).tokens == drafter
            assert _greedy("token_cascade", pair, seed, alpha=0.0).tokens == verifier
            assert _greedy("lossy_spec_decode", pair, seed, alpha=0.0, beta=1.0).tokens == verifier
            assert _greedy("seq_cascade", pair, seed, threshold=-1e9).tokens == drafter
            # BiLD's first token is the verifier's; with no fallback and no rollback the drafter does the rest
            after_first = _drafter_after(pair, prompt(seed), verifier[0], 24)
            assert _greedy("bild", pair, seed, alpha=0.0, beta=1e9, draft_length=1000).tokens == after_first
            assert _greedy("bild", pair, seed, alpha=0.0, beta=1e9, draft_length=1000,
                           loop="drafter_first").tokens == drafter
            for loop in ("reference", "drafter_first"):
                assert _greedy("bild", pair, seed, alpha=1.0, beta=1e9, loop=loop).tokens == verifier
            assert _greedy("seq_cascade", pair, seed, threshold=0.0).tokens == verifier


def test_greedy_token_v3_equals_greedy_lossy_and_opt_equals_diff(pairs):
    for pair in pairs:
        for seed in SEEDS:
            for alpha in (0.2, 0.5, 0.8):
                lossy = _greedy("lossy_spec_decode", pair, seed, alpha=alpha, beta=1.0)
                token_v3 = _greedy("spec_cascade", pair, seed, rule="token_v3", alpha=alpha, bonus="verifier")
                assert lossy.tokens == token_v3.tokens
            for alpha in (-0.2, 0.0, 0.2):
                opt = _greedy("spec_cascade", pair, seed, rule="opt", alpha=alpha)
                diff = _greedy("spec_cascade", pair, seed, rule="diff", alpha=alpha)
                assert opt.tokens == diff.tokens


def test_counters_are_consistent(pairs):
    rules = ["chow", "diff", "opt", "token_v1", "token_v2", "token_v3"]
    for pair in pairs:
        for seed in SEEDS:
            for rule in rules:
                for temperature in (0.0, 1.0):
                    settings = DecodingConfig(max_new_tokens=20, temperature=temperature, draft_length=4)
                    r = decode("spec_cascade", pair, prompt(seed), settings, {"rule": rule, "alpha": 0.3},
                               torch.Generator().manual_seed(seed))
                    assert r.accepted <= r.drafted <= 4 * r.rounds
                    assert r.verifier_calls == r.rounds
                    assert sum(r.accepted_per_round) == r.accepted and len(r.accepted_per_round) == r.rounds
                    assert sum(k < 4 for k in r.accepted_per_round) >= r.rejections >= 0
                    assert 1 <= r.output_length <= 20
                    assert 0 <= r.deferred <= r.drafted + r.rounds
            for temperature in (0.0, 1.0):
                for loop in ("reference", "drafter_first"):
                    settings = DecodingConfig(max_new_tokens=20, temperature=temperature, draft_length=4)
                    bild = decode("bild", pair, prompt(seed), settings, {"alpha": 0.6, "beta": 1.0, "loop": loop},
                                  torch.Generator().manual_seed(seed))
                    assert bild.verifier_calls == bild.deferred  # each verifier call emits one token
                    # the reference loop's second call after a rollback emits the token after the replacement
                    assert 0 <= bild.verifier_calls - bild.rounds <= (bild.rejections if loop == "reference" else 0)
                    assert bild.accepted <= bild.drafted and bild.rejections <= bild.rounds
                    assert sum(bild.accepted_per_round) == bild.accepted and len(bild.accepted_per_round) == bild.rounds
                    unchecked = bild.output_length - bild.deferred - bild.accepted  # drafter tokens never scored
                    assert 0 <= unchecked <= 4 and bild.drafter_calls >= bild.drafted + unchecked
                    assert 1 <= bild.output_length <= 20
            token = _greedy("token_cascade", pair, seed, alpha=0.4)
            assert token.verifier_calls == token.deferred
            assert token.drafter_calls == token.output_length
            drafter = _greedy("drafter", pair, seed)
            assert drafter.verifier_calls == 0 and drafter.drafter_calls == drafter.output_length
            verifier = _greedy("verifier", pair, seed)
            assert verifier.drafter_calls == 0 and verifier.verifier_calls == verifier.output_length


def test_a_drafter_identical_to_the_verifier_is_never_rejected(pairs):
    for pair in pairs:
        same = ModelPair(pair.verifier, pair.verifier, None, torch.device("cpu"), torch.float32)
        for seed in SEEDS:
            for temperature in (0.0, 1.0):
                settings = DecodingConfig(max_new_tokens=20, temperature=temperature, draft_length=4)
                r = decode("spec_decode", same, prompt(seed), settings, {}, torch.Generator().manual_seed(seed))
                assert r.rejections == 0 and r.accepted == r.drafted > 0


def test_token_cascade_never_calls_verifier_without_deferral(pairs):
    result = _greedy("token_cascade", pairs[0], 0, alpha=1.0)
    assert result.verifier_calls == 0 and result.deferred == 0


def test_spec_decode_rolls_back_instead_of_recomputing(pairs):
    """Each round is one verifier call; with partial acceptance the caches are cropped, not rebuilt."""
    pair = pairs[0]
    result = _greedy("spec_decode", pair, 1, gamma=5, max_new=24)
    assert result.verifier_calls == result.rounds
    assert result.rounds < result.output_length or result.output_length == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_decode_first_token_distribution_matches_verifier(family):
    pair = tiny_pair(family, seed=5, noise=0.8)
    ids = prompt(3)
    settings = DecodingConfig(max_new_tokens=1, temperature=1.0, draft_length=3)
    with torch.no_grad():
        if pair.is_encoder_decoder:
            logits = pair.verifier(input_ids=ids, decoder_input_ids=torch.tensor([[0]])).logits[0, -1]
        else:
            logits = pair.verifier(input_ids=ids).logits[0, -1]
    expected = torch.softmax(logits.float(), -1)
    generator = torch.Generator().manual_seed(7)
    counts = torch.zeros(VOCAB)
    n = 3000
    for _ in range(n):
        counts[decode("spec_decode", pair, ids, settings, {}, generator).tokens[0]] += 1
    support = expected * n >= 5
    observed = torch.cat([counts[support], counts[~support].sum(0, keepdim=True)])
    wanted = torch.cat([expected[support], expected[~support].sum(0, keepdim=True)]) * n
    keep = wanted > 0
    assert chisquare(observed[keep].numpy(), wanted[keep].numpy()).pvalue > 1e-3


def test_mismatched_pair_is_refused():
    with pytest.raises(ModelLoadError, match="vocab_size"):
        check_compatible(tiny_t5(0, vocab=12).config, tiny_t5(0, vocab=14).config)
    with pytest.raises(ModelLoadError, match="encoder-decoder"):
        check_compatible(tiny_t5(0).config, tiny_llama(0).config)
    other = tiny_t5(0).config
    other.eos_token_id = 2
    with pytest.raises(ModelLoadError, match="eos_token_id"):
        check_compatible(tiny_t5(0).config, other)


def test_a_discarded_bonus_token_is_not_counted_as_deferred(pairs):
    """A cascade that never defers (chow at alpha 1) with its bonus from the verifier: when a draft fills the
    token limit, the bonus drawn after it is discarded and defers nothing."""
    for pair in pairs:
        for seed in SEEDS:
            result = _greedy("spec_cascade", pair, seed, gamma=4, max_new=4, rule="chow", alpha=1.0, bonus="verifier")
            assert result.tokens == _greedy("drafter", pair, seed, max_new=4).tokens
            assert result.deferred == 0.0
            longer = _greedy("spec_cascade", pair, seed, gamma=4, max_new=5, rule="chow", alpha=1.0, bonus="verifier")
            if pair.eos_token_id not in longer.tokens[:4]:  # the bonus after a full draft is kept and deferred
                assert longer.deferred == 1.0


def test_embedding_tables_of_different_sizes_share_the_tokenizer_rows(one_thread):
    """Qwen2.5's 0.5B and 7B pad one tokenizer's embeddings to different sizes: the pair decodes over the
    shared rows, and spec_decode still equals the verifier at temperature 0."""
    verifier = tiny_llama(0)
    drafter = perturbed(verifier, 0.2, 5)
    drafter.resize_token_embeddings(VOCAB + 4, mean_resizing=False)
    with pytest.raises(ModelLoadError, match="do not fit the smaller"):
        check_compatible(drafter.config, verifier.config, tokens=VOCAB + 1)
    check_compatible(drafter.config, verifier.config, tokens=VOCAB)
    pair = ModelPair(drafter, verifier, None, torch.device("cpu"), torch.float32, vocab_size=VOCAB)
    for seed in SEEDS:
        expected = _generate(verifier, prompt(seed), 24)
        assert _greedy("spec_decode", pair, seed).tokens == expected
        assert max(_greedy("spec_cascade", pair, seed, rule="opt", alpha=0.2).tokens) < VOCAB  # no padding row
