"""Task data: a hub dataset by name or a local JSONL/CSV/parquet file, both through `datasets`."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .metrics import ANSWER_METRICS, PatternTimeout, extract_answer
from .presets import is_preset
from .prompts import PromptParts, as_text, render

if TYPE_CHECKING:
    from .config import TaskConfig

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
LOCAL_DATA_SUFFIXES = tuple(_BUILDERS)


class DataError(RuntimeError):
    """A dataset could not be loaded or lacks a configured field; `key` is the task's config key at fault
    (`source`, `target`, `dataset`), when one is."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message if len(message) <= 500 else message[:500] + "...")
        self.key = key


def looks_like_path(name: str) -> bool:
    """A dataset or model given as a local path rather than a hub name."""
    if is_preset(name):
        return False
    return (name.startswith((".", "/", "~")) or name.endswith(LOCAL_DATA_SUFFIXES) or Path(name).exists()
            or name.count("/") > 1)


@dataclass(frozen=True)
class Example:
    """One evaluated row. `parts` is its prompt before tokenisation (`prompts.prompt_ids` fits it to the
    model), `source` the same prompt as plain text with every shot; `references` are the accepted answers
    (several for alias lists, none for an unanswerable question) and `reference` the first; `tests` and
    `setup` are the code of a pass_at_1 task."""

    example_id: int
    source: str
    reference: str
    references: tuple[str, ...] = ()
    parts: PromptParts | None = None
    tests: str | None = None
    setup: str | None = None


def get_field(row: dict, dotted: str):
    """`row["translation"]["en"]` for `dotted == "translation.en"` (`choices.0`: the first item of a list);
    KeyError if any part is missing."""
    value = row
    for part in dotted.split("."):
        try:
            value = value[int(part)] if isinstance(value, list) and part.isdigit() else value[part]
        except (KeyError, TypeError, IndexError):
            raise KeyError(dotted) from None
    return value


def _first_local_row(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
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

        with path.open(encoding="utf-8", newline="") as f:
            return next(csv.DictReader(f), {})
    import pyarrow.parquet as pq

    table = pq.read_table(path).slice(0, 1).to_pylist()
    return table[0] if table else {}


def check_local_fields(path: Path, task: TaskConfig) -> None:
    """Fail with a DataError (its `key` the task key at fault) when a local data file cannot be read or its
    first row lacks the configured source or target field."""
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a data file", "dataset")
    if path.suffix.lower() not in _BUILDERS:
        raise DataError(f"unsupported file type {path.suffix!r}; use {', '.join(_BUILDERS)}", "dataset")
    try:
        row = _first_local_row(path)
    except (ValueError, OSError, IndexError) as exc:
        raise DataError(f"cannot read {path}: {_one_line(exc)}", "dataset") from None
    if not isinstance(row, dict) or not row:
        raise DataError(f"{path} has no rows", "dataset")
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


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _locate_unreadable_line(path: Path, parse: bool = True) -> str | None:
    """Where a local text data file stops being UTF-8 (or, for JSONL with `parse`, JSON): 'line N: problem',
    or None."""
    if path.suffix.lower() == ".parquet":
        return None
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: not UTF-8 text (byte {exc.start})"
            if parse and path.suffix.lower() == ".jsonl" and line.strip():
                try:
                    json.loads(line)
                except ValueError as exc:
                    return f"line {number}: not a JSON object ({_one_line(exc, 80)})"
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


def load_rows(task: TaskConfig):
    """The task's split as a `datasets.Dataset`, from a local file or the hub."""
    import datasets

    if task.is_local:
        path = Path(task.dataset).expanduser()
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"unsupported data file type {path.suffix!r}: {path}")
        # A local file is one split; `task.split` names it only for the results. Arrow's readers take bytes
        # that are not UTF-8 into text columns and fail only when a row is read: check the text first.
        where = _locate_unreadable_line(path, parse=False)
        if where:
            raise DataError(f"cannot read {path}: {where}", "dataset")
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its parsers log each failure; we say it once
        try:
            # CSV columns are read as text: type inference would turn an answer "007" into 7, "1e3" into 1000.0
            kwargs = {"features": _text_columns(path)} if builder == "csv" else {}
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as exc:  # datasets wraps a parser's error in its own types
            where = _locate_unreadable_line(path) or _one_line(_root_cause(exc))
            raise DataError(f"cannot read {path}: {where}", "dataset") from None
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

    with path.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    return datasets.Features({name: datasets.Value("string") for name in header})


