"""A decoder-only model of P positions holds a prompt of P - max_new_tokens tokens: no method feeds it a position
past P - 1 (the last output token is never fed back), the config check accepts exactly that prompt budget, and
an lm-eval task without one keeps the context lm-eval's hf model keeps."""

import pytest
import torch
import yaml

from speccascade_bench.config.run import load_run_config
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.run.plan import prepare
from speccascade_bench.settings import ConfigError

from .helpers import prompt, tiny_pair, write_jsonl
from .test_static_cache import METHOD_RUNS

POSITIONS = 256  # tiny_llama's max_position_embeddings
PAIR = "speccascade_bench/toy/llm_pair"  # 1024 positions


def test_no_method_feeds_a_position_past_the_models_last():
    pair = tiny_pair("llama", seed=0)
    fed: list[int] = []

    def record(module, args, kwargs):
        fed.append(int(kwargs["position_ids"].max()))

    hooks = [model.model.rotary_emb.register_forward_pre_hook(record, with_kwargs=True)
             for model in (pair.drafter, pair.verifier)]
    new = 20
    ids = prompt(0, POSITIONS - new)
    reached = 0
    try:
        for method, params in METHOD_RUNS:
            for temperature in (0.0, 1.0):
                fed.clear()
                settings = DecodingConfig(max_new_tokens=new, temperature=temperature, draft_length=5)
                result = decode(method, pair, ids, settings, params, torch.Generator().manual_seed(1))
                assert max(fed) <= POSITIONS - 1, (method, params, temperature)
                reached += len(result.tokens) == new and max(fed) == POSITIONS - 1
    finally:
        for hook in hooks:
            hook.remove()
    assert reached > 0  # some decodes used the very last position


def _config(tmp_path, **task) -> str:
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": "1 + 1 =", "a": "2"}])
    config = {"name": "positions", "task": {"dataset": str(data), "source": "q", "target": "a", **task},
              "models": {"drafter": f"{PAIR}/drafter", "verifier": f"{PAIR}/verifier", "device": "cpu"},
              "decoding": {"max_new_tokens": 200}, "methods": [{"method": "verifier"}],
              "output": str(tmp_path / "out")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_the_prompt_budget_is_the_positions_minus_the_new_tokens(tmp_path):
    job = prepare(load_run_config(_config(tmp_path, max_source_tokens=1024 - 200)))
    assert job.config.task.max_source_tokens == 824
    with pytest.raises(ConfigError, match="task.max_source_tokens.*set task.max_source_tokens to at most 824"):
        prepare(load_run_config(_config(tmp_path, max_source_tokens=825)))


def test_cut_prompts_are_counted_in_the_log_the_manifest_and_the_report(tmp_path, caplog):
    import json

    from typer.testing import CliRunner

    from speccascade_bench.cli import app
    from speccascade_bench.models.loading import load_tokenizer

    rows = [{"q": "x" * n, "a": "1"} for n in (5, 40, 90, 12)]  # the byte tokenizer: a token per byte
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    config = yaml.safe_load(open(_config(tmp_path, max_source_tokens=30)))
    config["task"]["dataset"], config["task"]["sample"] = str(data), None
    config["decoding"]["max_new_tokens"], config["timing"] = 2, {"warmup": 0, "trials": 1}
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(config))
    tokenizer = load_tokenizer(f"{PAIR}/verifier")
    closing = tokenizer("x").input_ids[-1] == tokenizer.eos_token_id  # a prompt continues: its closing EOS goes
    lengths = [len(tokenizer(row["q"]).input_ids) - closing for row in rows]
    assert lengths == [5, 40, 90, 12]
    cut = [n - 30 for n in lengths if n > 30]
    assert len(cut) == 2  # the 40- and 90-byte questions
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(app, ["run", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert f"cuts the prompts of 2 of 4 examples, by up to {max(cut)} tokens" in caplog.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["prompts_cut"] == {"examples": 2, "of": 4, "most_tokens": max(cut),
                                                 "mean_tokens": round(sum(cut) / 2, 1)}
    rows_written = [json.loads(line) for line in (tmp_path / "out" / "examples" / "verifier.jsonl").open()]
    assert max(row["input_tokens"] for row in rows_written) == 30
    report = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert report.exit_code == 0 and "prompts cut** to task.max_source_tokens (30): 2 of 4 examples" in report.output
