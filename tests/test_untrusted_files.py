"""Files from someone else, as `report`, `plot`, `validate` and `run` read them: a FIFO or a link to a device where a
results file or a manifest should be, a line longer than the bound, rows nested a million deep, latencies of 0 or
1e308, a results file of a run that the manifest does not name, and local data files (JSON lines, JSON, CSV,
parquet, lm-eval's data_files) with the same faults. Each is one `error:` line naming the file and the line, never
a hang, a MemoryError, a traceback or a crash. The hangs and the memory are bounded in a child process (a timeout,
an address-space limit), so that a regression fails the test instead of the machine."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from speccascade_bench.analysis import curves
from speccascade_bench.files import UnreadableFile
from speccascade_bench.results.folder import MANIFEST_FILE
from speccascade_bench.tasks import bootstrap
from speccascade_bench.tasks.data import DataError, check_data_file, load_rows
from speccascade_bench.tasks.settings import TaskConfig

from .test_results_folder import failed, scb
from .test_results_hardening import N, hand_made, lines, row

ROOT = Path(__file__).resolve().parents[1]
DEEP = "[" * 1_000_000 + "]" * 1_000_000
MEMORY = 3 << 30  # the child's address space: reading /dev/zero into one line would pass it in a second


def scb_child(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """`scb ARGS` in a child process with a bounded address space, killed after `timeout` seconds."""
    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    return subprocess.run([sys.executable, "-m", "speccascade_bench.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=bounded)


def one_line(done: subprocess.CompletedProcess, *words: str) -> str:
    """The child ended with one `error:` line naming every word, exit code 2, no traceback."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


# --- results folders ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["examples/spec_decode-g2.jsonl", MANIFEST_FILE])
@pytest.mark.parametrize("kind", ["FIFO", "device"])
def test_a_fifo_or_a_device_in_a_results_folder_is_refused_at_once(tmp_path, name, kind):
    folder = hand_made(tmp_path / "res")
    path = folder / name
    path.unlink()
    os.mkfifo(path) if kind == "FIFO" else path.symlink_to("/dev/zero")
    verbs = ("report", "plot") if name == MANIFEST_FILE else ("report",)
    for verb in verbs:
        one_line(scb_child(verb, folder), f"{path} is not a regular file (a {kind})")


def test_a_results_line_longer_than_the_bound_is_refused_by_its_number(tmp_path):
    rows = [row("verifier", i, 1.0) for i in range(N)]
    rows[2]["prediction"] = "x" * 1_200_000
    folder = hand_made(tmp_path / "res", {"verifier": rows, "spec_decode-g2": [row("spec_decode-g2", i, 0.5)
                                                                               for i in range(N)]})
    for verb in ("report", "plot"):
        failed(scb(verb, folder, "--max-row-mb", "1"), "verifier.jsonl: line 3 is longer than 1 MB", "max_row_mb")
    assert scb("report", folder, "--max-row-mb", "2").exit_code == 0


def test_a_row_nested_a_million_deep_is_one_line(tmp_path):
    folder = hand_made(tmp_path / "res")
    path = folder / "examples" / "verifier.jsonl"
    path.write_text(DEEP + "\n" + path.read_text())
    one_line(scb_child("report", folder), "verifier.jsonl: line 1 is nested too deeply")


@pytest.mark.parametrize("latency", [0.0, -0.5, 1e308, float("nan"), 2 * 86_400.0])
def test_a_latency_that_is_not_a_time_of_a_decode_is_refused_by_its_line(tmp_path, latency):
    folder = hand_made(tmp_path / "res", {"verifier": [row("verifier", i, latency) for i in range(N)],
                                          "spec_decode-g2": [row("spec_decode-g2", i, 0.5) for i in range(N)]})
    for verb in ("report", "plot"):
        failed(scb(verb, folder), "verifier.jsonl: line 1", "latency_s")


def test_a_trial_time_of_zero_is_refused_too(tmp_path):
    rows = [row("spec_decode-g2", i, 0.5, latency_trials_s=[0.5, 0.0]) for i in range(N)]
    folder = hand_made(tmp_path / "res", {"verifier": [row("verifier", i, 1.0) for i in range(N)],
                                          "spec_decode-g2": rows})
    failed(scb("report", folder), "spec_decode-g2.jsonl: line 1", "latency_trials_s of 0 s")


