"""A results folder under attack: links where the suite writes (in the folder, at --out), empty or
unreadable examples/, rows that do not belong to their file or contradict each other, JSON nested too
deeply to parse, and what an interrupted run says it kept. Each refusal is one line, exit code 2, and
nothing is written or deleted. Most folders here are written by hand, without models."""

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speccascade_bench.analysis.summary import summarize
from speccascade_bench.cli import app
from speccascade_bench.files import ResultsError, write_atomic, write_file
from speccascade_bench.results.folder import MANIFEST_FILE, read_manifest
from speccascade_bench.results.rows import ExampleWriter, count_examples, read_run, repair

from .test_results_folder import config, failed, pair_dir, scb  # noqa: F401 - pair_dir is a fixture

N = 12  # examples per run of a hand-made folder (enough for a bootstrap interval)
DEEP = "[" * 100_000 + "]" * 100_000


def row(run_id: str, example_id: int, latency: float = 1.0, score: float = 100.0, **fields) -> dict:
    method = run_id.split("-")[0]
    params = {"draft_length": 2} if method == "spec_decode" else {}
    return {"example_id": example_id, "run_id": run_id, "method": method, "params": params,
            "prediction": f"p{example_id}", "reference": f"p{example_id}", "references": [f"p{example_id}"],
            "output_tokens": 4, "input_tokens": 3, "latency_s": latency, "latency_trials_s": [latency],
            "drafter_calls": 4 if method == "spec_decode" else 0, "verifier_calls": 2 if method == "spec_decode" else 4,
            "drafted": 4 if method == "spec_decode" else 0, "accepted": 3 if method == "spec_decode" else 0,
            "rounds": 2 if method == "spec_decode" else 0, "accepted_per_round": [], "rejections": 1,
            "deferred": 0.0, "confidence": None, "shots": 0, "score": score, **fields}


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def hand_made(folder: Path, runs: dict[str, list[dict]] | None = None) -> Path:
    """A results folder as `scb run` leaves it, written by hand: a manifest and one file per method run
    (by default a verifier and a spec_decode twice as fast, on N examples)."""
    runs = runs if runs is not None else {"verifier": [row("verifier", i, 1.0) for i in range(N)],
                                          "spec_decode-g2": [row("spec_decode-g2", i, 0.5) for i in range(N)]}
    (folder / "examples").mkdir(parents=True)
    methods = [{"run_id": run_id, "method": run_id.split("-")[0], "params": rows[0]["params"] if rows else {}}
               for run_id, rows in runs.items()]
    manifest = {"format": "speccascade-bench results", "dtype": "float32", "hardware": {"device": "cpu"},
                "config": {"name": "fake", "task": {"dataset": "d.jsonl", "target": "tgt", "source": "src",
                                                    "metric": "exact_match"},
                           "models": {"drafter": "d", "verifier": "v"}, "decoding": {}, "timing": {},
                           "methods": methods}}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    for run_id, rows in runs.items():
        (folder / "examples" / f"{run_id}.jsonl").write_text(lines(rows))
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links as their target's name), to show that nothing changed."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b"/"
    return found


def victim(tmp_path: Path, text: str = "not results, not JSON\n") -> Path:
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def decoded(pair_dir, tmp_path_factory):  # noqa: F811
    """A folder of a real (tiny) run, decoded once; tests work on copies (`finished`)."""
    out = tmp_path_factory.mktemp("decoded") / "res"
    result = scb("run", "-c", config(pair_dir, out, file="decoded"))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def finished(decoded, tmp_path):
    out = tmp_path / "res"
    shutil.copytree(decoded, out, symlinks=True)
    (out / ".scb.lock").unlink(missing_ok=True)
    return out


# --- 1. links --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["examples/verifier.jsonl", "examples/spec_decode-g2.tmp", ".manifest.json.tmp",
                                  "summary.csv"])
def test_run_refuses_a_link_it_would_write_before_anything_is_deleted(pair_dir, finished, tmp_path, name):  # noqa: F811
    target = victim(tmp_path)
    link = finished / name
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    before = contents(finished)
    for extra in ((), ("--fresh",)):
        failed(scb("run", "-c", config(pair_dir, finished), *extra), f"{name} is a link")
        assert target.read_text() == "not results, not JSON\n"
        assert contents(finished) == before  # the manifest too: the folder stays resumable
    read_manifest(finished)


