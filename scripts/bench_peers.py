"""Benchmark the suite's decoding loops against transformers' own, on the same models and inputs.

Ratios, each measured in this one process, examples interleaved:
  - `verifier` (this suite, autoregressive) vs `generate(do_sample=False)` of the verifier
  - the same on the fast path: the suite with static caches and compiled steps vs `generate()` with
    `cache_implementation="static"` and a compile config (transformers' gpt-fast-style loop)
  - `spec_decode` vs assisted generation (`generate(assistant_model=drafter)`, constant draft length
    gamma, confidence threshold 0), greedy and sampling at temperature 1
  - `prompt_lookup` vs transformers' prompt lookup (`generate(prompt_lookup_num_tokens=gamma)`, n-grams up to 2),
    greedy, and against the suite's verifier and `spec_decode`
  - measured speed-up of `spec_decode` over `verifier` vs Leviathan et al.'s prediction from the measured
    acceptance rate a and per-call cost ratio c, for the dynamic-cache and the compiled loops; and vs the
    same prediction with the verifier call over gamma + 1 positions priced at its measured cost r (in
    one-token steps) instead of 1: what the loop could reach on this machine

Every case decodes every example once untimed first (compilation and warm-up), once more counting its host
reads (ops that wait for a tensor's value: per output token, and per speculative round), once more timing the
models' forward calls inside it (the rest is the loop's own work; the forward time of `spec_decode` over
assisted generation's whole time is the least the ratio could be with a free loop; the time of the models'
first calls, a decoder-only prompt's prefill, is the least with free decoding steps), then `--repeats`
times timed, the cases interleaved per example and their order rotated per repeat. An example's time in a
case is the fastest of its repeats, and each ratio is the median over examples of the per-example ratio, with
its 10th and 90th percentiles as the spread (and, for comparison, the ratio of the summed times): a burst of
load from another process on a shared machine slows some runs, rarely the fastest of each.

On the toy T5 pair (`--pair t5`, translation inputs) or the decoder-only toy pair (`--pair llm`, 4-shot
arithmetic prompts, left-truncated as `scb run` builds them).

Usage: python scripts/bench_peers.py [--pair t5|llm] [--quick] [--examples N] [--repeats K]
         [--drafter PATH --verifier PATH] [--compile-mode default|reduce-overhead|max-autotune|none]
It reports; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import transformers

from speccascade_bench.analysis.tradeoff import (
    acceptance_probability,
    drafter_calls_per_round,
    leviathan_speedup,
    per_call_cost,
)
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.host_reads import count_reads
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import CachedDecoder, ModelPair
from speccascade_bench.models.loading import load_pair
from speccascade_bench.run.plan import shapes_for
from speccascade_bench.run.session import device_info
from speccascade_bench.run.timing import synchronize, timed, wide_call_cost
from speccascade_bench.tasks.prompts import PromptFormat, PromptParts, prompt_ids
from speccascade_bench.toy import arithmetic
from speccascade_bench.toy.language import make_splits

TOY = Path(__file__).resolve().parent.parent / "speccascade_bench" / "toy"
PAIRS = {"t5": TOY / "pair", "llm": TOY / "llm_pair"}
SHOTS = 4  # the decoder-only pair's prompts: as configs/toy_llm_t0.yaml builds them


def _inputs(pair: ModelPair, kind: str, n: int) -> list[torch.Tensor]:
    """n prompts as [1, L] ids: toy translation sources, or 4-shot arithmetic questions."""
    if kind == "t5":
        sources = [row["src"] for row in make_splits(0, {"train": 20000, "validation": 200, "test": 500})["test"][:n]]
        return [pair.encode(s, 512) for s in sources]
    splits = arithmetic.make_splits(0, {"shots": 8, "validation": 200, "test": 200})
    shots = tuple((f"Question: {row['question']}\nAnswer:", row["answer"]) for row in splits["shots"][:SHOTS])
    layout = PromptFormat(512)
    prompts = [PromptParts("", shots, f"Question: {row['question']}\nAnswer:") for row in splits["test"][:n]]
    return [torch.tensor([prompt_ids(pair.tokenizer, parts, layout, True)[0]], device=pair.device)
            for parts in prompts]


def _generate(pair, ids, max_new, sample: bool, assistant: bool, seed: int, compile_config=None, lookup=None):
    kwargs = {"max_new_tokens": max_new, "do_sample": sample}
    if lookup is not None:  # transformers' prompt lookup: `lookup` tokens drafted, n-grams up to 2
        kwargs.update(prompt_lookup_num_tokens=lookup, max_matching_ngram_size=2)
    if sample:
        kwargs.update(temperature=1.0, top_k=0, top_p=1.0)
        torch.manual_seed(seed)
    if assistant:
        kwargs["assistant_model"] = pair.drafter
    if compile_config is not None:
        kwargs.update(cache_implementation="static", compile_config=compile_config)
    if not pair.is_encoder_decoder:
        kwargs["attention_mask"] = torch.ones_like(ids)
    with torch.inference_mode():
        out = pair.verifier.generate(ids, **kwargs)
    start = 1 if pair.is_encoder_decoder else ids.shape[1]
    return out[0, start:].tolist()


class ForwardClock:
    """Seconds spent inside the models' forward calls (the outermost hooked call only, so that an encoder called
    from its model's forward counts once), the device synchronised at both ends of each call."""

    def __init__(self, modules, device: torch.device):
        self.seconds, self.depth, self.device, self.started = 0.0, 0, device, 0.0
        self.handles = []
        for module in modules:
            self.handles += [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]

    def _enter(self, *_):
        if self.depth == 0:
            synchronize(self.device)
            self.started = time.perf_counter()
        self.depth += 1

    def _leave(self, *_):
        self.depth -= 1
        if self.depth == 0:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self.started

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


