"""`scb report --html`: one self-contained page for one or several results folders.

The page needs nothing from elsewhere: the figures are inline SVG, its one script and its styles are inline,
and its Content-Security-Policy lets no other script run and nothing load from the network. Every text from a
results folder (a name, a prediction, a path) is escaped: results folders come from other people. The page is
made to be sent: it shows no absolute path of this machine unless asked to (`absolute_paths`): a path inside the
results folder relative to it, one under the home folder with it as `~` (`shown_path`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..files import ResultsError, refuse_link, write_file
from ..results.folder import read_manifest
from ..results.rows import MAX_ROW_BYTES, example_files
from .plot import FIGURES, Ids, draw_figure, folder_labels, svg
from .report import (
    COLUMNS,
    EXPLANATION,
    TRADEOFF_HEADERS,
    checked_kinds,
    settings_lines,
    summary_cells,
    task_title,
    tradeoff_rows,
)
from .style import curve_style
from .summary import summarize, with_curves

HTML_FILE = "report.html"
GENERATOR = '<meta name="generator" content="speccascade-bench scb report --html">'  # marks a page as ours

# The recorded toy runs (results/toy) and the section of results/toy/README.md that says which of the paper's
# findings hold on them.
FINDINGS_FILE = Path(__file__).resolve().parents[2] / "results" / "toy" / "README.md"
FINDINGS = {
    "toy_t0": "What holds of the paper's findings here",
    "toy_t1": "What holds of the paper's findings here",
    "toy_llm_t0": "The decoder-only pair on few-shot arithmetic",
    "toy_llm_t1": "The decoder-only pair on few-shot arithmetic",
    "toy_chain_t0": "The toy chain: three models",
    "toy_chain_t1": "The toy chain: three models",
    "toy_learned_t1": "Learned deferral on both toy pairs",
    "toy_llm_learned_t1": "Learned deferral on both toy pairs",
    "toy_global_t1": "Coupled deferral on both toy pairs",
    "toy_llm_global_t1": "Coupled deferral on both toy pairs",
}

FIGURE_NOTE = (
    "Each curve joins a method's runs in the order of its swept parameter. Vertical bars: the paired bootstrap 95% "
    "interval of the run's quality minus the verifier's, placed on the point; horizontal bars (latency only): the "
    "spread of the relative latency across examples, a paired bootstrap 95% interval resampling the examples with "
    "the verifier's latency on each. The grey staircase is the Pareto frontier over every method (the best quality "
    "at that latency or less), its points ringed. The right panel zooms on the runs near the verifier's quality."
)

SCRIPT = """
document.querySelectorAll('input[data-curve]').forEach(function (box) {
  box.addEventListener('change', function () {
    var prefix = 'scb-curve-' + box.getAttribute('data-curve') + '-';
    document.querySelectorAll('[id^="' + prefix + '"]').forEach(function (group) {
      group.style.display = box.checked ? '' : 'none';
    });
  });
});
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], column = th.cellIndex;
    var up = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[column];
      return cell.hasAttribute('data-number') ? parseFloat(cell.getAttribute('data-number')) : null;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) {
        if (x !== y) { return x === null ? 1 : -1; }
        var s = a.cells[column].textContent, t = b.cells[column].textContent;
        return up ? s.localeCompare(t) : t.localeCompare(s);
      }
      return up ? x - y : y - x;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
