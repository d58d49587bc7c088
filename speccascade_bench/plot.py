"""`scb plot`: quality against latency relative to the verifier, one curve per method (and rule)."""

from __future__ import annotations

from pathlib import Path

from .results import group_key, read_manifest, write_summary

POINT_METHODS = ("drafter", "verifier", "spec_decode")
MARKERS = {"drafter": "s", "verifier": "*", "spec_decode": "D"}


def plot_results(results: Path, out: Path | None = None) -> list[Path]:
    """Draw the quality-latency figure; returns the PNG and PDF paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest = read_manifest(results)
    frame = write_summary(results)
    out = out or results
    out.mkdir(parents=True, exist_ok=True)
    cfg = manifest["config"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    frame = frame.assign(curve=[group_key(row) for _, row in frame.iterrows()])
    for curve, rows in frame.groupby("curve", sort=False):
        method = rows["method"].iloc[0]
        if method in POINT_METHODS and len(rows) == 1:
            ax.scatter(rows["relative_latency"], rows["quality"], marker=MARKERS[method], s=90, zorder=3,
                       label=curve, edgecolors="black")
            continue
        sweep = "threshold" if rows["alpha"].isna().all() else "alpha"
        rows = rows.sort_values(sweep)
        ax.plot(rows["relative_latency"], rows["quality"], marker="o", markersize=4, label=curve)
    verifier = frame[frame["method"] == "verifier"]
    if len(verifier):
        ax.axhline(verifier["quality"].iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("latency relative to the verifier")
    ax.set_ylabel(f"{cfg['task']['metric']} (corpus)")
    n = int(frame["n"].max()) if len(frame) else 0
    ax.set_title(f"{cfg['name']}: T={cfg['decoding']['temperature']:g}, "
                 f"gamma={cfg['decoding']['draft_length']}, n={n}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    paths = [out / "quality_latency.png", out / "quality_latency.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths

