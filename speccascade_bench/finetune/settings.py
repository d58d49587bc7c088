"""The settings of a fine-tuning job (`scb finetune`): the top-level keys, the `model` and `training` sections, and
the architectures a model trained from scratch may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.settings import DTYPES
from ..settings import NAME, option
from ..tasks.settings import TaskConfig

MODEL_KINDS = ("seq2seq", "causal")  # what `scb finetune` trains: a T5-style or a Llama-style model


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning config: the top-level keys, then the `model` and `training` sections' fields."""

    name: str = option(pattern=NAME, doc="the fine-tuning run's name")
    task: TaskConfig = option(doc="the training data and its fields, as a run's `task` (split default: train)")
    output: str = option(doc='the folder of the trained model and its checkpoints')
    kind: str = option("seq2seq", choices=MODEL_KINDS, section="model", doc='the model family trained')
    pretrained: str | None = option(None, section="model",
                                    doc='a local folder or hub name to start from (else `architecture` from scratch)')
    architecture: dict[str, Any] | None = option(None, section="model",
                                                 doc=('T5Config or LlamaConfig fields (by `kind`) of a model trained '
                                                      'from scratch'))
    tokenizer: str | None = option(None, section="model",
                                   doc="default: the pretrained model's; `byt5` for a file-less byte tokenizer")
    max_steps: int = option(1000, low=1, high=10_000_000, section="training", doc='optimizer steps in all')
    batch_size: int = option(32, low=1, high=65_536, section="training", doc='examples per device batch')
    gradient_accumulation_steps: int = option(1, low=1, high=65_536, section="training",
                                              doc='batches per optimizer step')
    gradient_checkpointing: bool = option(False, section="training",
                                          doc='recompute activations in the backward pass (less memory, more time)')
    learning_rate: float = option(1e-3, low=0.0, high=1.0, low_open=True, section="training",
                                  doc='the peak learning rate')
    warmup_steps: int = option(0, low=0, high=10_000_000, section="training", doc='linear warm-up steps')
    weight_decay: float = option(0.0, low=0.0, high=1.0, section="training", doc="AdamW's weight decay")
    max_target_tokens: int = option(128, low=1, high=131_072, section="training",
                                    doc='the longest target trained on, in tokens')
    eval_split: str | None = option(None, section="training", doc='a split evaluated every eval_steps (null: none)')
    eval_examples: int = option(200, low=1, high=10_000_000, section="training",
                                doc='examples of the evaluation split used')
    eval_steps: int = option(500, low=1, high=10_000_000, section="training", doc='steps between two evaluations')
    save_steps: int = option(500, low=1, high=10_000_000, section="training", doc='steps between two checkpoints')
    seed: int = option(0, low=0, high=2**32 - 1, section="training", doc='the training seed')
    save_dtype: str = option("float32", choices=DTYPES, section="training", doc='the dtype of the saved weights')
    bf16: str = option("auto", choices=("auto", "true", "false"), section="training",
                       doc='train in bfloat16: auto (where the device supports it), true or false')
    file: str = option("", internal=True)


# Sizes of a T5 or a Llama built from scratch (`model.architecture`): zero or huge values fail deep in torch or
# never end.
ARCHITECTURE_RANGES = {"d_model": (1, 65_536), "d_ff": (1, 262_144), "d_kv": (1, 4096), "num_heads": (1, 1024),
                       "num_layers": (1, 1000), "num_decoder_layers": (1, 1000),
                       "relative_attention_num_buckets": (1, 4096), "dropout_rate": (0, 1),
                       "hidden_size": (1, 65_536), "intermediate_size": (1, 262_144), "num_hidden_layers": (1, 1000),
                       "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024), "head_dim": (1, 4096),
                       "max_position_embeddings": (1, 1_048_576), "attention_dropout": (0, 1)}

# The architecture's config class per model.kind, and its keys that the tokenizer sets.
ARCHITECTURE_CLASSES = {"seq2seq": "T5Config", "causal": "LlamaConfig"}

FROM_TOKENIZER = {"seq2seq": ("vocab_size", "pad_token_id", "eos_token_id", "decoder_start_token_id"),
                  "causal": ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id")}


def architecture_fields(kind: str = "seq2seq") -> set[str]:
    import transformers

    return set(getattr(transformers, ARCHITECTURE_CLASSES[kind])().to_dict())
