"""The example rows of a results folder: `examples/<run_id>.jsonl`, one line per example and method run,
appended and flushed as it finishes (`ExampleWriter`), read back with every check (`read_run`: each row
names its file's run, an example twice only with the same content; a torn last line is an interrupted
write and is dropped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import ResultsError, note, open_for_writing
from .record import problem


def examples_dir(results: Path) -> Path:
    return results / "examples"


def example_files(results: Path) -> list[Path]:
    """The results files of the folder's method runs (examples/*.jsonl), in name order; [] without an
    examples/ folder. An examples/ folder that cannot be listed is an OSError, never an empty list."""
    folder = examples_dir(results)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == ".jsonl")


def read_lines(path: Path) -> list[dict]:
    """The complete lines of a results file; a torn last line (an interrupted write) is ignored. A complete
    line that is not an example record is a ResultsError naming the file and the line."""
    return [row for _, row in _numbered_records(path)]


def _numbered_records(path: Path):
    """(line number, record) for each complete line of a results file (see `read_lines`)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # torn write: the example will be decoded again
            row, problem = _parse_record(line)
            if problem:
                raise ResultsError(f"{path}: line {number} {problem}; delete that line (its example is decoded "
                                   "again) or move the file aside")
            yield number, row


def read_run(path: Path) -> tuple[list[dict], int]:
    """A method run's rows from its results file `examples/<run_id>.jsonl`, one per example in example order,
    and how many exact duplicate rows were dropped. Every row must name the file's run (`run_id`, and as
    `method` the run id's first part) and may repeat an example only with the same content: otherwise a
    ResultsError names the file, the line and the field."""
    run_id = path.stem
    expected = {"run_id": run_id, "method": run_id.split("-")[0]}
    first: dict[int, tuple[int, dict]] = {}
    repeated = 0
    for number, row in _numbered_records(path):
        for field, value in expected.items():
            if row.get(field) != value:
                raise ResultsError(f"{path}: line {number} has {field} {_shown(row.get(field))}, but the file is "
                                   f"named for {value!r}; move the line to its own run's file or delete it")
        seen = first.setdefault(row["example_id"], (number, row))
        if seen[1] is row:
            continue
        if _canonical(seen[1]) != _canonical(row):
            raise ResultsError(f"{path}: line {number} has example_id {row['example_id']} of line {seen[0]} with "
                               "other content; delete the wrong one of the two lines")
        repeated += 1
    return [first[i][1] for i in sorted(first)], repeated


def _shown(value) -> str:
    """A value of a record, short enough for a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _parse_record(line: str) -> tuple[dict, str | None]:
    """An example record from one line, and why the line is not one (None when it is)."""
    try:
        row = json.loads(line)
    except ValueError:
        return {}, "is not JSON"
    except RecursionError:
        return {}, "is nested too deeply"
    if not isinstance(row, dict):
        return {}, "is not a JSON object"
    return row, problem(row)


def repair(path: Path) -> None:
    """Cut a torn last line, so that appending starts on a fresh line (never through a link)."""
    if not path.exists() and not path.is_symlink():
        return
    with os.fdopen(open_for_writing(path, os.O_RDWR), "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


class ExampleWriter:
    """Appends one JSON line per finished example and forces it to disk."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair(path)
            fd = open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, row: dict) -> None:
        try:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise ResultsError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._file.close()


def count_examples(out: Path, run_ids=None) -> int:
    """How many distinct examples every method run has finished: the examples found in the results file of
    every run of `run_ids` (default: of every results file in the folder). What an interrupted run keeps, so
    it never fails: a line that is not a record is not counted, and an unreadable folder counts 0."""
    folder = examples_dir(out)
    if run_ids is None:
        try:
            run_ids = [path.stem for path in example_files(out)]
        except OSError:
            return 0
    shared = None
    for run_id in run_ids:
        ids = _finished_ids(folder / f"{run_id}.jsonl")
        shared = ids if shared is None else shared & ids
    return len(shared or ())


def _finished_ids(path: Path) -> set[int]:
    """The example ids of a results file's complete lines that are records (see `count_examples`)."""
    ids = set()
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                row, problem = _parse_record(line) if line.endswith("\n") else ({}, "torn")
                if not problem:
                    ids.add(row["example_id"])
    except OSError:
        return set()
    return ids


def load_examples(results: Path) -> dict[str, list[dict]]:
    """Every method run's rows by run_id (`read_run`: checked against their file, one per example); a `note`
    for exact duplicate rows, a ResultsError when the folder holds no example line at all."""
    folder = examples_dir(results)
    if not folder.is_dir():
        raise ResultsError(f"{results} has no examples/ folder")
    runs = {}
    for path in example_files(results):
        rows, repeated = read_run(path)
        if repeated:
            note(f"{path}: {repeated} exact duplicate rows ignored")
        if rows:
            runs[path.stem] = rows
    if not runs:
        raise ResultsError(f"{folder}: no example lines (no results file, or only empty ones); nothing to summarise "
                           "(run `scb run` first)")
    return runs