def test_a_results_file_of_a_run_the_manifest_does_not_name_is_refused(tmp_path):
    folder = hand_made(tmp_path / "res")
    forged = folder / "examples" / "spec_decode-g9.jsonl"
    forged.write_text(lines(row("spec_decode-g9", i, 0.01) for i in range(N)))  # a "100x" run
    for verb in ("report", "plot"):
        failed(scb(verb, folder), f"{forged}: the manifest names no method run 'spec_decode-g9' (config.methods)")
    assert not (folder / "summary.csv").exists()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["config"]["methods"]
    forged.unlink()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("report", folder), "manifest.json names no method runs (config.methods)")


@pytest.mark.parametrize("field,value", [("params", {"draft_length": 9}), ("method", "spec_cascade")])
def test_rows_that_disagree_with_the_manifest_run_are_refused(tmp_path, field, value):
    folder = hand_made(tmp_path / "res")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["config"]["methods"][1][field] = value  # the manifest's spec_decode-g2
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("report", folder), "spec_decode-g2.jsonl: line 1 has", f"but the manifest's run 'spec_decode-g2' has "
           f"{value!r}")


def test_resampling_in_blocks_draws_what_one_draw_would(monkeypatch):
    """A large folder's memory: the bootstrap draws its (resamples, n) indices in blocks, the same ones."""
    rng = np.random.default_rng(3)
    ours, theirs = rng.uniform(0.5, 1.0, 101), rng.uniform(0.5, 1.0, 101)
    scores = rng.integers(0, 2, 101) * 100.0
    whole = (bootstrap.paired_bootstrap("exact_match", ["a"] * 101, ["a"] * 101, ["a"] * 101, scores, 100 - scores),
             curves.ratio_interval(ours, theirs))
    monkeypatch.setattr(bootstrap, "DRAWS", 7 * 101)  # 7 resamples at a time, and a last block of 6
    assert (bootstrap.paired_bootstrap("exact_match", ["a"] * 101, ["a"] * 101, ["a"] * 101, scores, 100 - scores),
            curves.ratio_interval(ours, theirs)) == whole


# --- local data files -----------------------------------------------------------------------------------------

def data_config(tmp_path: Path, dataset: Path, **task) -> Path:
    config = {"name": "untrusted", "task": {"dataset": str(dataset), "source": "src", "target": "tgt",
                                            "metric": "exact_match", **task},
              "models": {"drafter": "org/drafter", "verifier": "org/verifier"},
              "methods": [{"method": "verifier"}], "output": str(tmp_path / "out")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


GOOD = "".join(json.dumps({"src": f"s{i}", "tgt": f"t{i}"}) + "\n" for i in range(3))


@pytest.mark.parametrize("line", [1, 3])
def test_a_data_row_nested_a_million_deep_is_refused_before_any_parser(tmp_path, line):
    data = tmp_path / "rows.jsonl"
    rows = GOOD.splitlines(keepends=True)
    rows.insert(line - 1, '{"src": ' + DEEP + ', "tgt": "x"}\n')
    data.write_text("".join(rows))
    failed(scb("validate", "-c", data_config(tmp_path, data)), f"{data}: line {line} is nested too deeply")
    with pytest.raises(DataError, match=f"line {line} is nested too deeply"):  # what `scb run` loads
        load_rows(TaskConfig(dataset=str(data), source="src", target="tgt", metric="exact_match"))


def test_a_json_document_nested_too_deeply_over_many_lines_is_refused(tmp_path):
    data = tmp_path / "rows.json"
    data.write_text('[\n{"src": "a", "tgt": "b"},\n{"src": ' + "[\n" * 150 + "]\n" * 150 + ', "tgt": "c"}\n]\n')
    failed(scb("validate", "-c", data_config(tmp_path, data)), f"{data}: line 101 is nested too deeply")


def test_a_data_row_over_max_row_mb_is_refused_by_its_line(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(GOOD[:GOOD.index("\n") + 1] * 2 + json.dumps({"src": "x" * 1_500_000, "tgt": "t"}) + "\n")
    failed(scb("validate", "-c", data_config(tmp_path, data, max_row_mb=1)), f"{data}: line 3 is longer than 1 MB",
           "max_row_mb")
    assert scb("validate", "-c", data_config(tmp_path, data, max_row_mb=2)).exit_code == 0


def test_csv_and_parquet_rows_over_the_bound_are_named(tmp_path):
    task = TaskConfig(dataset="x", source="src", target="tgt", metric="exact_match", max_row_mb=1)
    table = tmp_path / "rows.csv"
    table.write_text('src,tgt\na,b\n"' + "line\n" * 300_000 + '",c\n')  # one quoted field over many lines
    with pytest.raises(DataError, match="rows.csv: the row that starts on line 3 is longer than 1 MB"):
        check_data_file(table, task)
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"src": ["a", "x" * 1_500_000, "c"], "tgt": ["1", "2", "3"]}), parquet)
    with pytest.raises(DataError, match=r"rows.parquet: row 1 \(0-based\) is longer than 1 MB"):
        check_data_file(parquet, task)


