"""What `scb run` guarantees about its results folder: it writes only into an empty folder or one of its own
results folders, `--fresh` deletes only the files it wrote, one run at a time holds a folder, a resume
must match the folder's task, models, decoding, timing and hardware, and an interrupt keeps every
finished example. Each refusal happens before any model loads."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.files import ResultsError
from speccascade_bench.results.folder import MANIFEST_FILE, RunLock, check_output, write_json_atomic
from speccascade_bench.results.rows import read_lines

from .helpers import save_byte_pair, write_jsonl

N = 3


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    save_byte_pair(root)
    write_jsonl(root / "task.jsonl", [{"src": f"sentence {i}", "tgt": f"Satz {i}"} for i in range(N)])
    return root


def config(root, output, file="c", **overrides) -> str:
    data = {
        "name": "tiny",
        "task": {"dataset": str(root / "task.jsonl"), "source": "src", "target": "tgt"},
        "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
        "decoding": {"max_new_tokens": 4, "temperature": 0.0, "draft_length": 2},
        "methods": [{"method": "verifier"}, {"method": "spec_decode"}],
        "timing": {"warmup": 0, "trials": 1},
        "output": str(output),
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = root / f"{file}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def scb(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def failed(result, *words):
    """The command ended with one `error:` line naming every word, and no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    for word in words:
        assert word in result.output, (word, result.output)
    return result.output


def test_a_folder_that_is_not_a_results_folder_is_refused_and_left_alone(pair_dir, tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "paper.tex").write_text("keep me")
    for extra in ((), ("--fresh",)):
        failed(scb("run", "-c", config(pair_dir, project), *extra), str(project), "not a results folder")
        assert (project / "paper.tex").read_text() == "keep me" and (project / ".git").is_dir()
        assert sorted(p.name for p in project.iterdir()) == [".git", "paper.tex"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    failed(scb("run", "-c", config(pair_dir, a_file)), "is a file")
    assert a_file.read_text() == "x"
    with pytest.raises(ResultsError, match="not a results folder"):
        check_output(Path("/"))


@pytest.mark.parametrize("key,value,words", [
    ("name", "", ("name", "must not be empty")),
    ("name", "../up", ("name", "must be letters")),
    ("output", "", ("output", "must not be empty")),
    ("output", "  ", ("output", "must not be empty")),
])
def test_empty_or_unsafe_names_and_outputs_are_invalid(pair_dir, tmp_path, key, value, words):
    output = value if key == "output" else tmp_path / "x"
    overrides = {} if key == "output" else {key: value}
    failed(scb("validate", "-c", config(pair_dir, output, **overrides)), *words)


def test_fresh_deletes_only_what_the_suite_wrote(pair_dir, tmp_path):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "examples" / "by_hand.csv").write_text("mine too")
    (out / "figures").mkdir()
    assert scb("report", out).exit_code == 0 and (out / "report.md").exists()
    result = scb("run", "-c", config(pair_dir, out), "--fresh", "--methods", "verifier", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "examples" / "by_hand.csv").exists()
    assert (out / "figures").is_dir()
    # the old report went with --fresh; the run wrote its own: the verifier on one example, nothing else
    report = (out / "report.md").read_text()
    assert "| verifier | 1 |" in report and "spec_decode" not in report
    assert sorted(p.name for p in (out / "examples").glob("*.jsonl")) == ["verifier.jsonl"]
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 1


def _sessions(path: Path) -> set[str]:
    return {row["worker"]["session"] for row in read_lines(path)}


def test_the_report_names_runs_a_resume_timed_apart_from_the_verifier(pair_dir, tmp_path):
    """A method added by a resume is timed by a later `scb run` than the verifier on the same examples: the rows
    say which run timed them, and the report flags the relative latencies that compare across the two."""
    together, apart = tmp_path / "together", tmp_path / "apart"
    assert scb("run", "-c", config(pair_dir, together, file="t")).exit_code == 0
    sessions = [_sessions(together / "examples" / f"{run}.jsonl") for run in ("verifier", "spec_decode-g2")]
    assert sessions[0] == sessions[1] and len(sessions[0]) == 1
    result = scb("report", together)
    assert result.exit_code == 0 and "timed apart" not in result.output

    assert scb("run", "-c", config(pair_dir, apart), "--methods", "verifier").exit_code == 0
    assert scb("run", "-c", config(pair_dir, apart)).exit_code == 0  # the resume adds spec_decode
    first, later = (_sessions(apart / "examples" / f"{run}.jsonl") for run in ("verifier", "spec_decode-g2"))
    assert len(first) == len(later) == 1 and first != later
    result = scb("report", apart, "--html")
    assert result.exit_code == 0, result.output
    assert "timed apart from the verifier" in (apart / "report.html").read_text()
    line = next(line for line in result.output.splitlines() if "timed apart from the verifier" in line)
    assert f"spec_decode-g2 ({N} of {N} examples)" in line and "verifier (" not in line
    assert line in (apart / "report.md").read_text()

    # A deferral-rate seq_cascade sums the drafter's latency (and the verifier's): apart where the drafter is
    derived = tmp_path / "derived"
    assert scb("run", "-c", config(pair_dir, derived, file="d"), "--methods", "verifier").exit_code == 0
    cascade = config(pair_dir, derived, file="d", methods=[{"method": "verifier"}, {"method": "drafter"},
                                                            {"method": "seq_cascade", "alpha": [0.0, 1.0]}])
    assert scb("run", "-c", cascade).exit_code == 0
    result = scb("report", derived)
    line = next(line for line in result.output.splitlines() if "timed apart from the verifier" in line)
    assert f"drafter ({N} of {N} examples)" in line and line.count(f"({N} of {N} examples)") == 3, line

    # Rows recorded before rows had sessions, beside a resume's rows that have one: apart
    verifier = together / "examples" / "verifier.jsonl"
    rows = read_lines(verifier)
    for row in rows:
        del row["worker"]["session"]
    verifier.write_text("".join(json.dumps(row) + "\n" for row in rows))
    line = next(line for line in scb("report", together).output.splitlines() if "timed apart" in line)
    assert f"spec_decode-g2 ({N} of {N} examples)" in line


