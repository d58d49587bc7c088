"""`scb finetune` trains a tiny model for a few steps, saves it, resumes from its checkpoint, and the
saved model loads in `scb run`."""

import json

import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.toy.language import write_splits


def test_finetune_saves_resumes_and_runs(tmp_path):
    paths = write_splits(tmp_path / "data", 3, {"train": 64, "validation": 8})
    config = {
        "name": "tiny",
        "task": {"dataset": str(paths["train"]), "source": "src", "target": "tgt", "max_source_tokens": 64},
        "model": {"tokenizer": "byt5", "architecture": {"d_model": 16, "d_ff": 32, "d_kv": 8, "num_heads": 2,
                                                         "num_layers": 1, "num_decoder_layers": 1}},
        "training": {"max_steps": 4, "batch_size": 8, "save_steps": 2, "eval_split": str(paths["validation"]),
                     "eval_examples": 4, "max_target_tokens": 16, "save_dtype": "float16"},
        "output": str(tmp_path / "model"),
    }
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = CliRunner()
    result = cli.invoke(app, ["finetune", "--config", str(path)])
    assert result.exit_code == 0, result.output
    model = tmp_path / "model"
    assert (model / "model.safetensors").exists() and (model / "config.json").exists()
    summary = json.loads((model / "training.json").read_text())
    assert summary["resumed"] is False and "eval_bleu" in summary
    assert sorted(p.name for p in (model / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    result = cli.invoke(app, ["finetune", "--config", str(path), "--max-steps", "6"])  # on from checkpoint-4
    assert result.exit_code == 0, result.output
    assert json.loads((model / "training.json").read_text())["resumed"] is True
    state = json.loads((model / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6

    run_config = {
        "name": "ft", "task": {"dataset": str(paths["validation"]), "source": "src", "target": "tgt", "limit": 2},
        "models": {"drafter": str(model), "verifier": str(model), "device": "cpu"},
        "decoding": {"max_new_tokens": 4}, "methods": [{"method": "spec_decode"}],
        "timing": {"warmup": 0}, "output": str(tmp_path / "results"),
    }
    run_path = tmp_path / "run.yaml"
    run_path.write_text(yaml.safe_dump(run_config))
    result = cli.invoke(app, ["run", "--config", str(run_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "examples" / "spec_decode-g5.jsonl").read_text().count("\n") == 2


def test_finetune_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "task": {"dataset": "a.jsonl", "source": "s", "target": "t"},
                                    "model": {"architecture": {"d_model": 8}}, "output": "o"}))
    result = CliRunner().invoke(app, ["finetune", "--config", str(path)])
    assert result.exit_code == 2 and "model.tokenizer" in result.output and str(path) in result.output
