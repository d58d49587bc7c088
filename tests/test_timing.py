"""The cost of a wide verifier call in one-token steps, read with a clock the test controls."""

import pytest

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models import cached
from speccascade_bench.models.cached import StaticShapes
from speccascade_bench.run import timing

from .helpers import prompt, tiny_pair


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_wide_call_cost_times_the_asked_widths_and_leaves_decoding_alone(family, monkeypatch):
    pair = tiny_pair(family)
    pair.use_static_caches(StaticShapes(max_new_tokens=40, max_source_tokens=8, max_step_tokens=6))
    inputs = [prompt(seed, length=4) for seed in range(2)]  # a prompt forward is not 6 wide
    settings = DecodingConfig(max_new_tokens=12, temperature=0.0, draft_length=5)
    before = [decode("spec_decode", pair, x, settings).tokens for x in inputs]

    clock = [0.0]
    widths = []
    real_logits = cached.CachedDecoder.logits

    def logits(self, keep=1):
        # every forward costs 1 + 0.1 per token it reads, on the test's clock
        new = len(self.tokens) - self.cached
        widths.append(new)
        clock[0] += 1.0 + 0.1 * new
        return real_logits(self, keep)

    monkeypatch.setattr(cached.CachedDecoder, "logits", logits)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    ratio = timing.wide_call_cost(pair, "verifier", inputs, width=6, positions=(3, 9), repeats=4)
    monkeypatch.undo()

    assert ratio == pytest.approx(1.6 / 1.1)
    assert widths.count(6) == 2 * 2 * 4  # inputs x positions x repeats, besides the one-token calls
    assert [decode("spec_decode", pair, x, settings).tokens for x in inputs] == before
