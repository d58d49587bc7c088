"""A results folder written by an earlier version (tests/data/results_v0: the CI config on the toy pair, 10
examples, written before the package became layer folders, before rows counted calls per role and before
tasks could name a row function) still loads: `scb report` gives the summary that version wrote (every column it
had, byte for byte), and `scb plot` draws it."""

import shutil
from pathlib import Path

import pandas as pd

from .test_results_folder import scb

OLD = Path(__file__).parent / "data" / "results_v0"


def test_an_earlier_versions_folder_reports_the_same_summary_and_plots(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD, folder)
    result = scb("report", folder)
    assert result.exit_code == 0, result.output
    then, now = pd.read_csv(OLD / "summary.csv"), pd.read_csv(folder / "summary.csv")
    assert set(then.columns) <= set(now.columns)  # later versions add parameter columns
    fmt = {"index": False, "float_format": "%.6g"}
    assert now[list(then.columns)].to_csv(**fmt) == then.to_csv(**fmt)
    assert "spec_cascade-token_v3-a0.3-g5" in result.output
    plotted = scb("plot", folder)
    assert plotted.exit_code == 0, plotted.output
    assert (folder / "quality_latency.png").is_file() and (folder / "quality_cost.pdf").is_file()
