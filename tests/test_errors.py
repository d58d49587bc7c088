"""Bad input ends every verb with one line `error: <message>` naming the file, and exit code 2; `--debug`
(or SCB_DEBUG=1) shows the traceback instead. Also: plotting reads results folders without writing into
them, and a tokenizer that does not fit its model is refused at load."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer, ByT5Tokenizer
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.models.loading import ModelLoadError, load_pair
from speccascade_bench.toy.language import write_splits

from .helpers import perturbed, tiny_t5, write_jsonl

BYTES = len(ByT5Tokenizer())  # 384: a tiny T5 with this vocabulary fits the byte tokenizer


def one_line_error(result, *names) -> str:
    """The error line of a failed invocation, after checking that it is the only output on stderr, that
    the exit code is 2 and that the line names every one of `names`."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def save_model(folder: Path, vocab: int = BYTES, tokenizer=None, seed: int = 0) -> Path:
    model = tiny_t5(seed, vocab=vocab)
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    verifier = save_model(root / "verifier", tokenizer=ByT5Tokenizer())
    perturbed(tiny_t5(0, vocab=BYTES), 0.3, 1).save_pretrained(root / "drafter")
    ByT5Tokenizer().save_pretrained(root / "drafter")
    write_jsonl(root / "task.jsonl", [{"src": f"sentence {i}", "tgt": f"Satz {i}"} for i in range(4)])
    assert verifier.is_dir()
    return root


def run_config(root: Path, output: Path, name: str = "tiny", **models) -> Path:
    config = {
        "name": name,
        "task": {"dataset": str(root / "task.jsonl"), "source": "src", "target": "tgt", "sample": 2},
        "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu", **models},
        "decoding": {"max_new_tokens": 4, "draft_length": 2},
        "methods": [{"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode"}],
        "timing": {"warmup": 0},
        "output": str(output),
    }
    return write_yaml(root / f"{output.name}-{name}.yaml", config)


@pytest.fixture(scope="module")
def results(workspace):
    """Two results folders of the same name under different parents, from runs of different sizes."""
    folders = []
    for parent, limit in (("a", "1"), ("b", "2")):
        out = workspace / "runs" / parent / "wmt"
        result = CliRunner().invoke(app, ["run", "-c", str(run_config(workspace, out, name=f"run_{parent}")),
                                          "--limit", limit])
        assert result.exit_code == 0, result.output
        folders.append(out)
    return folders


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# --- --debug and the one place that reports errors ---------------------------------------------------

def test_debug_flag_and_environment_variable_show_the_error_instead(tmp_path):
    plain = CliRunner().invoke(app, ["validate", "-c", str(tmp_path)])
    one_line_error(plain, tmp_path, "folder")
    for args, env in ((["--debug", "validate", "-c", str(tmp_path)], {}),
                      (["validate", "-c", str(tmp_path)], {"SCB_DEBUG": "1"})):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1 and type(result.exception).__name__ == "ConfigError", result.output