def test_a_dangling_link_or_a_folder_among_the_example_files_is_refused_too(pair_dir, finished, tmp_path):  # noqa: F811
    link = finished / "examples" / "verifier.jsonl"
    link.unlink()
    link.symlink_to(tmp_path / "does-not-exist-yet.jsonl")
    failed(scb("run", "-c", config(pair_dir, finished), "--fresh"), "verifier.jsonl is a link")
    assert not (tmp_path / "does-not-exist-yet.jsonl").exists() and (finished / MANIFEST_FILE).exists()
    link.unlink()
    link.mkdir()
    failed(scb("run", "-c", config(pair_dir, finished), "--fresh"), "verifier.jsonl is not a regular file")
    assert (finished / MANIFEST_FILE).exists()


@pytest.mark.parametrize("name", ["report.md", "summary.csv"])
def test_report_never_writes_through_a_link(tmp_path, name):
    folder = hand_made(tmp_path / "archive")
    target = victim(tmp_path)
    (folder / name).symlink_to(target)
    before = contents(folder)
    failed(scb("report", folder), f"{name} is a link")
    assert target.read_text() == "not results, not JSON\n" and contents(folder) == before


def test_plot_never_writes_through_a_link_in_the_folder_or_at_out(tmp_path):
    folder = hand_made(tmp_path / "wmt")
    other = hand_made(tmp_path / "other" / "cnn")
    target = victim(tmp_path)
    (folder / "quality_cost.pdf").symlink_to(target)
    failed(scb("plot", folder), "quality_cost.pdf is a link")
    assert not (folder / "quality_latency.png").exists() and target.read_text() == "not results, not JSON\n"
    (folder / "quality_cost.pdf").unlink()
    out = tmp_path / "figures"
    out.mkdir()
    (out / "quality_latency.png").symlink_to(target)
    failed(scb("plot", folder, "--out", out), "quality_latency.png is a link")
    (out / "quality_latency.png").unlink()
    (out / "combined_quality_cost.pdf").symlink_to(target)
    failed(scb("plot", folder, other, "--out", out), "combined_quality_cost.pdf is a link")
    (out / "combined_quality_cost.pdf").unlink()
    (out / "wmt").symlink_to(target.parent, target_is_directory=True)
    failed(scb("plot", folder, other, "--out", out), "wmt is a link")
    assert sorted(p.name for p in out.iterdir()) == ["wmt"] and target.read_text() == "not results, not JSON\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["precious.txt"]
    (out / "wmt").unlink()
    result = scb("plot", folder, other, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "wmt" / "quality_latency.png").is_file() and (out / "combined_quality_cost.pdf").is_file()


def test_toy_data_never_writes_through_a_link_at_out(tmp_path):
    target = victim(tmp_path)
    out = tmp_path / "toy"
    out.mkdir()
    (out / "test.jsonl").symlink_to(target)
    failed(scb("toy-data", "--out", out, "--train", 3, "--validation", 2, "--test", 2), "test.jsonl is a link")
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"] and target.read_text() == "not results, not JSON\n"


def test_every_writer_refuses_a_link_and_leaves_its_target_alone(tmp_path):
    target = victim(tmp_path)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    for write in (lambda: write_file(link, "x"), lambda: write_atomic(link, "x"), lambda: ExampleWriter(link),
                  lambda: repair(link)):
        with pytest.raises(ResultsError, match="link.jsonl is a link"):
            write()
    tmp = tmp_path / ".real.json.tmp"  # where a fixed temporary name would be: a fresh one is made instead
    tmp.symlink_to(target)
    write_atomic(tmp_path / "real.json", "x")
    assert target.read_text() == "not results, not JSON\n" and tmp.is_symlink()
    assert (tmp_path / "real.json").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == [tmp.name]  # none left behind
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(ResultsError, match="dangling.jsonl is a link"):
        ExampleWriter(dangling)
    assert not (tmp_path / "nowhere.jsonl").exists()


def test_a_fifo_where_a_file_is_written_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "report.md"
    os.mkfifo(fifo)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(ResultsError, write_file, fifo, "x")),
                              daemon=True)
    thread.start()
    thread.join(10)
    assert outcome and "not a regular file" in str(outcome[0].value)


