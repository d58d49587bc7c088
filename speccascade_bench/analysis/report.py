"""`scb report`: the summary table in Markdown, from the results files."""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..decoding.methods import REFERENCE
from ..files import refuse_link, write_file
from ..results.folder import read_manifest
from ..results.manifest import check_devices
from ..results.rows import MAX_ROW_BYTES
from .quality import BOOTSTRAP_RESAMPLES, CONFIDENCE
from .results import read_results
from .summary import SUMMARY_FILE, summarize, with_curves, write_summary
from .summary_json import SUMMARY_JSON_FILE, check_summary_json, write_summary_json
from .tradeoff import Reading, best_quality_within, latency_to_match

REPORT_FILE = "report.md"

COLUMNS = [
    ("run_id", "run", "{}"), ("n", "n", "{:d}"), ("quality", "quality", "{:.2f}"),
    ("vs_verifier", f"vs verifier ({100 * CONFIDENCE:.0f}% CI)", "{}"),
    ("latency_mean_s", "latency (ms)", "{:.1f}"), ("relative_latency", "rel. latency", "{:.3f}"),
    ("relative_latency_median", "rel. latency (median)", "{:.3f}"),
    ("speedup", "speed-up", "{:.2f}x"), ("acceptance_rate", "accept", "{:.3f}"),
    ("acceptance_prob", "accept prob", "{:.3f}"), ("acceptance_by_level", "accept prob by level", "{}"),
    ("tokens_per_round", "tok/round", "{:.2f}"), ("deferral_rate", "deferral", "{:.3f}"),
    ("predicted_speedup", "predicted", "{:.2f}x"), ("of_predicted", "of predicted", "{:.2f}"),
    ("verify_cost", "r", "{:.2f}"), ("of_predicted_at_r", "of pred. at r", "{:.2f}"),
    ("output_tokens_mean", "out tokens", "{:.1f}"), ("weak", "weak numbers", "{}"),
]


EXPLANATION = (
    "Quality is the corpus score (for exact_match, f1, pass_at_1 and an lm-eval task's metric the mean of the "
    "examples' scores); 'vs "
    "verifier' is the run's quality minus the verifier's on the same examples, with a paired bootstrap "
    f"{100 * CONFIDENCE:.0f}% interval ({BOOTSTRAP_RESAMPLES} resamples of the examples), and '=' where the "
    "interval holds 0 (no difference detected), 'worse' or 'better' where it does not; latency the mean "
    "seconds per example; relative latency is against the "
    "verifier on the same examples: the ratio of the mean latencies, and its median the median over examples of "
    "the per-example ratio (one slow example moves the first, not the second); 'weak numbers' names what makes a "
    "run's numbers weak: fewer than 10 examples (no interval then), no warm-up before timing, or one example "
    "holding more than a quarter of the run's time; accept is accepted / drafted tokens, accept prob the per-position "
    "acceptance probability (accepted / judged positions), for a chain at each level, smallest first; "
    "predicted is Leviathan et al.'s speed-up from accept prob and c (for a chain, docs/ALGORITHMS.md: "
    "the chain's predicted speed-up), and 'of predicted' the measured speed-up over it; r is what a "
    "verifier call over gamma + 1 positions cost in one-token steps on this machine (the formula assumes "
    "1), and 'of pred. at r' the measured speed-up over the prediction priced with it."
)


def _models_text(models: dict, shown: Callable[[str], str] = str) -> str:
    """The models of a run: the pair, or a chain smallest first (each name or path as `shown` gives it)."""
    if not models.get("middle"):
        return f"drafter `{shown(models['drafter'])}`, verifier `{shown(models['verifier'])}`"
    chain = [models["drafter"], *models["middle"], models["verifier"]]
    return "chain " + " -> ".join(f"`{shown(name)}`" for name in chain)


def _cell(value, fmt: str, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column == "latency_mean_s":
        value = 1000 * value
    if fmt == "{:d}":
        value = int(value)
    return fmt.format(value)


def versus_verifier(row) -> str | None:
    """A run's quality difference from the verifier with its paired bootstrap interval, and what it says:
    `worse` or `better` when the interval excludes 0, `=` (no difference detected) when it holds 0."""
    diff, low, high = row.get("quality_vs_verifier"), row.get("quality_ci_low"), row.get("quality_ci_high")
    if diff is None or any(isinstance(v, float) and math.isnan(v) for v in (diff, low, high)):
        return None
    if row["method"] == REFERENCE:
        return "-"
    verdict = "worse" if high < 0 else "better" if low > 0 else "="
    return f"{diff:+.2f} [{low:+.2f}, {high:+.2f}] {verdict}"


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(text for text, _ in row) + " |" for row in summary_cells(frame)]
    return "\n".join(lines)


