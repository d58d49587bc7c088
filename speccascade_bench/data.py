"""Task data: a hub dataset by name or a local JSONL/CSV/parquet file, both through `datasets`."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, TaskConfig

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataError(RuntimeError):
    """A dataset could not be loaded or lacks a configured field."""


@dataclass(frozen=True)
class Example:
    example_id: int
    source: str
    reference: str


def get_field(row: dict, dotted: str):
    """`row["translation"]["en"]` for `dotted == "translation.en"`; KeyError if any part is missing."""
    value = row
    for part in dotted.split("."):
        try:
            value = value[part]
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


def check_local_fields(path: Path, task: TaskConfig, file: str) -> None:
    """Fail with a ConfigError when a local data file lacks the configured source or target field."""
    if path.suffix.lower() not in _BUILDERS:
        raise ConfigError(file, "task.dataset", f"unsupported file type {path.suffix!r}; use "
                          f"{', '.join(_BUILDERS)}")
    try:
        row = _first_local_row(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(file, "task.dataset", f"cannot read {path}: {exc}") from None
    if not row:
        raise ConfigError(file, "task.dataset", f"{path} has no rows")
    for key in ("source", "target"):
        dotted = getattr(task, key)
        try:
            get_field(row, dotted)
        except KeyError:
            raise ConfigError(file, f"task.{key}", f"field {dotted!r} not found in {path}; its fields: "
                              f"{', '.join(row)}") from None


def load_rows(task: TaskConfig):
    """The task's split as a `datasets.Dataset`, from a local file or the hub."""
    import datasets

    if task.is_local:
        path = Path(task.dataset).expanduser()
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"unsupported data file type {path.suffix!r}: {path}")
        # A local file is one split; `task.split` names it only for the results.
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    try:
        return datasets.load_dataset(task.dataset, task.subset, split=task.split, revision=task.revision)
    except Exception as exc:  # datasets raises many types for an unreachable or unknown hub dataset
        raise DataError(
            f"could not load dataset {task.dataset!r} (subset {task.subset!r}, split {task.split!r}) from the "
            f"Hugging Face hub or its cache: {type(exc).__name__}: {exc}. Without network access, use a "
            "local file or a dataset already in the cache."
        ) from None


def select_indices(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """`limit` row indices drawn at random with `seed` (all rows, in order, when limit is None)."""
    if limit is None or limit >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), limit))


def load_examples(task: TaskConfig, seed: int, limit: int | None = None) -> list[Example]:
    """The evaluated examples: source (with the prefix) and reference, by row index."""
    rows = load_rows(task)
    indices = select_indices(len(rows), task.limit, seed)
    if limit is not None:
        indices = indices[:limit]
    examples = []
    for i in indices:
        row = rows[i]
        try:
            source, reference = get_field(row, task.source), get_field(row, task.target)
        except KeyError as exc:
            raise DataError(f"dataset {task.dataset!r} row {i} has no field {exc.args[0]!r}; its fields: "
                            f"{', '.join(row)}") from None
        examples.append(Example(i, task.prefix + str(source), str(reference)))
    return examples
