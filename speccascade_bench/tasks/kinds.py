"""Task kinds with code of their own: `task.process` names a function that turns each dataset row into the row
that the task's prompt, target and tests read, before anything else reads it (lm-evaluation-harness's
`process_docs`).

`process` is a registered kind (`@task_kind(name)`; built in: `multiple_choice`), or a function in a Python
file beside the config, `file.py:function` (the config reader makes the path absolute), or in an importable
module, `package.module:function`. So a benchmark with odd rows is a config plus at most one file. A row the
function cannot process stops the run before any model loads, with the row's index.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import string
from collections.abc import Callable
from pathlib import Path

Process = Callable[[dict], dict]
KINDS: dict[str, Process] = {}  # the registry


def task_kind(name: str):
    """Register the decorated row function as the task kind `name` (`task.process: name`)."""

    def register(process: Process) -> Process:
        if name in KINDS:
            raise ValueError(f"the task kind {name!r} is registered twice")
        KINDS[name] = process
        return process

    return register


def resolve(spec: str) -> Process:
    """The row function `spec` names (see the module docstring); a ValueError says why it cannot be found."""
    if spec in KINDS:
        return KINDS[spec]
    return _load(spec)


def source_file(spec: str) -> Path | None:
    """The Python file that holds the row function `spec` names, when it is the user's (a `file.py:function`, a
    `module:function`, or a kind registered from outside this package); None for the built-in kinds. A results folder
    records its fingerprint: rows prompted by two versions of the function must not mix."""
    where, sep, _ = spec.rpartition(":")
    if spec not in KINDS and sep and where.endswith(".py"):
        return Path(where)
    try:
        found = inspect.getsourcefile(resolve(spec))
    except (TypeError, ValueError):  # a function without a Python source file
        return None
    package = Path(__file__).resolve().parents[1]
    return None if found is None or Path(found).resolve().is_relative_to(package) else Path(found)


@functools.lru_cache(maxsize=64)
def _load(spec: str) -> Process:
    """A `file.py:function` or `module:function`, loaded once per process (the config reader, the evaluated
    rows, the shots and the field checks all ask for it): the user's file runs once."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"{spec!r} is neither a task kind ({', '.join(KINDS)}) nor file.py:function or "
                         "module:function")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ValueError(f"{path} is not a file")
            module_spec = importlib.util.spec_from_file_location(f"scb_task_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ValueError:
        raise
    except Exception as exc:  # the user's module failed to import: its own error, in one line
        raise ValueError(f"cannot load {where}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"{where} has no function {name!r}")
    return function


LETTERS = string.ascii_uppercase


@task_kind("multiple_choice")
def multiple_choice(row: dict) -> dict:
    """Multiple-choice rows in ARC's layout, with any number of choices: `question`, `choices` as
    {"label": [...], "text": [...]} (or a plain list of texts, labelled A, B, C...) and `answerKey`, a label
    (a letter or a number), or `answer`, an index or a label. Adds `choices_block` (one "A. text" line per
    choice), `answer_label` (the right choice's label) and `answer_text` (its text)."""
    choices = row["choices"]
    if isinstance(choices, dict):
        labels, texts = [str(label) for label in choices["label"]], [str(text) for text in choices["text"]]
    else:
        texts = [str(text) for text in choices]
        labels = list(LETTERS[: len(texts)])
    if len(labels) != len(texts) or len(texts) < 2:
        raise ValueError(f"{len(texts)} choices and {len(labels)} labels")
    key = row["answerKey"] if "answerKey" in row else row["answer"]
    if isinstance(key, int) and not isinstance(key, bool) and str(key) not in labels:
        if not 0 <= key < len(labels):
            raise ValueError(f"answer index {key} of {len(labels)} choices")
        key = labels[key]
    key = str(key).strip()
    if key not in labels:
        raise ValueError(f"answer {key!r} is not one of the labels {', '.join(labels)}")
    block = "\n".join(f"{label}. {text}" for label, text in zip(labels, texts, strict=True))
    return {**row, "choices_block": block, "answer_label": key, "answer_text": texts[labels.index(key)]}
