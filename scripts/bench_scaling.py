"""Check that decoding cost does not grow where it should not.

1. Per-token latency against position: one model decodes a long output step by step through the
   suite's `CachedDecoder` (the path every method uses), and each step is timed. With a working KV
   cache and no re-encoding the step time stays nearly flat; recomputing the prefix would make it grow
   linearly. Reported per block of positions, relative to the first block.
2. Memory over examples: `spec_decode` runs over many examples and the process's resident memory (and,
   on CUDA, allocated device memory) is read after each; it should level off after the first examples.

Usage: python scripts/bench_scaling.py [--quick] [--model random:t5-v1_1-small] [--cache dynamic|static]
         [--compile-mode none|default|reduce-overhead|max-autotune] [--device cpu|cuda]
It reports; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import transformers

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.loading import load_pair
from speccascade_bench.run.plan import shapes_for
from speccascade_bench.run.session import device_info
from speccascade_bench.run.timing import timed
from speccascade_bench.toy.language import make_splits

PAIR = Path(__file__).resolve().parent.parent / "speccascade_bench" / "toy" / "pair"


def step_times(pair, input_ids, length: int) -> list[float]:
    """Seconds of each of `length` greedy verifier steps (EOS ignored, so that the output is long)."""
    decoder = pair.decoder("verifier", input_ids)
    seconds = []
    for _ in range(length):
        token, step = timed(lambda: int(decoder.logits()[-1].argmax()), pair.device)
        seconds.append(step)
        decoder.extend([token])
    return seconds


def recompute_seconds(pair, input_ids, position: int, repeats: int = 5) -> float:
    """Median seconds of one step without a cache: a forward over the whole sequence up to `position`
    (what a loop that re-ran the prefix would pay there). For reference only."""
    seconds = []
    for _ in range(repeats):
        decoder = pair.decoder("verifier", input_ids)  # a fresh, empty cache
        decoder.extend([decoder.tokens[-1]] * position)
        seconds.append(timed(decoder.logits, pair.device)[1])
    return statistics.median(seconds)


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short outputs and few examples, for CI")
    parser.add_argument("--model", default="random:t5-v1_1-small",
                        help="verifier for the per-token test (hub name, path or shape preset)")
    parser.add_argument("--length", type=int, default=512, help="output length of the per-token test")
    parser.add_argument("--examples", type=int, default=400, help="examples of the memory test")
    parser.add_argument("--cache", choices=("dynamic", "static"), default="dynamic")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile-mode", choices=("none", "default", "reduce-overhead", "max-autotune"),
                        default="none", help="compile the decode steps (static caches only; reduce-overhead adds CUDA "
                                             "graphs on a GPU)")
    args = parser.parse_args()
    if args.compile_mode != "none" and args.cache != "static":
        parser.error("--compile-mode needs --cache static")
    compile_mode = None if args.compile_mode == "none" else args.compile_mode
    length, examples = (128, 40) if args.quick else (args.length, args.examples)
    model = str(PAIR / "verifier") if args.quick else args.model
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    print(f"# bench_scaling: cache {args.cache}, compile {args.compile_mode}, device {args.device}")
    hardware = ", ".join(f"{k} {v}" for k, v in device_info(torch.device(args.device)).items())
    print(f"machine: {hardware}; torch {torch.__version__}, transformers {transformers.__version__}")
    per_token(model, length, args.cache, args.device, compile_mode)
    memory(examples, args.cache, args.device, compile_mode)


def per_token(model: str, length: int, cache: str, device: str, compile_mode: str | None) -> None:
    """The per-token latency of one model over `length` greedy steps, in blocks (and, with dynamic caches, one
    step with no cache for reference)."""
    pair = load_pair(model, model, device=device)
    source = pair.encode("translate English to German: the small house is by the river.", 64)
    if cache == "static":
        pair.use_static_caches(shapes_for(length, 64, (), compile_mode), source)
    step_times(pair, source, 8)  # warm-up
    seconds = step_times(pair, source, length)
    block = max(1, length // 8)
    first = statistics.median(seconds[:block])
    name = Path(model).name if Path(model).exists() else model
    print(f"\n## Per-token latency of {name} over {length} greedy steps (median per block of {block})\n")
    print("| positions | ms per step | relative to the first block |")
    print("| --- | --- | --- |")
    for start in range(0, length, block):
        median = statistics.median(seconds[start:start + block])
        print(f"| {start}-{min(start + block, length) - 1} | {1000 * median:.2f} | {median / first:.2f} |")
    if cache == "dynamic":
        early, late = block // 2, length - block // 2
        print(f"\nFor reference, one step with no cache (a forward over the whole prefix): "
              f"{1000 * recompute_seconds(pair, source, early):.1f} ms at position {early}, "
              f"{1000 * recompute_seconds(pair, source, late):.1f} ms at position {late}.")


def memory(examples: int, cache: str, device: str, compile_mode: str | None) -> None:
    """The resident (and CUDA) memory over `examples` spec_decode examples of the toy pair: it must not grow."""
    pair = load_pair(str(PAIR / "drafter"), str(PAIR / "verifier"), device=device)
    sources = [row["src"] for row in make_splits(0, {"train": 20000, "validation": 200, "test": 500})["test"]]
    if cache == "static":
        pair.use_static_caches(shapes_for(64, 512, [5], compile_mode), pair.encode(sources[0], 512))
    settings = DecodingConfig(64, 1.0, 1.0, 5)
    rss, device_mb = [], []
    for i in range(examples):
        ids = pair.encode(sources[i % len(sources)], 512)
        decode("spec_decode", pair, ids, settings, {}, torch.Generator(pair.device).manual_seed(i))
        rss.append(resident_mb())
        if pair.device.type == "cuda":
            device_mb.append(torch.cuda.memory_allocated(pair.device) / 2**20)
    print(f"\n## Memory over {examples} spec_decode examples of the toy pair (temperature 1)\n")
    print("| after example | resident MB | CUDA allocated MB |")
    print("| --- | --- | --- |")
    marks = sorted({1, examples // 10, examples // 4, examples // 2, examples} - {0})
    for mark in marks:
        cuda = f"{device_mb[mark - 1]:.1f}" if device_mb else "-"
        print(f"| {mark} | {rss[mark - 1]:.1f} | {cuda} |")
    settled = examples // 10 or 1
    print(f"\nresident growth from example {settled} to {examples}: {rss[-1] - rss[settled - 1]:+.1f} MB")


if __name__ == "__main__":
    main()
