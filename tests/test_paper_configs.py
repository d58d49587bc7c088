"""The paper's configs: they validate, name the documented dataset fields and metrics, and their data
path works offline on local files with the hub datasets' schemas (tests/data)."""

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config import (
    ConfigError,
    load_finetune_config,
    load_run_config,
    load_run_configs,
    validate_resources,
)
from speccascade_bench.data import load_examples
from speccascade_bench.methods import RULES

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"

DOCUMENTED = {
    "wmt": ("wmt14", "de-en", "translation.en", "translation.de", "bleu", "translate English to German: ",
            "wmt14.jsonl"),
    "cnn_dm": ("cnn_dailymail", "3.0.0", "article", "highlights", "rouge2", "summarize: ", "cnn_dailymail.jsonl"),
    "xsum": ("EdinburghNLP/xsum", None, "document", "summary", "rouge2", "summarize: ", "xsum.jsonl"),
}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_paper_config_names_the_documented_task(name):
    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
    dataset, subset, source, target, metric, prefix, _ = DOCUMENTED[name]
    task = cfg.task
    assert (task.dataset, task.subset, task.source, task.target, task.metric, task.prefix) == \
        (dataset, subset, source, target, metric, prefix)
    assert task.limit == 500 and cfg.timing.trials == 3
    assert cfg.decoding.temperature == 1.0 and cfg.decoding.draft_length == 5
    assert cfg.models.drafter.endswith(f"t5-v1_1-small-{name}")
    assert cfg.models.verifier.endswith(f"t5-v1_1-large-{name}")
    rules = {run.params["rule"] for run in cfg.methods if run.method == "spec_cascade"}
    assert rules == set(RULES)
    for rule in RULES:
        alphas = [run.params["alpha"] for run in cfg.methods if run.params.get("rule") == rule]
        assert len(alphas) >= 8, rule
    for size, role in (("small", "drafter"), ("large", "verifier")):
        ft = load_finetune_config(ROOT / "configs" / "finetune" / f"{size}-{name}.yaml")
        assert ft.pretrained == f"google/t5-v1_1-{size}" and ft.output == getattr(cfg.models, role)
        assert (ft.task.dataset, ft.task.source, ft.task.target, ft.task.prefix) == (dataset, source, target, prefix)


SIZES = ("small", "base", "large", "xl")
PAIRS = {"small_base": ("small", "base"), "small_xl": ("small", "xl"), "base_xl": ("base", "xl")}
MULTITASK_T5 = {"t5_small_large": ("google-t5/t5-small", "google-t5/t5-large"),
                "t5_small_3b": ("google-t5/t5-small", "google-t5/t5-3b")}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_paper_config_validates_once_its_models_are_fine_tuned(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ROOT / "configs" / f"{name}.yaml"
    result = CliRunner().invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 2 and "local model path not found" in result.output
    for size in SIZES:
        (tmp_path / "checkpoints" / f"t5-v1_1-{size}-{name}").mkdir(parents=True)
    result = CliRunner().invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"{config} [base_xl]: ok, {name}-base_xl -> results/{name}-base_xl" in result.output


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_paper_variants_change_only_what_they_name(name):
    base = load_run_config(ROOT / "configs" / f"{name}.yaml")
    expected = {"greedy", "gamma3", "gamma7", *PAIRS} | (set(MULTITASK_T5) if name != "xsum" else set())
    assert set(base.variants) == expected
    variants = {cfg.variant: cfg for cfg in load_run_configs(ROOT / "configs" / f"{name}.yaml")[1:]}
    for variant, cfg in variants.items():
        assert cfg.task == base.task and cfg.timing == base.timing and cfg.output == f"results/{name}-{variant}"
    assert variants["greedy"].decoding.temperature == 0.0
    for gamma in (3, 7):
        cfg = variants[f"gamma{gamma}"]
        assert cfg.decoding.draft_length == gamma and cfg.models == base.models
        assert {run.params["draft_length"] for run in cfg.methods if "draft_length" in run.params} == {gamma}
    for variant, (drafter, verifier) in PAIRS.items():
        models = variants[variant].models
        assert (models.drafter, models.verifier) == (f"./checkpoints/t5-v1_1-{drafter}-{name}",
                                                     f"./checkpoints/t5-v1_1-{verifier}-{name}")
        assert variants[variant].decoding == base.decoding
    for variant, pair in MULTITASK_T5.items():
        if name != "xsum":
            assert (variants[variant].models.drafter, variants[variant].models.verifier) == pair


@pytest.mark.parametrize("name", list(DOCUMENTED))
@pytest.mark.parametrize("size", SIZES)
def test_every_pair_size_has_a_fine_tuning_recipe(name, size):
    dataset, subset, source, target, metric, prefix, _ = DOCUMENTED[name]
    ft = load_finetune_config(ROOT / "configs" / "finetune" / f"{size}-{name}.yaml")
    assert ft.pretrained == f"google/t5-v1_1-{size}" and ft.output == f"./checkpoints/t5-v1_1-{size}-{name}"
    assert (ft.task.dataset, ft.task.subset, ft.task.source, ft.task.target, ft.task.prefix, ft.task.metric) == \
        (dataset, subset, source, target, prefix, metric)
    assert ft.batch_size * ft.gradient_accumulation_steps == 32


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_hub_schema_data_path_works_offline(name, tmp_path, monkeypatch):
    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
    local = DOCUMENTED[name][-1]
    task = dataclasses.replace(cfg.task, dataset=str(DATA / local))
    monkeypatch.chdir(tmp_path)
    for size in ("small", "large"):
        (tmp_path / "checkpoints" / f"t5-v1_1-{size}-{name}").mkdir(parents=True)
    validate_resources(dataclasses.replace(cfg, task=task))
    examples = load_examples(task, seed=0)
    assert len(examples) == 2
    assert all(ex.source.startswith(cfg.task.prefix) and ex.reference for ex in examples)
    renamed = dataclasses.replace(task, target=task.target + "_renamed")
    with pytest.raises(ConfigError, match="not found"):
        validate_resources(dataclasses.replace(cfg, task=renamed))