class ModelCallClock:
    """Seconds inside the suite's model calls, `CachedDecoder.logits` (the forward and the copy of its logits out) and
    an encoder-decoder's encoder (run when its decoder is made), and of those in each model's first calls of an
    example (a decoder-only model's prompt; an encoder-decoder's encoder and first decoder step). Timed by wrapping
    the methods, outside any compiled step: a forward hook would be traced into the compiled steps and recompile
    them."""

    def __init__(self, device: torch.device):
        self.seconds = self.first = 0.0
        self.device, self.original = device, (CachedDecoder.logits, CachedDecoder.__init__)

    def __enter__(self):
        clock, (logits, init) = self, self.original

        def timed_logits(decoder, keep: int = 1):
            first = decoder.calls == 0
            out, spent = timed(lambda: logits(decoder, keep), clock.device)
            clock.seconds += spent
            clock.first += spent if first else 0.0
            return out

        def timed_init(decoder, *args, **kwargs):
            _, spent = timed(lambda: init(decoder, *args, **kwargs), clock.device)
            if decoder.is_encoder_decoder:  # the encoder ran
                clock.seconds += spent
                clock.first += spent

        CachedDecoder.logits, CachedDecoder.__init__ = timed_logits, timed_init
        return self

    def __exit__(self, *_):
        CachedDecoder.logits, CachedDecoder.__init__ = self.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few examples, for CI")
    parser.add_argument("--examples", type=int, default=60)
    parser.add_argument("--pair", choices=tuple(PAIRS), default="t5", help="which toy pair (and inputs)")
    parser.add_argument("--drafter", default=None, help="default: the toy pair's")
    parser.add_argument("--verifier", default=None)
    parser.add_argument("--gamma", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per example and case, the fastest counting (default 3; 1 with --quick)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the fast-path cases (reduce-overhead for CUDA graphs); none "
                             "leaves them out")
    args = parser.parse_args()
    n = 6 if args.quick else args.examples
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder = PAIRS[args.pair]
    pair = load_pair(args.drafter or str(folder / "drafter"), args.verifier or str(folder / "verifier"),
                     device=args.device)
    config = pair.drafter.generation_config
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = args.gamma, "constant"
    config.assistant_confidence_threshold = 0.0
    inputs = _inputs(pair, args.pair, n)
    greedy = DecodingConfig(args.max_new_tokens, 0.0, 1.0, args.gamma)
    sampled = DecodingConfig(args.max_new_tokens, 1.0, 1.0, args.gamma)
    device = pair.device
    fast = None
    if args.compile_mode != "none":
        # The suite's compiled steps and transformers' compiled generate() run the same wrapper code of the model,
        # whose compiled variants dynamo counts together against one limit: at the default (8) the suite's variants
        # would use it up and transformers' loop would run eagerly, uncompiled, without a word in the results.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        fast = ModelPair(pair.drafter, pair.verifier, pair.tokenizer, pair.device, pair.dtype)
        shapes = shapes_for(args.max_new_tokens, max(x.shape[1] for x in inputs), [args.gamma], args.compile_mode)
        fast.use_static_caches(shapes, inputs[0])
        peer_compile = transformers.CompileConfig(mode=args.compile_mode, dynamic=False)
        peer_compile._compile_all_devices = device.type == "cpu"  # transformers compiles on GPUs only by default

    def ours(method, settings, i, on=pair, params=None):
        return decode(method, on, inputs[i], settings, params or {}, torch.Generator(device).manual_seed(i))

    cascade = {"rule": "token_v2", "alpha": 0.1}

    cases = {
        "verifier greedy (suite)": lambda i: ours("verifier", greedy, i),
        "verifier greedy (generate)": lambda i: _generate(pair, inputs[i], args.max_new_tokens, False, False, i),
        "spec_decode greedy (suite)": lambda i: ours("spec_decode", greedy, i),
        "assisted greedy (generate)": lambda i: _generate(pair, inputs[i], args.max_new_tokens, False, True, i),
        "verifier T=1 (suite)": lambda i: ours("verifier", sampled, i),
        "spec_decode T=1 (suite)": lambda i: ours("spec_decode", sampled, i),
        "spec_cascade token_v2 a=0.1 T=1 (suite)": lambda i: ours("spec_cascade", sampled, i, params=cascade),
        "assisted T=1 (generate)": lambda i: _generate(pair, inputs[i], args.max_new_tokens, True, True, i),
        "drafter greedy (suite)": lambda i: ours("drafter", greedy, i),
        "prompt_lookup greedy (suite)": lambda i: ours("prompt_lookup", greedy, i, params={"max_ngram": 2}),
        "prompt lookup greedy (generate)":
            lambda i: _generate(pair, inputs[i], args.max_new_tokens, False, False, i, lookup=args.gamma),
    }
    if fast is not None:
        cases.update({
            "verifier greedy (suite, compiled)": lambda i: ours("verifier", greedy, i, fast),
            "verifier greedy (generate, static compiled)":
                lambda i: _generate(pair, inputs[i], args.max_new_tokens, False, False, i, peer_compile),
            "spec_decode greedy (suite, compiled)": lambda i: ours("spec_decode", greedy, i, fast),
            "drafter greedy (suite, compiled)": lambda i: ours("drafter", greedy, i, fast),
        })
    # The graphs each case compiled in its warm-up: a compiled peer that compiled nothing would be running eagerly.
    graphs = dict.fromkeys(cases, 0)
    stats = torch._dynamo.utils.counters["stats"]
    for i in range(n):  # warm-up and compilation, not recorded
        for name, fn in cases.items():
            before = stats["unique_graphs"]
            fn(i)
            graphs[name] += stats["unique_graphs"] - before
    # Host reads, counted in a pass of their own (the counter slows what it counts). Not in the compiled cases: a
    # counting mode is part of what a compiled step is guarded on, so it would recompile them; their loops are
    # the same as the eager cases'.
    counted = [name for name in cases if "compiled" not in name]
    reads = {name: 0 for name in counted}
    for i in range(n):
        for name in counted:
            reads[name] += count_reads(cases[name], i)[1].total
    # The share of each eager case's time spent inside the models' forward calls, in another untimed pass: what is
    # left is the loop's own work, and the forward time alone bounds how fast any loop making those calls can be.
    hooked = [pair.drafter, pair.verifier]
    if pair.is_encoder_decoder:
        hooked += [pair.drafter.get_encoder(), pair.verifier.get_encoder()]
    in_forward = {name: [0.0, 0.0] for name in counted}
    clock = ForwardClock(hooked, device)
    try:
        for i in range(n):
            for name in counted:
                before = clock.seconds
                _, s = timed(lambda fn=cases[name], i=i: fn(i), device)
                in_forward[name][0] += clock.seconds - before
                in_forward[name][1] += s
    finally:
        clock.close()
    # The same for the compiled cases, at the suite's model-call boundary; and for every suite case the time of
    # its models' first calls: a decoder-only model's prompt, which no loop avoids.
    prompt_share = {}
    for i in range(n):
        for name in cases:
            if "(suite" not in name:
                continue
            with ModelCallClock(device) as calls:
                _, s = timed(lambda fn=cases[name], i=i: fn(i), device)
            if "compiled" in name:
                in_forward.setdefault(name, [0.0, 0.0])
                in_forward[name][0] += calls.seconds
                in_forward[name][1] += s
            prompt_share.setdefault(name, [0.0, 0.0])
            prompt_share[name][0] += calls.first
            prompt_share[name][1] += s
    # Each example's time in each case is the fastest of `repeats` runs, the cases interleaved per example and
    # their order rotated per repeat: a burst of load from elsewhere slows some runs, rarely all of them.
    runs = {name: [[] for _ in range(n)] for name in cases}
    outputs = {name: [None] * n for name in cases}
    names = list(cases)
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for i in range(n):
            for name in order:
                out, s = timed(lambda fn=cases[name], i=i: fn(i), device)
                runs[name][i].append(s)
                outputs[name][i] = out
    seconds = {name: [min(r) for r in per_example] for name, per_example in runs.items()}
    total = {name: sum(v) for name, v in seconds.items()}

    def ratio(ours_case: str, peer_case: str) -> tuple[float, float, float]:
        """The median over examples of ours / peer, with the 10th and 90th percentiles."""
        values = sorted(a / b for a, b in zip(seconds[ours_case], seconds[peer_case], strict=True))
        return (statistics.median(values), values[int(0.1 * (len(values) - 1))],
                values[math.ceil(0.9 * (len(values) - 1))])

    # What one verifier call over a round's gamma + 1 positions costs, in one-token steps, on this machine
    probes = inputs[: min(n, 5)]
    verify_cost = {"": wide_call_cost(pair, "verifier", probes, args.gamma + 1)}
    if fast is not None:
        verify_cost[", compiled"] = wide_call_cost(fast, "verifier", probes, args.gamma + 1)

    def tokens(name):
        return [o.tokens if hasattr(o, "tokens") else o for o in outputs[name]]

    same_ar = sum(a == b for a, b in zip(tokens("verifier greedy (suite)"), tokens("verifier greedy (generate)"),
                                         strict=True))
    same_spec = sum(a == b for a, b in zip(tokens("spec_decode greedy (suite)"),
                                           tokens("verifier greedy (generate)"), strict=True))
    same_assist = sum(a == b for a, b in zip(tokens("assisted greedy (generate)"),
                                             tokens("verifier greedy (generate)"), strict=True))
    def cost_ratio(suffix: str = "") -> float:
        drafter, verifier = f"drafter greedy (suite{suffix})", f"verifier greedy (suite{suffix})"
        return (per_call_cost(seconds[drafter], [o.drafter_calls for o in outputs[drafter]])
                / per_call_cost(seconds[verifier], [o.verifier_calls for o in outputs[verifier]]))

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
    for name in cases:
        done = outputs[name]
        out_tokens = sum(len(o.tokens) if hasattr(o, "tokens") else len(o) for o in done)
        rounds = sum(getattr(o, "rounds", 0) for o in done)
        per_token = f"{reads[name] / max(1, out_tokens):.2f}" if name in reads else "-"
        per_round = f"{reads[name] / rounds:.2f}" if rounds and name in reads else "-"
        share = f"{in_forward[name][0] / in_forward[name][1]:.3f}" if name in in_forward else "-"
        first = f"{prompt_share[name][0] / prompt_share[name][1]:.3f}" if name in prompt_share else "-"
        print(f"| {name} | {total[name]:.2f} | {1000 * statistics.median(seconds[name]):.1f} | {per_token} | "
              f"{per_round} | {share} | {first} |")
    print()
    print("Ratios: the median over examples of the per-example ratio, [10th, 90th percentile], and the ratio of the "
          "summed times.")
    print()
    print("| ratio | median [p10, p90] | of totals | goal |")
    print("| --- | --- | --- | --- |")
    ratios = [
        ("verifier (suite) / generate, greedy", "verifier greedy (suite)", "verifier greedy (generate)", "<= 1.0"),
        ("spec_decode / assisted, greedy", "spec_decode greedy (suite)", "assisted greedy (generate)", "<= 0.5"),
        ("spec_decode / assisted, T=1", "spec_decode T=1 (suite)", "assisted T=1 (generate)", "<= 0.5"),
        ("prompt_lookup / generate's prompt lookup, greedy", "prompt_lookup greedy (suite)",
         "prompt lookup greedy (generate)", "<= 1.0"),
        ("prompt_lookup / verifier (suite), greedy", "prompt_lookup greedy (suite)", "verifier greedy (suite)", "-"),
        ("spec_decode / prompt_lookup (suite), greedy", "spec_decode greedy (suite)", "prompt_lookup greedy (suite)",
         "-"),
    ]
    speedups = [("spec_decode, greedy", "spec_decode greedy (suite)", "verifier greedy (suite)", ""),
                ("spec_decode, T=1", "spec_decode T=1 (suite)", "verifier T=1 (suite)", ""),
                ("spec_cascade token_v2 a=0.1, T=1", "spec_cascade token_v2 a=0.1 T=1 (suite)",
                 "verifier T=1 (suite)", "")]
    if fast is not None:
        ratios += [
            ("verifier compiled (suite) / generate static compiled, greedy", "verifier greedy (suite, compiled)",
             "verifier greedy (generate, static compiled)", "<= 1.0"),
            ("verifier compiled (suite) / verifier (suite), greedy", "verifier greedy (suite, compiled)",
             "verifier greedy (suite)", "-"),
            ("spec_decode compiled / assisted, greedy", "spec_decode greedy (suite, compiled)",
             "assisted greedy (generate)", "<= 0.5"),
        ]
        speedups.append(("spec_decode, greedy, compiled", "spec_decode greedy (suite, compiled)",
                         "verifier greedy (suite, compiled)", ", compiled"))
    for label, ours_case, peer_case, goal in ratios:
        middle, low, high = ratio(ours_case, peer_case)
        summed = total[ours_case] / total[peer_case]
        print(f"| {label} | {middle:.3f} [{low:.3f}, {high:.3f}] | {summed:.3f} | {goal} |")
    # If the suite's loop cost nothing outside the models' calls, spec_decode / assisted would be at least this
    # (the same for the compiled loop, and: no loop avoids the prompt, so its first calls alone bound it too)
    floors = [("greedy", "spec_decode greedy (suite)", "assisted greedy (generate)"),
              ("T=1", "spec_decode T=1 (suite)", "assisted T=1 (generate)")]
    if fast is not None:
        floors.append(("greedy, compiled", "spec_decode greedy (suite, compiled)", "assisted greedy (generate)"))
    for label, ours_case, peer_case in floors:
        floor = (in_forward[ours_case][0] / in_forward[ours_case][1]) * total[ours_case] / total[peer_case]
        print(f"| spec_decode's forward calls alone / assisted, {label} (of totals) | - | {floor:.3f} | - |")
    first = (prompt_share["spec_decode greedy (suite)"][0] / prompt_share["spec_decode greedy (suite)"][1]
             * total["spec_decode greedy (suite)"] / total["assisted greedy (generate)"])
    print(f"| spec_decode's first calls alone / assisted, greedy (of totals) | - | {first:.3f} | - |")
    for label, spec, base, suffix in speedups:
        results = outputs[spec]
        a = acceptance_probability(sum(o.accepted for o in results), sum(o.rejections for o in results))
        c = cost_ratio(suffix)
        measured = 1 / ratio(spec, base)[0]  # the median example's speed-up
        calls = drafter_calls_per_round(cascade if spec.startswith("spec_cascade") else {}, args.gamma)
        predicted = leviathan_speedup(a, args.gamma, c, calls)
        r = verify_cost[suffix]
        bound = leviathan_speedup(a, args.gamma, c, calls, verify_cost=r)
        print(f"| speed-up / predicted: {label} (a={a:.3f}, c={c:.3f}) | {measured:.2f} / "
              f"{predicted:.2f} = {measured / predicted:.3f} | >= 0.9 |")
        print(f"| speed-up / predicted with this machine's verify-call cost: {label} (r={r:.2f}) | "
              f"{measured:.2f} / {bound:.2f} = {measured / bound:.3f} | - |")
    print()
    same_lookup = [sum(a == b for a, b in zip(tokens(name), tokens("verifier greedy (generate)"), strict=True))
                   for name in ("prompt_lookup greedy (suite)", "prompt lookup greedy (generate)")]
    line = (f"identical to generate() greedy: suite verifier {same_ar}/{n}, suite spec_decode {same_spec}/{n}, "
            f"assisted generation {same_assist}/{n}, suite prompt_lookup {same_lookup[0]}/{n}, "
            f"generate's prompt lookup {same_lookup[1]}/{n}")
    if fast is not None:
        reference = tokens("verifier greedy (generate)")
        for name in ("verifier greedy (suite, compiled)", "spec_decode greedy (suite, compiled)",
                     "verifier greedy (generate, static compiled)"):
            same = sum(a == b for a, b in zip(tokens(name), reference, strict=True))
            line += f", {name.replace(' greedy', '')} {same}/{n}"
    print(line)
    if fast is not None:
        print("graphs compiled in the warm-up (the suite's steps compile when the pair is loaded): " + ", ".join(
            f"{name} {graphs[name]}" for name in cases if "compiled" in name))


if __name__ == "__main__":
    main()
