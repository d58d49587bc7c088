"""The example rows of a results folder: `examples/<run_id>.jsonl`, one line per example and method run,
appended and flushed as it finishes (`ExampleWriter`), read back with every check (`read_run`: a regular file,
read line by line with each line bounded (`files.bounded_lines`, `max_row_mb`) and its nesting checked before it is
parsed; each row names its file's run, and the manifest's method and parameters of that run where they are given;
an example twice only with the same content; a torn last line is an interrupted write and is dropped).
`load_examples` reads a folder's runs, each one the manifest names, keeping only the fields a summary reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..files import (
    MAX_ROW_MB,
    ResultsError,
    UnreadableFile,
    bounded_lines,
    json_value,
    note,
    open_for_reading,
    open_for_writing,
    row_bytes,
)
from .record import ExampleRow, problem, upgraded

MAX_ROW_BYTES = row_bytes(MAX_ROW_MB)


def examples_dir(results: Path) -> Path:
    return results / "examples"


def example_files(results: Path) -> list[Path]:
    """The results files of the folder's method runs (examples/*.jsonl), in name order; [] without an
    examples/ folder. An examples/ folder that cannot be listed is an OSError, never an empty list."""
    folder = examples_dir(results)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == ".jsonl")


def read_lines(path: Path, max_bytes: int = MAX_ROW_BYTES) -> list[dict]:
    """The complete lines of a results file, as this version writes them (`record.upgraded`); a torn last line (an
    interrupted write) is ignored. A complete line that is not an example record is a ResultsError naming the file
    and the line."""
    return [row for _, _, _, row in _numbered_records(path, max_bytes)]


def _numbered_records(path: Path, max_bytes: int) -> Iterator[tuple[int, int, bytes, dict]]:
    """(line number, offset, line, record) for each complete line of a results file (see `read_lines`); nothing
    for a missing file."""
    if not path.exists():
        return
    try:
        f = open_for_reading(path)
    except UnreadableFile as exc:
        raise ResultsError(f"{exc}; move it aside") from None
    with f:
        try:
            for number, offset, line in bounded_lines(f, path, max_bytes):
                if not line.endswith(b"\n"):
                    break  # torn write: the example will be decoded again
                yield number, offset, line, _record(path, number, line)
        except UnreadableFile as exc:
            raise ResultsError(f"{exc}; delete that line (its example is decoded again), or move the file "
                               "aside") from None


def _record(path: Path, number: int, line: bytes) -> dict:
    """The example record of one complete line; an UnreadableFile naming the file and the line otherwise."""
    row = json_value(line, f"{path}: line {number}")
    why = "is not a JSON object" if not isinstance(row, dict) else problem(row)
    if why:
        raise UnreadableFile(f"{path}: line {number} {why}")
    return upgraded(row)


def read_run(path: Path, max_bytes: int = MAX_ROW_BYTES, named: dict | None = None,
             keep: tuple[str, ...] | None = None) -> tuple[list[ExampleRow], int]:
    """A method run's rows (typed) from its results file `examples/<run_id>.jsonl`, one per example in example order,
    and how many exact duplicate rows were dropped. Every row must name the file's run (`run_id`, and as
    `method` the run id's first part), and `named`'s method and params where given (the manifest's record of the
    run); it may repeat an example only with the same content: otherwise a ResultsError names the file, the line
    and the field. With `keep`, each row keeps only those fields (a summary needs no token statistics)."""
    named_for = "the file is named for"
    checks = [("run_id", path.stem, named_for), ("method", path.stem.split("-")[0], named_for)]
    if named is not None:
        whose = f"the manifest's run {_shown(path.stem)} has"
        checks += [("method", named["method"], whose), ("params", named["params"], whose)]
    first: dict[int, tuple[int, int, int, dict]] = {}
    repeated = 0
    shared: dict = {}  # values that many rows hold, one object each (`_kept`)
    for number, offset, line, row in _numbered_records(path, max_bytes):
        for field, value, whose in checks:
            if row.get(field) != value:
                raise ResultsError(f"{path}: line {number} has {field} {_shown(row.get(field))}, but {whose} "
                                   f"{_shown(value)}; move the line to its own run's file or delete it, or move "
                                   "the file aside")
        seen = first.get(row["example_id"])
        if seen is None:
            kept = ExampleRow.from_json(row) if keep is None else ExampleRow(**_kept(row, keep, named, shared))
            first[row["example_id"]] = (number, offset, hash(line), kept)
            continue
        if seen[2] != hash(line) and _canonical(_line_at(path, seen[1], max_bytes)) != _canonical(row):
            raise ResultsError(f"{path}: line {number} has example_id {row['example_id']} of line {seen[0]} with "
                               "other content; delete the wrong one of the two lines")
        repeated += 1
    return [first[i][3] for i in sorted(first)], repeated


def _kept(row: dict, keep: tuple[str, ...], named: dict | None, shared: dict) -> dict:
    """The fields of `row` in `keep`, with one object for a value that many rows hold (`shared`): its params the
    manifest's object of the run (`named`, which they equal), its run id, method and calls, and its worker with
    only its kind and session."""
    kept = {name: row[name] for name in keep if name in row}
    if named is not None and "params" in kept:
        kept["params"] = named["params"]
    worker = kept.get("worker")
    if isinstance(worker, dict):
        kept["worker"] = {name: worker[name] for name in ("kind", "session") if isinstance(worker.get(name), str)}
    for name in ("run_id", "method", "calls", "worker"):
        value = kept.get(name)
        key = tuple(value.items()) if isinstance(value, dict) else value
        try:
            kept[name] = shared.setdefault((name, key), value)
        except TypeError:  # a value that is not hashable (a list among a worker's values) stays the row's own
            pass
    return kept


def _line_at(path: Path, offset: int, max_bytes: int) -> dict:
    """The record of the line at `offset` of a results file (read again to compare a repeated example)."""
    with open_for_reading(path) as f:
        f.seek(offset)
        return upgraded(json.loads(f.readline(max_bytes + 1)))


def _shown(value) -> str:
    """A value of a record, short enough for a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


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
        with open_for_reading(path) as f:
            for number, _, line in bounded_lines(f, path, MAX_ROW_BYTES):
                try:
                    if line.endswith(b"\n"):
                        ids.add(_record(path, number, line)["example_id"])
                except UnreadableFile:
                    continue
    except (OSError, UnreadableFile):
        pass
    return ids


def load_examples(results: Path, methods: list[dict], max_bytes: int = MAX_ROW_BYTES,
                  keep: tuple[str, ...] | None = None) -> dict[str, list[ExampleRow]]:
    """Every method run's rows by run_id (`read_run`: checked against their file and against `methods`, the
    manifest's record of the folder's method runs, one per example; with `keep`, only those fields); a `note` for
    exact duplicate rows. A ResultsError for a results file of a run that `methods` does not name, and when the
    folder holds no example line at all."""
    folder = examples_dir(results)
    if not folder.is_dir():
        raise ResultsError(f"{results} has no examples/ folder")
    named = {run["run_id"]: run for run in methods}
    runs = {}
    for path in example_files(results):
        if path.stem not in named:
            raise ResultsError(f"{path}: the manifest names no method run {_shown(path.stem)} (config.methods): "
                               "these are not this folder's results; move the file aside")
        rows, repeated = read_run(path, max_bytes, named[path.stem], keep)
        if repeated:
            note(f"{path}: {repeated} exact duplicate rows ignored")
        if rows:
            runs[path.stem] = rows
    if not runs:
        raise ResultsError(f"{folder}: no example lines (no results file, or only empty ones); nothing to summarise "
                           "(run `scb run` first)")
    return runs
