"""Prompt lookup as a drafter: its drafts are transformers' `PromptLookupCandidateGenerator` candidates, greedy it
gives the verifier's greedy output and `generate(prompt_lookup_num_tokens=...)`'s, sampled its outputs follow the
verifier's distribution (chi-square), it never calls the drafter model, and a round reads the host once."""

import random

import pytest
import torch

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.drafters import PromptLookupDrafter
from speccascade_bench.decoding.host_reads import count_reads
from speccascade_bench.decoding.settings import DecodingConfig

from .helpers import EOS, VOCAB, tiny_pair
from .test_chains import _chi_square, _verifier_two_tokens


def _repetitive(seed: int, length: int = 14) -> torch.Tensor:
    """A prompt built from a few repeated phrases: n-grams recur, so lookups find drafts."""
    rng = random.Random(seed)
    phrases = [[rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 4))] for _ in range(3)]
    ids: list[int] = []
    while len(ids) < length:
        ids += rng.choice(phrases)
    return torch.tensor([ids[:length]])


@pytest.mark.parametrize("max_ngram", [1, 2, 3])
def test_the_drafts_are_transformers_prompt_lookup_candidates(max_ngram):
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    pair = tiny_pair("llama")
    rng = random.Random(max_ngram)
    found = 0
    for case in range(300):
        length, wanted = rng.randint(1, 30), rng.randint(1, 8)
        sequence = [rng.choice([3, 4, 5, 6, EOS] if case % 3 else list(range(3, 9))) for _ in range(length)]
        sequence[0] = 3 if sequence[0] == EOS else sequence[0]
        theirs = PromptLookupCandidateGenerator(eos_token_id=torch.tensor([EOS]), num_output_tokens=wanted,
                                                max_matching_ngram_size=max_ngram, max_length=1000)
        candidates, _ = theirs.get_candidates(torch.tensor([sequence]))
        expected = candidates[0, length:].tolist()
        ours = PromptLookupDrafter(pair, torch.tensor([sequence[:1]]), max_ngram)
        ours.advance(0, sequence[1:], None, 0)  # the rest arrives as accepted tokens, one round at a time
        assert ours.sequence == sequence
        assert ours.lookup(wanted) == expected, (sequence, wanted)
        found += bool(expected)
    assert found > 100  # most cases draft something


@pytest.mark.parametrize("gamma", [1, 3, 8])
@pytest.mark.parametrize("family", ["llama", "t5"])
def test_greedy_prompt_lookup_is_the_verifiers_greedy_output(family, gamma):
    pair = tiny_pair(family, seed=1)
    settings = DecodingConfig(max_new_tokens=30, temperature=0.0, draft_length=gamma)
    drafted = 0
    for seed in range(6):
        ids = _repetitive(seed)
        verifier = decode("verifier", pair, ids, settings)
        looked = decode("prompt_lookup", pair, ids, settings, {"max_ngram": 2})
        assert looked.tokens == verifier.tokens
        assert looked.drafter_calls == 0 and looked.verifier_calls == looked.rounds
        assert looked.accepted <= looked.drafted and looked.rounds + looked.accepted >= len(looked.tokens)
        drafted += looked.drafted
    assert drafted > 0


def test_greedy_prompt_lookup_matches_generate_with_prompt_lookup():
    pair = tiny_pair("llama", seed=2)
    for seed in range(6):
        ids = _repetitive(seed)
        for tokens, ngram in ((3, 2), (5, 1), (10, 3)):
            out = pair.verifier.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                         prompt_lookup_num_tokens=tokens, max_matching_ngram_size=ngram,
                                         eos_token_id=EOS, pad_token_id=0)
            settings = DecodingConfig(max_new_tokens=24, temperature=0.0, draft_length=tokens)
            ours = decode("prompt_lookup", pair, ids, settings, {"max_ngram": ngram})
            assert ours.tokens == out[0, ids.shape[1]:].tolist(), (seed, tokens, ngram)


@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9)], ids=["t1", "top_p"])
def test_sampled_prompt_lookup_follows_the_verifier(sampling):
    pair = tiny_pair("llama", seed=3, noise=0.8)
    ids = torch.tensor([[5, 7, 9, 5, 7, 11, 5, 7]])  # the last 2-gram recurs: every round drafts
    settings = DecodingConfig(max_new_tokens=2, draft_length=3, **sampling)
    generator = torch.Generator().manual_seed(4)
    results = [decode("prompt_lookup", pair, ids, settings, {}, generator) for _ in range(800)]
    assert sum(r.drafted for r in results) >= 800  # the first round always drafts
    assert 0 < sum(r.accepted for r in results) < sum(r.drafted for r in results)
    assert _chi_square([tuple(r.tokens) for r in results], _verifier_two_tokens(pair, ids, settings)) > 1e-3


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_prompt_lookup_round_reads_the_host_once(temperature):
    pair = tiny_pair("llama", seed=1)
    settings = DecodingConfig(max_new_tokens=24, temperature=temperature, draft_length=4)
    for seed in range(4):
        result, reads = count_reads(decode, "prompt_lookup", pair, _repetitive(seed), settings, {},
                                    torch.Generator().manual_seed(seed))
        assert result.rounds >= 1
        assert reads.total <= result.rounds + 1, dict(reads.counts)  # the prompt once, then one per round


def test_prompt_lookup_has_no_distribution_for_a_bonus_target():
    pair = tiny_pair("llama")
    drafter = PromptLookupDrafter(pair, torch.tensor([[3, 4, 3]]), 2)
    with pytest.raises(ValueError, match="no draft distribution after its drafts"):
        drafter.propose(DecodingConfig(), 2, True, None)
