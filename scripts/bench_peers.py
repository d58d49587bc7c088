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
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from peer_report import print_cases, print_identity, print_ratios, print_speedups
from peer_timing import measure

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import ModelPair
from speccascade_bench.models.loading import load_pair
from speccascade_bench.run.plan import shapes_for
from speccascade_bench.run.timing import wide_call_cost
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


def parse_args() -> argparse.Namespace:
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
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.examples = 6 if args.quick else args.examples
    return args


@dataclass
class Bench:
    """What the cases run on: the pair (and its fast-path copy, with transformers' compile config for the peer), the
    inputs and the two decoding settings."""

    pair: ModelPair
    inputs: list
    greedy: DecodingConfig
    sampled: DecodingConfig
    fast: ModelPair | None = None
    peer_compile: object = None


def set_up(args) -> Bench:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    folder = PAIRS[args.pair]
    pair = load_pair(args.drafter or str(folder / "drafter"), args.verifier or str(folder / "verifier"),
                     device=args.device)
    config = pair.drafter.generation_config
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = args.gamma, "constant"
    config.assistant_confidence_threshold = 0.0
    inputs = _inputs(pair, args.pair, args.examples)
    bench = Bench(pair, inputs, DecodingConfig(args.max_new_tokens, 0.0, 1.0, args.gamma),
                  DecodingConfig(args.max_new_tokens, 1.0, 1.0, args.gamma))
    if args.compile_mode != "none":
        # The suite's compiled steps and transformers' compiled generate() run the same wrapper code of the model,
        # whose compiled variants dynamo counts together against one limit: at the default (8) the suite's variants
        # would use it up and transformers' loop would run eagerly, uncompiled, without a word in the results.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        bench.fast = ModelPair(pair.drafter, pair.verifier, pair.tokenizer, pair.device, pair.dtype)
        shapes = shapes_for(args.max_new_tokens, max(x.shape[1] for x in inputs), [args.gamma], args.compile_mode)
        bench.fast.use_static_caches(shapes, inputs[0])
        bench.peer_compile = transformers.CompileConfig(mode=args.compile_mode, dynamic=False)
        bench.peer_compile._compile_all_devices = pair.device.type == "cpu"  # transformers compiles on GPUs only
    return bench


CASCADE = {"rule": "token_v2", "alpha": 0.1}


def cases_of(args, bench: Bench) -> dict:
    """Each case by name: a function of the example's index that decodes it."""
    pair, inputs, greedy, sampled, fast = bench.pair, bench.inputs, bench.greedy, bench.sampled, bench.fast
    max_new = args.max_new_tokens

    def ours(method, settings, i, on=pair, params=None):
        return decode(method, on, inputs[i], settings, params or {}, torch.Generator(pair.device).manual_seed(i))

    cases = {
        "verifier greedy (suite)": lambda i: ours("verifier", greedy, i),
        "verifier greedy (generate)": lambda i: _generate(pair, inputs[i], max_new, False, False, i),
        "spec_decode greedy (suite)": lambda i: ours("spec_decode", greedy, i),
        "assisted greedy (generate)": lambda i: _generate(pair, inputs[i], max_new, False, True, i),
        "verifier T=1 (suite)": lambda i: ours("verifier", sampled, i),
        "spec_decode T=1 (suite)": lambda i: ours("spec_decode", sampled, i),
        "spec_cascade token_v2 a=0.1 T=1 (suite)": lambda i: ours("spec_cascade", sampled, i, params=CASCADE),
        "assisted T=1 (generate)": lambda i: _generate(pair, inputs[i], max_new, True, True, i),
        "drafter greedy (suite)": lambda i: ours("drafter", greedy, i),
        "prompt_lookup greedy (suite)": lambda i: ours("prompt_lookup", greedy, i, params={"max_ngram": 2}),
        "prompt lookup greedy (generate)":
            lambda i: _generate(pair, inputs[i], max_new, False, False, i, lookup=args.gamma),
    }
    if fast is not None:
        cases.update({
            "verifier greedy (suite, compiled)": lambda i: ours("verifier", greedy, i, fast),
            "verifier greedy (generate, static compiled)":
                lambda i: _generate(pair, inputs[i], max_new, False, False, i, bench.peer_compile),
            "spec_decode greedy (suite, compiled)": lambda i: ours("spec_decode", greedy, i, fast),
            "drafter greedy (suite, compiled)": lambda i: ours("drafter", greedy, i, fast),
        })
    return cases


def main() -> None:
    args = parse_args()
    bench = set_up(args)
    cases = cases_of(args, bench)
    n, pair = args.examples, bench.pair
    measured = measure(cases, n, args.repeats, pair, pair.device)
    # What one verifier call over a round's gamma + 1 positions costs, in one-token steps, on this machine
    probes = bench.inputs[: min(n, 5)]
    verify_cost = {"": wide_call_cost(pair, "verifier", probes, args.gamma + 1)}
    if bench.fast is not None:
        verify_cost[", compiled"] = wide_call_cost(bench.fast, "verifier", probes, args.gamma + 1)
    compiled = bench.fast is not None
    print_cases(args, n, pair, pair.device, cases, measured)
    print_ratios(measured, compiled)
    print_speedups(measured, compiled, args.gamma, verify_cost, CASCADE)
    print_identity(measured, n, cases, compiled)


if __name__ == "__main__":
    main()
