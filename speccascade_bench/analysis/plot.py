"""`scb plot`: quality against latency (and call cost) relative to the verifier, one curve per method (and
rule) in its own style (`style`), with the intervals of every point, the Pareto frontier over all methods and a
panel zoomed near the verifier's quality."""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..decoding.methods import REFERENCE
from ..files import ResultsError, open_for_reading, refuse_link, write_file
from ..results.folder import read_manifest
from ..results.manifest import check_devices
from ..results.rows import MAX_ROW_BYTES
from .curves import pareto_front, sweep_key, zoom_window
from .results import read_results
from .style import Style, curve_style
from .summary import summarize, with_curves

FORMATS = (".png", ".pdf")

FIGURES = {
    "quality_latency": ("relative_latency", "latency relative to the verifier"),
    "quality_cost": ("relative_cost", "cost relative to the verifier (counted calls x measured per-call cost)"),
}


def plot_folders(folders: list[Path], out: Path | None = None, mix_devices: bool = False,
                 max_bytes: int = MAX_ROW_BYTES) -> list[Path]:
    """Draw quality against relative latency, and against relative call cost, for each results folder
    (into `out`, or into each folder; with several folders into `out/<folder label>`, see
    `folder_labels`), and with several folders a combined figure with a panel per folder (`combined_*`
    in `out`, or in the first folder's parent). Reads the results files only: with `out`, nothing is
    written into the results folders. No figure is written through a link: a figure file, or a folder
    `out/<label>` this command picks, that is a link is refused (ResultsError) before anything is written, and so
    is a folder whose examples ran on several kinds of device, unless `mix_devices` (`check_devices`). Each folder
    is read once (`read_results`, each line at most `max_bytes`). Returns the PNG and PDF paths."""
    if out is not None and (out.exists() or out.is_symlink()) and not out.is_dir():
        raise ResultsError(f"--out {out} is not a folder (a file, or a link to nothing); give a folder")
    labels = folder_labels(folders)
    runs = [_summary(folder, mix_devices, max_bytes) for folder in folders]
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


def _summary(folder: Path, mix_devices: bool, max_bytes: int) -> tuple[dict, object]:
    """A folder's config and summary with its curves, its devices checked (`check_devices`)."""
    read = read_results(folder, max_bytes)
    check_devices(folder, mix_devices, read.runs)
    return read.manifest["config"], with_curves(summarize(folder, read))


def _refuse_links(stem: Path) -> None:
    """A figure's files may be written: none is a link, and none is a file this command did not write (outside a
    results folder, whose figures are the suite's)."""
    for suffix in FORMATS:
        path = stem.with_suffix(suffix)
        refuse_link(path)
        if path.exists() and not _ours(path) and not _results_folder(path.parent):
            raise ResultsError(f"{path} exists and was not written by `scb plot`; move it aside or give another "
                               "--out")


def _results_folder(folder: Path) -> bool:
    """Whether `folder` is a results folder of `scb run` (its manifest is one of this suite's)."""
    try:
        read_manifest(folder)
    except ResultsError:
        return False
    return True


MARK = "speccascade-bench scb plot"  # in each figure's metadata: PNG's Software, PDF's Creator

_MARK_BYTES = 16 * 2**20  # a figure is well under this; a larger file is not one of ours


def _ours(path: Path) -> bool:
    try:
        with open_for_reading(path) as f:
            return MARK.encode() in f.read(_MARK_BYTES)
    except (OSError, ValueError):
        return False


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


@dataclass
class Curve:
    """One curve of a panel: its points in sweep order (`curves.sweep_key`) with their intervals, as absolute
    coordinates (NaN where a point has none)."""

    name: str
    style: Style
    x: list[float]
    y: list[float]
    x_low: list[float]
    x_high: list[float]
    y_low: list[float]
    y_high: list[float]

    def errors(self, values: list[float], low: list[float], high: list[float]) -> list[list[float]]:
        """matplotlib's [below, above] error lengths: from the interval's ends, 0 where there is none."""
        def length(a: float, b: float) -> float:
            return 0.0 if math.isnan(a) or math.isnan(b) else max(0.0, b - a)
        return [[length(lo, v) for v, lo in zip(values, low, strict=True)],
                [length(v, hi) for v, hi in zip(values, high, strict=True)]]


def panel_curves(frame, column: str) -> list[Curve]:
    """A summary's curves (`with_curves`) against `column`, each ordered by its swept parameter, with the
    quality interval of every point (the paired bootstrap against the verifier, moved onto the point) and, for
    relative latency, its spread across examples (`relative_latency_low`/`_high`)."""
    curves = []
    for curve, rows in frame.groupby("curve", sort=False):
        rows = rows.assign(_key=[sweep_key(row) for _, row in rows.iterrows()]).sort_values("_key", kind="stable")
        shift = rows["quality"] - rows["quality_vs_verifier"]
        has_x = column == "relative_latency"
        nan = [math.nan] * len(rows)
        curves.append(Curve(
            curve, curve_style(curve), rows[column].astype(float).tolist(), rows["quality"].astype(float).tolist(),
            rows["relative_latency_low"].astype(float).tolist() if has_x else nan,
            rows["relative_latency_high"].astype(float).tolist() if has_x else nan,
            (shift + rows["quality_ci_low"]).astype(float).tolist(),
            (shift + rows["quality_ci_high"]).astype(float).tolist()))
    return curves


def frontier_points(curves: list[Curve]) -> list[tuple[float, float]]:
    """The Pareto frontier (`curves.pareto_front`) over every point of every curve, in order of latency."""
    points = [(x, y) for curve in curves for x, y in zip(curve.x, curve.y, strict=True)]
    return [points[i] for i in pareto_front(points)]