# --- 2. nothing to report ----------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["report", "plot"])
def test_an_empty_examples_folder_is_refused_and_nothing_is_written(tmp_path, verb):
    folder = hand_made(tmp_path / "res", {"verifier": []})
    (folder / "summary.csv").write_text("an earlier summary\n")
    before = contents(folder)
    failed(scb(verb, folder), "examples", "no example lines")
    assert contents(folder) == before
    (folder / "examples" / "verifier.jsonl").unlink()
    failed(scb(verb, folder), "no example lines")
    assert (folder / "summary.csv").read_text() == "an earlier summary\n" and not (folder / "report.md").exists()


def test_an_unreadable_examples_folder_is_one_line(tmp_path, monkeypatch):
    folder = hand_made(tmp_path / "res")
    examples = folder / "examples"
    real_iterdir = Path.iterdir

    def denied(self):
        if self == examples:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    for verb in ("report", "plot"):
        failed(scb(verb, folder), str(examples), "Permission denied")
    assert sorted(p.name for p in real_iterdir(folder)) == ["examples", MANIFEST_FILE]


# --- 3. rows against their file ------------------------------------------------------------------------

def test_swapped_files_are_refused_not_reported_with_the_wrong_latencies(tmp_path):
    folder = hand_made(tmp_path / "res")
    examples = folder / "examples"
    verifier, spec = (examples / "verifier.jsonl").read_text(), (examples / "spec_decode-g2.jsonl").read_text()
    (examples / "verifier.jsonl").write_text(spec)
    (examples / "spec_decode-g2.jsonl").write_text(verifier)
    for verb in ("report", "plot"):
        failed(scb(verb, folder), "spec_decode-g2.jsonl: line 1 has run_id 'verifier'", "run_id")
    assert not (folder / "summary.csv").exists()


def test_a_row_of_another_method_is_refused_with_its_line(tmp_path):
    rows = [row("verifier", i) for i in range(N)]
    rows[3]["method"] = "drafter"
    folder = hand_made(tmp_path / "res", {"verifier": rows})
    failed(scb("report", folder), "verifier.jsonl: line 4 has method 'drafter'")
    rows[3] = {k: v for k, v in rows[3].items() if k != "run_id"}
    (folder / "examples" / "verifier.jsonl").write_text(lines(rows))
    failed(scb("plot", folder), "verifier.jsonl: line 4 has no text run_id")


def test_conflicting_duplicate_examples_are_refused(tmp_path):
    rows = [row("verifier", i) for i in range(N)] + [row("verifier", 5, latency=9.0)]
    folder = hand_made(tmp_path / "res", {"verifier": rows})
    for verb in ("report", "plot"):
        failed(scb(verb, folder), f"verifier.jsonl: line {N + 1} has example_id 5 of line 6 with other content")


def test_exact_duplicates_are_counted_once_with_one_note(tmp_path):
    folder = hand_made(tmp_path / "res")
    path = folder / "examples" / "verifier.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(lines(rows + rows[:2]))
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [f"note: {path}: 2 exact duplicate rows ignored"]
    assert "| verifier | 12 |" in result.stdout
    assert list(summarize(folder)["n"]) == [N, N]
    assert read_run(path)[1] == 2 and [r.example_id for r in read_run(path)[0]] == list(range(N))


