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