class Ids:
    """Names for the SVG groups of each curve's artists (`report --html` shows and hides a curve by them):
    `scb-curve-<k>-<n>-<part>`, k the curve's number in `numbers`, n a running count of drawn curves and part the
    artist's place in the curve (its line, caps, bars), so that every name is unique."""

    def __init__(self, numbers: dict[str, int] | None = None):
        self.numbers, self.count = numbers or {}, 0

    def __call__(self, curve: str) -> str | None:
        if curve not in self.numbers:
            return None
        self.count += 1
        return f"scb-curve-{self.numbers[curve]}-{self.count}"


def draw_panel(ax, curves: list[Curve], ids: Ids | None = None, reference: float | None = None) -> dict:
    """Draw `curves` into `ax`: each in its style with its quality intervals as vertical bars and its latency
    spread as horizontal bars, the Pareto frontier over them as a grey staircase with its points ringed, and the
    verifier's quality and latency dotted. Returns the ErrorbarContainer of each curve by name."""
    ids = ids or Ids()
    drawn = {}
    for curve in curves:
        style = curve.style
        container = ax.errorbar(
            curve.x, curve.y, xerr=curve.errors(curve.x, curve.x_low, curve.x_high),
            yerr=curve.errors(curve.y, curve.y_low, curve.y_high), label=curve.name, color=style.color,
            marker=style.marker, linestyle=style.linestyle, markersize=10 if style.point else 4,
            markeredgecolor="black" if style.point else style.color, elinewidth=0.8, capsize=2,
            zorder=3 if style.point else 2)
        gid = ids(curve.name)
        for part, artist in enumerate(container.get_children()):
            artist.set_gid(None if gid is None else f"{gid}-{part}")
        drawn[curve.name] = container
    front = frontier_points(curves)
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="grey", linewidth=3, alpha=0.35, zorder=1, label="Pareto frontier")
        ax.scatter(xs, ys, s=280, facecolors="none", edgecolors="grey", linewidths=1.5, zorder=4)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.grid(alpha=0.3)
    return drawn


def _reference(frame) -> float | None:
    verifier = frame[frame["method"] == REFERENCE]
    return float(verifier["quality"].iloc[0]) if len(verifier) else None


def _title(cfg: dict, frame) -> str:
    n = int(frame["n"].max()) if len(frame) else 0
    return f"{cfg['name']}: T={cfg['decoding']['temperature']:g}, gamma={cfg['decoding']['draft_length']}, n={n}"


def draw_figure(runs: list[tuple[dict, object]], column: str, label: str, ids: Ids | None = None):
    """The figure of one or several results folders against `column`: per folder a panel of every curve and,
    under it (beside it for one folder), the panel zoomed near the verifier's quality (`curves.zoom_window`);
    one legend for all. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):  # a `$` in a run's name is text, not TeX
        return _draw_figure(plt, runs, column, label, ids)


def _draw_figure(plt, runs: list[tuple[dict, object]], column: str, label: str, ids: Ids | None):
    single = len(runs) == 1
    shape = (1, 2) if single else (2, len(runs))
    size = (15.0, 5.6) if single else (5.4 * len(runs) + 3.5, 10.0)
    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False, layout="constrained")
    handles: dict[str, object] = {}
    for i, (cfg, frame) in enumerate(runs):
        full, zoom = (axes[0][0], axes[0][1]) if single else (axes[0][i], axes[1][i])
        curves = panel_curves(frame, column)
        reference = _reference(frame)
        for ax in (full, zoom):
            draw_panel(ax, curves, ids, reference)
            ax.set_xlabel(label)
            ax.set_ylabel(f"{cfg['task']['metric']} (corpus)")
        full.set_title(_title(cfg, frame), fontsize=10)
        window = zoom_window([(x, y) for c in curves for x, y in zip(c.x, c.y, strict=True)], reference) \
            if reference is not None else None
        if window is None:
            zoom.set_title("zoom: no point near the verifier's quality", fontsize=9)
        else:
            zoom.set_xlim(*window[0])
            zoom.set_ylim(*window[1])
            zoom.set_title(f"near the verifier's quality ({reference:.2f})", fontsize=10)
        for handle, text in zip(*full.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    fig.legend(list(handles.values()), list(handles), fontsize=8, loc="outside right center",
               ncols=1 if len(handles) <= 22 else 2)
    return fig


def plot_summary(cfg: dict, frame, out: Path) -> list[Path]:
    """A folder's figures from its summary already made (its config and `summarize`'s frame) into `out`; returns
    the PNG and PDF paths."""
    return _plot_one(cfg, with_curves(frame), out)


def _plot_one(cfg: dict, frame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (column, label) in FIGURES.items():
        paths += _save(draw_figure([(cfg, frame)], column, label), out / name)
    return paths


def _plot_combined(runs: list[tuple[dict, object]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (column, label) in FIGURES.items():
        paths += _save(draw_figure(runs, column, label), out / f"combined_{name}")
    return paths


def _save(fig, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(suffix) for suffix in FORMATS]
    for path in paths:
        image = io.BytesIO()
        metadata = {"Software": MARK} if path.suffix == ".png" else {"Creator": MARK}
        fig.savefig(image, format=path.suffix[1:], dpi=150, metadata=metadata)
        write_file(path, image.getvalue())
    plt.close(fig)
    return paths


def svg(fig) -> str:
    """The figure as SVG text (text drawn as paths, no date: the same figure gives the same bytes); closes it."""
    import matplotlib
    import matplotlib.pyplot as plt

    image = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(image, format="svg", metadata={"Date": None})
    plt.close(fig)
    return image.getvalue()
