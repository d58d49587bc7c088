"""`scb plot`: quality against latency relative to the verifier, one curve per method (and rule)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..decoding.methods import METHODS, REFERENCE
from ..files import ResultsError, refuse_link, write_file
from ..run.folder import read_manifest
from .summary import summarize, with_curves

FORMATS = (".png", ".pdf")

FIGURES = {
    "quality_latency": ("relative_latency", "latency relative to the verifier"),
    "quality_cost": ("relative_cost", "cost relative to the verifier (counted calls x measured per-call cost)"),
}


def plot_folders(folders: list[Path], out: Path | None = None) -> list[Path]:
    """Draw quality against relative latency, and against relative call cost, for each results folder
    (into `out`, or into each folder; with several folders into `out/<folder label>`, see
    `folder_labels`), and with several folders a combined figure with a panel per folder (`combined_*`
    in `out`, or in the first folder's parent). Reads the results files only: with `out`, nothing is
    written into the results folders. No figure is written through a link: a figure file, or a folder
    `out/<label>` this command picks, that is a link is refused (ResultsError) before anything is written.
    Returns the PNG and PDF paths."""
    if out is not None and (out.exists() or out.is_symlink()) and not out.is_dir():
        raise ResultsError(f"--out {out} is not a folder (a file, or a link to nothing); give a folder")
    labels = folder_labels(folders)
    runs = [(read_manifest(folder)["config"], with_curves(summarize(folder))) for folder in folders]
    picked = bool(out) and len(folders) > 1  # each folder's figures go to a folder of its own under `out`
    targets = [out / label if picked else out or folder for folder, label in zip(folders, labels, strict=True)]
    combined = out or folders[0].parent
    for target in targets:
        if picked:
            refuse_link(target)
        for name in FIGURES:
            _refuse_links(target / name)
    if len(folders) > 1:
        for name in FIGURES:
            _refuse_links(combined / f"combined_{name}")
    paths = []
    for target, (cfg, frame) in zip(targets, runs, strict=True):
        paths += _plot_one(cfg, frame, target)
    if len(folders) > 1:
        paths += _plot_combined(runs, combined)
    return paths


def _refuse_links(stem: Path) -> None:
    for suffix in FORMATS:
        refuse_link(stem.with_suffix(suffix))


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

    paths = [stem.with_suffix(suffix) for suffix in FORMATS]
    for path in paths:
        image = io.BytesIO()
        fig.savefig(image, format=path.suffix[1:], dpi=150)
        write_file(path, image.getvalue())
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