TRADEOFF_HEADERS = ("curve", "points", "latency to match verifier", "speed-up", "best quality at latency <= 1")


def tradeoff_rows(frame: pd.DataFrame) -> tuple[float, list[tuple[str, ...]]] | None:
    """The verifier's quality and, per curve: (i) the lowest relative latency at which it matches the verifier's
    quality, with the speed-up, and (ii) the best quality it reaches without exceeding the verifier's latency,
    as the cells of TRADEOFF_HEADERS. None without a verifier run."""
    verifier = frame[frame["method"] == REFERENCE]
    if verifier.empty:
        return None
    target = float(verifier["quality"].iloc[0])
    rows = []
    for curve, runs in with_curves(frame).groupby("curve", sort=False):
        if curve == REFERENCE:
            continue
        points = list(zip(runs["relative_latency"], runs["quality"], strict=True))
        match = latency_to_match(points, target)
        match_text = match.text() if match else "not reached"
        # a run whose paired interval against the verifier holds 0 matches it too: no difference is detected
        same = [latency for latency, high in zip(runs["relative_latency"], runs["quality_ci_high"], strict=True)
                if high >= 0 and not math.isnan(latency)]
        if same and (match is None or min(same) < match.value):
            match = Reading(min(same), False)
            match_text = f"{match.value:.3f} (no difference detected)"
        best = best_quality_within(points, 1.0)
        rows.append((curve, str(len(points)), match_text, f"{1 / match.value:.2f}x" if match else "-",
                     best.text("{:.2f}") if best else "not reached"))
    return target, rows


