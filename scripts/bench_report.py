"""How long `scb report` takes, and how much memory it needs, on a large results folder.

Builds a results folder by hand in a temporary directory (a manifest and `--runs` method runs of `--rows`
examples each, rows of the size `scb run` writes: a prediction, its reference, per-token log-probabilities,
counters, a worker record) and runs `scb report` on it in a child process; prints the folder's size, the
command's wall-clock seconds and its peak resident memory (`resource.getrusage`'s maxrss of the child).

Usage: python scripts/bench_report.py [--runs 4] [--rows 100000] [--metric exact_match|bleu] [--html]
It reports; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = ("verifier", "drafter", "spec_decode-g2", "spec_decode-g4", "spec_decode-g6", "spec_decode-g8")

WORDS = ("the", "cat", "sat", "on", "a", "mat", "while", "dog", "ran", "far", "away", "from", "home", "today")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def row(run_id: str, example_id: int, rng: random.Random) -> dict:
    """One example row as `scb run` writes it (about 900 bytes)."""
    method = run_id.split("-")[0]
    gamma = int(run_id.split("-g")[1]) if "-g" in run_id else None
    tokens = rng.randint(12, 20)
    latency = rng.uniform(0.05, 0.2) * (0.6 if gamma else 1.0)
    reference = _sentence(random.Random(example_id), 16)  # the same for every run
    prediction = reference if rng.random() < 0.7 else _sentence(rng, tokens)
    drafter_calls = tokens if method != "verifier" else 0
    verifier_calls = tokens if method == "verifier" else (tokens // 2 if gamma else 0)
    return {
        "example_id": example_id, "run_id": run_id, "method": method,
        "params": {"draft_length": gamma} if gamma else {}, "prediction": prediction, "reference": reference,
        "references": [reference], "output_tokens": tokens, "input_tokens": rng.randint(20, 60),
        "latency_s": latency, "latency_trials_s": [latency],
        "calls": {"drafter": drafter_calls, "verifier": verifier_calls},
        "levels": None, "drafted": tokens if gamma else 0, "accepted": tokens // 2 if gamma else 0,
        "rounds": tokens // 2 if gamma else 0, "accepted_per_round": [2] * (tokens // 4) if gamma else [],
        "rejections": tokens // 4 if gamma else 0, "deferred": 0.0,
        "confidence": -0.5 if method == "drafter" else None,
        "token_logprobs": [round(-rng.random(), 6) for _ in range(tokens)] if method == "drafter" else None,
        "token_stats": None, "shots": 0, "score": 100.0 if prediction == reference else 0.0,
        "worker": {"host": "bench-host", "device": "cpu", "kind": "bench CPU, 2 threads",
                   "session": "2026-01-01T00:00:00+00:00"},
    }


def build(folder: Path, runs: int, rows: int, metric: str) -> int:
    """Write the folder; returns its size in bytes."""
    run_ids = RUNS[:runs]
    methods = [{"run_id": run_id, "method": run_id.split("-")[0],
                "params": {"draft_length": int(run_id.split("-g")[1])} if "-g" in run_id else {}}
               for run_id in run_ids]
    manifest = {"format": "speccascade-bench results", "dtype": "float32",
                "hardware": {"device": "cpu", "cpu": "bench", "torch_threads": 2},
                "config": {"name": "bench", "task": {"dataset": "d.jsonl", "target": "tgt", "source": "src",
                                                     "metric": metric},
                           "models": {"drafter": "d", "verifier": "v"}, "decoding": {}, "timing": {},
                           "methods": methods}}
    (folder / "examples").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    size = 0
    for run_id in run_ids:
        rng = random.Random(run_id)
        with (folder / "examples" / f"{run_id}.jsonl").open("w") as f:
            for i in range(rows):
                line = json.dumps(row(run_id, i, rng)) + "\n"
                f.write(line)
                size += len(line)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help=f"method runs, at most {len(RUNS)}")
    parser.add_argument("--rows", type=int, default=100_000, help="examples per run")
    parser.add_argument("--metric", default="exact_match", help="the task's metric (exact_match, bleu, ...)")
    parser.add_argument("--html", action="store_true", help="also write report.html")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "res"
        size = build(folder, min(args.runs, len(RUNS)), args.rows, args.metric)
        command = [sys.executable, "-m", "speccascade_bench.cli", "report", str(folder),
                   *(["--html"] if args.html else [])]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
    if done.returncode:
        print(done.stderr.strip()[-2000:], file=sys.stderr)
    print(f"{args.runs} runs x {args.rows} rows, {size / 1e6:.0f} MB, metric {args.metric}"
          f"{', --html' if args.html else ''}: exit {done.returncode}, {seconds:.1f} s, peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()
