"""`scb plot`: quality against latency relative to the verifier, one curve per method (and rule)."""

from __future__ import annotations

import os
from pathlib import Path

from .methods import METHODS, REFERENCE
from .results import ResultsError, read_manifest, summarize, with_curves

FIGURES = {
    "quality_latency": ("relative_latency", "latency relative to the verifier"),
    "quality_cost": ("relative_cost", "cost relative to the verifier (counted calls x measured per-call cost)"),
}


def plot_folders(folders: list[Path], out: Path | None = None) -> list[Path]:
    """Draw quality against relative latency, and against relative call cost, for each results folder
    (into `out`, or into each folder; with several folders into `out/<folder label>`, see
    `folder_labels`), and with several folders a combined figure with a panel per folder (`combined_*`
    in `out`, or in the first folder's parent). Reads the results files only: with `out`, nothing is
    written into the results folders. Returns the PNG and PDF paths."""
    labels = folder_labels(folders)
    runs = [(read_manifest(folder)["config"], with_curves(summarize(folder))) for folder in folders]
    paths = []
    for folder, label, (cfg, frame) in zip(folders, labels, runs, strict=True):
        target = out / label if out and len(folders) > 1 else out or folder
        paths += _plot_one(cfg, frame, target)
    if len(folders) > 1:
        paths += _plot_combined(runs, out or folders[0].parent)
    return paths


def folder_labels(folders: list[Path]) -> list[str]:
    """A distinct label per results folder: its name, prefixed with as many parent folders as it takes to
    tell apart folders of the same name (runs/a/wmt and runs/b/wmt: a_wmt and b_wmt)."""
    paths = [Path(os.path.realpath(folder)) for folder in folders]  # a link to a folder given too is the same
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise ResultsError(f"{folders[i]} is given twice")
    names = [path.relative_to(path.anchor).parts for path in paths]
    depths = [1] * len(paths)
    while True:
        labels = ["_".join(parts[-depth:]) for parts, depth in zip(names, depths, strict=True)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
        if not clashing:
            return labels
        if all(depths[i] >= len(names[i]) for i in clashing):  # names that join alike (a_b/c, a/b_c): number them
            return [f"{label}_{i}" if i in clashing else label for i, label in enumerate(labels)]
        for i in clashing:
            depths[i] += 1


def _plot_one(cfg: dict, frame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    colors = _colors([frame])
    for name, (column, label) in FIGURES.items():
        fig, ax = _subplots(1)
        _draw(ax[0], frame, cfg, column, label, colors)
        ax[0].legend(fontsize=8, loc="best")
        paths += _save(fig, out / name)
    return paths


def _plot_combined(runs: list[tuple[dict, object]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    colors = _colors([frame for _, frame in runs])  # one colour per curve across the panels
    for name, (column, label) in FIGURES.items():
        fig, axes = _subplots(len(runs))
        for ax, (cfg, frame) in zip(axes, runs, strict=True):
            _draw(ax, frame, cfg, column, label, colors)
        handles, labels = {}, []
        for ax in axes:
            for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
                if text not in handles:
                    handles[text] = handle
                    labels.append(text)
        fig.legend([handles[t] for t in labels], labels, fontsize=8, loc="outside right center")
        paths += _save(fig, out / f"combined_{name}")
    return paths


def _colors(frames) -> dict[str, tuple]:
    """A colour per curve of frames that have a `curve` column (`with_curves`)."""
    from matplotlib import colormaps

    curves = list(dict.fromkeys(curve for frame in frames for curve in frame["curve"]))
    palette = colormaps["tab20"].colors
    return {curve: palette[(2 * i) % 20 + (2 * i) // 20 % 2] for i, curve in enumerate(curves)}


def _subplots(panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 7.5 if panels == 1 else 5.2 * panels + 2.5
    fig, axes = plt.subplots(1, panels, figsize=(width, 5), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def _draw(ax, frame, cfg: dict, column: str, label: str, colors: dict[str, tuple]) -> None:
    """One panel; `frame` is a summary with its `curve` column."""
    for curve, rows in frame.groupby("curve", sort=False):
        method = rows["method"].iloc[0]
        marker = METHODS[method].marker if method in METHODS else None
        if marker and len(rows) == 1:
            ax.scatter(rows[column], rows["quality"], marker=marker, s=90, zorder=3,
                       label=curve, edgecolors="black", color=colors[curve])
            continue
        sweep = "threshold" if rows["alpha"].isna().all() else "alpha"
        rows = rows.sort_values(sweep)
        ax.plot(rows[column], rows["quality"], marker="o", markersize=4, label=curve, color=colors[curve])
    verifier = frame[frame["method"] == REFERENCE]
    if len(verifier):
        ax.axhline(verifier["quality"].iloc[0], color="grey", linestyle=":", linewidth=1)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(label)
    ax.set_ylabel(f"{cfg['task']['metric']} (corpus)")
    n = int(frame["n"].max()) if len(frame) else 0
    ax.set_title(f"{cfg['name']}: T={cfg['decoding']['temperature']:g}, "
                 f"gamma={cfg['decoding']['draft_length']}, n={n}")
    ax.grid(alpha=0.3)
