"""The static-cache fast path: preallocated caches (and compiled decode steps) give the same outputs and
counters as transformers' dynamic caches, greedy and sampled with the same random numbers, for every
method and both model families. On the CPU by default; `--device cuda` runs them on a GPU, where the
compiled steps are also checked with CUDA graphs (mode reduce-overhead)."""

import pytest
import torch

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import StaticShapes

from .helpers import EOS, prompt, tiny_pair

FAMILIES = ["t5", "llama"]
METHOD_RUNS = [
    ("drafter", {}), ("verifier", {}), ("spec_decode", {}), ("spec_decode", {"draft_length": 1}), ("prompt_lookup", {}),
    ("lossy_spec_decode", {"alpha": 0.4, "beta": 1.0}), ("token_cascade", {"alpha": 0.4}),
    ("seq_cascade", {"threshold": -1.0}), ("bild", {"alpha": 0.6, "beta": 1.0}),
    ("bild", {"alpha": 0.6, "beta": 1.0, "loop": "drafter_first"}),
    *[("spec_cascade", {"rule": rule, "alpha": 0.3}) for rule in ("chow", "diff", "opt", "token_v1", "token_v2")],
    ("spec_cascade", {"rule": "token_v3", "alpha": 0.5, "bonus": "verifier"}),
]
COUNTERS = ("tokens", "drafter_calls", "verifier_calls", "drafted", "accepted", "rounds", "deferred")


def _static_pair(family, device, compile_mode=None, max_new=24, gamma=5):
    pair = tiny_pair(family, seed=0, device=device)
    shapes = StaticShapes(max_new_tokens=max_new, max_source_tokens=8, max_step_tokens=gamma + 1,
                          first_step_tokens=(1, gamma + 1), compile_mode=compile_mode)
    pair.use_static_caches(shapes, prompt(0).to(device) if compile_mode else None)
    return pair


def _run(pair, method, params, seed, max_new=24, gamma=5, temperature=0.0, length=6):
    settings = DecodingConfig(max_new_tokens=max_new, temperature=temperature, draft_length=gamma)
    result = decode(method, pair, prompt(seed, length).to(pair.device), settings, params,
                    torch.Generator(pair.device).manual_seed(seed))
    return {name: getattr(result, name) for name in COUNTERS}


def _expected(counters, temperature=0.0):
    """Counters to compare a run with: exact, except, when sampling, the deferred mass of the token rules,
    a sum of probabilities whose last bits depend on the cache layout (greedy, it sums one-hot masses)."""
    if temperature == 0:
        return counters
    return {**counters, "deferred": pytest.approx(counters["deferred"], rel=1e-5, abs=1e-6)}


@pytest.mark.parametrize("family", FAMILIES)
def test_static_caches_match_dynamic_caches_for_every_method(family, device):
    dynamic, static = tiny_pair(family, seed=0, device=device), _static_pair(family, device)
    ended = 0
    for seed in range(4):
        for max_new, temperature in ((7, 0.0), (24, 0.0), (24, 1.0)):
            for method, params in METHOD_RUNS:
                expected = _expected(_run(dynamic, method, params, seed, max_new, temperature=temperature),
                                     temperature)
                assert _run(static, method, params, seed, max_new, temperature=temperature) == expected, \
                    (method, params, seed, temperature)
                ended += EOS in expected["tokens"]
    assert ended > 0, "no case reached EOS"


@pytest.mark.parametrize("family", FAMILIES)
def test_static_caches_are_reused_and_checked(family, device):
    pair = _static_pair(family, device, max_new=6)
    first = pair.decoder("verifier", prompt(0).to(device))
    first.logits()
    second = pair.decoder("verifier", prompt(1).to(device))  # takes over (and resets) the verifier's cache
    first.extend([3])
    with pytest.raises(RuntimeError, match="taken by a newer decoder"):
        first.logits()
    second.logits()
    second.extend([3] * 30)
    with pytest.raises(ValueError, match="overflow the static cache"):
        second.logits()
    with pytest.raises(ValueError, match="max_source_tokens"):
        pair.decoder("drafter", prompt(0, length=9).to(device))


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_steps_keep_every_method_exact(family, mode, device):
    if mode == "reduce-overhead" and device.type != "cuda":
        pytest.skip("CUDA graphs need a GPU (--device cuda)")
    torch._dynamo.reset()
    gamma = 3
    dynamic = tiny_pair(family, seed=0, device=device)
    compiled = _static_pair(family, device, mode, max_new=12, gamma=gamma)
    graphs = dict(torch._dynamo.utils.counters["stats"])
    first_steps = 2 if family == "t5" else 0  # 1 and gamma + 1 tokens, filling the cross-attention cache
    assert graphs["unique_graphs"] >= gamma + 1 + first_steps  # compiled up front (the two models share graphs)
    for seed, length in enumerate((6, 8, 7)):  # compiled with a prompt of 6: other lengths must not recompile
        verifier = _run(dynamic, "verifier", {}, seed, 12, gamma, length=length)
        assert _run(compiled, "verifier", {}, seed, 12, gamma, length=length) == verifier
        spec = _run(compiled, "spec_decode", {}, seed, 12, gamma, length=length)
        assert spec["tokens"] == verifier["tokens"]
        for method, params in METHOD_RUNS:
            for temperature in (0.0, 1.0):
                expected = _expected(_run(dynamic, method, params, seed, 12, gamma, temperature, length), temperature)
                assert _run(compiled, method, params, seed, 12, gamma, temperature, length) == expected, \
                    (method, params, temperature, length)
    assert dict(torch._dynamo.utils.counters["stats"]) == graphs  # nothing compiled while decoding