td:first-child, th:first-child, td.text { text-align: left; }
td.text { white-space: pre-wrap; max-width: 90ch; font-family: monospace; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
svg { max-width: 100%; height: auto; }
.curves label { display: inline-block; margin: 0.15em 0.8em 0.15em 0; font-size: 0.9em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555; vertical-align: middle; }
.note, .explanation { font-size: 0.85em; color: #444; max-width: 110ch; }
.findings { white-space: pre-wrap; font-size: 0.9em; background: #fafafa; border: 1px solid #eee; padding: 0.8em; }
"""


def _text(value) -> str:
    return html.escape(str(value), quote=True)


def _inline(markdown: str) -> str:
    """One line of the Markdown report as HTML: escaped, then `code` and **bold** marked."""
    text = _text(markdown)
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


@dataclass
class Section:
    """One results folder's part of the page."""

    folder: Path
    label: str
    manifest: dict
    frame: object
    kinds: object
    absolute: bool = False  # paths as the records hold them (`--absolute-paths`), not as `shown_path` gives them

    def shown(self, text):
        """A name or path of the folder's records as the page shows it."""
        return text if self.absolute else shown_path(text, self.folder)


def _table(headers: list[str], rows: list[list[tuple[str, object]]], kind: str) -> str:
    head = "".join(f"<th>{_text(header)}</th>" for header in headers)
    lines = []
    for row in rows:
        cells = "".join(f'<td data-number="{_sort_number(value)}">{_text(text)}</td>' if isinstance(value, float) else
                        f"<td>{_text(text)}</td>" for text, value in row)
        lines.append(f"<tr>{cells}</tr>")
    return (f'<table class="sortable {kind}"><thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(lines)
            + "\n</tbody></table>")


def _sort_number(value: float) -> str:
    """A number as JavaScript's parseFloat reads it."""
    return "Infinity" if value == float("inf") else "-Infinity" if value == float("-inf") else f"{value:.12g}"


def _number(text: str) -> float | None:
    match = re.match(r"^\s*([-+]?\d+(\.\d+)?)", text)
    return float(match.group(1)) if match else None


def _tradeoff(frame) -> str:
    table = tradeoff_rows(frame)
    if table is None:
        return "<p>No verifier run: no trade-off against it.</p>"
    target, rows = table
    cells = [[(text, _number(text) if i else text) for i, text in enumerate(row)] for row in rows]
    return (f"<p>Trade-off against the verifier (quality {target:.2f}, relative latency 1):</p>\n"
            + _table(list(TRADEOFF_HEADERS), cells, "tradeoff"))


def _findings(manifest: dict) -> str:
    """The recorded findings of the paper's claims for a recorded toy config (FINDINGS), as escaped text."""
    cfg = manifest["config"]
    heading = FINDINGS.get(cfg["name"])
    if heading is None or Path(str(cfg.get("file") or "")).name != f"{cfg['name']}.yaml":
        return ""
    try:
        text = FINDINGS_FILE.read_text(encoding="utf-8")
    except OSError:
        return (f"<h3>The paper's findings</h3><p>Recorded for <code>configs/{_text(cfg['name'])}.yaml</code> in "
                "<code>results/toy/README.md</code> of the suite's repository.</p>")
    lines, kept, level = text.splitlines(), [], 0
    for line in lines:
        if level:
            depth = len(line) - len(line.lstrip("#"))
            if line.startswith("#") and line[depth:depth + 1] == " " and depth <= level:
                break
            kept.append(line)
        elif line.startswith("#") and line.lstrip("#").strip().startswith(heading):
            level = len(line) - len(line.lstrip("#"))
    if not kept:
        return ""
    return (f"<h3>The paper's findings on this config</h3><p class=\"note\">As recorded for "
            f"<code>configs/{_text(cfg['name'])}.yaml</code> in <code>results/toy/README.md</code> (section "
            f"&ldquo;{_text(heading)}&rdquo;); the numbers there are the recorded run's.</p>\n"
            f'<div class="findings">{_text(chr(10).join(kept).strip())}</div>')


def shown_path(text, folder: Path) -> str:
    """A model's or dataset's name or path as the page shows it: an absolute path inside the results `folder`
    relative to it, else one under the home folder with it as `~`, else relative to the folder when that climbs
    at most MAX_CLIMB folders (a sibling's data), else `.../` and its last two parts (no host path spelled out in
    `../`); a name or a relative path as it is."""
    if not isinstance(text, str) or not text.startswith(("/", "~")):
        return text
    path, base, home = (Path(os.path.abspath(p)) for p in (Path(text).expanduser(), folder, Path.home()))
    if path == base or base in path.parents:
        return path.relative_to(base).as_posix() or "."
    if path == home or home in path.parents:
        return "~/" + path.relative_to(home).as_posix()
    relative = Path(os.path.relpath(path, base))
    if relative.parts[:MAX_CLIMB + 1].count("..") <= MAX_CLIMB:
        return relative.as_posix()
    return ".../" + "/".join(path.parts[-2:])


MAX_CLIMB = 2  # `../` a shown path may climb from the results folder


def shown_folder(folder: Path) -> str:
    """A results folder as the page's heading shows it: as given when relative, else with the home folder as `~`,
    else by its name."""
    if not folder.is_absolute():
        return str(folder)
    path, home = Path(os.path.abspath(folder)), Path(os.path.abspath(Path.home()))
    return "~/" + path.relative_to(home).as_posix() if home in path.parents else folder.name


def _links(section: Section, page: Path) -> str:
    """Links to the folder's files, relative to the page; each named by its path in the folder (with absolute
    paths, by the link)."""
    files = [section.folder / name for name in ("manifest.json", "summary.csv", "report.md")]
    files = [path for path in files if path.is_file()] + example_files(section.folder)
    items = []
    for path in files:
        relative = Path(os.path.relpath(path, page.parent)).as_posix()
        name = relative if section.absolute else path.relative_to(section.folder).as_posix()
        items.append(f'<li><a href="{_text(quote(relative))}">{_text(name)}</a></li>')
    return "<ul>" + "".join(items) + "</ul>"


SAMPLE_CHARS = 400


def _cut(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " [...]"


def _score(score) -> str:
    return f"{score:.1f}" if isinstance(score, int | float) and not isinstance(score, bool) else "-"


def _samples(section: Section) -> str:
    """The first examples that every run decoded (the summary's `samples`): their reference and each run's output,
    folded."""
    parts = []
    for example, reference, outputs in section.frame.attrs.get("samples", []):
        lines = "".join(f'<tr><td>{_text(run_id)}</td><td class="text">{_text(_cut(prediction))}</td>'
                        f"<td>{_score(score)}</td></tr>" for run_id, prediction, score in outputs)
        parts.append(f"<details><summary>example {example}: reference <q>{_text(_cut(reference))}</q>"
                     "</summary><table><thead><tr><th>run</th><th>output</th><th>score</th></tr></thead><tbody>"
                     f"{lines}</tbody></table></details>")
    return "\n".join(parts)


def _figures(section: Section, ids: Ids, figures: Iterator[int]) -> str:
    import matplotlib

    cfg = section.manifest["config"]
    parts = []
    for name, (column, label) in FIGURES.items():
        with matplotlib.rc_context({"svg.hashsalt": f"scb-figure-{next(figures)}"}):  # ids unique across the page
            image = svg(draw_figure([(cfg, section.frame)], column, label, ids))
        image = image[image.index("<svg"):]
        parts.append(f'<figure id="{_text(section.label)}-{name}">{image}</figure>')
    return "\n".join(parts)


def _section(section: Section, ids: Ids, figures: Iterator[int], page: Path) -> str:
    cfg = section.manifest["config"]
    items = "".join(f"<li>{_inline(line[2:])}</li>" for line in settings_lines(section.manifest, section.frame,
                                                                               section.kinds, section.shown))
    headers = [header for _, header, _ in COLUMNS]
    return "\n".join([
        f'<section id="{_text(section.label)}">',
        f"<h2>{_text(cfg['name'])}: {_text(task_title(cfg['task'], section.shown))} "
        f"<small>{_text(section.folder if section.absolute else shown_folder(section.folder))}</small></h2>",
        f"<ul>{items}</ul>",
        "<h3>Quality against latency and cost</h3>",
        _figures(section, ids, figures),
        _tradeoff(section.frame),
        "<h3>Summary</h3>",
        f'<p class="explanation">{_text(EXPLANATION)} Click a column to sort by it.</p>',
        _table(headers, summary_cells(section.frame), "summary"),
        _findings(section.manifest),
        "<h3>Outputs of the first examples</h3>",
        _samples(section),
        "<h3>Files</h3>",
        _links(section, page),
        "</section>",
    ])


def _curve_boxes(numbers: dict[str, int]) -> str:
    boxes = []
    for curve, k in numbers.items():
        color = curve_style(curve).color
        boxes.append(f'<label><input type="checkbox" checked data-curve="{k}"> <span class="swatch" '
                     f'style="background:{_text(color)}"></span> {_text(curve)}</label>')
    return '<div class="curves"><strong>Curves shown:</strong> ' + " ".join(boxes) + "</div>"


def build_html(folders: list[Path], page: Path, mix_devices: bool = False, frames: list | None = None,
               absolute_paths: bool = False, max_bytes: int = MAX_ROW_BYTES) -> str:
    """The page for `folders`, with links relative to `page` (where it will be written), from their summaries
    (computed if not given, one per folder, each line at most `max_bytes`); writes nothing. Paths are shown as
    `shown_path` gives them unless `absolute_paths`."""
    labels = folder_labels(folders)
    frames = frames or [None] * len(folders)
    sections = []
    for folder, label, frame in zip(folders, labels, frames, strict=True):
        kinds = checked_kinds(folder, frame, mix_devices)
        frame = with_curves(summarize(folder, max_bytes=max_bytes) if frame is None else frame)
        sections.append(Section(folder, label, read_manifest(folder, max_bytes), frame, kinds, absolute_paths))
    numbers: dict[str, int] = {}
    for section in sections:
        for curve in section.frame["curve"]:
            numbers.setdefault(curve, len(numbers))
    ids, figures = Ids(numbers), itertools.count(1)
    body = [_section(section, ids, figures, page) for section in sections]
    names = ", ".join(section.manifest["config"]["name"] for section in sections)
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data:"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        GENERATOR,
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>speccascade-bench report: {_text(names)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>speccascade-bench report: {_text(names)}</h1>",
        f'<p class="note">{_text(FIGURE_NOTE)}</p>',
        _curve_boxes(numbers),
        *body,
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]) + "\n"


def written_here(path: Path) -> bool:
    """Whether an existing file is a page this command wrote (GENERATOR near its top)."""
    try:
        with path.open("rb") as f:
            return GENERATOR.encode() in f.read(4096)
    except OSError:
        return False


def write_html(folders: list[Path], out: Path | None = None, mix_devices: bool = False,
               frames: list | None = None, absolute_paths: bool = False, max_bytes: int = MAX_ROW_BYTES) -> Path:
    """Write HTML_FILE for `folders` into `out`, or into the folder (one folder) or the first folder's parent
    (several, as `scb plot`'s combined figure); never through a link, and never over a file of that name that
    this command did not write (a ResultsError). Returns its path."""
    if out is not None and (out.exists() or out.is_symlink()) and not out.is_dir():
        raise ResultsError(f"--out {out} is not a folder (a file, or a link to nothing); give a folder")
    target = (out or (folders[0] if len(folders) == 1 else folders[0].parent)) / HTML_FILE
    refuse_link(target)
    if target.exists() and not written_here(target):
        raise ResultsError(f"{target} exists and was not written by `scb report --html`; move it aside or give "
                           "another --out")
    text = build_html(folders, target, mix_devices, frames, absolute_paths, max_bytes)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file(target, text)
    return target
