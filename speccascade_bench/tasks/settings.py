"""The `task` section of a run: the data, its fields, the prompt and its shots, the metric and its answer handling.
"""

from __future__ import annotations

import re
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


SOURCE_REFERENCE = re.compile(r"^([a-z][a-z0-9_]*):(.*)$", re.DOTALL)


def source_reference(dataset: str) -> tuple[str, str] | None:
    """A dataset written `NAME:ARGUMENT`: the task source NAME (a plugin's, `sources.register_source`) and what it
    is given; None for a local path or a hub name (hub names hold no ':')."""
    match = SOURCE_REFERENCE.match(dataset)
    return (match.group(1), match.group(2)) if match else None


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

    n: int = option(low=0, high=1000, doc='the number of shots (0 to 1000)')
    split: str | None = option(None,
                               doc="the split of the task's dataset the shots are drawn from (never the evaluated row)")
    dataset: str | None = option(None, doc='a local file to draw the shots from instead of a split')
    seed: int = option(1234, low=0, high=2**32 - 1, doc="the seed of the shots' draw")
    order: str = option("per_example", choices=("per_example", "random", "first"),
                        doc=("per_example: drawn anew for each example (lm-eval's sampler); random: one seeded set "
                             'for every example; first: the first `n` after `offset` rows'))
    offset: int = option(0, low=0, high=10_000_000, doc='with order: first, the rows skipped before the first shot')
    target: str | None = option(None,
                                doc="the shots' answer field (default: the task's target; a list gives its first item)")
    delimiter: str = option("\n\n", doc='between two shots, and between the last shot and the evaluated prompt')

    @property
    def is_local(self) -> bool:
        return self.dataset is not None


