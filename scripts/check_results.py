"""Check that a results directory holds every documented file and field: `python scripts/check_results.py DIR`."""

import json
import sys
from pathlib import Path

import pandas as pd

from speccascade_bench.analysis.summary import SUMMARY_COLUMNS
from speccascade_bench.config.run import load_run_config
from speccascade_bench.results.record import WRITTEN
from speccascade_bench.results.rows import read_lines


def check(results: Path) -> list[str]:
    problems = []
    manifest = json.loads((results / "manifest.json").read_text())
    for key in ("config", "versions", "hardware", "dtype", "git_commit", "started_at"):
        if key not in manifest:
            problems.append(f"manifest.json lacks {key}")
    config = load_run_config(manifest["config"]["file"])
    expected = {run.run_id for run in config.methods}
    found = {path.stem for path in (results / "examples").glob("*.jsonl")}
    if expected - found:
        problems.append(f"missing example files: {sorted(expected - found)}")
    n = config.task.selected
    for run_id in sorted(found):
        rows = read_lines(results / "examples" / f"{run_id}.jsonl")
        ids = [row["example_id"] for row in rows]
        if len(ids) != n or len(set(ids)) != n:
            problems.append(f"{run_id}: {len(ids)} lines for {n} examples")
        for row in rows:
            missing = set(WRITTEN) - set(row)
            if missing:
                problems.append(f"{run_id}: example {row['example_id']} lacks {sorted(missing)}")
                break
    summary = pd.read_csv(results / "summary.csv")
    if list(summary.columns) != list(SUMMARY_COLUMNS):
        problems.append(f"summary.csv columns {list(summary.columns)}")
    if set(summary["run_id"]) != found:
        problems.append("summary.csv rows do not match the example files")
    document = json.loads((results / "summary.json").read_text()) if (results / "summary.json").is_file() else {}
    if [run.get("run_id") for run in document.get("runs", [])] != list(summary["run_id"]):
        problems.append("summary.json missing, or its runs are not summary.csv's")
    page = results / "report.html"
    text = page.read_text() if page.is_file() else ""
    if text.count("<svg") != 2 or text.count("<script") != 1 or text.count('data-curve="') < 2:
        problems.append("report.html missing, or without its two figures, its curves and its one script")
    for name in ("report.md", "quality_latency.png", "quality_latency.pdf", "quality_cost.png", "quality_cost.pdf"):
        path = results / name
        if not path.exists() or path.stat().st_size == 0:
            problems.append(f"{name} missing or empty")
    return problems


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    issues = check(folder)
    for issue in issues:
        print(f"FAIL {issue}")
    if issues:
        sys.exit(1)
    print(f"{folder}: manifest, {len(list((folder / 'examples').glob('*.jsonl')))} example files, summary, "
          "report, page and figures are complete")
