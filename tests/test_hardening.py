"""Hostile inputs found by trying the suite as a hostile user: links in a results folder, a failing
--fresh, a changed data file, damaged results files, runs over different examples, and configs whose
values only fail deep inside a library. Each gets one line, exit code 2, and nothing deleted."""

import json
import os
from pathlib import Path

import pytest
import yaml

from speccascade_bench.analysis.summary import summarize
from speccascade_bench.config.run import load_run_config
from speccascade_bench.finetune.config import load_finetune_config
from speccascade_bench.results.folder import MANIFEST_FILE
from speccascade_bench.results.rows import read_lines
from speccascade_bench.settings import ConfigError

from .test_results_folder import config, failed, pair_dir, scb  # noqa: F401 - pair_dir is a fixture


@pytest.fixture
def finished(pair_dir, tmp_path):  # noqa: F811
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out)).exit_code == 0
    return out


def test_links_in_a_results_folder_are_refused_and_never_followed(pair_dir, finished, tmp_path):  # noqa: F811
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "train.jsonl").write_text("mine")
    examples = finished / "examples"
    for path in examples.iterdir():
        path.unlink()
    examples.rmdir()
    examples.symlink_to(precious)
    for extra in ((), ("--fresh",)):
        failed(scb("run", "-c", config(pair_dir, finished), *extra), "a link or a file")
    assert (precious / "train.jsonl").read_text() == "mine"
    examples.unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (finished / ".scb.lock").unlink(missing_ok=True)
    (finished / ".scb.lock").symlink_to(victim)
    failed(scb("run", "-c", config(pair_dir, finished)), ".scb.lock is a link")
    assert victim.read_text() == "keep"


def test_examples_that_is_a_file_is_refused_before_any_model_loads(pair_dir, finished):  # noqa: F811
    for path in (finished / "examples").iterdir():
        path.unlink()
    (finished / "examples").rmdir()
    (finished / "examples").write_text("not a folder")
    costs = (finished / "call_costs.json").read_text()
    failed(scb("run", "-c", config(pair_dir, finished, models={"verifier": "no-such-org/model"})), "a link or a file")
    assert (finished / "call_costs.json").read_text() == costs


def test_a_failed_fresh_keeps_the_manifest_so_the_folder_stays_usable(pair_dir, finished, monkeypatch):  # noqa: F811
    real_unlink = Path.unlink

    def stubborn(self, *args, **kwargs):
        if self.name == "spec_decode-g2.jsonl":
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", stubborn)
    failed(scb("run", "-c", config(pair_dir, finished), "--fresh"), "Operation not permitted")
    monkeypatch.undo()
    assert (finished / MANIFEST_FILE).exists()
    assert scb("run", "-c", config(pair_dir, finished)).exit_code == 0


def test_a_changed_data_file_refuses_the_resume(pair_dir, tmp_path):  # noqa: F811
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"src": f"s{i}", "tgt": f"t{i}"}) + "\n" for i in range(3)))
    out = tmp_path / "res"
    path = config(pair_dir, out, task={"dataset": str(data)})
    assert scb("run", "-c", path, "--methods", "verifier").exit_code == 0
    data.write_text("".join(json.dumps({"src": f"s{i}", "tgt": f"other {i}"}) + "\n" for i in range(3)))
    failed(scb("run", "-c", path), "another version of the data file", str(data))


def test_runs_over_different_examples_are_compared_on_the_shared_ones(pair_dir, tmp_path):  # noqa: F811
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out), "--limit", "2").exit_code == 0
    assert scb("run", "-c", config(pair_dir, out), "--methods", "verifier").exit_code == 0
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 3
    frame = summarize(out)
    assert set(frame["n"]) == {2} and frame.attrs["unshared_rows"] == 1
    report = scb("report", out)
    assert report.exit_code == 0 and "1 example lines left out" in report.output


def test_a_manifest_without_its_records_refuses_the_resume(pair_dir, finished):  # noqa: F811
    manifest = json.loads((finished / MANIFEST_FILE).read_text())
    del manifest["hardware"]
    (finished / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("run", "-c", config(pair_dir, finished, file="t3", timing={"trials": 3})), "lacks its hardware")
    manifest["hardware"] = {}
    del manifest["config"]["models"]
    (finished / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("run", "-c", config(pair_dir, finished)), "config.models", "restore the manifest")
    failed(scb("report", finished), "config.models")


@pytest.mark.parametrize("damage", ['{"verify_call_cost": ', "[]", "{}", '{"verify_call_cost": {"2": "x"}}'])
def test_damaged_call_costs_are_one_line(finished, damage):
    (finished / "call_costs.json").write_text(damage)
    failed(scb("report", finished), "call_costs.json is damaged")
    failed(scb("plot", finished), "call_costs.json is damaged")


@pytest.mark.parametrize("field,value,problem", [("calls", None, "has no calls"),
                                                 ("prediction", None, "has no text prediction"),
                                                 ("output_tokens", "7", "has no integer output_tokens")])
def test_records_with_bad_fields_are_one_line(finished, field, value, problem):
    path = finished / "examples" / "verifier.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1][field] = value
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    failed(scb("report", finished), f"verifier.jsonl: line 2 {problem}")


