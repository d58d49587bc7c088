"""Shape presets: the T5 v1.1 shapes with random weights, loadable as a pair and usable in `scb run`."""

import json

import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.models.loading import load_pair
from speccascade_bench.models.presets import T5_V1_1_SHAPES, build_preset


def test_small_preset_has_the_t5_v1_1_small_shape():
    model = build_preset("random:t5-v1_1-small")
    config = model.config
    assert (config.d_model, config.d_ff, config.num_layers, config.num_decoder_layers, config.num_heads) == \
        (512, 1024, 8, 8, 6)
    assert config.vocab_size == 32128 and config.is_gated_act and not config.scale_decoder_outputs
    # 77M in the checkpoint; transformers 5 ties the output embedding to the input one (same compute)
    assert 55e6 < sum(p.numel() for p in model.parameters()) < 80e6
    assert set(T5_V1_1_SHAPES) == {"t5-v1_1-small", "t5-v1_1-base", "t5-v1_1-large", "t5-v1_1-xl"}


def test_preset_pair_runs_and_is_marked_as_random(tmp_path):
    pair = load_pair("random:t5-v1_1-small", "random:t5-v1_1-small", device="cpu")
    assert pair.tokenizer.__class__.__name__ == "ByT5Tokenizer"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"src": "hello", "tgt": "hallo"}) + "\n")
    config = {"name": "presets", "task": {"dataset": str(data), "source": "src", "target": "tgt"},
              "models": {"drafter": "random:t5-v1_1-small", "verifier": "random:t5-v1_1-base", "device": "cpu"},
              "decoding": {"max_new_tokens": 3}, "methods": [{"method": "spec_decode", "draft_length": 2}],
              "timing": {"warmup": 0}, "output": str(tmp_path / "out")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", "-c", str(path)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["random_weights"] == ["drafter", "verifier"]
    report = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert "random weights" in report.output


def test_latency_preset_config_compares_the_fast_path_with_dynamic_caches():
    from pathlib import Path

    from speccascade_bench.config.run import load_run_configs

    base, *variants = load_run_configs(Path(__file__).parent.parent / "configs" / "latency_presets.yaml")
    dynamic, cpu, chain = (next(cfg for cfg in variants if cfg.variant == name) for name in ("dynamic", "cpu", "chain"))
    assert chain.models.chain == ("random:t5-v1_1-small", "random:t5-v1_1-base", "random:t5-v1_1-large")
    assert {run.method for run in chain.methods} == {"verifier", "spec_decode", "staged_spec_decode"}
    assert (base.models.drafter, base.models.verifier) == ("random:t5-v1_1-small", "random:t5-v1_1-large")
    assert (base.models.cache, base.models.compile, base.models.device) == ("static", "reduce-overhead", "cuda")
    assert (dynamic.models.cache, dynamic.models.compile) == ("dynamic", "none")
    assert dynamic.methods == base.methods and dynamic.decoding == base.decoding
    assert (cpu.models.device, cpu.models.cache, cpu.models.compile) == ("cpu", "static", "none")
