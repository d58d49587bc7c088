"""The end of `scb run` on a results folder: what it writes there last (while the folder is still locked) and the
table it prints from that."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..files import ResultsError
from ..results.manifest import device_kinds
from .html import HTML_FILE, write_html, written_here
from .report import build_report, save_report, terminal_table
from .results import read_results
from .summary import SUMMARY_FILE, summarize
from .summary_json import SUMMARY_JSON_FILE

log = logging.getLogger(__name__)


def finish_run(results: Path) -> tuple[pd.DataFrame, dict[str, list[dict]]] | None:
    """Write a decoded folder's summary.csv, summary.json, report.md and report.html, from one read of its rows;
    returns the summary and the rows (for the trackers). Examples that ran on more than one kind of device get none
    of them (`scb report --mix-devices` reports them together; returns None), and an older summary is deleted as
    stale. A report.html there that this suite did not write is left alone, with a warning."""
    read = read_results(results)
    kinds = device_kinds(results, read.runs)
    if len(kinds) > 1:
        log.warning("%s: examples ran on %d kinds of device (%s); no summary.csv: `scb report --mix-devices` "
                    "reports them together", results, len(kinds), ", ".join(kinds))
        (results / SUMMARY_FILE).unlink(missing_ok=True)
        (results / SUMMARY_JSON_FILE).unlink(missing_ok=True)
        return None
    frame = summarize(results, read)
    frame.attrs["device_kinds"] = kinds
    error = save_report(results, frame, read.manifest, build_report(results, frame, False, read.manifest))
    if error is not None:
        raise error
    try:
        write_html([results], None, False, [frame], False)
    except ResultsError as exc:
        log.warning("%s", exc)
    return frame, read.runs


def finished_table(results: Path) -> tuple[str | None, Path | None]:
    """What `scb run` shows of a folder `finish_run` wrote: its summary as a compact table (None without a
    summary.csv) and the path of its report.html (None where there is none of this suite's)."""
    summary = results / SUMMARY_FILE
    if not summary.is_file():
        return None, None
    frame = pd.read_csv(summary)
    frame["weak"] = frame["weak"].fillna("")
    page = results / HTML_FILE
    return terminal_table(frame), page if written_here(page) else None