def test_the_installed_entry_point_prints_one_line_or_with_debug_a_traceback(tmp_path):
    command = [sys.executable, "-m", "speccascade_bench.cli", "validate", "-c", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "SCB_DEBUG"}
    plain = subprocess.run(command, capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [
        f"error: {tmp_path}: is a folder, not a config file"]
    debug = subprocess.run(command, capture_output=True, text=True, env={**env, "SCB_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_an_os_error_of_any_verb_names_its_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["toy-data", "--out", str(blocker / "toy")])
    assert one_line_error(result) == f"error: {blocker / 'toy'}: Not a directory"


# --- configs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["validate", "run", "finetune"])
def test_a_config_that_is_a_folder_or_not_utf8_is_one_line(tmp_path, verb):
    folder = tmp_path / "config.yaml"
    folder.mkdir()
    one_line_error(CliRunner().invoke(app, [verb, "-c", str(folder)]), folder, "is a folder")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    one_line_error(CliRunner().invoke(app, [verb, "-c", str(latin1)]), latin1, "not UTF-8")


# --- models and tokenizers ------------------------------------------------------------------------------

def test_a_truncated_model_file_is_named_by_run(workspace, tmp_path):
    broken = tmp_path / "verifier"
    shutil.copytree(workspace / "verifier", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "-c", str(run_config(workspace, out, verifier=str(broken)))])
    line = one_line_error(result, weights, "damaged", "verifier")
    assert "Without network access" not in line  # a local folder: no advice about the hub
    debug = CliRunner().invoke(app, ["--debug", "run", "-c", str(run_config(workspace, out, verifier=str(broken)))])
    assert isinstance(debug.exception, ModelLoadError)


def test_a_model_folder_without_tokenizer_files_is_refused_and_names_the_fix(workspace, tmp_path):
    bare = save_model(tmp_path / "bare")  # config and weights only
    with pytest.raises(ModelLoadError, match="has no tokenizer files.*models.tokenizer"):
        load_pair(str(bare), str(bare), device="cpu")
    drafter = save_model(tmp_path / "bare_drafter", seed=1)  # a model of its own: one model in two roles is refused
    result = CliRunner().invoke(app, ["run", "-c", str(run_config(workspace, tmp_path / "out", drafter=str(drafter),
                                                                  verifier=str(bare)))])
    one_line_error(result, bare, "no tokenizer files", "models.tokenizer")
    pair = load_pair(str(bare), str(bare), tokenizer="byt5", device="cpu")  # the fix the message names
    assert pair.decode(pair.encode("hello", 16)[0].tolist()) == "hello"


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path):
    small = save_model(tmp_path / "small", vocab=12, tokenizer=ByT5Tokenizer())
    with pytest.raises(ModelLoadError, match=f"has {BYTES} tokens but the model has 12 embedding rows"):
        load_pair(str(small), str(small), device="cpu")


def test_an_empty_tokenizer_that_fits_the_vocabulary_is_refused(tmp_path):
    """transformers builds a tokenizer without a vocabulary for a folder without tokenizer files; saved,
    it has files, fits a large vocabulary and turns every word into <unk>."""
    bare = save_model(tmp_path / "bare", vocab=12)
    empty = AutoTokenizer.from_pretrained(bare)
    assert len(empty) <= BYTES
    model = save_model(tmp_path / "model", tokenizer=empty)
    with pytest.raises(ModelLoadError, match="does not reproduce plain text"):
        load_pair(str(model), str(model), device="cpu")


# --- finetune --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finetune_data(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("ft_data"), 3, {"train": 32, "validation": 4})


def finetune_config(folder: Path, data: dict, **changes) -> Path:
    config = {
        "name": "tiny",
        "task": {"dataset": str(data["train"]), "source": "src", "target": "tgt", "max_source_tokens": 32},
        "model": {"tokenizer": "byt5", "architecture": {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_heads": 2,
                                                         "num_layers": 1, "num_decoder_layers": 1}},
        "training": {"max_steps": 4, "batch_size": 8, "save_steps": 2, "max_target_tokens": 16},
        "output": str(folder / "model"),
    }
    for section, values in changes.items():
        config[section] = {**config[section], **values} if isinstance(values, dict) else values
    return write_yaml(folder / "finetune.yaml", config)


@pytest.mark.parametrize("changes, key, message", [
    ({"task": {"dataset": "nowhere/train.jsonl"}}, "task.dataset", "not found"),
    ({"task": {"source": "source_text"}}, "task.source", "'source_text' not found"),
    ({"training": {"eval_split": "nowhere/validation.jsonl"}}, "training.eval_split", "not found"),
    ({"model": {"architecture": None, "tokenizer": None, "pretrained": "./no/such/model"}}, "model.pretrained",
     "not found"),
])
def test_finetune_input_errors_stop_before_anything_loads(tmp_path, finetune_data, changes, key, message):
    path = finetune_config(tmp_path, finetune_data, **changes)
    one_line_error(CliRunner().invoke(app, ["finetune", "-c", str(path)]), path, key, message)
    assert not (tmp_path / "model").exists()  # nothing trained, nothing written


def test_finetune_from_a_pretrained_folder_without_tokenizer_files_names_the_fix(tmp_path, finetune_data):
    bare = save_model(tmp_path / "bare")
    path = finetune_config(tmp_path, finetune_data,
                           model={"architecture": None, "tokenizer": None, "pretrained": str(bare)})
    one_line_error(CliRunner().invoke(app, ["finetune", "-c", str(path)]), bare, "model.tokenizer")
    assert not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, finetune_data):
    """A finetune output folder with checkpoint-2 and checkpoint-4."""
    folder = tmp_path_factory.mktemp("trained")
    path = finetune_config(folder, finetune_data)
    result = CliRunner().invoke(app, ["finetune", "-c", str(path)])
    assert result.exit_code == 0, result.output
    return folder


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, problem", [
    (lambda ckpt: truncate(ckpt / "optimizer.pt"), "optimizer.pt is truncated"),
    (lambda ckpt: truncate(ckpt / "model.safetensors"), "model.safetensors is damaged"),
    (lambda ckpt: (ckpt / "trainer_state.json").unlink(), "trainer_state.json is missing"),  # a save cut short
    (lambda ckpt: truncate(ckpt / "trainer_state.json"), "trainer_state.json is not valid JSON"),
])
def test_a_torn_checkpoint_is_named_with_the_way_out_and_kept(tmp_path, trained, finetune_data, damage, problem):
    shutil.copytree(trained / "model", tmp_path / "model")
    checkpoint = tmp_path / "model" / "checkpoints" / "checkpoint-4"
    damage(checkpoint)
    before = snapshot(tmp_path / "model")
    path = finetune_config(tmp_path, finetune_data, training={"max_steps": 6})
    line = one_line_error(CliRunner().invoke(app, ["finetune", "-c", str(path)]), checkpoint, problem)
    assert "delete that folder to resume from checkpoint-2" in line and "--fresh" in line
    assert snapshot(tmp_path / "model") == before  # nothing deleted or rewritten