def select_indices(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """`limit` row indices drawn at random with `seed` (all rows, in order, when limit is None)."""
    if limit is None or limit >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), limit))


def load_examples(task: TaskConfig, seed: int, limit: int | None = None) -> list[Example]:
    """The evaluated examples, by row index: their prompts (with the shots), references and tests."""
    rows = load_rows(task)
    indices = select_indices(len(rows), task.limit, seed)
    if limit is not None:
        indices = indices[:limit]
    pool = ShotPool(task, rows) if task.fewshot and task.fewshot.n else None
    examples = []
    for i in indices:
        where = f"{task.dataset}: row {i} (0-based)"
        query = render_prompt(task, rows[i], i)
        if not query.strip():  # before the shots: an empty question would also skip every shot as itself
            what = f"task.prompt {task.prompt!r} renders to" if task.prompt else \
                f"field {task.source!r} (task.source) is"
            raise DataError(f"{where}: {what} blank text; there is no question to ask", "prompt" if task.prompt
                            else "source")
        shots = pool.shots_for(i, query) if pool else ()
        references = target_texts(rows[i], task, i)
        parts = PromptParts(task.prefix, shots, query)
        text = parts.text(None, task.target_delimiter, task.fewshot.delimiter if task.fewshot else "")
        if not references and task.metric not in ANSWER_METRICS:  # an empty list: an unanswerable question
            raise DataError(f"{where}: field {task.target!r} (task.target) is an empty list; {task.metric} needs a "
                            "reference", "target")
        _check_pattern(task, references, where)
        examples.append(Example(i, text, references[0] if references else "", references, parts,
                                _code_field(rows[i], task, "tests", i), _code_field(rows[i], task, "test_setup", i)))
    return examples


def _check_pattern(task: TaskConfig, references: tuple[str, ...], where: str) -> None:
    """An answer pattern that takes too long on a reference fails before any model loads."""
    if task.answer_pattern is None or task.metric == "pass_at_1":
        return
    for reference in references:
        try:
            extract_answer(reference, task.answer_pattern)
        except PatternTimeout as exc:
            raise DataError(f"{where}: {exc}; simplify the pattern", "answer_pattern") from None


def render_prompt(task: TaskConfig, row: dict, index: int, dataset: str | None = None) -> str:
    """A row's prompt without the prefix or shots: the `prompt` template over its fields, or its `source`."""
    if task.prompt is None:
        return text_field(row, task, "source", index, dataset)
    where = f"{dataset or task.dataset}: row {index} (0-based)"
    try:
        return render(task.prompt, row)
    except KeyError as exc:
        raise DataError(f"{where} has no field {exc.args[0]!r} named by task.prompt; the row's fields: "
                        f"{', '.join(map(str, row))}", "prompt") from None
    except TypeError as exc:
        raise DataError(f"{where}: a field named by task.prompt is {exc}, not text", "prompt") from None


def target_texts(row: dict, task: TaskConfig, index: int, field_name: str | None = None,
                 dataset: str | None = None, key: str = "target") -> tuple[str, ...]:
    """A row's accepted answers: its target field's text, or each item of a list of them (empty for an
    unanswerable question). `key` is the config key that names the field (target, fewshot.target)."""
    where, value = _present_field(row, field_name or task.target, key, index, dataset or task.dataset)
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if item is None or isinstance(item, bool) or not isinstance(item, str | int | float):
            raise DataError(f"{where} must be text or a list of texts, got {type(item).__name__}", key)
    return tuple(as_text(item) for item in items)