def tradeoff_table(frame: pd.DataFrame) -> str:
    """`tradeoff_rows` as a Markdown table under a line naming the verifier's quality ("" without a verifier)."""
    table = tradeoff_rows(frame)
    if table is None:
        return ""
    target, rows = table
    lines = [f"Trade-off against the verifier (quality {target:.2f}, relative latency 1). A curve matches the verifier "
             "where it reaches its quality, or at a run whose paired interval against it holds 0 (no difference "
             "detected):", "",
             "| " + " | ".join(TRADEOFF_HEADERS) + " |", "|" + "|".join(" --- " for _ in TRADEOFF_HEADERS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def summary_cells(frame: pd.DataFrame) -> list[list[tuple[str, object]]]:
    """The report table's rows (COLUMNS): each cell as (its text, its value to sort by: a number, or the text)."""
    frame = frame.assign(of_predicted=frame["speedup"] / frame["predicted_speedup"],  # measured / predicted
                         of_predicted_at_r=frame["speedup"] / frame["predicted_speedup_at_r"],
                         vs_verifier=[versus_verifier(row) for _, row in frame.iterrows()],
                         _sort_vs=frame["quality_vs_verifier"])
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, _, fmt in COLUMNS:
            text = _cell(row[column], fmt, column)
            value = row["_sort_vs"] if column == "vs_verifier" else row[column]
            number = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
            cells.append((text, float(value) if number else text))
        rows.append(cells)
    return rows


def write_report(results: Path, mix_devices: bool = False,
                 max_bytes: int = MAX_ROW_BYTES) -> tuple[str, OSError | None, pd.DataFrame]:
    """The report as Markdown, also written with summary.csv and summary.json into the results folder
    (`save_report`). A folder that cannot be written (a read-only archive) still gets its report: returns the
    text, the error that stopped the writing (or None) and the folder's summary (for `scb report --html`, which
    draws from it). The folder is read once (`read_results`, each line at most `max_bytes`). Examples that ran on
    several kinds of device are refused unless `mix_devices`."""
    read = read_results(results, max_bytes)
    kinds = check_devices(results, mix_devices, read.runs)
    frame = summarize(results, read)
    frame.attrs["device_kinds"] = kinds  # checked: the report and the page need not read the rows again for it
    text = build_report(results, frame, mix_devices, read.manifest)
    return text, save_report(results, frame, read.manifest, text), frame


def save_report(results: Path, frame: pd.DataFrame, manifest: dict, text: str) -> OSError | None:
    """Write a folder's summary.csv, summary.json and report.md (`text`); returns the error that stopped the
    writing, or None. A summary.json there already must be this suite's, of a known schema (`check_summary_json`),
    and none of the three may be a link (a ResultsError naming it, before anything is written)."""
    check_summary_json(results)
    for name in (SUMMARY_FILE, REPORT_FILE, SUMMARY_JSON_FILE):
        refuse_link(results / name)
    try:
        write_summary(results, frame)
        write_summary_json(results, frame, manifest, tradeoff_rows(frame))
        write_file(results / REPORT_FILE, text)
    except OSError as exc:
        return exc
    return None


def build_report(results: Path, frame: pd.DataFrame | None = None, mix_devices: bool = False,
                 manifest: dict | None = None) -> str:
    """The report as Markdown, from the results files and their summary (computed if not given); writes
    nothing. Examples that ran on several kinds of device are refused (results.check_devices) unless
    `mix_devices`; the report then names them."""
    if frame is None:
        checked_kinds(results, None, mix_devices)  # examples on several kinds of device refused before summarizing
        frame = summarize(results)
    header = [*heading(results, frame, mix_devices, manifest), "", EXPLANATION, ""]
    return "\n".join(header) + markdown_table(frame) + "\n\n" + tradeoff_table(frame)


def heading(results: Path, frame: pd.DataFrame, mix_devices: bool = False, manifest: dict | None = None) -> list[str]:
    """A report's title (the config's name and its task) and the list of its settings and machine."""
    kinds = checked_kinds(results, frame, mix_devices)
    manifest = manifest or read_manifest(results)
    cfg = manifest["config"]
    return [f"# {cfg['name']}: {task_title(cfg['task'])}", "", *settings_lines(manifest, frame, kinds)]


TERMINAL_NOTES = (
    "vs verifier: quality minus the verifier's on the same examples, with its paired bootstrap 95% interval; '=' "
    "where it holds 0 (no difference detected), else worse or better",
    "rel. latency: the run's mean latency over the verifier's on the same examples; median: the median of the "
    "per-example ratios (one slow example moves the first, not the second)",
    "weak numbers: fewer than 10 examples (no interval), no warm-up before timing, or one example holding more than "
    "a quarter of the run's time",
    "every column, with acceptance, rounds, deferral and the predictions: report.md, or --columns all",
)


def terminal_report(results: Path, frame: pd.DataFrame, mix_devices: bool = False) -> str:
    """The report for a terminal: the settings, the runs in at most 8 aligned columns (`terminal_table`) with
    footnotes on those columns, and the trade-off table."""
    lines = [*heading(results, frame, mix_devices), "", terminal_table(frame), "",
             *(textwrap.fill(note, 100, initial_indent="  ", subsequent_indent="    ") for note in TERMINAL_NOTES), ""]
    return "\n".join(lines) + "\n" + tradeoff_table(frame)


def checked_kinds(results: Path, frame: pd.DataFrame | None, mix_devices: bool) -> Counter:
    """The kinds of device the folder's examples ran on (`check_devices`), taken from a summary that
    `write_report` checked them for, or else checked now."""
    kinds = None if frame is None else frame.attrs.get("device_kinds")
    return check_devices(results, mix_devices) if kinds is None else kinds


def task_title(task: dict, shown: Callable[[str], str] = str) -> str:
    """What a run decoded and how it was scored, in a few words: `dataset (metric)`, or for an lm-eval task its
    name, filter, metric and shots (the dataset's name or path as `shown` gives it)."""
    if task.get("lm_eval"):
        shots = task.get("num_fewshot")
        return (f"lm-eval {task['lm_eval']} on {shown(task['dataset'])} ({task.get('filter')} {task.get('score')}"
                + (f", {shots} shots)" if shots is not None else ")"))
    return f"{shown(task['dataset'])} ({task['metric']})"


def settings_lines(manifest: dict, frame: pd.DataFrame, kinds, shown: Callable[[str], str] = str) -> list[str]:
    """The report's list of the run's settings and machine, as Markdown items (`- ...`); each model's name or path
    as `shown` gives it."""
    cfg = manifest["config"]
    hardware = manifest.get("hardware") or {}
    device = hardware.get("gpu") or hardware.get("cpu") or hardware.get("device")
    cost_ratio = frame["cost_ratio"].dropna()
    header = [
        f"- {_models_text(cfg['models'], shown)}, {manifest.get('dtype')} on {hardware.get('device')} ({device})",
        f"- temperature {cfg['decoding']['temperature']}, top_p {cfg['decoding']['top_p']}, draft length "
        f"{cfg['decoding']['draft_length']}, max new tokens {cfg['decoding']['max_new_tokens']}, "
        f"{cfg['timing']['trials']} timing trial(s), {cfg['timing']['warmup']} warm-up example(s)",
        f"- started {manifest.get('started_at')}, commit {manifest.get('git_commit')}, versions "
        + ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items()),
    ]
    if manifest.get("workers"):
        hosts = {worker.get("host") for worker in manifest["workers"]}
        header.append(f"- decoded by {len(manifest['workers'])} Ray worker processes on {len(hosts)} host(s)")
    if len(kinds) > 1:
        header.append("- **mixed devices**: examples ran on " + ", ".join(f"{kind} ({n} lines)" for kind, n in
                      kinds.most_common()) + "; latencies below average over them")
    if frame.attrs.get("timed_apart"):
        apart = frame.attrs["timed_apart"]
        header.append("- **timed apart from the verifier**: " + ", ".join(
            f"{run_id} ({n} of {frame.attrs.get('examples', n)} examples)" for run_id, n in apart.items())
            + " timed in another `scb run` than the verifier's on the same examples (added or finished by a resume): "
            "their relative latencies compare times from different sessions; a fresh folder times them together")
    if frame.attrs.get("unshared_rows"):
        header.append(f"- **{frame.attrs['unshared_rows']} example lines left out**: not every method run recorded "
                      "them (an interrupted or limited run); every number below is over the examples all runs share")
    cut = cfg.get("prompts_cut")
    if isinstance(cut, dict) and isinstance(cut.get("examples"), int) and cut["examples"] > 0:
        header.append(f"- **prompts cut** to task.max_source_tokens ({cfg['task'].get('max_source_tokens')}): "
                      f"{cut['examples']} of {cut.get('of')} examples, by up to {cut.get('most_tokens')} tokens "
                      f"(mean {cut.get('mean_tokens')})")
    if manifest.get("random_weights"):
        header.append(f"- **random weights** ({', '.join(manifest['random_weights'])}: shape presets): quality is "
                      "meaningless here; latencies and per-call costs are real")
    if len(cost_ratio):
        header.append(f"- measured step-cost ratio c (drafter / verifier, per forward call): "
                      f"{cost_ratio.iloc[0]:.3f}")
    spread = frame["trial_cv"].dropna()
    if len(spread):
        header.append(f"- spread of repeated timings (per example, std / mean over its trials, averaged): "
                      f"median {100 * spread.median():.1f}%, largest {100 * spread.max():.1f}% "
                      f"({frame.loc[spread.idxmax(), 'run_id']})")
    return header


TERMINAL_COLUMNS = (("run_id", "run"), ("n", "n"), ("quality", "quality"), ("vs_verifier", "vs verifier (95% CI)"),
                    ("relative_latency", "rel. latency"), ("relative_latency_median", "median"),
                    ("speedup", "speed-up"), ("weak", "weak numbers"))


def terminal_table(frame: pd.DataFrame) -> str:
    """The summary in at most 8 aligned columns for a terminal (`scb run`'s last words): run, n, quality with its
    difference from the verifier, relative latency (ratio of means, and the median per-example ratio), speed-up,
    and what makes a run's numbers weak."""
    formats = {column: fmt for column, _, fmt in COLUMNS}
    cells = [[header for _, header in TERMINAL_COLUMNS]]
    for _, row in frame.assign(vs_verifier=[versus_verifier(r) for _, r in frame.iterrows()]).iterrows():
        cells.append([_cell(row[column], formats[column], column) for column, _ in TERMINAL_COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(TERMINAL_COLUMNS))]
    lines = ["  ".join(text.ljust(width) if i in (0, 3, 7) else text.rjust(width)
                       for i, (text, width) in enumerate(zip(line, widths, strict=True))).rstrip() for line in cells]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])