def test_a_resume_reads_the_rows_with_the_same_checks(pair_dir, finished):  # noqa: F811
    path = finished / "examples" / "verifier.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    foreign = json.loads((finished / "examples" / "spec_decode-g2.jsonl").read_text().splitlines()[0])
    path.write_text(lines([*rows, foreign]))
    failed(scb("run", "-c", config(pair_dir, finished)), f"verifier.jsonl: line {len(rows) + 1} has run_id")
    path.write_text(lines([*rows, {**rows[0], "prediction": "something else"}]))
    failed(scb("run", "-c", config(pair_dir, finished)), f"line {len(rows) + 1} has example_id 0 of line 1")
    path.write_text(lines([*rows, rows[0]]))
    result = CliRunner().invoke(app, ["run", "-c", config(pair_dir, finished)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("exact duplicate rows ignored") == 1
    assert len(path.read_text().splitlines()) == len(rows) + 1  # nothing decoded again, nothing appended


# --- 4. JSON nested too deeply ---------------------------------------------------------------------------

def test_deeply_nested_json_in_an_examples_file_is_one_line(tmp_path):
    folder = hand_made(tmp_path / "res")
    path = folder / "examples" / "verifier.jsonl"
    first, *rest = path.read_text().splitlines(keepends=True)
    path.write_text(first + DEEP + "\n" + "".join(rest[1:]))  # in place of example 1
    for verb in ("report", "plot"):
        failed(scb(verb, folder), "verifier.jsonl: line 2 is nested too deeply")
    assert count_examples(folder) == N - 1  # what an interrupt reports skips the line, without failing


@pytest.mark.parametrize("name,words", [(MANIFEST_FILE, ("manifest.json is nested too deeply",)),
                                        ("call_costs.json", ("call_costs.json is damaged",))])
def test_deeply_nested_json_in_a_manifest_or_call_costs_is_one_line(tmp_path, name, words):
    folder = hand_made(tmp_path / "res")
    (folder / name).write_text(DEEP + "\n")
    for verb in ("report", "plot"):
        failed(scb(verb, folder), *words)


def test_a_run_into_a_folder_with_a_deeply_nested_manifest_is_one_line(pair_dir, finished):  # noqa: F811
    (finished / MANIFEST_FILE).write_text(DEEP)
    failed(scb("run", "-c", config(pair_dir, finished)), "manifest.json is nested too deeply")


# --- 5. what an interrupt says it kept -----------------------------------------------------------------------

def test_an_interrupt_counts_the_examples_every_method_run_finished(tmp_path):
    folder = hand_made(tmp_path / "res", {"verifier": [row("verifier", i) for i in range(5)],
                                          "spec_decode-g2": [row("spec_decode-g2", i) for i in (0, 1, 2, 0)]})
    with (folder / "examples" / "spec_decode-g2.jsonl").open("a") as f:
        f.write("garbage\n" + json.dumps(row("spec_decode-g2", 3))[:20])  # a bad line and a torn one
    assert count_examples(folder) == 3  # examples 0-2; not the 5 + 4 lines
    assert count_examples(folder, ["verifier"]) == 5
    assert count_examples(folder, ["verifier", "spec_decode-g2", "token_cascade-a0.1"]) == 0  # one run not started
    assert count_examples(tmp_path / "nowhere") == 0


def test_a_hard_link_to_a_file_elsewhere_is_never_written_through(pair_dir, finished, tmp_path):  # noqa: F811
    target = victim(tmp_path)
    link = finished / "examples" / "verifier.jsonl"
    link.unlink()
    os.link(target, link)
    for extra in ((), ("--fresh",)):
        failed(scb("run", "-c", config(pair_dir, finished), *extra), "verifier.jsonl has 1 other hard link")
    assert target.read_text() == "not results, not JSON\n" and (finished / MANIFEST_FILE).exists()
    other = tmp_path / "report-elsewhere.md"
    other.write_text("keep me\n")
    os.link(other, tmp_path / "report.md")
    with pytest.raises(ResultsError, match="report.md has 1 other hard link"):
        write_file(tmp_path / "report.md", "overwritten")
    assert other.read_text() == "keep me\n"


def test_plot_out_that_is_a_file_and_negative_example_ids_are_one_line(tmp_path):
    folder = hand_made(tmp_path / "res")
    target = victim(tmp_path)
    failed(scb("plot", folder, "--out", target), "--out", "is not a folder")
    assert target.read_text() == "not results, not JSON\n"
    rows = [row("verifier", i) for i in range(N)]
    rows[2]["example_id"] = -3
    folder = hand_made(tmp_path / "neg", {"verifier": rows})
    failed(scb("report", folder), "verifier.jsonl: line 3 has a negative example_id (-3)")


def test_a_resume_with_fewer_runs_keeps_the_manifest_record_of_the_runs_with_rows(pair_dir, finished):  # noqa: F811
    """`scb report` reads only the runs that the manifest names: a resume whose config no longer lists a run that has
    rows in the folder keeps that run's record."""
    result = scb("run", "-c", config(pair_dir, finished, methods=[{"method": "verifier"}]))
    assert result.exit_code == 0, result.output
    named = {run["run_id"] for run in read_manifest(finished)["config"]["methods"]}
    assert named == {"verifier", "spec_decode-g2"}
    report = scb("report", finished)
    assert report.exit_code == 0 and "| spec_decode-g2 |" in report.output, report.output
