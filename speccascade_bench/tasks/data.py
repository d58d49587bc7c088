"""Task data: a hub dataset by name or a local JSONL/CSV/parquet file, both through `datasets`."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..files import UnreadableFile, open_for_reading, row_bytes
from ..settings import ConfigError
from . import datafiles, kinds
from .prompts import PromptParts, get_field
from .settings import BUILDERS, TaskConfig


class DataError(RuntimeError):
    """A dataset could not be loaded or lacks a configured field; `key` is the task's config key at fault
    (`source`, `target`, `dataset`), when one is."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message if len(message) <= 500 else message[:500] + "...")
        self.key = key


@dataclass(frozen=True)
class Example:
    """One evaluated row. `parts` is its prompt before tokenisation (`prompts.prompt_ids` fits it to the
    model), `source` the same prompt as plain text with every shot; `references` are the accepted answers
    (several for alias lists, none for an unanswerable question) and `reference` the first; `tests` and
    `setup` are the code of a pass_at_1 task. An lm-eval task's example also holds lm-eval's document (`doc`, what
    its filters and metrics read), its stop sequences, its token budget (`max_new_tokens`) and its shot count
    (`fewshot`: the shots are in its prompt text, which is never cut shot by shot)."""

    example_id: int
    source: str
    reference: str
    references: tuple[str, ...] = ()
    parts: PromptParts | None = None
    tests: str | None = None
    setup: str | None = None
    doc: dict | None = None
    stop: tuple[str, ...] | None = None
    max_new_tokens: int | None = None
    fewshot: int | None = None


def _open_text(path: Path) -> io.TextIOWrapper:
    """A local data file as UTF-8 text, opened as `files.open_for_reading` opens one (a regular file only)."""
    return io.TextIOWrapper(open_for_reading(path), encoding="utf-8", newline="")


def check_data_file(path: Path, task: TaskConfig) -> None:
    """A local data file checked before any parser reads it (`datafiles.scan`, each row at most
    `task.max_row_mb`); a DataError naming the file and the line (its key `dataset`) otherwise."""
    try:
        datafiles.scan(path, row_bytes(task.max_row_mb))
    except UnreadableFile as exc:
        raise DataError(str(exc), "dataset") from None


def _first_local_row(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with _open_text(path) as f:
            if suffix == ".json" and f.read(1) == "[":
                f.seek(0)
                return json.load(f)[0]
            f.seek(0)
            for line in f:
                if line.strip():
                    return json.loads(line)
        return {}
    if suffix == ".csv":
        import csv

        with _open_text(path) as f:
            return next(csv.DictReader(f), {})
    import pyarrow.parquet as pq

    table = pq.read_table(path).slice(0, 1).to_pylist()
    return table[0] if table else {}


def check_local_fields(path: Path, task: TaskConfig) -> None:
    """Fail with a DataError (its `key` the task key at fault) when a local data file cannot be read or its
    first row lacks the configured source or target field."""
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file", "dataset")
    if path.suffix.lower() not in BUILDERS:
        raise DataError(f"unsupported file type {path.suffix!r}; use {', '.join(BUILDERS)}", "dataset")
    try:
        check_data_file(path, task)
        row = _first_local_row(path)
    except DataError:
        raise
    except (ValueError, OSError, IndexError) as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}", "dataset") from None
    if not isinstance(row, dict) or not row:
        raise DataError(f"{path} has no rows", "dataset")
    if task.process:
        row = ProcessedRows([row], kinds.resolve(task.process), str(path))[0]
    for dotted in task.fields_used():
        try:
            get_field(row, dotted)
        except KeyError:
            raise DataError(f"field {dotted!r} not found in {path}; its fields: {', '.join(map(str, row))}",
                            _task_key(task, dotted)) from None


def _task_key(task: TaskConfig, dotted: str) -> str:
    """The task key that names a dataset field."""
    for key in ("source", "target", "tests", "test_setup"):
        if getattr(task, key) == dotted:
            return key
    return "prompt"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (the parser's error under a library's wrapper)."""
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    return exc


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _located_problem(path: Path, task: TaskConfig) -> str | None:
    """Where a local data file that `datasets` could not read stops being JSON lines (`datafiles.scan` with every
    line parsed): its message, or None."""
    try:
        datafiles.scan(path, row_bytes(task.max_row_mb), parse=True)
    except (UnreadableFile, OSError) as exc:
        return str(exc)
    return None


# How `datasets` refuses a repository that holds only a loading script: 4.0 and later raise
# "Dataset scripts are no longer supported, but found X.py"; 2.20 to 3.x ask for trust_remote_code.
_LOADING_SCRIPT_ERRORS = ("Dataset scripts are no longer supported", "contains custom code which must be executed")


def is_loading_script_error(exc: Exception) -> bool:
    """Whether `datasets` refused a dataset because it ships only a Python loading script."""
    return isinstance(exc, RuntimeError | ValueError) and any(s in str(exc) for s in _LOADING_SCRIPT_ERRORS)


def loading_script_message(task: TaskConfig) -> str:
    """One line for a hub dataset that ships only a loading script, with the two ways out."""
    return (f"dataset {task.dataset!r} ships only a loading script, which this version of `datasets` does not "
            "run; set `task.revision: refs/convert/parquet` (the hub's parquet conversion of it) or point "
            "`task.dataset` at a repository with data files (e.g. `wmt/wmt14` instead of `wmt14`)")


class CheckedRows:
    """A source's rows, each checked to be a mapping when read."""

    def __init__(self, rows, where: str):
        self.rows, self.where = rows, where

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        if not isinstance(row, dict):
            raise DataError(f"{self.where}: row {index} (0-based) is {type(row).__name__}, not a row", "dataset")
        return row


