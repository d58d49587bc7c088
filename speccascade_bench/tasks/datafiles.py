"""A local data file (JSON lines, JSON, CSV or parquet) checked before any parser sees it: the suite's own readers,
`datasets` or lm-eval. It must be a regular file (`files.open_for_reading`: a FIFO would hang a reader, a link to
/dev/zero fill its memory), each of its lines and rows at most `task.max_row_mb` (one 200 MB field makes every
later step slow), its text UTF-8 and its JSON nested at most `files.MAX_DEPTH` deep (a parser's recursion crashes
the process on a row nested 10^6 deep). `scan` says where the first problem is, by line (or row of a parquet file).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..files import MAX_DEPTH, UnreadableFile, bounded_lines, json_value, nesting, open_for_reading, too_deep, too_long


def scan(path: Path, max_bytes: int, parse: bool = False) -> None:
    """Check a local data file (see the module's doc); with `parse`, each line of a JSON lines file is also parsed.
    An UnreadableFile names the file and the line (or row) at fault; an OSError when it cannot be opened."""
    suffix = path.suffix.lower()
    with open_for_reading(path) as f:
        if suffix == ".parquet":
            _scan_parquet(f, path, max_bytes)
        elif suffix == ".csv":
            _scan_csv(f, path, max_bytes)
        elif suffix == ".json":
            _scan_json_document(f, path, max_bytes)
        else:
            _scan_json_lines(f, path, max_bytes, parse)


def _text_lines(f: IO[bytes], path: Path, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number, line) of each line, bounded (`files.bounded_lines`) and checked to be UTF-8."""
    for number, _, line in bounded_lines(f, path, max_bytes):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(f"{path}: line {number}: not UTF-8 text (byte {exc.start})") from None
        yield number, line


def _scan_json_lines(f: IO[bytes], path: Path, max_bytes: int, parse: bool) -> None:
    for number, line in _text_lines(f, path, max_bytes):
        text = line.strip().removeprefix(b"\xef\xbb\xbf")  # a byte-order mark aside
        if text and not text.startswith(b"{"):  # a row is one object per line
            raise UnreadableFile(f"{path}: line {number} is not a JSON object (each line must hold one row)")
        if parse and text:
            json_value(line, f"{path}: line {number}")
        elif too_deep(line):
            raise UnreadableFile(f"{path}: line {number} is nested too deeply (over {MAX_DEPTH} levels)")


def _scan_json_document(f: IO[bytes], path: Path, max_bytes: int) -> None:
    """A .json file: JSON lines, or one document (a list of rows) over many lines. Its depth is followed from
    line to line (a JSON string holds no raw newline); a row of a document is the text of one item of its
    top-level list, counted by whole lines from the one where it starts."""
    depth, row, start = 0, 0, 1
    for number, line in _text_lines(f, path, max_bytes):
        deepest, lowest, depth = nesting(line, depth)
        if deepest > MAX_DEPTH:
            raise UnreadableFile(f"{path}: line {number} is nested too deeply (over {MAX_DEPTH} levels)")
        row, start = (len(line), number) if lowest <= 1 else (row + len(line), start)
        if row > max_bytes:
            raise too_long(f"{path}: the row that starts on line {start}", max_bytes)


def _scan_csv(f: IO[bytes], path: Path, max_bytes: int) -> None:
    """Each line bounded and UTF-8, and each row (a quoted field may hold newlines) at most `max_bytes`."""
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))  # the csv module's own bound is 128 kB a field
    numbers = []

    def lines() -> Iterator[str]:
        for number, line in _text_lines(f, path, max_bytes):
            numbers.append(number)
            yield line.decode("utf-8")

    start, rows = 1, csv.reader(lines())
    while True:
        try:
            row = next(rows, None)
        except csv.Error as exc:  # a field over the bound, or a NUL byte
            if "field limit" in str(exc):
                raise too_long(f"{path}: the row that starts on line {start}", max_bytes) from None
            raise UnreadableFile(f"{path}: line {numbers[-1] if numbers else 1}: not CSV ({exc})") from None
        if row is None:
            return
        if sum(len(field) for field in row) > max_bytes:
            raise too_long(f"{path}: the row that starts on line {start}", max_bytes)
        start = numbers[-1] + 1 if numbers else 1


def _type_depth(kind) -> int:
    """How deeply an Arrow type nests (a list of structs: 2)."""
    children = [kind.field(i).type for i in range(kind.num_fields)] if kind.num_fields else []
    return 1 + max(map(_type_depth, children)) if children else 0


def _width(kind) -> int:
    """The bytes of a value of a fixed-width Arrow type (a number, a date), 0 for any other type."""
    try:
        return kind.bit_width // 8 if kind.num_fields == 0 else 0
    except ValueError:  # not of fixed width
        return 0


def _row_sizes(table) -> list[int]:
    """Each row's bytes in a table read from parquet: text and binary by their length, numbers by their width,
    anything nested by its JSON text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes = [0] * table.num_rows
    for column in table.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
                or pa.types.is_large_binary(kind):
            lengths = pc.fill_null(pc.binary_length(column), 0).to_pylist()
        elif _width(kind):
            lengths = [_width(kind)] * table.num_rows
        else:
            lengths = [len(json.dumps(value, default=str)) for value in column.to_pylist()]
        sizes = [a + b for a, b in zip(sizes, lengths, strict=True)]
    return sizes


def _scan_parquet(f: IO[bytes], path: Path, max_bytes: int) -> None:
    """The schema nested at most MAX_DEPTH deep, and each row at most `max_bytes`: a row group whose data is
    within the bound is not read; another one is read and its rows measured (`_row_sizes`)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(f)
        schema = parquet.schema_arrow
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise UnreadableFile(f"{path} is not a parquet file ({' '.join(str(exc).split())[:80]})") from None
    if max((_type_depth(field.type) for field in schema), default=0) > MAX_DEPTH:
        raise UnreadableFile(f"{path}: its columns nest deeper than {MAX_DEPTH} levels")
    first = 0
    for i in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(i)
        if group.total_byte_size > max_bytes:
            sizes = [group.total_byte_size] if group.num_rows == 1 else _row_sizes(parquet.read_row_group(i))
            over = next((j for j, size in enumerate(sizes) if size > max_bytes), None)
            if over is not None:
                raise too_long(f"{path}: row {first + over} (0-based)", max_bytes)
        first += group.num_rows
