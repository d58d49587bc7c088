"""The fine-tuning config of `scb finetune`: a task and the model and training sections.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config.reader import read_yaml
from ..config.reference import section_keys, table
from ..config.run import read_task
from ..settings import ConfigError, Section, keys_of, short, suggest
from ..tasks.metrics import CODE_METRICS
from .settings import (
    ARCHITECTURE_CLASSES,
    ARCHITECTURE_RANGES,
    FROM_TOKENIZER,
    FinetuneConfig,
    architecture_fields,
)

RUN_ONLY_TASK_KEYS = ("fewshot", "chat", "system", "tests", "test_setup", "code_timeout_s", "code_memory_mb")


def is_finetune_config(path: str | Path) -> bool:
    """Whether a config file is a fine-tuning config (it has a `model` or `training` section), not a run
    config; the file is read and checked as `read_yaml` does."""
    data = read_yaml(Path(path))
    return isinstance(data, dict) and ("model" in data or "training" in data) and "models" not in data


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Parse and validate a fine-tuning config. Raises ConfigError naming the file and key."""
    file = Path(path)
    data = read_yaml(file)
    top = Section(file, "", data, ("name", "task", "model", "training", "output"))
    name = top.fields(FinetuneConfig, only=("name",))["name"]
    task = read_task(file, top.get("task", dict), harness=False, split="train")
    for key in RUN_ONLY_TASK_KEYS:
        if key in (top.data.get("task") or {}):
            raise ConfigError(file, f"task.{key}", "is a key of run configs: fine-tuning trains on the prefix and the "
                              "source or prompt, followed by the target")
    if task.metric in CODE_METRICS:
        raise ConfigError(file, "task.metric", f"{task.metric} runs code: fine-tuning evaluates with a text metric")
    m = Section(file, "model", top.get("model", dict), keys_of(FinetuneConfig, "model"))
    model = m.fields(FinetuneConfig, "model")
    if (model["pretrained"] is None) == (model["architecture"] is None):
        raise m.error("pretrained", "give exactly one of pretrained (a hub name or path) or architecture "
                      "(T5Config fields, or LlamaConfig fields with kind causal, trained from scratch)")
    if model["architecture"] is not None:
        kind = model["kind"]
        known = architecture_fields(kind)
        for key, value in model["architecture"].items():
            where = f"model.architecture.{short(key) if not isinstance(key, str) else key}"
            if key not in known:
                raise ConfigError(file, where, f"is not a {ARCHITECTURE_CLASSES[kind]} field (model.kind {kind})"
                                  f"{suggest(str(key)[:100], known)}")
            if key in FROM_TOKENIZER[kind]:
                raise ConfigError(file, where, "is set from the tokenizer; remove it")
            if not isinstance(value, int | float | str | bool) or isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(file, where, f"must be a finite number, a string or a boolean, got {short(value)}")
            low, high = ARCHITECTURE_RANGES.get(key, (0, 10_000_000))
            if isinstance(value, int | float) and not isinstance(value, bool) and not low <= value <= high:
                raise ConfigError(file, where, f"must be in [{low:g}, {high:g}], got {short(value)}")
        if model["tokenizer"] is None:
            raise m.error("tokenizer", "is required with architecture (e.g. byt5, or a hub name or path)")
    t = Section(file, "training", top.get("training", dict, {}), keys_of(FinetuneConfig, "training"))
    output = top.get("output", str)
    if not output.strip():
        raise top.error("output", "must not be empty")
    return FinetuneConfig(name=name, task=task, output=output, **model,
                          **t.fields(FinetuneConfig, "training"), file=str(file))


# The fine-tuning config's sections: (the key's prefix, its dataclass, its flat section)
SECTIONS = (("", FinetuneConfig, ""), ("model", FinetuneConfig, "model"), ("training", FinetuneConfig, "training"))


def finetune_reference() -> str:
    """The fine-tuning config's keys (`scb finetune`), a Markdown table per section (`config.reference.table`)."""
    lines = []
    for prefix, cls, section in SECTIONS:
        lines += [f"### {'Top level' if not prefix else f'`{prefix}`'}", "", *table(prefix, section_keys(cls, section)),
                  ""]
    return "\n".join(lines)
