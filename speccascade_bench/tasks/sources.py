"""Task sources: where a task's examples come from and, for a source that scores them itself, how.

A task names its source by its config:

- `dataset: data/x.jsonl` or a hub name: `datasets` (built in), rows through the task's prompt, target and metric;
- `lm_eval: gsm8k`: `lm_eval` (built in, `harness_source`), lm-eval's documents, prompts, shots and scores;
- `dataset: "NAME:ARGUMENT"`: the source NAME, which a plugin registers (`register_source`), its rows, or its
  examples and scores.

A source is a `TaskSource`. Most are a `RowSource`: they give rows (`rows`), and everything the task defines here
(prompt, target, shots, `process`, metric) applies to them as to a file's rows. A source that builds its own prompts
and scores them (lm-eval's registry) overrides `examples` and `score` instead.

Each hook runs where its work belongs: `check` when the config is read, `examples` (and `check_examples`) before any
model loads, `score` per prediction, `files` when the manifest records what the task read (a resume refuses them
edited). A hook's problem is a `SourceError` naming the task key at fault, said in one line.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import check_registered_name, suggest
from .data import CheckedRows, DataError, ProcessedRows, load_rows, one_line
from .kinds import resolve
from .settings import TaskConfig, source_reference

if TYPE_CHECKING:
    from .data import Example


class SourceError(DataError):
    """A task its source cannot serve as configured; `key` is the task key at fault (`dataset`, `lm_eval`). A
    DataError: raised before any model loads it is one line naming `task.<key>`, during a run one line too."""

    def __init__(self, key: str, message: str):
        super().__init__(message, key)


class TaskSource:
    """The interface every task source implements; the defaults are those of a source of rows scored by the
    task's metric."""

    name = ""
    renders_prompts = False  # True: its prompts come rendered, chat turns included (`examples` gets the tokenizer)
    keeps_model_context = False  # True: without task.max_source_tokens, prompts keep what the smallest model holds

    def check(self, task: TaskConfig) -> TaskConfig:
        """The task as the run uses it, checked when the config is read (no data is loaded); a SourceError
        otherwise."""
        return task

    def examples(self, task: TaskConfig, limit: int | None, tokenizer=None) -> list[Example]:
        """The evaluated examples, the first `limit` of them (all when None). A RowSource's are built from its rows
        by `examples.load_examples`."""
        raise NotImplementedError

    def check_examples(self, task: TaskConfig, examples: list[Example], max_new_tokens: int) -> None:
        """Said once before any model loads: what the examples make of the run's settings (a log warning)."""

    def score(self, task: TaskConfig, example: Example, prediction: str) -> tuple[float, dict | None] | None:
        """The prediction's score (0 to 100) and per-sample metrics, for a source that scores its own examples;
        None: the task's metric scores it."""
        return None

    def files(self, task: TaskConfig) -> list[tuple[str, Path]]:
        """The code and config files the source reads for this task, each with its label in a manifest."""
        return []


class RowSource(TaskSource):
    """A source of rows: a table whose rows the task's prompt, target, shots and metric read."""

    def rows(self, task: TaskConfig):
        """The task's split (`task.split`) as a sequence of mappings (a list, or a `datasets.Dataset`)."""
        raise NotImplementedError

    def argument(self, task: TaskConfig) -> str:
        """What follows `NAME:` in the task's dataset."""
        reference = source_reference(task.dataset or "")
        return reference[1] if reference else ""


class DatasetSource(RowSource):
    """A local JSONL/CSV/parquet file or a hub dataset, through `datasets` (`data.load_rows`)."""

    name = "datasets"

    def rows(self, task: TaskConfig):
        return load_rows(task)


# The registry: a source, or where a built-in one is defined ("module:Class", imported when first used, so that a
# run without lm-eval tasks never imports lm-eval).
SOURCES: dict[str, TaskSource | str] = {"datasets": DatasetSource(),
                                        "lm_eval": "speccascade_bench.tasks.harness_source:HarnessSource"}


def register_source(name: str):
    """Register the decorated TaskSource subclass (or instance) as the source `name`: a task reads it with
    `dataset: "name:ARGUMENT"`."""
    check_registered_name("task source", name)

    def register(source):
        if name in SOURCES:
            raise ValueError(f"the task source {name!r} is registered twice")
        instance = source() if isinstance(source, type) else source
        if not isinstance(instance, TaskSource):
            raise TypeError(f"the task source {name!r} must be a TaskSource (or RowSource), not "
                            f"{type(instance).__name__}")
        instance.name = name
        SOURCES[name] = instance
        return source

    return register


def get_source(name: str) -> TaskSource:
    source = SOURCES[name]
    if isinstance(source, str):
        module, cls = source.split(":")
        source = SOURCES[name] = getattr(importlib.import_module(module), cls)()
        source.name = name
    return source


def source_of(task: TaskConfig) -> TaskSource:
    """The task's source (see the module docstring); a SourceError naming task.dataset for an unknown one."""
    if task.lm_eval is not None:
        return get_source("lm_eval")
    reference = source_reference(task.dataset or "")
    if reference is None:
        return get_source("datasets")
    name = reference[0]
    if name in ("datasets", "lm_eval"):  # built in, and named otherwise
        raise SourceError("dataset", f"{task.dataset[:100]!r}: the {name} source is not named in dataset: "
                          + ("give the task as task.lm_eval: NAME" if name == "lm_eval" else
                             "give the local file or the hub dataset itself"))
    if name not in SOURCES:
        known = sorted(set(SOURCES) - {"datasets", "lm_eval"})
        raise SourceError("dataset", f"{task.dataset[:100]!r} names the task source {name!r}, which no plugin "
                          f"registers{suggest(name, known)}; registered: {', '.join(known) or 'none'} (a local "
                          "file whose name holds ':' is written ./NAME)")
    return get_source(name)


def task_rows(task: TaskConfig):
    """The task's rows as its prompt and target read them: its RowSource's rows, each through `task.process`."""
    source = source_of(task)
    if not isinstance(source, RowSource):
        raise TypeError(f"the task source {source.name!r} gives examples, not rows")
    rows = hook(source, "rows", task)
    if isinstance(rows, list | tuple):
        rows = CheckedRows(rows, task.dataset)
    elif type(rows).__name__ != "Dataset" or not hasattr(rows, "column_names"):  # datasets.Dataset: mappings
        raise DataError(f"the task source {source.name!r} gave {type(rows).__name__} for {task.dataset!r}, not a "
                        "list of rows (mappings) or a datasets.Dataset", "dataset")
    return ProcessedRows(rows, resolve(task.process), task.dataset) if task.process else rows


def hook(source: TaskSource, name: str, task: TaskConfig, *args, **kwargs):
    """A source's hook called, its own errors (a plugin's) said in one line naming task.dataset; a DataError (a
    SourceError) as it is."""
    try:
        return getattr(source, name)(task, *args, **kwargs)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"the task source {source.name!r} failed in {name}() for {task.dataset!r}: "
                        f"{type(exc).__name__}: {one_line(exc)}", "dataset") from None