@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "not a manifest"])
def test_a_damaged_manifest_is_refused_with_a_way_out(pair_dir, tmp_path, damage):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier").exit_code == 0
    before = (out / "examples" / "verifier.jsonl").read_text()
    manifest = out / MANIFEST_FILE
    if damage == "missing":
        manifest.unlink()
    else:
        manifest.write_text({"empty": "", "garbage": "{not json", "not a manifest": "[1, 2]"}[damage])
    hot = config(pair_dir, out, file="hot", decoding={"temperature": 1.0})
    for extra in ((), ("--fresh",)):
        message = failed(scb("run", "-c", hot, *extra), "manifest.json")
        assert "restore it" in message and "move the folder aside" in message
    assert (out / "examples" / "verifier.jsonl").read_text() == before
    failed(scb("report", out), "manifest.json")


def test_the_manifest_is_replaced_atomically(tmp_path):
    path = tmp_path / MANIFEST_FILE
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]  # no temporary file left behind


def test_a_second_run_into_a_held_folder_is_refused_with_the_holders_pid(pair_dir, tmp_path):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier").exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from speccascade_bench.results.folder import RunLock\n"
        f"lock = RunLock(Path({str(out)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (out / "examples" / "verifier.jsonl").read_text()
        for extra in ((), ("--fresh",)):
            failed(scb("run", "-c", config(pair_dir, out), *extra), "in use by another scb run", f"pid {holder.pid}")
        assert (out / "examples" / "verifier.jsonl").read_text() == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(out):  # the kernel released the killed holder's lock
        pass
    assert scb("run", "-c", config(pair_dir, out)).exit_code == 0


def test_resume_refuses_other_timing_or_hardware(pair_dir, tmp_path):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier", "--limit", "1").exit_code == 0
    failed(scb("run", "-c", config(pair_dir, out, file="t", timing={"trials": 3})), "timing", "--fresh")
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["hardware"].update(device="cuda:0", gpu="NVIDIA H100 80GB HBM3")
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("run", "-c", config(pair_dir, out)), "other hardware", "device cuda:0 -> cpu")
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 1


def test_a_garbage_line_in_a_results_file_is_one_line_from_run_and_report(pair_dir, tmp_path):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out)).exit_code == 0
    path = out / "examples" / "spec_decode-g2.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    failed(scb("run", "-c", config(pair_dir, out)), "spec_decode-g2.jsonl: line 2 is not JSON")
    failed(scb("report", out), "spec_decode-g2.jsonl: line 2")
    path.write_text(lines[0] + json.dumps({**json.loads(lines[1]), "latency_s": float("nan")}) + "\n")
    failed(scb("report", out), "line 2 has no finite latency_s")


def test_a_failed_first_run_leaves_no_folder_behind(pair_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "new"
    failed(scb("run", "-c", config(pair_dir, out, models={"verifier": "no-such-org/model"})), "no-such-org/model")
    assert not out.exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_says_what_was_kept_and_the_rerun_resumes(pair_dir, tmp_path, sig, code):
    rows = [{"src": "a long sentence to decode " * 3, "tgt": "x"} for _ in range(2000)]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "res"
    path = config(pair_dir, out, task={"dataset": str(tmp_path / "long.jsonl")},
                  decoding={"max_new_tokens": 16}, methods=[{"method": "verifier"}])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "speccascade_bench.cli", "run", "-c", path], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    verifier = out / "examples" / "verifier.jsonl"
    deadline = time.monotonic() + 120
    while not (verifier.exists() and len(read_lines(verifier)) >= 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    kept = len(read_lines(verifier))
    assert 2 <= kept < len(rows)
    assert f"interrupted; {kept} examples kept in {out}; run the same command to resume" in stderr
    assert "Traceback" not in stderr
    result = scb("run", "-c", path, "--limit", str(kept + 1))
    assert result.exit_code == 0, result.output
    ids = [row["example_id"] for row in read_lines(verifier)]
    assert ids == list(range(kept + 1))


def test_a_read_only_results_folder_is_one_line(pair_dir, tmp_path, monkeypatch):
    """Root writes into a chmod-ed folder, so the folder's refusal of the first write (the lock file) is
    simulated here, as the kernel reports it."""
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier").exit_code == 0
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    failed(scb("run", "-c", config(pair_dir, out)), f"cannot write the results to {out}: Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_chmod_read_only_results_folder_is_one_line(pair_dir, tmp_path):
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier").exit_code == 0
    out.chmod(0o500)
    try:
        failed(scb("run", "-c", config(pair_dir, out)), str(out), "Permission denied")
    finally:
        out.chmod(0o700)
