"""Per-sequence deferral and where rounds end, for the speculative runs of one results folder: each run's deferral
rate per sequence (deferred positions over output tokens: mean, standard deviation, 10th and 90th percentiles) and
how its rounds' accepted counts spread (the share of rounds that accepted 0-1, 2-3, ... drafts), from the rows.

    python scripts/round_stats.py RESULTS_DIR [SUBSTRING ...]

Only runs whose id holds one of the substrings are shown (all speculative runs without any).
"""

import json
import sys
from pathlib import Path

import numpy as np


def main(results: Path, wanted: list[str]) -> None:
    runs = {path.stem: [json.loads(line) for line in path.open() if line.strip()]
            for path in sorted((results / "examples").glob("*.jsonl"))}  # every field (the reader keeps fewer)
    print("| run | n | deferral per sequence: mean (sd) [p10, p90] | rounds accepting 0-1 / 2-3 / 4 / 5+ drafts |")
    print("| --- | --- | --- | --- |")
    for run_id, rows in runs.items():
        if not rows or rows[0].get("accepted_per_round") is None or (wanted and not any(w in run_id for w in wanted)):
            continue
        rates = np.array([row["deferred"] / row["output_tokens"] for row in rows if row["output_tokens"]])
        rounds = np.concatenate([row["accepted_per_round"] for row in rows])
        shares = [np.mean((rounds >= low) & (rounds <= high)) for low, high in ((0, 1), (2, 3), (4, 4), (5, 10**6))]
        print(f"| {run_id} | {len(rows)} | {rates.mean():.3f} ({rates.std():.3f}) [{np.percentile(rates, 10):.3f}, "
              f"{np.percentile(rates, 90):.3f}] | {' / '.join(f'{s:.2f}' for s in shares)} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
