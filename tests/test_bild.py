"""BiLD: its fallback and rollback rules on toy distributions, and its default loop against a port of the
authors' greedy loop (`T5BiLDModel` in kssteven418/BigLittleDecoder) on tiny random models of both families."""

import itertools
import math

import pytest
import torch

from speccascade_bench.decoding import rules
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig

from .helpers import prompt, tiny_pair

VERIFIER_PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])


def test_fallback_is_max_probability_below_alpha():
    draft_probs = torch.tensor([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0]])
    assert rules.bild_falls_back(draft_probs, 0.5).tolist() == [False, True, False]
    assert rules.bild_falls_back(draft_probs, 0.6).tolist() == [False, True, False]  # max q == alpha: no fallback
    assert rules.bild_falls_back(draft_probs, 0.0).tolist() == [False, False, False]
    assert rules.bild_falls_back(draft_probs, 1.0).tolist() == [True, True, False]
    assert bool(rules.bild_falls_back(draft_probs[1], 0.41))


def test_rollback_index_is_the_first_cross_entropy_above_beta():
    logprobs = VERIFIER_PROBS.log()
    drafted = torch.tensor([0, 1, 1])  # cross-entropies -log 0.7 = 0.357, -log 0.4 = 0.916, -log 0.7 = 0.357
    assert rules.bild_rollback_index(logprobs, drafted, 0.5) == 1
    assert rules.bild_rollback_index(logprobs, drafted, 0.3) == 0
    assert rules.bild_rollback_index(logprobs, drafted, 1.0) is None
    assert rules.bild_rollback_index(logprobs, torch.tensor([0, 0, 2]), 1.0) == 2  # -log 0.1 = 2.30
    assert rules.bild_rollback_index(logprobs, torch.tensor([0, 0, 2]), 2.31) is None
    # logits give the same answer as log-probabilities (any shift per row)
    logits = logprobs + torch.tensor([[3.0], [-2.0], [0.5]])
    assert rules.bild_rollback_index(logits, drafted, 0.5) == 1
    assert rules.bild_rollback_index(logprobs[:0], torch.tensor([], dtype=torch.long), 0.0) is None
    # beta 0 rolls back at any token the verifier is not certain of
    assert rules.bild_rollback_index(logprobs, drafted, 0.0) == 0
    assert math.isclose(-math.log(0.4), 0.916, abs_tol=1e-3)


# ---- a port of the reference loop ---------------------------------------------------------------------

def _all_logits(model, input_ids, sequence) -> torch.Tensor:
    """[len(sequence), V]: the next-token logits after every position of a decoder sequence, from one full
    forward pass without a cache."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            out = model(input_ids=input_ids, decoder_input_ids=torch.tensor([sequence]), use_cache=False)
        else:
            out = model(input_ids=torch.tensor([sequence]), use_cache=False)
    return out.logits[0].float()


def _reference_bild(pair, input_ids, alpha, beta, max_run, max_new):
    """The greedy loop of the authors' `T5BiLDModel` (`_greedy_search_body`), with full forward passes in place
    of their KV caches. Like theirs, it does not test a rollback's replacement for EOS. A decoder-only prompt
    plays the part of the decoder start token: only tokens after it are tested for a rollback.

    Returns the generated tokens, the forward calls of each model, and how often each path was taken."""
    eos = pair.eos_token_id
    sequence = [pair.start_token_id] if pair.is_encoder_decoder else input_ids[0].tolist()
    start = len(sequence)
    models = {"large": pair.verifier, "small": pair.drafter}
    calls = {"large": 0, "small": 0}
    seen = dict.fromkeys(("fallbacks", "rollbacks", "same_replacement", "replacement_eos"), 0)
    # The large model's cache length: each of its passes reads the positions from here on (at least its own
    # last token, which it has not read yet). A rollback leaves it unchanged, as the rolled-back pass is
    # redone.
    large_cached = start - 1
    model, iterations_left = "large", 1
    while True:
        logits = _all_logits(models[model], input_ids, sequence)
        calls[model] += 1
        read = logits[large_cached:] if model == "large" else logits[-1:]
        token = int(read[-1].argmax())
        if model == "small" and float(torch.softmax(read[-1], -1).max()) < alpha:
            seen["fallbacks"] += 1
            model, iterations_left = "large", 1  # the small model's token is discarded
            continue
        sequence.append(token)
        if model == "large" and read.shape[0] > 1:
            drafts = torch.tensor(sequence[large_cached + 1:-1])  # the small model's tokens since the large's
            loss = torch.nn.functional.cross_entropy(read[:-1], drafts, reduction="none")
            if (loss > beta).any():
                first = int((loss > beta).int().argmax())
                new_length = large_cached + first + 1
                new_prediction = int(read[first].argmax())
                if new_prediction != sequence[new_length]:
                    seen["rollbacks"] += 1
                    seen["replacement_eos"] += new_prediction == eos
                    sequence = sequence[:new_length] + [new_prediction]
                    continue  # no EOS test, no hand-over: the large model runs again
                seen["same_replacement"] += 1
        if model == "large":
            large_cached = len(sequence) - 1
        if token == eos or len(sequence) - start >= max_new:
            break
        iterations_left -= 1
        if iterations_left == 0:
            model, iterations_left = ("small", max_run) if model == "large" else ("large", 1)
    return sequence[start:], calls, seen


def _until_eos(tokens, eos):
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


# pair seed, prompt seed, alpha, beta, draft_length: 216 cases a family
GRID = list(itertools.product((0, 1), range(3), (0.1, 0.2, 0.3, 0.5), (0.3, 1.0, 2.0), (1, 3, 6)))


def test_greedy_bild_equals_a_port_of_the_reference_loop(one_thread):
    max_new = 12
    pairs = {(family, seed): tiny_pair(family, seed, noise=0.6) for family in ("t5", "llama") for seed in (0, 1)}
    seen = dict.fromkeys(("fallbacks", "rollbacks", "same_replacement", "replacement_eos", "eos"), 0)
    for family, (pair_seed, seed, alpha, beta, draft_length) in itertools.product(("t5", "llama"), GRID):
        pair, ids = pairs[family, pair_seed], prompt(seed)
        expected, calls, paths = _reference_bild(pair, ids, alpha, beta, draft_length, max_new)
        settings = DecodingConfig(max_new_tokens=max_new, temperature=0.0)
        params = {"alpha": alpha, "beta": beta, "draft_length": draft_length}
        result = decode("bild", pair, ids, settings, params, torch.Generator().manual_seed(seed))
        case = (family, pair_seed, seed, alpha, beta, draft_length)
        # the suite ends at a replacement EOS, where the reference decodes on
        assert result.tokens == _until_eos(expected, pair.eos_token_id), case
        if result.tokens == expected:
            assert (result.verifier_calls, result.drafter_calls) == (calls["large"], calls["small"]), case
        for path, count in paths.items():
            seen[path] += count
        seen["eos"] += pair.eos_token_id in result.tokens
    assert all(count > 0 for count in seen.values()), f"a path of the loop was not taken: {seen}"


def test_an_unknown_loop_is_refused():
    pair = tiny_pair("t5", 0)
    with pytest.raises(ValueError, match="drafter_first"):
        decode("bild", pair, prompt(0), DecodingConfig(max_new_tokens=4), {"alpha": 0.5, "beta": 1.0,
                                                                           "loop": "drafter-first"})
