"""What scripts/bench_peers.py prints: the cases' table, the ratios against the peers and the predictions, and which
outputs are identical to generate()'s."""

from __future__ import annotations

import math
import statistics

import torch
import transformers

from speccascade_bench.analysis.tradeoff import (
    acceptance_probability,
    drafter_calls_per_round,
    leviathan_speedup,
    per_call_cost,
)
from speccascade_bench.run.session import device_info

REFERENCE = "verifier greedy (generate)"


def ratio(seconds: dict, ours_case: str, peer_case: str) -> tuple[float, float, float]:
    """The median over examples of ours / peer, with the 10th and 90th percentiles."""
    values = sorted(a / b for a, b in zip(seconds[ours_case], seconds[peer_case], strict=True))
    return (statistics.median(values), values[int(0.1 * (len(values) - 1))],
            values[math.ceil(0.9 * (len(values) - 1))])


def tokens(measured, name: str) -> list:
    return [o.tokens if hasattr(o, "tokens") else o for o in measured.outputs[name]]


def same_as(measured, name: str, reference: str = REFERENCE) -> int:
    """How many examples' outputs of a case are identical to the reference case's."""
    return sum(a == b for a, b in zip(tokens(measured, name), tokens(measured, reference), strict=True))


def cost_ratio(measured, suffix: str = "") -> float:
    """The drafter's per-call cost over the verifier's, from the suite's one-model cases."""
    drafter, verifier = f"drafter greedy (suite{suffix})", f"verifier greedy (suite{suffix})"
    seconds, outputs = measured.seconds, measured.outputs
    return (per_call_cost(seconds[drafter], [o.drafter_calls for o in outputs[drafter]])
            / per_call_cost(seconds[verifier], [o.verifier_calls for o in outputs[verifier]]))


