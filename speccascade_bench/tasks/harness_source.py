"""lm-evaluation-harness's registry as a task source (`task.lm_eval: NAME`): lm-eval builds the prompts (chat turns
included) and scores the predictions (`harness`); this source says so to the run, and names the files that make the
task's prompts and scores, which a results folder records."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from . import harness
from .data import Example
from .settings import TaskConfig
from .sources import SourceError, TaskSource

log = logging.getLogger(__name__)

LM_EVAL_MAX_GEN_TOKS = 256  # lm-eval's token budget for a generation task that sets none (its HF model's default)

INCLUDE = re.compile(r"^include:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
FUNCTION = re.compile(r"!function\s+([\w.]+)\.\w+")


class HarnessSource(TaskSource):
    """A generation task of lm-eval's registry, its prompts, shots, stops and scores as lm-eval's."""

    name = "lm_eval"
    renders_prompts = True
    keeps_model_context = True  # as lm-eval's hf model keeps it (`run.plan.model_context`)

    def check(self, task: TaskConfig) -> TaskConfig:
        try:
            return harness.check(task)
        except harness.HarnessError as exc:
            raise SourceError(exc.key, str(exc)) from None

    def examples(self, task: TaskConfig, limit: int | None, tokenizer=None) -> list[Example]:
        return harness.harness_task(task).examples(limit, tokenizer)

    def check_examples(self, task: TaskConfig, examples: list[Example], max_new_tokens: int) -> None:
        """A task whose outputs lm-eval cuts at another length than decoding.max_new_tokens: said once, since
        outputs (and scores) can then differ from lm-eval's."""
        budget = examples[0].max_new_tokens or LM_EVAL_MAX_GEN_TOKS
        if budget != max_new_tokens:
            log.warning("lm-eval generates up to %d tokens for %s; decoding.max_new_tokens is %d, so outputs may "
                        "differ from lm-eval's", budget, task.lm_eval, max_new_tokens)

    def score(self, task: TaskConfig, example: Example, prediction: str) -> tuple[float, dict]:
        return harness.harness_task(task).score(example, prediction)

    def files(self, task: TaskConfig) -> list[tuple[str, Path]]:
        found = lm_eval_files(harness.config_file(task.lm_eval))
        return [(f"lm_eval {os.path.relpath(path, found[0].parent)}", path) for path in found]


def lm_eval_files(config: Path | None) -> list[Path]:
    """The files of an lm-eval task that make its prompts and scores: its YAML `config`, the configs it includes and
    the Python files its `!function` tags name; none for a task class of its own (`config` None)."""
    found: list[Path] = []
    todo = [config] if config is not None else []
    while todo:
        path = todo.pop()
        if path in found or not path.is_file():
            continue
        found.append(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        todo += [path.parent / include for include in INCLUDE.findall(text)]
        todo += [path.parent / (module.replace(".", "/") + ".py") for module in FUNCTION.findall(text)]
    return found
