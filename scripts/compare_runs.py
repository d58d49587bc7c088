"""Two method runs of one results folder compared on the examples both decoded: the quality difference A - B with
its paired bootstrap 95% interval (as `scb report`'s against the verifier) and each run's relative latency.

    python scripts/compare_runs.py RESULTS_DIR RUN_A RUN_B [RUN_A2 RUN_B2 ...]
"""

import sys
from pathlib import Path

from speccascade_bench.analysis.quality import quality_difference
from speccascade_bench.analysis.results import read_results
from speccascade_bench.analysis.summary import summarize
from speccascade_bench.results.folder import read_manifest


def main(results: Path, pairs: list[tuple[str, str]]) -> None:
    metric = read_manifest(results)["config"]["task"]["metric"]
    runs = read_results(results).runs
    latency = summarize(results).set_index("run_id")["relative_latency"]
    for a, b in pairs:
        missing = [run for run in (a, b) if run not in runs]
        if missing:
            sys.exit(f"error: {results} has no run {missing[0]}")
        ids = {row.example_id for row in runs[a]} & {row.example_id for row in runs[b]}
        interval = quality_difference(metric, [r for r in runs[a] if r.example_id in ids],
                                      [r for r in runs[b] if r.example_id in ids])
        verdict = "better" if interval.low > 0 else "worse" if interval.high < 0 else "no difference detected"
        print(f"{a} (latency {latency[a]:.3f}) - {b} (latency {latency[b]:.3f}): {interval.difference:+.2f} "
              f"[{interval.low:+.2f}, {interval.high:+.2f}] {verdict} ({len(ids)} examples)")


if __name__ == "__main__":
    if len(sys.argv) < 4 or len(sys.argv) % 2:
        sys.exit(__doc__)
    names = sys.argv[2:]
    main(Path(sys.argv[1]), list(zip(names[::2], names[1::2], strict=True)))