@pytest.mark.parametrize("kind", ["FIFO", "device"])
def test_a_data_file_that_is_a_fifo_or_a_device_is_refused_without_waiting(tmp_path, kind):
    data = tmp_path / "rows.jsonl"
    os.mkfifo(data) if kind == "FIFO" else data.symlink_to("/dev/zero")
    task = TaskConfig(dataset=str(data), source="src", target="tgt", metric="exact_match")
    for read in (check_data_file, lambda path, task: load_rows(task)):
        with pytest.raises(DataError, match=f"rows.jsonl is not a regular file \\(a {kind}\\)"):
            read(data, task)


def test_lm_eval_data_files_are_checked_before_lm_eval_reads_them(tmp_path):
    pytest.importorskip("lm_eval")
    rows = "".join(json.dumps({"question": f"q{i}", "answer": f"a #### {i}"}) + "\n" for i in range(3))
    (tmp_path / "train.jsonl").write_text(rows)
    test = tmp_path / "test.jsonl"
    test.write_text(rows + '{"question": ' + DEEP + ', "answer": "x"}\n')
    config = {"name": "untrusted", "task": {"lm_eval": "gsm8k", "num_fewshot": 2, "data_files": {
        "test": str(test), "train": str(tmp_path / "train.jsonl")}},
        "models": {"drafter": "org/drafter", "verifier": "org/verifier"}, "methods": [{"method": "verifier"}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    one_line(scb_child("validate", "-c", path), "task.data_files", f"{test}: line 4 is nested too deeply")


def test_the_bounded_reader_refuses_what_is_not_a_regular_file(tmp_path):
    from speccascade_bench.files import open_for_reading

    for path in (tmp_path, Path("/dev/zero")):
        with pytest.raises(UnreadableFile, match="is not a regular file"):
            open_for_reading(path)


@pytest.mark.parametrize("record,value", [("hardware", None), ("hardware", "a GPU"), ("versions", None),
                                          ("versions", ["torch"])])
def test_a_manifest_whose_hardware_or_versions_is_not_a_mapping_is_one_line(tmp_path, record, value):
    folder = hand_made(tmp_path / "res")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest[record] = value
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    if value is None:  # absent in effect: reported without it
        result = scb("report", folder)
        assert result.exit_code == 0, result.output
        return
    failed(scb("report", folder), str(folder / MANIFEST_FILE), record, "must be a mapping")


@pytest.mark.parametrize("change,words", [
    ({"accepted": 999, "drafted": 8}, "more accepted draft tokens (999) than drafted (8)"),
    ({"deferred": 1e308}, "deferred of 1e+308, over 10^12"),
    ({"output_tokens": 2.5}, "no integer output_tokens"),
    ({"calls": {"drafter": -1, "verifier": 2}}, "calls entry that is not a whole number"),
    ({"example_id": 10**26}, "example_id of 1e+26, over 10^12"),
    ({"accepted_per_round": [1e400]}, "accepted_per_round entry that is not a whole number"),
])
def test_counters_no_decode_could_record_are_refused_by_their_line(tmp_path, change, words):
    rows = [row("spec_decode-g2", i, 0.5) for i in range(N)]
    rows[3].update(change)
    folder = hand_made(tmp_path / "res", {"verifier": [row("verifier", i, 1.0) for i in range(N)],
                                           "spec_decode-g2": rows})
    failed(scb("report", folder), "spec_decode-g2.jsonl", words)


def test_a_manifest_naming_one_run_twice_is_refused(tmp_path):
    folder = hand_made(tmp_path / "res")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["config"]["methods"].append(dict(manifest["config"]["methods"][0]))
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("report", folder), "config.methods", "named once")


def test_a_data_line_that_is_not_an_object_is_named_by_its_line(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"src": "a", "tgt": "b"}\n\n[1, 2]\n')
    task = TaskConfig(dataset=str(data), source="src", target="tgt")
    with pytest.raises(DataError, match="rows.jsonl: line 3 is not a JSON object"):
        load_rows(task)
