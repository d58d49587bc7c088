"""The `task` section of a run: the data, its fields, the prompt and its shots, the metric and its answer handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..files import MAX_ROW_MB
from ..models.presets import is_preset
from ..settings import option
from . import metrics, patterns
from .prompts import template_fields

METRICS = metrics.METRICS

NORMALIZERS = tuple(metrics.NORMALIZERS)  # answer normalisation of exact_match and f1

PATTERN_METRICS = metrics.PATTERN_METRICS  # an answer_pattern's metrics (the code of pass_at_1)

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}  # as datasets reads them
LOCAL_DATA_SUFFIXES = tuple(BUILDERS)


def looks_like_path(name: str) -> bool:
    """A dataset or model given as a local path rather than a hub name."""
    if is_preset(name):
        return False
    return (name.startswith((".", "/", "~")) or name.endswith(LOCAL_DATA_SUFFIXES) or Path(name).exists()
            or name.count("/") > 1)


@dataclass(frozen=True)
class FewshotConfig:
    """Few-shot examples of a task: `n` rows drawn from another `split` of the task's dataset or from a local file
    (`dataset`): anew for each example with `seed` and the example's row (`order: per_example`, as
    lm-evaluation-harness's sampler), one seeded set for every example (`order: random`), or the first `n` after
    `offset` rows (`order: first`); never the evaluated row itself. Each is
    rendered with the task's prompt, then `task.target_delimiter` and its target (`target`, default the
    task's target field; a list gives its first item). Shots are joined, and followed by the evaluated
    prompt, with `delimiter`."""

    n: int = option(low=0, high=1000)
    split: str | None = option(None)
    dataset: str | None = option(None)
    seed: int = option(1234, low=0, high=2**32 - 1)
    order: str = option("per_example", choices=("per_example", "random", "first"))
    offset: int = option(0, low=0, high=10_000_000)  # with order: first, the rows skipped before the first shot
    target: str | None = option(None)
    delimiter: str = option("\n\n")

    @property
    def is_local(self) -> bool:
        return self.dataset is not None


@dataclass(frozen=True)
class TaskConfig:
    """What a task decodes and how it is scored. The model's input is `prefix` + the few-shot examples +
    either the row's `source` field or, with `prompt`, a template over the row's fields (`{question}`,
    `{translation[en]}`); `target` is the reference field, a string or a list of accepted answers. Or, with
    `lm_eval`, a generation task of lm-evaluation-harness, its prompts, shots and scores as lm-eval's."""

    dataset: str | None = option(None)  # required, but for lm_eval tasks
    target: str | None = option(None)  # required, but for lm_eval tasks
    source: str | None = option(None)
    prompt: str | None = option(None)
    process: str | None = option(None)  # a task kind or file.py:function over each row (tasks.kinds)
    subset: str | None = option(None)
    split: str = option("test")  # a fine-tuning config's default is "train"
    revision: str | None = option(None)
    prefix: str = option("")
    fewshot: FewshotConfig | None = option(None)
    target_delimiter: str = option(" ")
    chat: bool = option(False)
    system: str | None = option(None)
    stop: tuple[str, ...] = option(())
    metric: str = option("bleu", choices=METRICS)
    answer_pattern: str | None = option(None)
    normalize: str = option("squad", choices=NORMALIZERS)
    answer_select: str = option("first", choices=patterns.ANSWER_SELECT)  # which match of answer_pattern: first or last
    tests: str | None = option(None)
    test_setup: str | None = option(None)
    code_timeout_s: float = option(10.0, low=0.1, high=600.0)
    code_memory_mb: int = option(1024, low=64, high=65_536)
    limit: int | None = option(None, low=1, high=10_000_000)
    max_source_tokens: int = option(512, low=1, high=131_072)
    max_row_mb: int = option(MAX_ROW_MB, low=1, high=4096)  # the longest line or row of a local data file read, in MB
    # A task of lm-evaluation-harness's registry (tasks.harness): everything above but limit, max_source_tokens,
    # max_row_mb, chat and system (lm-eval's --apply_chat_template and --system_instruction) comes from it.
    lm_eval: str | None = option(None)
    num_fewshot: int | None = option(None, low=0, high=1000)  # default: the lm-eval task's own
    fewshot_seed: int = option(1234, low=0, high=2**32 - 1)  # lm-eval's sampler seed (its default, 1234)
    filter: str | None = option(None)  # which of its filters gives the row's score (default: its first)
    score: str | None = option(None)  # which of its metrics is the row's score (default: its first)
    data_files: dict | None = option(None)  # {split: local file in the task's schema}, in place of the hub
    # With chat: each shot a user and an assistant turn (lm-eval's --fewshot_as_multiturn, its default with a chat
    # template); false: the shots and the question in one user turn
    fewshot_as_multiturn: bool = option(True)

    @property
    def is_local(self) -> bool:
        """A local data file of the suite's own task definition (lm-eval tasks check their data_files)."""
        return self.lm_eval is None and self.dataset is not None and looks_like_path(self.dataset)

    def fields_used(self) -> tuple[str, ...]:
        """The dataset fields the task reads from an evaluated row (dotted for nested ones)."""
        used = [self.source] if self.source else list(template_fields(self.prompt))
        return tuple(dict.fromkeys(used + [f for f in (self.target, self.tests, self.test_setup) if f]))
