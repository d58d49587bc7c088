"""A/B of the decoding hot path between two checkouts of the package, for a refactor that must not slow it.

Both copies are imported into this one process under their own names (the package's imports are relative), so
each example is decoded by A and by B back to back, the order alternated per example and per repeat; an
example's time is the fastest of its repeats. On both shipped toy pairs (the T5 translation pair and the
decoder-only arithmetic pair, 4-shot prompts with its stop strings), at temperatures 0 and 1, for one method
(`spec_decode` by default). It prints, per pair and temperature, the median over examples of B's time over A's and
the ratio of the totals, and whether both gave the same outputs (they must: the same seeds).

Usage (after `make toy-data toy-llm-data`, which write the inputs):
  python scripts/bench_ab.py A_PACKAGE_DIR B_PACKAGE_DIR [--examples N] [--repeats R] [--method M]
(for the commit before: `git worktree add /tmp/before HEAD~1`, then A is /tmp/before/speccascade_bench).
It reports; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "speccascade_bench" / "toy"
MODULES = ("decoding.dispatch", "decoding.settings", "models.loading", "tasks.prompts")
STOP = ("\n\n", "\nQuestion:")  # the arithmetic task's stop strings (configs/toy_llm_ci.yaml)


def _rows(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(n), strict=False)]


def _load(name: str, n: int) -> dict:
    """One copy's modules and its inputs on both toy pairs."""
    m = {module: importlib.import_module(f"{name}.{module}") for module in MODULES}
    t5 = m["models.loading"].load_pair(str(TOY / "pair" / "drafter"), str(TOY / "pair" / "verifier"))
    llm = m["models.loading"].load_pair(str(TOY / "llm_pair" / "drafter"), str(TOY / "llm_pair" / "verifier"))
    llm.stop = STOP
    prompts = m["tasks.prompts"]
    shots = tuple((f"Question: {r['question']}\nAnswer:", r["answer"])
                  for r in _rows(ROOT / "data" / "toy_llm" / "shots.jsonl", 4))
    llm_ids = [torch.tensor([prompts.prompt_ids(llm.tokenizer, prompts.PromptParts(
        "", shots, f"Question: {r['question']}\nAnswer:"), prompts.PromptFormat(512), True)[0]])
        for r in _rows(ROOT / "data" / "toy_llm" / "test.jsonl", n)]
    t5_ids = [t5.encode(r["src"], 512) for r in _rows(ROOT / "data" / "toy" / "test.jsonl", n)]
    return {"modules": m, "t5": (t5, t5_ids), "llm": (llm, llm_ids)}


def _measure(copies: dict, args) -> dict:
    times: dict = {}
    for repeat in range(args.repeats):
        for pair_name in ("t5", "llm"):
            for temperature in (0.0, 1.0):
                for i in range(args.examples):
                    order = list(copies) if (repeat + i) % 2 == 0 else list(copies)[::-1]
                    for name in order:
                        m = copies[name]["modules"]
                        pair, inputs = copies[name][pair_name]
                        settings = m["decoding.settings"].DecodingConfig(max_new_tokens=32, temperature=temperature,
                                                                         draft_length=4)
                        generator = torch.Generator().manual_seed(i)
                        start = time.perf_counter()
                        result = m["decoding.dispatch"].decode(args.method, pair, inputs[i], settings, {}, generator)
                        seconds = time.perf_counter() - start
                        entry = times.setdefault((pair_name, temperature, i), {}).setdefault(name, [[], None])
                        entry[0].append(seconds)
                        entry[1] = result.tokens
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="package folder A (the baseline)")
    parser.add_argument("b", type=Path, help="package folder B")
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default="spec_decode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for name, source in (("scb_a", args.a), ("scb_b", args.b)):
            shutil.copytree(source, Path(folder) / name, ignore=shutil.ignore_patterns("__pycache__"))
        sys.path.insert(0, folder)
        copies = {name: _load(name, args.examples) for name in ("scb_a", "scb_b")}
        times = _measure(copies, args)
    print(f"{args.method}, {args.examples} examples, fastest of {args.repeats} interleaved runs; B over A:")
    for pair_name in ("t5", "llm"):
        for temperature in (0.0, 1.0):
            cells = [times[(pair_name, temperature, i)] for i in range(args.examples)]
            ratios = [min(c["scb_b"][0]) / min(c["scb_a"][0]) for c in cells]
            total_a, total_b = (sum(min(c[name][0]) for c in cells) for name in ("scb_a", "scb_b"))
            same = all(c["scb_a"][1] == c["scb_b"][1] for c in cells)
            print(f"  {pair_name:3} T={temperature}: median {statistics.median(ratios):.4f}, totals "
                  f"{total_b / total_a:.4f} (A {total_a:.2f} s), same outputs: {same}")


if __name__ == "__main__":
    main()
