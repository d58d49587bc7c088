"""Results folders built from known values (no model runs): a manifest and one examples file per method run,
scored by exact match so that every quality is a known mean."""

from __future__ import annotations

import json
from pathlib import Path

from speccascade_bench.results.record import ExampleRow

CONFIG = {
    "file": "configs/built.yaml",
    "variant": None,
    "task": {"dataset": "data/built.jsonl", "source": "question", "target": "answer", "metric": "exact_match",
             "sample": None},
    "models": {"drafter": "models/small", "verifier": "models/large"},
    "decoding": {"max_new_tokens": 8, "temperature": 1.0, "draft_length": 5, "seed": 0},
    "timing": {"warmup": 0, "trials": 1},
}


def build_results(out: Path, runs: dict[str, tuple[str, dict, list[float], list[float]]], name: str = "built",
                  predictions: dict[str, str] | None = None) -> Path:
    """Write a results folder to `out`: `runs` maps a run id to (method, params, latency per example, score per
    example: 0 or 100); every run decodes the same examples 0, 1, .... `predictions` replaces a run's outputs."""
    (out / "examples").mkdir(parents=True)
    config = {"name": name, **json.loads(json.dumps(CONFIG)), "methods": [
        {"run_id": run_id, "method": method, "params": params} for run_id, (method, params, _, _) in runs.items()]}
    manifest = {"config": config, "dtype": "float32", "hardware": {"device": "cpu", "cpu": "built"},
                "versions": {"torch": "built"}, "started_at": "2026-12-02T00:00:00+00:00", "git_commit": "built"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for run_id, (method, params, latencies, scores) in runs.items():
        one = method in ("drafter", "verifier")
        lines = []
        for i, (latency, score) in enumerate(zip(latencies, scores, strict=True)):
            calls = {"drafter": 10 if method != "verifier" else 0, "verifier": 10 if method != "drafter" else 2}
            answer = f"answer {i}"
            row = ExampleRow(
                example_id=i, run_id=run_id, method=method, params=params,
                prediction=(predictions or {}).get(run_id, answer if score else "wrong"), reference=answer,
                references=[answer], output_tokens=10, input_tokens=5, latency_s=latency, latency_trials_s=[latency],
                calls=calls, drafted=0 if one else 8,
                accepted=0 if one else 6, rounds=0 if one else 2, accepted_per_round=[], rejections=0 if one else 1,
                deferred=0.0, shots=0, score=float(score))
            lines.append(json.dumps(row.to_json()) + "\n")
        (out / "examples" / f"{run_id}.jsonl").write_text("".join(lines))
    return out