@pytest.mark.parametrize("key,value", [("task", {"metric": "nonsense"}), ("decoding", {"temperature": "hot"})])
def test_a_manifest_with_bad_values_is_one_line(finished, key, value):
    manifest = json.loads((finished / MANIFEST_FILE).read_text())
    manifest["config"][key].update(value)
    (finished / MANIFEST_FILE).write_text(json.dumps(manifest))
    for verb in ("report", "plot"):
        failed(scb(verb, finished), f"config.{key}.{next(iter(value))}")


def test_parameters_that_differ_below_six_digits_get_their_own_runs(pair_dir, tmp_path):  # noqa: F811
    path = config(pair_dir, tmp_path / "x", methods=[{"method": "verifier"},
                                                     {"method": "token_cascade", "alpha": [0.10000001, 0.10000004]}])
    ids = [run.run_id for run in load_run_config(path).methods]
    assert len(set(ids)) == 3 and "token_cascade-a0.1" not in ids
    assert [run.run_id for run in load_run_config(config(pair_dir, tmp_path / "y", methods=[
        {"method": "token_cascade", "alpha": [0.1, 0.25]}])).methods] == ["token_cascade-a0.1", "token_cascade-a0.25"]


def test_a_tiny_top_p_and_a_huge_path_are_short_refusals(pair_dir, tmp_path):  # noqa: F811
    failed(scb("validate", "-c", config(pair_dir, tmp_path / "x", decoding={"top_p": 1e-46})), "decoding.top_p")
    long_path = config(pair_dir, tmp_path / "x", task={"dataset": "x/" * 50_000 + "d.jsonl"})
    result = failed(scb("validate", "-c", long_path))
    assert len(result) < 800


def test_a_config_that_never_ends_or_is_a_pipe_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_run_config("/dev/zero")
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_run_config(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_run_config(big)


def test_a_ragged_csv_is_one_line_with_its_cause(pair_dir, tmp_path):  # noqa: F811
    data = tmp_path / "ragged.csv"
    data.write_text("src,tgt\na,b\nc,d\ne,f,g\n")
    result = scb("run", "-c", config(pair_dir, tmp_path / "out", task={"dataset": str(data)}))
    output = failed(result, str(data), "Expected 2 fields in line 4, saw 3")
    assert "Failed to read file" not in output


def _finetune(tmp_path, data, **model):
    raw = {"name": "ft", "task": {"dataset": str(data), "source": "src", "target": "tgt"},
           "model": {"architecture": {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_heads": 2, "num_layers": 1},
                     "tokenizer": "byt5", **model},
           "training": {"max_steps": 1, "batch_size": 2, "eval_steps": 1, "save_steps": 1},
           "output": str(tmp_path / "ft")}
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


@pytest.mark.parametrize("architecture,words", [
    ({"d_model": 0}, "must be in [1, 65536]"), ({"d_model": -16}, "must be in"), ({"num_heads": 0}, "must be in"),
    ({"num_layers": 1_000_000}, "must be in [1, 1000]"), ({"d_model": 100_000_000}, "must be in"),
    ({"vocab_size": 10}, "set from the tokenizer"),
])
def test_architecture_values_that_fail_inside_torch_are_refused_at_load(tmp_path, architecture, words):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"src": "a", "tgt": "b"}) + "\n")
    path, raw = _finetune(tmp_path, data)
    raw["model"]["architecture"].update(architecture)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_finetune_config(path)


def test_finetune_refuses_an_output_folder_it_did_not_write_and_null_eval_targets(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"src": f"s{i}", "tgt": f"t{i}"}) + "\n" for i in range(4)))
    path, raw = _finetune(tmp_path, data)
    project = tmp_path / "ft"
    project.mkdir()
    (project / "config.json").write_text("mine")
    failed(scb("finetune", "-c", path), "is not an output of `scb finetune`")
    assert (project / "config.json").read_text() == "mine" and len(list(project.iterdir())) == 1
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("not a model")
    (project / "config.json").unlink()
    (project / "training.json").write_text("{}")  # an output of scb finetune...
    (project / "config.json").symlink_to(elsewhere)  # ...with a link where save_pretrained writes
    failed(scb("finetune", "-c", path), "config.json is a link")
    assert elsewhere.read_text() == "not a model"
    (project / "config.json").unlink()
    (project / "training.json").unlink()
    (project / "config.json").write_text("mine")
    bad = tmp_path / "eval.jsonl"
    bad.write_text(json.dumps({"src": "a", "tgt": None}) + "\n")
    raw["output"] = str(tmp_path / "ft2")
    raw["training"]["eval_split"] = str(bad)
    path.write_text(yaml.safe_dump(raw))
    failed(scb("finetune", "-c", path), str(bad), "'tgt'", "is null")