def print_cases(args, n: int, pair, device, cases: dict, measured) -> None:
    print(f"# bench_peers: {args.pair} pair, {n} examples, gamma {args.gamma}, max_new_tokens {args.max_new_tokens}, "
          f"compile mode {args.compile_mode}")
    hardware = ", ".join(f"{k} {v}" for k, v in device_info(device).items())
    print(f"machine: {hardware}; {pair.dtype}; torch {torch.__version__}, transformers {transformers.__version__}")
    print()
    print(f"Each example's time: the fastest of {args.repeats} interleaved runs. Host reads: ops that wait for a "
          "tensor's value (`decoding.host_reads`), counted in a separate untimed pass (not in the compiled cases, "
          "which the counter would recompile); in forward: the share of the time spent inside the models' forward "
          "calls, in another (forward hooks; in the compiled cases, which hooks would recompile, the suite's model "
          "calls, `CachedDecoder.logits` and an encoder-decoder's encoder); in first calls: the share in each model's "
          "first calls of an example (a decoder-only prompt's prefill; an encoder-decoder's encoder and first step)."
          )
    print()
    print("| case | total s | median ms/example | host reads per token | host reads per round | in forward | "
          "in first calls |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    total, reads, in_forward, first_share = measured.total, measured.reads, measured.in_forward, measured.prompt_share
    for name in cases:
        done = measured.outputs[name]
        out_tokens = sum(len(o.tokens) if hasattr(o, "tokens") else len(o) for o in done)
        rounds = sum(getattr(o, "rounds", 0) for o in done)
        per_token = f"{reads[name] / max(1, out_tokens):.2f}" if name in reads else "-"
        per_round = f"{reads[name] / rounds:.2f}" if rounds and name in reads else "-"
        share = f"{in_forward[name][0] / in_forward[name][1]:.3f}" if name in in_forward else "-"
        first = f"{first_share[name][0] / first_share[name][1]:.3f}" if name in first_share else "-"
        print(f"| {name} | {total[name]:.2f} | {1000 * statistics.median(measured.seconds[name]):.1f} | {per_token} | "
              f"{per_round} | {share} | {first} |")
    print()


RATIOS = [
    ("verifier (suite) / generate, greedy", "verifier greedy (suite)", REFERENCE, "<= 1.0"),
    ("spec_decode / assisted, greedy", "spec_decode greedy (suite)", "assisted greedy (generate)", "<= 0.5"),
    ("spec_decode / assisted, T=1", "spec_decode T=1 (suite)", "assisted T=1 (generate)", "<= 0.5"),
    ("prompt_lookup / generate's prompt lookup, greedy", "prompt_lookup greedy (suite)",
     "prompt lookup greedy (generate)", "<= 1.0"),
    ("prompt_lookup / verifier (suite), greedy", "prompt_lookup greedy (suite)", "verifier greedy (suite)", "-"),
    ("spec_decode / prompt_lookup (suite), greedy", "spec_decode greedy (suite)", "prompt_lookup greedy (suite)", "-"),
]
COMPILED_RATIOS = [
    ("verifier compiled (suite) / generate static compiled, greedy", "verifier greedy (suite, compiled)",
     "verifier greedy (generate, static compiled)", "<= 1.0"),
    ("verifier compiled (suite) / verifier (suite), greedy", "verifier greedy (suite, compiled)",
     "verifier greedy (suite)", "-"),
    ("spec_decode compiled / assisted, greedy", "spec_decode greedy (suite, compiled)",
     "assisted greedy (generate)", "<= 0.5"),
]
SPEEDUPS = [("spec_decode, greedy", "spec_decode greedy (suite)", "verifier greedy (suite)", ""),
            ("spec_decode, T=1", "spec_decode T=1 (suite)", "verifier T=1 (suite)", ""),
            ("spec_cascade token_v2 a=0.1, T=1", "spec_cascade token_v2 a=0.1 T=1 (suite)", "verifier T=1 (suite)", "")]
COMPILED_SPEEDUPS = [("spec_decode, greedy, compiled", "spec_decode greedy (suite, compiled)",
                      "verifier greedy (suite, compiled)", ", compiled")]


def print_ratios(measured, compiled: bool) -> None:
    """The suite against its peers, and the least spec_decode / assisted could be with a free loop."""
    print("Ratios: the median over examples of the per-example ratio, [10th, 90th percentile], and the ratio of the "
          "summed times.")
    print()
    print("| ratio | median [p10, p90] | of totals | goal |")
    print("| --- | --- | --- | --- |")
    total = measured.total
    for label, ours_case, peer_case, goal in RATIOS + (COMPILED_RATIOS if compiled else []):
        middle, low, high = ratio(measured.seconds, ours_case, peer_case)
        print(f"| {label} | {middle:.3f} [{low:.3f}, {high:.3f}] | {total[ours_case] / total[peer_case]:.3f} | "
              f"{goal} |")
    # If the suite's loop cost nothing outside the models' calls, spec_decode / assisted would be at least this
    # (the same for the compiled loop, and: no loop avoids the prompt, so its first calls alone bound it too)
    floors = [("greedy", "spec_decode greedy (suite)", "assisted greedy (generate)"),
              ("T=1", "spec_decode T=1 (suite)", "assisted T=1 (generate)")]
    if compiled:
        floors.append(("greedy, compiled", "spec_decode greedy (suite, compiled)", "assisted greedy (generate)"))
    for label, ours_case, peer_case in floors:
        inside = measured.in_forward[ours_case]
        floor = (inside[0] / inside[1]) * total[ours_case] / total[peer_case]
        print(f"| spec_decode's forward calls alone / assisted, {label} (of totals) | - | {floor:.3f} | - |")
    share = measured.prompt_share["spec_decode greedy (suite)"]
    first = share[0] / share[1] * total["spec_decode greedy (suite)"] / total["assisted greedy (generate)"]
    print(f"| spec_decode's first calls alone / assisted, greedy (of totals) | - | {first:.3f} | - |")


def print_speedups(measured, compiled: bool, gamma: int, verify_cost: dict, cascade: dict) -> None:
    """Each measured speed-up over the verifier against Leviathan et al.'s prediction, and against the prediction
    with this machine's verify-call cost."""
    for label, spec, base, suffix in SPEEDUPS + (COMPILED_SPEEDUPS if compiled else []):
        results = measured.outputs[spec]
        a = acceptance_probability(sum(o.accepted for o in results), sum(o.rejections for o in results))
        c = cost_ratio(measured, suffix)
        measured_speedup = 1 / ratio(measured.seconds, spec, base)[0]  # the median example's speed-up
        calls = drafter_calls_per_round(cascade if spec.startswith("spec_cascade") else {}, gamma)
        predicted = leviathan_speedup(a, gamma, c, calls)
        r = verify_cost[suffix]
        bound = leviathan_speedup(a, gamma, c, calls, verify_cost=r)
        print(f"| speed-up / predicted: {label} (a={a:.3f}, c={c:.3f}) | {measured_speedup:.2f} / "
              f"{predicted:.2f} = {measured_speedup / predicted:.3f} | >= 0.9 |")
        print(f"| speed-up / predicted with this machine's verify-call cost: {label} (r={r:.2f}) | "
              f"{measured_speedup:.2f} / {bound:.2f} = {measured_speedup / bound:.3f} | - |")
    print()


def print_identity(measured, n: int, cases: dict, compiled: bool) -> None:
    """How many examples each greedy case decodes exactly as generate() does."""
    line = (f"identical to generate() greedy: suite verifier {same_as(measured, 'verifier greedy (suite)')}/{n}, "
            f"suite spec_decode {same_as(measured, 'spec_decode greedy (suite)')}/{n}, "
            f"assisted generation {same_as(measured, 'assisted greedy (generate)')}/{n}, "
            f"suite prompt_lookup {same_as(measured, 'prompt_lookup greedy (suite)')}/{n}, "
            f"generate's prompt lookup {same_as(measured, 'prompt lookup greedy (generate)')}/{n}")
    if compiled:
        for name in ("verifier greedy (suite, compiled)", "spec_decode greedy (suite, compiled)",
                     "verifier greedy (generate, static compiled)"):
            line += f", {name.replace(' greedy', '')} {same_as(measured, name)}/{n}"
    print(line)
    if compiled:
        print("graphs compiled in the warm-up (the suite's steps compile when the pair is loaded): " + ", ".join(
            f"{name} {measured.graphs[name]}" for name in cases if "compiled" in name))
