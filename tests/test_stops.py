"""Stop strings: at temperature 0 every method's output with stops is its output without them cut at the first
stop string, wherever in a round the stop falls (inside a draft, at a draft's last token, at the bonus or
replacement token); lossless methods still equal the verifier."""

import dataclasses

import pytest
import torch

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.sampling import Ending
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.tasks.prompts import cut_at_stop

from .helpers import EOS, prompt, tiny_pair

MAX_NEW = 20


class LetterTokenizer:
    """Token id i is the letter chr(ord("a") + i); EOS is special (no text)."""

    def __len__(self):
        return 26

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i) for i in ids if i != EOS)


METHOD_RUNS = [
    ("verifier", {}),
    ("drafter", {}),
    ("spec_decode", {"draft_length": 3}),
    ("spec_decode", {"draft_length": 5}),
    ("lossy_spec_decode", {"alpha": 0.3, "beta": 1.0, "draft_length": 4}),
    ("token_cascade", {"alpha": 0.4}),
    ("bild", {"alpha": 0.4, "beta": 1.0, "draft_length": 4}),
    ("bild", {"alpha": 0.4, "beta": 1.0, "draft_length": 4, "loop": "drafter_first"}),
    ("spec_cascade", {"rule": "opt", "alpha": 0.1, "draft_length": 4}),
    ("spec_cascade", {"rule": "token_v3", "alpha": 0.3, "draft_length": 4, "bonus": "verifier"}),
]
LOSSLESS = {"verifier", "spec_decode"}
PAIR_SEEDS = {"t5": 3, "llama": 1}  # pairs whose outputs are long and whose drafts are often accepted


@pytest.fixture(scope="module", params=["t5", "llama"])
def pair(request):
    pair = tiny_pair(request.param, seed=PAIR_SEEDS[request.param], noise=0.3)
    pair.tokenizer = LetterTokenizer()
    return pair


def _decode(pair, method, params, seed, stop=()):
    pair.stop = stop
    try:
        settings = DecodingConfig(max_new_tokens=MAX_NEW, temperature=0.0)
        return decode(method, pair, prompt(seed), settings, params, torch.Generator().manual_seed(seed))
    finally:
        pair.stop = ()


def _stop_ending_at(text: str, position: int) -> str:
    """The shortest substring of `text` that ends at `position` and occurs nowhere earlier."""
    for length in range(1, position + 2):
        candidate = text[position - length + 1:position + 1]
        if text.find(candidate) == position - length + 1:
            return candidate
    return text[: position + 1]


def _round_ends(result) -> dict[int, str]:
    """Where each speculative round's tokens ended: the output position of its last accepted draft token, and
    of its replacement or bonus token."""
    kinds, position = {}, 0
    for accepted in result.accepted_per_round:
        if accepted:
            kinds[position + accepted - 1] = "draft's last accepted token"
        kinds[position + accepted] = "replacement or bonus token"
        position += accepted + 1
    return kinds


@pytest.mark.parametrize("method,params", METHOD_RUNS, ids=lambda v: str(v))
def test_output_with_stops_is_output_without_them_cut(pair, method, params, one_thread):
    covered = set()
    for seed in range(3):
        full = _decode(pair, method, params, seed)
        text = pair.decode(full.tokens)
        kinds = _round_ends(full) if full.accepted_per_round else {}
        reference = _decode(pair, "verifier", {}, seed)
        for position in range(len(text)):
            stop = _stop_ending_at(text, position)
            stopped = _decode(pair, method, params, seed, (stop, "zz"))  # "zz" never occurs (no token z)
            expected = cut_at_stop(text, (stop,))
            assert cut_at_stop(pair.decode(stopped.tokens), (stop,)) == expected, (seed, stop)
            # decoding ended at the token that completed the stop: nothing was decoded past it
            assert pair.decode(stopped.tokens) == text[: position + 1], (seed, stop)
            if method in LOSSLESS:
                assert cut_at_stop(pair.decode(reference.tokens), (stop,)) == expected
            covered.add(kinds.get(position, "inside a round"))
    if method not in ("verifier", "drafter", "token_cascade"):
        assert covered >= {"draft's last accepted token", "replacement or bonus token", "inside a round"}, covered


def test_seq_cascade_decides_on_the_stopped_drafter_output(pair, one_thread):
    """seq_cascade's confidence is the mean log-probability of the drafter's answer, which ends at the stop:
    its output with stops is the drafter's or the verifier's output cut there, by that confidence."""
    for seed in range(3):
        text = pair.decode(_decode(pair, "drafter", {}, seed).tokens)
        stop = (_stop_ending_at(text, min(4, len(text) - 1)),)
        draft = _decode(pair, "drafter", {}, seed, stop)
        verified = _decode(pair, "verifier", {}, seed, stop)
        for threshold in (-100.0, 0.0):
            result = _decode(pair, "seq_cascade", {"threshold": threshold}, seed, stop)
            expected = draft if draft.confidence >= threshold else verified
            assert result.tokens == expected.tokens


def test_ending_finds_stops_that_span_tokens_and_ignores_earlier_text():
    text = LetterTokenizer().decode
    end = Ending(eos=frozenset({EOS}), limit=50, stop=("cde",), text=text)
    tokens = [2, 3, 4, 5]  # c d e f
    assert [end.reached(tokens[:n]) for n in range(1, 5)] == [False, False, True, False]
    assert end.clip(tokens) == [2, 3, 4]
    assert end.clip([5, 5, EOS, 2, 3, 4]) == [5, 5, EOS]
    assert dataclasses.replace(end, limit=2).clip(tokens) == [2, 3]
    long_text = [5] * 200 + [2, 3, 4]  # far past the window: still found
    end = dataclasses.replace(end, limit=500)
    assert end.reached(long_text) and end.clip(long_text) == long_text


def test_every_eos_of_the_config_ends_decoding(pair, one_thread):
    """Gemma 2 and Llama 3 configs list several EOS ids (end of text, end of turn); the generation config too."""
    full = _decode(pair, "verifier", {}, 0).tokens
    other = full[3]
    for source in ("config", "generation_config"):
        original = getattr(pair.verifier, source).eos_token_id
        getattr(pair.verifier, source).eos_token_id = [EOS, other]
        try:
            for method, params in METHOD_RUNS[:4]:
                result = _decode(pair, method, params, 0)
                if method in LOSSLESS:
                    assert result.tokens == full[: full.index(other) + 1]
                assert other not in result.tokens[:-1] and EOS not in result.tokens[:-1]
        finally:
            getattr(pair.verifier, source).eos_token_id = original