def test_after_deleting_a_torn_checkpoint_training_resumes_from_the_one_before(tmp_path, trained, finetune_data):
    shutil.copytree(trained / "model", tmp_path / "model")
    checkpoints = tmp_path / "model" / "checkpoints"
    truncate(checkpoints / "checkpoint-4" / "optimizer.pt")
    shutil.rmtree(checkpoints / "checkpoint-4")  # what the message says to do
    path = finetune_config(tmp_path, finetune_data)
    result = CliRunner().invoke(app, ["finetune", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "model" / "training.json").read_text())["resumed"] is True
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


# --- plot and report -----------------------------------------------------------------------------------

def test_plot_to_an_unwritable_out_is_one_line(results, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["plot", str(results[0]), "--out", str(blocker / "figures")])
    one_line_error(result, blocker / "figures", "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_plot_into_a_read_only_folder_is_one_line(results, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_line_error(CliRunner().invoke(app, ["plot", str(results[0]), "--out", str(locked)]), locked)
    finally:
        locked.chmod(0o700)


def test_plot_with_out_writes_nothing_into_the_results_folders(results, tmp_path):
    before = [snapshot(folder) for folder in results]
    result = CliRunner().invoke(app, ["plot", *map(str, results), "--out", str(tmp_path / "figures")])
    assert result.exit_code == 0, result.output
    assert [snapshot(folder) for folder in results] == before


def test_plot_gives_folders_of_the_same_name_their_own_figures(results, tmp_path):
    figures = tmp_path / "figures"
    result = CliRunner().invoke(app, ["plot", *map(str, results), "--out", str(figures)])
    assert result.exit_code == 0, result.output
    printed = result.stdout.split()
    assert len(printed) == len(set(printed)) == 3 * 4  # two folders and the combined figure, 2 figures x PNG+PDF
    a, b = (figures / "a_wmt" / "quality_latency.png"), (figures / "b_wmt" / "quality_latency.png")
    assert a.read_bytes() != b.read_bytes()  # one run per figure (the titles differ), none overwritten
    assert not (figures / "wmt").exists()
    twice = CliRunner().invoke(app, ["plot", str(results[0]), str(results[0]), "--out", str(figures)])
    one_line_error(twice, results[0], "given twice")


@pytest.mark.parametrize("blocked", ["report.md", "summary.csv"])
def test_report_of_an_unwritable_folder_still_prints_with_a_note(results, tmp_path, blocked):
    archive = tmp_path / "wmt"
    shutil.copytree(results[1], archive)
    (archive / blocked).unlink(missing_ok=True)
    (archive / blocked).mkdir()  # cannot be written, even by root
    result = CliRunner().invoke(app, ["report", str(archive)])
    assert result.exit_code == 0, result.output
    assert "| verifier | 2 |" in result.stdout
    note = result.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: ") and str(archive) in note[0] and blocked in note[0]


def test_version_and_python_dash_m():
    import subprocess
    import sys
    from importlib.metadata import version

    from typer.testing import CliRunner

    from speccascade_bench.cli import app

    expected = f"speccascade-bench {version('speccascade-bench')}"
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == expected
    done = subprocess.run([sys.executable, "-m", "speccascade_bench", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == expected, done.stderr
    helped = subprocess.run([sys.executable, "-m", "speccascade_bench", "run", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "Usage: scb run" in helped.stdout


def test_the_help_lists_run_first_and_shows_flags_and_brackets_as_written():
    from typer.testing import CliRunner

    from speccascade_bench.cli import app
    from speccascade_bench.verbs import VERB_ORDER

    top = CliRunner().invoke(app, ["--help"], terminal_width=100).output
    listed = [verb for verb in VERB_ORDER if f"│ {verb} " in top]
    assert listed == list(VERB_ORDER)
    assert sorted(listed, key=top.index) == list(VERB_ORDER)  # run first, toy-data and finetune last
    for verb in ([], ["run"], ["report"], ["plot"], ["finetune"]):
        text = CliRunner().invoke(app, [*verb, "--help"], terminal_width=100).output
        assert "<bool>" not in text and "--help" in text, verb
    fit = CliRunner().invoke(app, ["fit-router", "--help"], terminal_width=100).output
    assert "record: [tokens]" in " ".join(fit.replace("│", " ").split())
