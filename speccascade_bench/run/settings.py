"""The settings of a run as a whole (the task, models, decoding and timing sections, the method runs, the
output folder) and of a fine-tuning job; each section's own settings type lives in its layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..decoding.methods import METHODS
from ..decoding.settings import DecodingConfig
from ..models.settings import DTYPES, ModelsConfig
from ..settings import NAME, option
from ..tasks.settings import TaskConfig


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = option(2, low=0, high=1000, doc='examples decoded first with every method and not recorded')
    trials: int = option(1, low=1, high=100, doc='timed repetitions per example; its latency is their mean')


@dataclass(frozen=True)
class MethodRun:
    """One method at one parameter setting: a curve point. `run_id` names its results file: the method,
    then each parameter in the registry's order (numbers after their tag, a required choice as its value,
    an optional choice as `name_value` when it is not the default; a chain's per-level values joined by `+`)."""

    method: str
    params: dict[str, Any]

    @property
    def run_id(self) -> str:
        parts = [self.method]
        for param in METHODS[self.method].params:
            if param.name not in self.params:
                continue
            value = self.params[param.name]
            if isinstance(value, list | tuple):  # one value per level of a chain
                value = "+".join(str(v) if param.choices else _number_text(v) for v in value)
                number = "" if param.choices else f"{param.tag or param.name}{value}"
            else:
                number = "" if param.choices or param.path else f"{param.tag or param.name}{_number_text(value)}"
            text = param.label(value, number, "_")
            if text is not None:
                parts.append(text)
        return "-".join(parts)


def _number_text(value: float) -> str:
    """A parameter value in a run id: short (`0.3`, `5`), and exact, so that two values never share an id."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


@dataclass(frozen=True)
class RunConfig:
    name: str = option(pattern=NAME, doc="letters, digits, '_', '.', '+', '-'; it names the output folder")
    task: TaskConfig = option(doc='what is decoded and how it is scored: the `task` keys')
    models: ModelsConfig = option(doc='the pair or chain: the `models` keys')
    methods: tuple[MethodRun, ...] = option(
                                            doc=('each entry a method and its parameters; lists are swept (their '
                                                 'cartesian product): see Methods'))
    decoding: DecodingConfig = option(DecodingConfig(), doc='the `decoding` keys')
    timing: TimingConfig = option(TimingConfig(), doc='the `timing` keys')
    output: str = option("", doc='the results folder (default: results/<name>)')
    record: tuple[str, ...] = option((),
                                     doc=('extra per-example records: `tokens` (per-position records of both models '
                                          "on each reference, in the drafter's rows, for `scb fit-router --level "
                                          'token`)'))
    plugins: tuple[str, ...] = option((),
                                      doc=('your .py files or module names, imported before the rest is read: the '
                                           'rules, metrics and task kinds they register the config may name'))
    file: str = option("", internal=True)
    variant: str | None = option(None, internal=True)
    variants: tuple[str, ...] = option((), internal=True)
    raw: dict = field(default_factory=dict, compare=False, metadata={"internal": True})
    overrides: tuple[str, ...] = field(default=(), metadata={"internal": True})  # `scb run --set`, as given

    def method_names(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.methods))


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


log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (run_id, done, total)
Finisher = Callable[[Path], None]  # called with a results folder once its examples are decoded


@dataclass(frozen=True)
class RunOptions:
    output: Path | None = None
    limit: int | None = None
    device: str | None = None
    methods: tuple[str, ...] | None = None
    fresh: bool = False
    allow_code_execution: bool = False  # pass_at_1: run model-written code in the sandbox