def _code_field(row: dict, task: TaskConfig, key: str, index: int) -> str | None:
    """A pass_at_1 row's test code (`tests`, which must not be empty: no tests would pass any program) or its
    set-up code (`test_setup`, which may be empty or null)."""
    dotted = getattr(task, key)
    if dotted is None:
        return None
    where = f"{task.dataset}: row {index} (0-based): field {dotted!r} (task.{key})"
    try:
        value = get_field(row, dotted)
    except KeyError:
        raise DataError(f"{where} is missing", key) from None
    if value is None and key == "test_setup":
        return ""
    try:
        code = as_text(value)
    except TypeError as exc:
        raise DataError(f"{where} is {exc}, not code", key) from None
    if key == "tests":
        _check_tests(code, where)
    return code


def _check_tests(code: str, where: str) -> None:
    """Tests that can fail: valid Python holding at least one assert, raise or call (comments, `pass` or bare
    constants would pass any program; code that does not parse would fail every one)."""
    import ast

    if not code.strip():
        raise DataError(f"{where} is empty: any program would pass", "tests")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise DataError(f"{where} is not valid Python ({exc.msg}, line {exc.lineno}): every program would fail",
                        "tests") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a null byte, or nesting too deep to parse
        raise DataError(f"{where} cannot be parsed ({type(exc).__name__}): every program would fail",
                        "tests") from None
    if not any(isinstance(node, ast.Assert | ast.Raise | ast.Call) for node in ast.walk(tree)):
        raise DataError(f"{where} holds no assert, raise or call, only comments, pass or constants: any program "
                        "would pass", "tests")


class ShotPool:
    """The rows few-shot examples are drawn from (another split of the dataset, or a local file), in the
    order they are tried: seeded at random, or in file order with `order: first`. An example's shots are the
    first `n` of them that are not the example itself (same row of the same split, or the same prompt)."""

    def __init__(self, task: TaskConfig, eval_rows):
        from dataclasses import replace

        fewshot = task.fewshot
        self.task, self.n = task, fewshot.n
        if fewshot.is_local:
            self.name = fewshot.dataset
            self.rows = load_rows(replace(task, dataset=fewshot.dataset, subset=None, revision=None))
        else:
            self.name = f"{task.dataset} split {fewshot.split!r}"
            self.rows = eval_rows if fewshot.split == task.split else load_rows(replace(task, split=fewshot.split))
        self.same_rows = not fewshot.is_local and fewshot.split == task.split
        order = list(range(fewshot.offset if fewshot.order == "first" else 0, len(self.rows)))
        if fewshot.order == "random":
            random.Random(fewshot.seed).shuffle(order)
        self.order = order
        self._rendered: dict[int, tuple[str, str]] = {}
        if len(order) < self.n:
            raise DataError(f"few-shot pool {self.name} has {len(order)} rows to draw from; fewshot.n is {self.n}",
                            "fewshot")

    def _shot(self, index: int) -> tuple[str, str]:
        if index not in self._rendered:
            row, fewshot = self.rows[index], self.task.fewshot
            prompt = render_prompt(self.task, row, index, self.name)
            key = "fewshot.target" if fewshot.target else "target"
            targets = target_texts(row, self.task, index, fewshot.target, self.name, key)
            self._rendered[index] = (prompt, targets[0] if targets else "")
        return self._rendered[index]

    def shots_for(self, example_index: int, query: str) -> tuple[tuple[str, str], ...]:
        shots = []
        for index in self.order:
            if self.same_rows and index == example_index:
                continue
            shot = self._shot(index)
            if shot[0] == query:  # the evaluated question itself, in another split or file
                continue
            shots.append(shot)
            if len(shots) == self.n:
                return tuple(shots)
        raise DataError(f"few-shot pool {self.name} has fewer than {self.n} rows besides example {example_index}",
                        "fewshot")


def text_field(row: dict, task: TaskConfig, key: str, index: int, dataset: str | None = None) -> str:
    """The text of a row's `task.source` or `task.target` field (`key`); a DataError naming the dataset, the
    row and the field when it is missing, null or not text."""
    where, value = _present_field(row, getattr(task, key), key, index, dataset or task.dataset)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataError(f"{where} must be text, got {type(value).__name__}", key)
    return str(value)


def _present_field(row: dict, dotted: str, key: str, index: int, dataset: str) -> tuple[str, object]:
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
