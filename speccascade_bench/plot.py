"""`scb plot`: quality against latency relative to the verifier, one curve per method (and rule)."""

from __future__ import annotations

from pathlib import Path

from .results import read_manifest, with_curves, write_summary

POINT_METHODS = ("drafter", "verifier", "spec_decode")
MARKERS = {"drafter": "s", "verifier": "*", "spec_decode": "D"}


FIGURES = {
    "quality_latency": ("relative_latency", "latency relative to the verifier"),
    "quality_cost": ("relative_cost", "cost relative to the verifier (counted calls x measured per-call cost)"),
}


def plot_results(results: Path, out: Path | None = None) -> list[Path]:
    """Draw quality against relative latency, and against relative call cost; returns the PNG and PDF
    paths."""
    manifest = read_manifest(results)
    frame = write_summary(results)
    out = out or results
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (column, label) in FIGURES.items():
        paths += _figure(frame, manifest["config"], column, label, out / name)
    return paths


def _figure(frame, cfg: dict, column: str, label: str, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    frame = with_curves(frame)
    for curve, rows in frame.groupby("curve", sort=False):
        method = rows["method"].iloc[0]
        if method in POINT_METHODS and len(rows) == 1:
            ax.scatter(rows[column], rows["quality"], marker=MARKERS[method], s=90, zorder=3,
                       label=curve, edgecolors="black")
            continue
        sweep = "threshold" if rows["alpha"].isna().all() else "alpha"
        rows = rows.sort_values(sweep)
        ax.plot(rows[column], rows["quality"], marker="o", markersize=4, label=curve)
    verifier = frame[frame["method"] == "verifier"]
    if len(verifier):
        ax.axhline(verifier["quality"].iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(label)
    ax.set_ylabel(f"{cfg['task']['metric']} (corpus)")
    n = int(frame["n"].max()) if len(frame) else 0
    ax.set_title(f"{cfg['name']}: T={cfg['decoding']['temperature']:g}, "
                 f"gamma={cfg['decoding']['draft_length']}, n={n}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths

