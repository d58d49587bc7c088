"""Experiment trackers: a results folder sent to a real local MLflow store (sqlite, no server) and to W&B in offline
mode, read back and checked against summary.csv; a resume continues the same tracker run; a tracker that cannot
be reached leaves the folder complete with one warning; `--log` errors in one line before anything runs."""

import json
import struct
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.analysis.tracking import METRICS
from speccascade_bench.cli import app

from .helpers import save_byte_pair, write_jsonl
from .results_builder import build_results


@pytest.fixture(autouse=True)
def trackers_installed():
    """The trackers' libraries (optional extras), imported by the tests that use them, not when tests are collected."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    save_byte_pair(root)
    write_jsonl(root / "task.jsonl", [{"src": f"sentence number {i}", "tgt": f"Satz Nummer {i}"} for i in range(6)])
    return root


def _config(root, output) -> str:
    config = {"name": "tracked",
              "task": {"dataset": str(root / "task.jsonl"), "source": "src", "target": "tgt", "metric": "bleu"},
              "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
              "decoding": {"max_new_tokens": 5, "temperature": 1.0, "draft_length": 3, "seed": 0},
              "methods": [{"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode"}],
              "timing": {"warmup": 1, "trials": 1}, "output": str(output)}
    path = root / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _built(tmp_path, n: int = 12):
    right = [100.0 if i % 3 else 0.0 for i in range(n)]
    return build_results(tmp_path / "built", {
        "verifier": ("verifier", {}, [1.0] * n, right),
        "drafter": ("drafter", {}, [0.3] * n, [0.0] * n),
        "spec_cascade-opt-a0.5-g5": ("spec_cascade", {"rule": "opt", "alpha": 0.5, "draft_length": 5},
                                     [0.5 + 0.01 * i for i in range(n)], [100.0] * n),
    })


def _mlflow_runs(uri: str, key: str):
    """The folder's MLflow run (found by its tracking key) and its child runs by run id."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiments, f"tags.`scb.key` = '{key}' and tags.`scb.role` = 'folder'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(experiments, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return client, parent, {child.data.tags["scb.run_id"]: child for child in children}


def _equal_to_summary(children: dict, folder) -> None:
    table = pd.read_csv(folder / "summary.csv")
    assert set(children) == set(table["run_id"])
    for _, row in table.iterrows():
        metrics = children[row["run_id"]].data.metrics
        expected = {name: float(row[name]) for name in METRICS if name in row and not pd.isna(row[name])}
        assert set(metrics) >= set(expected), row["run_id"]
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, rel=1e-9), (row["run_id"], name)
        assert children[row["run_id"]].data.params["method"] == row["method"]
    return table


def test_mlflow_gets_every_summary_number_params_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _built(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(app, ["report", str(folder), "--html", "--log", f"mlflow={uri}"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / "manifest.json").read_text())
    from speccascade_bench.results.manifest import tracking_key

    client, parent, children = _mlflow_runs(uri, tracking_key(manifest))
    table = _equal_to_summary(children, folder)
    cascade = children["spec_cascade-opt-a0.5-g5"].data.params
    assert (cascade["rule"], cascade["alpha"], cascade["draft_length"]) == ("opt", "0.5", "5")
    assert parent.data.params["temperature"] == str(manifest["config"]["decoding"]["temperature"])
    assert parent.data.params["verifier"] == manifest["config"]["models"]["verifier"]
    assert parent.data.tags["git_commit"] == str(manifest["git_commit"])
    assert parent.data.tags["device"] == manifest["hardware"]["device"]
    assert parent.info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.json", "report.md", "report.html", "manifest.json", "latencies.json",
            "quality_latency.png", "quality_cost.png"} <= artifacts  # the figures drawn for it, not into the folder
    assert not list(folder.glob("*.png"))
    latencies = json.loads(open(client.download_artifacts(parent.info.run_id, "latencies.json",
                                                          str(tmp_path))).read())
    assert len(latencies["data"]) == int(table["n"].sum())  # one row per (run, example)
    assert latencies["columns"][:3] == ["run_id", "example_id", "latency_s"]
    # Sent again (a later `scb report --log`): the same runs, no new ones.
    assert CliRunner().invoke(app, ["report", str(folder), "--log", f"mlflow={uri}"]).exit_code == 0
    _, again, children_again = _mlflow_runs(uri, tracking_key(manifest))
    assert again.info.run_id == parent.info.run_id and set(children_again) == set(children)


def test_scb_run_logs_progress_resumes_into_the_same_mlflow_run_and_records_it(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    config = _config(workspace, out)
    first = CliRunner().invoke(app, ["run", "-c", config, "--limit", "2", "--log", f"mlflow={uri}"])
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "manifest.json").read_text())
    key = manifest["tracking_key"]
    client, parent, children = _mlflow_runs(uri, key)
    assert manifest["trackers"]["mlflow"] == {"tracking_uri": uri, "experiment_id": parent.info.experiment_id,
                                              "run_id": parent.info.run_id}
    progress = client.get_metric_history(parent.info.run_id, "decodes_done")
    assert {m.value for m in progress} >= {6}  # 2 examples x 3 method runs
    assert all(child.data.metrics["n"] == 2 for child in children.values())
    resumed = CliRunner().invoke(app, ["run", "-c", config, "--limit", "4", "--log", f"mlflow={uri}"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "manifest.json").read_text())["tracking_key"] == key
    _, again, children = _mlflow_runs(uri, key)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    _equal_to_summary(children, out)
    assert all(child.data.metrics["n"] == 4 for child in children.values())


def test_an_unreachable_tracker_leaves_the_folder_complete_with_one_warning(workspace, tmp_path, monkeypatch,
                                                                           caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(app, ["run", "-c", _config(workspace, out), "--limit", "2",
                                          "--log", "mlflow=http://127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if "mlflow could not" in r.getMessage()]
    assert len(warnings) == 1 and "scb report" in warnings[0] and "--log mlflow=http://127.0.0.1:9" in warnings[0]
    for name in ("summary.csv", "summary.json", "report.md", "report.html"):
        assert (out / name).is_file()
    assert "trackers" not in json.loads((out / "manifest.json").read_text())
    # the folder is sent later, into the run a resume would have found
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    assert CliRunner().invoke(app, ["report", str(out), "--log", f"mlflow={uri}"]).exit_code == 0
    _equal_to_summary(_mlflow_runs(uri, json.loads((out / "manifest.json").read_text())["tracking_key"])[2], out)


def _wandb_records(run_file, wait_s: float = 60.0):
    """The records of an offline W&B run file, once W&B's own process has written it to its `exit` record: `finish`
    can return while the last records are still being written, and a record read half-written does not parse."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = _wandb_file_records(run_file.read_bytes())
            if records and records[-1].WhichOneof("record_type") == "exit":
                return records
        except DecodeError:
            pass
        assert time.monotonic() < deadline, f"{run_file} has no exit record after {wait_s:.0f} s"
        time.sleep(0.2)


def _wandb_file_records(data: bytes):
    """The records of a W&B run file's bytes: a 7-byte header, then LevelDB-log blocks of 32 KiB, each record a
    7-byte header (CRC, length, type) and a piece of a protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2

    assert data[:4] == b":W&B"
    records, piece, position = [], b"", 7
    while position + 7 <= len(data):
        room = 32768 - position % 32768
        if room < 7:
            position += room
            continue
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        piece += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(piece)
            records.append(record)
            piece = b""
        elif kind == 0:
            break
    return records


def test_wandb_offline_run_holds_the_summary_config_tables_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    folder = _built(tmp_path)
    result = CliRunner().invoke(app, ["report", str(folder), "--log", "wandb=scb-test"])
    assert result.exit_code == 0, result.output
    from speccascade_bench.results.manifest import tracking_key

    key = tracking_key(json.loads((folder / "manifest.json").read_text()))
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{key}")
    records = _wandb_records(run_dir / f"run-{key}.wandb")
    summary, config, artifacts = {}, {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "artifact":
            artifacts += [entry.path for entry in record.artifact.manifest.contents]
        elif kind == "run":
            assert record.run.project == "scb-test" and record.run.run_id == key
    table = pd.read_csv(folder / "summary.csv")
    for _, row in table.iterrows():
        for name in METRICS:
            if name in row and not pd.isna(row[name]):
                assert summary[f"{row['run_id']}/{name}"] == pytest.approx(float(row[name]), rel=1e-9)
    assert config["temperature"] == "1.0" and config["provenance"]["device"] == "cpu"
    assert {"summary.csv", "summary.json", "report.md", "manifest.json"} <= set(artifacts)
    tables = {path.name.split("_")[0]: json.loads(path.read_text())
              for path in (run_dir / "files" / "media" / "table").glob("*.table.json")}
    assert len(tables["latencies"]["data"]) == int(table["n"].sum())
    assert [row[0] for row in tables["runs"]["data"]] == list(table["run_id"])
    # Sent again: the same W&B run (its id is the folder's key), resumed rather than a new one
    time.sleep(1.1)  # W&B names an offline run's folder by the second it started
    assert CliRunner().invoke(app, ["report", str(folder), "--log", "wandb=scb-test"]).exit_code == 0
    again = [path for path in (tmp_path / "wandb").glob("offline-run-*") if path.is_dir()]
    assert len(again) == 2 and all(path.name.endswith(f"-{key}") for path in again)
    resumed = [r for r in _wandb_records(next(p for p in again if p != run_dir) / f"run-{key}.wandb")
               if r.WhichOneof("record_type") == "run"]
    assert resumed and all(r.run.run_id == key for r in resumed)


@pytest.mark.parametrize(("value", "words"), [
    ("comet", "unknown tracker 'comet'"), ("mlflow=", "names no TRACKING_URI"),
    ("wandb=", "names no PROJECT")])
def test_log_errors_are_one_line_before_anything_runs(tmp_path, value, words):
    folder = _built(tmp_path)
    before = sorted(path.name for path in folder.iterdir())
    result = CliRunner().invoke(app, ["report", str(folder), "--log", value])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert sorted(path.name for path in folder.iterdir()) == before  # nothing written


def test_a_missing_tracker_library_names_its_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = CliRunner().invoke(app, ["run", "-c", "no-such.yaml", "--log", "wandb", "--log", "mlflow"])
    assert result.exit_code == 2 and "pip install 'speccascade-bench[wandb]'" in result.stderr, result.stderr
    twice = CliRunner().invoke(app, ["run", "-c", "no-such.yaml", "--log", "mlflow", "--log", "mlflow=x"])
    assert twice.exit_code == 2 and "named twice" in twice.stderr


def test_the_mlflow_ui_shows_the_folder_and_its_method_runs_in_a_real_browser(tmp_path, monkeypatch):
    """scripts/mlflow_ui.py, which takes the docs' picture: a local `mlflow server` on loopback over a store holding a
    built folder, opened in Chromium, shows the folder's run and every method run under it."""
    import importlib.util
    import shutil

    if (shutil.which("chromium") or shutil.which("chromium-browser")) is None:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian) runs the browser tests")
    pytest.importorskip("playwright")
    monkeypatch.chdir(tmp_path)
    scripts = __import__("pathlib").Path(__file__).parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))  # as when the script runs: its helpers beside it
    spec = importlib.util.spec_from_file_location("mlflow_ui", scripts / "mlflow_ui.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = _built(tmp_path)
    assert CliRunner().invoke(app, ["report", str(folder)]).exit_code == 0
    shown = script.main(folder, tmp_path / "ui.png")
    assert sorted(shown) == ["built", "drafter", "spec_cascade-opt-a0.5-g5", "verifier"]
    assert (tmp_path / "ui.png").stat().st_size > 10_000
