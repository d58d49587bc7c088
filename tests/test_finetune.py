"""`scb finetune` trains a tiny model for a few steps, saves it, resumes from its checkpoint, and the
saved model loads in `scb run`."""

import json
from dataclasses import replace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.finetune.config import load_finetune_config
from speccascade_bench.settings import ConfigError
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
        "name": "ft", "task": {"dataset": str(paths["validation"]), "source": "src", "target": "tgt", "sample": 2},
        # an earlier checkpoint drafts for the final model (one model in both roles is refused)
        "models": {"drafter": str(model / "checkpoints" / "checkpoint-4"), "verifier": str(model),
                   "tokenizer": str(model), "device": "cpu"},
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


def _documents(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _causal_config(tmp_path, architecture=None, **training):
    from speccascade_bench.toy.arithmetic import make_splits

    rows = make_splits(5, {"train": 40})["train"]
    train = _documents(tmp_path / "train.jsonl", rows[:32])
    held_out = _documents(tmp_path / "held_out.jsonl", rows[32:])
    return {
        "name": "tiny-lm",
        "task": {"dataset": str(train), "source": "prompt", "target": "completion", "max_source_tokens": 600},
        "model": {"kind": "causal", "tokenizer": "byt5",
                  "architecture": architecture or {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "num_key_value_heads": 1,
                                                   "max_position_embeddings": 1024}},
        "training": {"max_steps": 3, "batch_size": 4, "save_steps": 3, "eval_split": str(held_out),
                     "eval_examples": 3, "max_target_tokens": 8, **training},
        "output": str(tmp_path / "model"),
    }


def test_causal_finetune_saves_a_decoder_only_pair(tmp_path):
    from speccascade_bench.models.loading import load_pair

    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(_causal_config(tmp_path, save_dtype="float16")))
    result = CliRunner().invoke(app, ["finetune", "--config", str(path)])
    assert result.exit_code == 0, result.output
    model = tmp_path / "model"
    summary = json.loads((model / "training.json").read_text())
    assert summary["steps"] == 3 and "eval_bleu" in summary
    pair = load_pair(str(model), str(model), device="cpu")
    assert not pair.is_encoder_decoder and pair.verifier.config.model_type == "llama"
    assert pair.verifier.config.num_key_value_heads == 1
    tokenizer = pair.tokenizer
    assert (pair.eos_token_id, pair.verifier.config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert pair.verifier.get_input_embeddings().weight.shape[0] == len(tokenizer)
    # The decoder-only loop runs on it: the prompt is the whole input, the continuation comes after it.
    decoder = pair.decoder("verifier", pair.encode("Question: Mia has 3 pens.", 64))
    assert decoder.logits().shape == (1, len(tokenizer)) and decoder.generated == []


def test_causal_training_rows_are_whole_texts_closed_by_one_eos(tmp_path):
    from transformers import ByT5Tokenizer

    from speccascade_bench.finetune.train import _tokenized, lm_ids, prompt_ids

    config = load_finetune_config(_write(tmp_path, _causal_config(tmp_path)))
    tokenizer = ByT5Tokenizer()
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    encoded = _tokenized(config.task, tokenizer, 0, 600, causal=True)
    for row, item in zip(rows, encoded, strict=True):
        assert item["labels"] == item["input_ids"]  # the loss is on every token, the prompt's too
        assert item["input_ids"].count(tokenizer.eos_token_id) == 1 and item["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(item["input_ids"], skip_special_tokens=True) == row["prompt"] + row["completion"]
    short = _tokenized(replace(config.task, max_source_tokens=100), tokenizer, 0, 10, causal=True)
    assert max(len(item["input_ids"]) for item in short) == 110 and all(item["input_ids"][-1] == 1 for item in short)
    assert prompt_ids(tokenizer, "ab", 8) == [ord("a") + 3, ord("b") + 3]  # a prompt continues: no EOS
    assert lm_ids(tokenizer, "abc", 3) == [ord("a") + 3, ord("b") + 3, tokenizer.eos_token_id]


def test_causal_rows_with_a_tokenizer_that_adds_bos_but_no_eos():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from speccascade_bench.finetune.train import lm_ids, prompt_ids

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert lm_ids(tokenizer, "a b c", 10) == [1, 3, 4, 5, 2]
    assert lm_ids(tokenizer, "a b c", 3) == [1, 3, 2]  # truncated, still closed by EOS
    assert prompt_ids(tokenizer, "a b", 10) == [1, 3, 4]


def _write(tmp_path, config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(("architecture", "key", "words"), [
    ({"hidden_sise": 32}, "model.architecture.hidden_sise", ("LlamaConfig", "did you mean 'hidden_size'")),
    ({"d_model": 32}, "model.architecture.d_model", ("LlamaConfig", "model.kind causal")),  # a T5 key
    ({"bos_token_id": 3}, "model.architecture.bos_token_id", ("set from the tokenizer",)),
    ({"num_hidden_layers": 0}, "model.architecture.num_hidden_layers", ("must be in [1, 1000]",)),
])
def test_causal_architecture_errors_name_the_key(tmp_path, architecture, key, words):
    path = _write(tmp_path, _causal_config(tmp_path, architecture))
    with pytest.raises(ConfigError) as info:
        load_finetune_config(path)
    assert info.value.key == key and info.value.file == str(path)
    for word in words:
        assert word in info.value.message, info.value.message


def test_model_kind_is_checked_and_picks_the_architecture_fields(tmp_path):
    config = _causal_config(tmp_path)
    config["model"]["kind"] = "casual"
    with pytest.raises(ConfigError) as info:
        load_finetune_config(_write(tmp_path, config))
    assert info.value.key == "model.kind" and "did you mean 'causal'" in info.value.message
    del config["model"]["kind"]  # seq2seq, the default, reads the same keys as T5Config fields
    with pytest.raises(ConfigError) as info:
        load_finetune_config(_write(tmp_path, config))
    assert info.value.key == "model.architecture.hidden_size" and "T5Config" in info.value.message
    config["model"]["kind"] = "causal"
    assert load_finetune_config(_write(tmp_path, config)).kind == "causal"


class _Continues(torch.nn.Module):
    """A stand-in causal model whose greedy continuation of any prompt is the same text."""

    def __init__(self, continuation: list[int]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # its device is the model's
        self.continuation = torch.tensor(continuation)

    def generate(self, input_ids, attention_mask, **kwargs):
        assert (attention_mask[:, -1] == 1).all()  # padded on the left: every prompt ends at the last column
        return torch.cat([input_ids, self.continuation.expand(len(input_ids), -1)], dim=1)


def test_causal_evaluation_scores_the_continuation_up_to_a_stop_string():
    from transformers import ByT5Tokenizer

    from speccascade_bench.finetune.train import evaluate_causal
    from speccascade_bench.tasks.settings import TaskConfig

    tokenizer = ByT5Tokenizer()
    model = _Continues(tokenizer(" 5 + 2 = 7\n#### 7\n\nQuestion: Ben", add_special_tokens=False).input_ids)
    task = TaskConfig(dataset="x.jsonl", source="question", target="answer", metric="exact_match",
                      normalize="none", stop=("\n\n",))
    sources = ["Question: Mia has 5 pens. She finds 2 more. How many pens does she have now?\nAnswer:", "Q:"]
    assert evaluate_causal(model, tokenizer, task, sources, ["5 + 2 = 7\n#### 7"] * 2, 16) == 100.0
    assert evaluate_causal(model, tokenizer, replace(task, stop=()), sources, ["5 + 2 = 7\n#### 7"] * 2, 16) == 0.0


def test_causal_training_renders_the_prompt_template_and_refuses_run_only_keys(tmp_path):
    from transformers import ByT5Tokenizer

    from speccascade_bench.finetune.train import _tokenized

    config = _causal_config(tmp_path)
    task = config["task"]
    task.pop("source")
    task["prompt"] = "Q> {prompt}|"
    config = load_finetune_config(_write(tmp_path, config))
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    encoded = _tokenized(config.task, ByT5Tokenizer(), 0, 600, causal=True)
    for row, item in zip(rows, encoded, strict=True):
        assert ByT5Tokenizer().decode(item["input_ids"], skip_special_tokens=True) == \
            f"Q> {row['prompt']}|{row['completion']}"
    for key, value in (("fewshot", {"n": 1, "dataset": str(tmp_path / "train.jsonl")}), ("chat", True), ("tests", "t")):
        bad = _causal_config(tmp_path)
        bad["task"][key] = value
        with pytest.raises(ConfigError) as info:
            load_finetune_config(_write(tmp_path, bad))
        assert info.value.key == f"task.{key}", info.value