def test_validate_checks_fine_tuning_configs_too(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"src": "a", "tgt": "b"}) + "\n")
    path, raw = _finetune(tmp_path, data)
    result = scb("validate", "-c", path)
    assert result.exit_code == 0 and "ok, fine-tuning config ft" in result.output, result.output
    raw["model"]["architecture"]["d_modle"] = 16
    path.write_text(yaml.safe_dump(raw))
    failed(scb("validate", "-c", path), "model.architecture.d_modle", "did you mean 'd_model'")
    root = Path(__file__).parent.parent / "configs"
    for shipped in sorted((root / "finetune").glob("*.yaml")):
        result = scb("validate", "-c", shipped)
        assert result.exit_code == 0 and "ok, fine-tuning config" in result.output, result.output


def test_a_folder_given_twice_through_a_link_is_refused_by_plot(finished, tmp_path):
    link = tmp_path / "alias"
    link.symlink_to(finished)
    failed(scb("plot", finished, link, "--out", tmp_path / "figures"), "is given twice")


def _run_on_a_copy(pairs: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    """A copy of the pair and its task (to change in place), and a first example decoded from it: the copy, the
    results folder and the config."""
    import shutil

    root = tmp_path / "pair"
    shutil.copytree(pairs, root)
    out = tmp_path / "res"
    path = config(root, out)
    assert scb("run", "-c", path, "--limit", "1").exit_code == 0
    return root, out, path


def test_a_model_trained_again_at_the_same_path_refuses_the_resume(pair_dir, tmp_path):  # noqa: F811
    root, out, path = _run_on_a_copy(pair_dir, tmp_path)
    weights = json.loads((out / MANIFEST_FILE).read_text())["config"]["weights"]
    assert set(weights) == {"drafter", "verifier"}
    assert scb("run", "-c", path, "--limit", "2").exit_code == 0  # the same weights resume
    model = root / "verifier" / "model.safetensors"
    data = bytearray(model.read_bytes())
    data[-4] ^= 1  # the low byte of one of the last weights: a checkpoint that still loads
    model.write_bytes(bytes(data))
    failed(scb("run", "-c", path), "other weights of the verifier", str(root / "verifier"))
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 2


def test_a_tokenizer_or_chat_template_edited_in_place_refuses_the_resume(pair_dir, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    root, out, path = _run_on_a_copy(pair_dir, tmp_path)
    assert json.loads((out / MANIFEST_FILE).read_text())["config"]["tokenizer"]["bytes"] > 0
    weights = root / "verifier" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    tokenizer = AutoTokenizer.from_pretrained(root / "verifier")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(root / "verifier")  # the tokenizer's files only: the weights stay as they were
    assert weights.stat().st_mtime_ns == before
    failed(scb("run", "-c", path, "--limit", "2"), "another version of the tokenizer", str(root / "verifier"))
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 1
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["config"]["tokenizer"] = "garbage"
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("run", "-c", path), "config.tokenizer", "must be a fingerprint")
    manifest["config"].pop("tokenizer")  # a folder recorded before tokenizers were fingerprinted resumes unchecked
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert scb("run", "-c", path, "--limit", "2").exit_code == 0


def test_weights_fingerprints_tell_checkpoints_apart_and_read_little(tmp_path, monkeypatch):
    import shutil

    from speccascade_bench.models import fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(20 << 20))  # 20 MiB: sampled, not read whole
    first = fingerprint.weights_fingerprint(str(folder))
    assert first["bytes"] == (20 << 20) + 2
    shutil.copytree(folder, tmp_path / "copy")
    assert fingerprint.weights_fingerprint(str(tmp_path / "copy")) == first
    for offset in (0, 10, (20 << 20) - 1):  # inside the first and the last sampled blocks
        data = bytearray(bytes(20 << 20))
        data[offset] = 1
        (folder / "model.safetensors").write_bytes(bytes(data))
        assert fingerprint.weights_fingerprint(str(folder)) != first, offset
    (folder / "model.safetensors").write_bytes(bytes(20 << 20))
    (folder / "config.json").write_text('{"n_layer": 2}')
    assert fingerprint.weights_fingerprint(str(folder)) != first
    read = []
    real_open = Path.open

    def counting(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read
        handle.read = lambda n=-1: read.append(len(chunk := real_read(n))) or chunk
        return handle

    monkeypatch.setattr(Path, "open", counting)
    fingerprint.weights_fingerprint(str(folder))
    assert fingerprint.SAMPLES * fingerprint.BLOCK <= sum(read) <= fingerprint.SAMPLES * fingerprint.BLOCK + 100
    monkeypatch.undo()
    assert fingerprint.weights_fingerprint("google/t5-v1_1-small") is None  # a hub name: nothing local
    (tmp_path / "empty").mkdir()
    assert fingerprint.weights_fingerprint(str(tmp_path / "empty")) is None


def test_damaged_fingerprint_records_refuse_the_resume_in_one_line(pair_dir, finished):  # noqa: F811
    for record, value in (("weights", "garbage"), ("weights", {"verifier": 5}), ("routers", [1])):
        manifest = json.loads((finished / MANIFEST_FILE).read_text())
        manifest["config"][record] = value
        (finished / MANIFEST_FILE).write_text(json.dumps(manifest))
        failed(scb("run", "-c", config(pair_dir, finished)), f"config.{record}", "must map names to fingerprints")