class ProcessedRows(CheckedRows):
    """Rows seen through a task's row function (`tasks.kinds`), each computed once when first read. A row the
    function refuses (any exception) or turns into something other than a mapping is a DataError naming it."""

    def __init__(self, rows, process, where: str):
        super().__init__(rows, where)
        self.process, self.done = process, {}

    def __getitem__(self, index: int) -> dict:
        if index not in self.done:
            try:
                row = self.process(dict(super().__getitem__(index)))
            except DataError:
                raise
            except Exception as exc:  # the row function's own error, in one line
                raise DataError(f"{self.where}: row {index} (0-based): the row function failed: "
                                f"{type(exc).__name__}: {one_line(exc)}", "process") from None
            if not isinstance(row, dict):
                raise DataError(f"{self.where}: row {index} (0-based): the row function returned "
                                f"{type(row).__name__}, not a row", "process")
            self.done[index] = row
        return self.done[index]


def load_rows(task: TaskConfig):
    """The task's split as a `datasets.Dataset`, from a local file or the hub."""
    import datasets

    if task.is_local:
        path = Path(task.dataset).expanduser()
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"unsupported data file type {path.suffix!r}: {path}")
        # A local file is one split; `task.split` names it only for the results. Arrow's readers take bytes
        # that are not UTF-8 into text columns and fail only when a row is read, and crash on rows nested deep:
        # check the file first (`check_data_file`).
        check_data_file(path, task)
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parsers log each failure; we say it once
        try:
            # CSV columns are read as text: type inference would turn an answer "007" into 7, "1e3" into 1000.0
            kwargs = {"features": _text_columns(path)} if builder == "csv" else {}
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as exc:  # datasets wraps a parser's error in its own types
            where = _located_problem(path, task) or f"{path}: {one_line(_root_cause(exc))}"
            raise DataError(f"cannot read {where}", "dataset") from None
        finally:
            datasets.logging.set_verbosity(verbosity)
    try:
        return datasets.load_dataset(task.dataset, task.subset, split=task.split, revision=task.revision)
    except Exception as exc:  # datasets raises many types for an unreachable or unknown hub dataset
        if is_loading_script_error(exc):
            raise DataError(loading_script_message(task), "dataset") from None
        raise DataError(
            f"could not load dataset {task.dataset!r} (subset {task.subset!r}, split {task.split!r}) from the "
            f"Hugging Face hub or its cache: {type(exc).__name__}: {exc}. Without network access, use a "
            "local file or a dataset already in the cache."
        ) from None


def _text_columns(path: Path):
    """Every column of a CSV file as text (`datasets.Features`), from its header."""
    import csv

    import datasets

    with _open_text(path) as f:
        header = next(csv.reader(f), [])
    return datasets.Features({name: datasets.Value("string") for name in header})


def task_indices(task: TaskConfig, n_rows: int, seed: int) -> list[int]:
    """The row indices a task selects, in the data's order: `task.sample` of them drawn at random with `seed`, the
    `task.first` ones, or every row."""
    if task.first is not None:
        return list(range(min(task.first, n_rows)))
    return select_indices(n_rows, task.sample, seed)


def select_indices(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """`limit` row indices drawn at random with `seed` (all rows, in order, when limit is None)."""
    if limit is None or limit >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), limit))


def text_field(row: dict, task: TaskConfig, key: str, index: int, dataset: str | None = None) -> str:
    """The text of a row's `task.source` or `task.target` field (`key`); a DataError naming the dataset, the
    row and the field when it is missing, null or not text."""
    where, value = present_field(row, getattr(task, key), key, index, dataset or task.dataset)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where} must be text, got {type(value).__name__}", key)
    return str(value)


def present_field(row: dict, dotted: str, key: str, index: int, dataset: str) -> tuple[str, object]:
    """Where a row's field is (for messages) and its value; a DataError naming the dataset, the row, the field
    and its config key (`task.<key>`) when it is missing or null."""
    where = f"{dataset}: row {index} (0-based): field {dotted!r} (task.{key})"
    try:
        value = get_field(row, dotted)
    except KeyError:
        raise DataError(f"{where} is missing; the row's fields: {', '.join(map(str, row))}", key) from None
    if value is None:
        raise DataError(f"{where} is null", key)
    return where, value


TOY_DATA = {"toy": "scb toy-data --out data/toy` (or `make toy-data`",
            "toy_llm": "scb toy-data --task arithmetic --out data/toy_llm --train 40000` (or `make toy-llm-data`"}


def _toy_hint(path: Path) -> str:
    """How to make a shipped config's toy data (`data/toy`, `data/toy_llm`), where a path names it."""
    command = TOY_DATA.get(path.parent.name) if path.parent.parent.name == "data" else None
    return f"; the toy task's data is generated: `{command})" if command else ""


def check_local_task(file: str | Path, key: str, task: TaskConfig) -> None:
    """A local data file of a config (named by its `key`, e.g. task.dataset) exists, is a regular file and
    has the task's source and target fields; a ConfigError naming the key at fault otherwise."""
    path = Path(task.dataset).expanduser()
    if not path.exists():
        raise ConfigError(file, key, f"local data file not found: {path}{_toy_hint(path)}")
    if not path.is_file():
        raise ConfigError(file, key, f"{path} is not a regular file")
    try:
        check_local_fields(path, task)
    except DataError as exc:
        fewshot = key.startswith("task.fewshot")
        raise ConfigError(file, key if exc.key in (None, "dataset") or fewshot else f"task.{exc.key}",
                          str(exc)) from None
