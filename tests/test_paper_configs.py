"""The paper's configs: they validate, name the documented dataset fields and metrics, and their data
path works offline on local files with the hub datasets' schemas (tests/data)."""

import dataclasses
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config, load_run_configs
from speccascade_bench.finetune.config import load_finetune_config
from speccascade_bench.run.plan import validate_resources
from speccascade_bench.settings import ConfigError
from speccascade_bench.tasks.data import DataError, load_rows
from speccascade_bench.tasks.examples import load_examples
from speccascade_bench.tasks.settings import looks_like_path

from .helpers import PAPER_RULES

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"

# The hub repositories with data files (datasets 4 and later run no loading scripts): wmt/wmt14 and
# abisee/cnn_dailymail hold parquet files on their main branch; EdinburghNLP/xsum holds only a loading
# script there, so its configs read the hub's parquet conversion (one subset, `default`).
# (dataset, subset, revision, source, target, metric, prefix, local file with the same schema in tests/data)
DOCUMENTED = {
    "wmt": ("wmt/wmt14", "de-en", None, "translation.en", "translation.de", "bleu",
            "translate English to German: ", "wmt14.jsonl"),
    "cnn_dm": ("abisee/cnn_dailymail", "3.0.0", None, "article", "highlights", "rouge2", "summarize: ",
               "cnn_dailymail.jsonl"),
    "xsum": ("EdinburghNLP/xsum", "default", "refs/convert/parquet", "document", "summary", "rouge2", "summarize: ",
             "xsum.jsonl"),
}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_paper_config_names_the_documented_task(name):
    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
    dataset, subset, revision, source, target, metric, prefix, _ = DOCUMENTED[name]
    task = cfg.task
    assert (task.dataset, task.subset, task.revision, task.source, task.target, task.metric, task.prefix) == \
        (dataset, subset, revision, source, target, metric, prefix)
    assert task.sample == 500 and cfg.timing.trials == 3
    assert cfg.decoding.temperature == 1.0 and cfg.decoding.draft_length == 5
    assert cfg.models.drafter.endswith(f"t5-v1_1-small-{name}")
    assert cfg.models.verifier.endswith(f"t5-v1_1-large-{name}")
    rules = {run.params["rule"] for run in cfg.methods if run.method == "spec_cascade"}
    assert rules == set(PAPER_RULES)
    for rule in PAPER_RULES:
        alphas = [run.params["alpha"] for run in cfg.methods if run.params.get("rule") == rule]
        assert len(alphas) >= 8, rule
    for size, role in (("small", "drafter"), ("large", "verifier")):
        ft = load_finetune_config(ROOT / "configs" / "finetune" / f"{size}-{name}.yaml")
        assert ft.pretrained == f"google/t5-v1_1-{size}" and ft.output == getattr(cfg.models, role)
        assert (ft.task.dataset, ft.task.revision, ft.task.source, ft.task.target, ft.task.prefix) == \
            (dataset, revision, source, target, prefix)


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
    expected = {"greedy", "gamma3", "gamma7", "chain", *PAIRS} | (set(MULTITASK_T5) if name != "xsum" else set())
    assert set(base.variants) == expected
    variants = {cfg.variant: cfg for cfg in load_run_configs(ROOT / "configs" / f"{name}.yaml")[1:]}
    for variant, cfg in variants.items():
        assert cfg.task == base.task and cfg.timing == base.timing and cfg.output == f"results/{name}-{variant}"
    assert variants["greedy"].decoding.temperature == 0.0
    for gamma in (3, 7):
        cfg = variants[f"gamma{gamma}"]
        assert cfg.decoding.draft_length == gamma and cfg.models == base.models
        assert {run.params["draft_length"] for run in cfg.methods
                if "draft_length" in run.params and run.method != "bild"} == {gamma}
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
    dataset, subset, revision, source, target, metric, prefix, _ = DOCUMENTED[name]
    ft = load_finetune_config(ROOT / "configs" / "finetune" / f"{size}-{name}.yaml")
    assert ft.pretrained == f"google/t5-v1_1-{size}" and ft.output == f"./checkpoints/t5-v1_1-{size}-{name}"
    assert (ft.task.dataset, ft.task.subset, ft.task.revision, ft.task.source, ft.task.target, ft.task.prefix,
            ft.task.metric) == (dataset, subset, revision, source, target, prefix, metric)
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


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_paper_config_sweeps_bild_over_fallback_thresholds(name):
    cfg = load_run_config(ROOT / "configs" / f"{name}.yaml")
    runs = [run for run in cfg.methods if run.method == "bild"]
    betas = {run.params["beta"] for run in runs}
    assert betas and all(1.0 <= beta <= 10.0 for beta in betas)  # rollback thresholds of a few nats
    for beta in betas:
        alphas = sorted(run.params["alpha"] for run in runs if run.params["beta"] == beta)
        assert len(alphas) >= 5 and alphas[0] <= 0.3 and alphas[-1] >= 0.8, (beta, alphas)
    assert {run.params["draft_length"] for run in runs} == {10}  # the drafter-run cap of BiLD's code


def _hub_datasets():
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for section in [data, *(data.get("variants") or {}).values()]:
            dataset = ((section or {}).get("task") or {}).get("dataset")
            if dataset and not looks_like_path(dataset):
                yield path.relative_to(ROOT), dataset


def test_every_config_names_a_hub_dataset_by_its_namespaced_repository():
    named = dict(_hub_datasets())
    assert len(named) >= 15  # the three run configs and the twelve fine-tuning recipes
    bare = {str(path): dataset for path, dataset in named.items() if "/" not in dataset}
    assert not bare, f"canonical ids without a namespace were script-only datasets: {bare}"


def test_xsum_config_asks_the_hub_for_its_parquet_conversion(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or [])
    task = load_run_config(ROOT / "configs" / "xsum.yaml").task
    load_rows(task)
    assert calls == [(("EdinburghNLP/xsum", "default"), {"split": "test", "revision": "refs/convert/parquet"})]


def test_a_script_only_dataset_fails_with_a_one_line_way_out(tmp_path, monkeypatch):
    # The real refusal of the installed `datasets`, offline: a folder holding only a loading script stands in
    # for the hub repository the task names.
    (tmp_path / "cnn_dailymail").mkdir()
    (tmp_path / "cnn_dailymail" / "cnn_dailymail.py").write_text("import datasets\n", encoding="utf-8")
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda path, name=None, **kwargs: real(str(tmp_path / path), name, **kwargs))
    task = dataclasses.replace(load_run_config(ROOT / "configs" / "cnn_dm.yaml").task, dataset="cnn_dailymail")
    with pytest.raises(DataError) as raised:
        load_rows(task)
    message = str(raised.value)
    assert "\n" not in message and "'cnn_dailymail' ships only a loading script" in message
    assert "task.revision: refs/convert/parquet" in message and "repository with data files" in message


def test_other_hub_failures_keep_the_general_message(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'wmt/wmt14' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="could not load dataset 'wmt/wmt14'") as raised:
        load_rows(load_run_config(ROOT / "configs" / "wmt.yaml").task)
    assert "loading script" not in str(raised.value)