@dataclass(frozen=True)
class TaskConfig:
    """What a task decodes and how it is scored. The model's input is `prefix` + the few-shot examples +
    either the row's `source` field or, with `prompt`, a template over the row's fields (`{question}`,
    `{translation[en]}`); `target` is the reference field, a string or a list of accepted answers. Or, with
    `lm_eval`, a generation task of lm-evaluation-harness, its prompts, shots and scores as lm-eval's."""

    dataset: str | None = option(None,
                                 doc=('a local .jsonl/.json/.csv/.parquet file, a hub dataset (wmt/wmt14, '
                                      'abisee/cnn_dailymail), or a task source a plugin registers (NAME:ARGUMENT); '
                                      'required, but for lm_eval tasks'))
    target: str | None = option(None,
                                doc=('the reference field (dotted paths such as translation.de); a list field is a '
                                     'list of accepted answers; required, but for lm_eval tasks'))
    source: str | None = option(None, doc='the input field (dotted paths such as translation.en); or give `prompt`')
    prompt: str | None = option(None,
                                doc=('a template over the row\'s fields instead of `source`: "Question: '
                                     '{question}\\nAnswer:", {translation[en]}'))
    process: str | None = option(None,
                                 doc=('a row function applied first: a task kind (multiple_choice), file.py:function '
                                      'beside the config, or module:function'))
    subset: str | None = option(None, doc="the hub dataset's subset, e.g. de-en, 3.0.0")
    split: str = option("test",
                        doc="the hub split (a local file is one split; a fine-tuning config's default is train)")
    revision: str | None = option(None,
                                  doc=("the hub branch, tag or commit; refs/convert/parquet reads the hub's parquet "
                                       'conversion of a dataset that ships only a loading script'))
    prefix: str = option("", doc='prepended to every input, before the shots, e.g. "translate English to German: "')
    fewshot: FewshotConfig | None = option(None, doc='few-shot examples: a mapping of the `task.fewshot` keys')
    target_delimiter: str = option(" ", doc="between a shot's prompt and its answer")
    chat: bool = option(False, doc="the shots and the question as turns of the tokenizer's chat template")
    system: str | None = option(None, doc='a system turn (with chat)')
    stop: tuple[str, ...] = option((),
                                   doc='stop strings: decoding ends at the first, and the prediction is cut before it')
    metric: str = option("bleu", choices=METRICS, doc='the quality metric of each example (a plugin may register more)')
    answer_pattern: str | None = option(None,
                                        doc=('a regex whose first group is what is compared (prediction and '
                                             "references), e.g. '#### (-?[0-9.,]+)'"))
    normalize: str = option("squad", choices=NORMALIZERS,
                            doc="exact_match and f1: the official scorers' and lm-eval's normalisation")
    answer_select: str = option("first", choices=patterns.ANSWER_SELECT,
                                doc="which match of answer_pattern answers (lm-eval's group_select -1 is last)")
    tests: str | None = option(None,
                               doc="pass_at_1: the field holding each example's test code (a list is one line each)")
    test_setup: str | None = option(None, doc='pass_at_1: a field of code run before the program')
    code_timeout_s: float = option(10.0, low=0.1, high=600.0,
                                   doc='pass_at_1: the wall-clock limit per example, in seconds')
    code_memory_mb: int = option(1024, low=64, high=65_536, doc='pass_at_1: the address-space limit per process, in MB')
    sample: int | None = option(None, low=1, high=10_000_000,
                                doc=('N examples drawn at random with decoding.seed, decoded in the data\'s order '
                                     '(null: every example); not with lm_eval (its documents are taken in order)'))
    first: int | None = option(None, low=1, high=10_000_000,
                               doc=("the first N examples in the data's order (null: every example); on an lm_eval "
                                    "task its first N documents, as lm-eval's --limit"))
    max_source_tokens: int = option(512, low=1, high=131_072,
                                    doc=("the prompt's token budget: a longer prompt is cut (its shots first, then "
                                         "the source's start)"))
    max_row_mb: int = option(MAX_ROW_MB, low=1, high=4096,
                             doc='the longest line or row of a local data file read, in MB')
    # A task of lm-evaluation-harness's registry (tasks.harness): everything above but first, max_source_tokens,
    # max_row_mb, chat and system (lm-eval's --apply_chat_template and --system_instruction) comes from it.
    lm_eval: str | None = option(None,
                                 doc=("a generation task of lm-evaluation-harness's registry (e.g. gsm8k) instead of "
                                      'the keys above; with it only first, max_source_tokens, max_row_mb, chat, '
                                      'system and the keys below'))
    num_fewshot: int | None = option(None, low=0, high=1000,
                                     doc="lm_eval: the shots (default: the task's own), drawn by lm-eval's sampler")
    fewshot_seed: int = option(1234, low=0, high=2**32 - 1, doc="lm_eval: the sampler's seed (lm-eval's default)")
    filter: str | None = option(None,
                                doc=("lm_eval: the filter whose output is scored (default: the task's first), e.g. "
                                     'flexible-extract'))
    score: str | None = option(None,
                               doc=("lm_eval: the metric that is the row's score (default: the task's first), e.g. "
                                    'rouge2'))
    data_files: dict | None = option(None,
                                     doc=("lm_eval: {split: local file in the task's schema} in place of the hub "
                                          'dataset'))
    # With chat: each shot a user and an assistant turn (lm-eval's --fewshot_as_multiturn, its default with a chat
    # template); false: the shots and the question in one user turn
    fewshot_as_multiturn: bool = option(True,
                                        doc=('lm_eval with chat: the shots as user and assistant turns (false: one '
                                             "user turn), as lm-eval's"))

    @property
    def is_local(self) -> bool:
        """A local data file of the suite's own task definition (lm-eval tasks check their data_files)."""
        return self.lm_eval is None and self.dataset is not None and source_reference(self.dataset) is None \
            and looks_like_path(self.dataset)

    @property
    def selected(self) -> int | None:
        """How many examples the task selects (`sample` or `first`), or None for every one."""
        return self.sample if self.sample is not None else self.first

    def fields_used(self) -> tuple[str, ...]:
        """The dataset fields the task reads from an evaluated row (dotted for nested ones)."""
        used = [self.source] if self.source else list(template_fields(self.prompt))
        return tuple(dict.fromkeys(used + [f for f in (self.target, self.tests, self.test_setup) if f]))
