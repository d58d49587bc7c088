"""Files without surprises. Writing: never through a link (symbolic or hard), a FIFO or a device
(`open_for_writing`), whole-file replacement that a reader never sees torn (`write_atomic`). Reading a file that
may come from someone else (results rows, a manifest, a data file): only a regular file, opened without blocking
(`open_for_reading`), line by line with a bound on each line's size (`bounded_lines`), and JSON only after a scan
of its nesting depth (`json_value`), so that a FIFO, a link to /dev/zero, a 200 MB line or a row nested a million
deep is one `UnreadableFile` naming the file and the line, never a hang, a MemoryError or a crash. And the `note:`
lines that tell a reader something without stopping anything.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class ResultsError(RuntimeError):
    """A results directory is missing files, is damaged, is in use, or holds another run."""


def link_error(path: Path) -> ResultsError:
    return ResultsError(f"{path} is a link, which this suite never writes; move it aside")


def refuse_link(path: Path) -> Path:
    """`path`, unless it is a link (a ResultsError naming it): no file is written through a link."""
    if path.is_symlink():
        raise link_error(path)
    return path


def open_for_writing(path: Path, flags: int) -> int:
    """A descriptor of the regular file `path` opened with `flags` (os.O_WRONLY, O_CREAT, O_TRUNC, O_APPEND...)
    and never through a link: a symbolic link (O_NOFOLLOW), a file with other hard links, or a FIFO, device
    or socket at `path` is a ResultsError naming it, and nothing is written or truncated."""
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise ResultsError(f"{path} is not a regular file; move it aside") from None
        raise
    found = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(found.st_mode) else
               f"has {found.st_nlink - 1} other hard link(s), which this suite never writes through"
               if found.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise ResultsError(f"{path} {problem}; move it aside")
    if flags & os.O_TRUNC:
        os.ftruncate(fd, 0)
    return fd


def write_file(path: Path, data: str | bytes, sync: bool = False) -> None:
    """Create or overwrite `path` with `data` (text as UTF-8), never through a link (`open_for_writing`);
    with `sync`, force it to disk."""
    with os.fdopen(open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def write_atomic(path: Path, data: str, tmp: Path | None = None) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never a torn one: write a
    temporary file beside it (`tmp`, default a new file `.<name>.<random>.tmp` that nothing else can hold), force
    it to disk, rename it over the old one, force the rename. Neither name may be a link (a ResultsError naming
    it, before anything is written)."""
    refuse_link(path)
    if tmp is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # the file this call made
            raise
    else:
        write_file(tmp, data, sync=True)
    refuse_link(path)
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


MAX_ROW_MB = 4  # the default bound of one line, row or JSON file read (`max_row_mb`: task.max_row_mb, --max-row-mb)

MAX_DEPTH = 100  # the deepest nesting of JSON brackets read (Python's parser recurses; others crash on 10^6)


class UnreadableFile(ValueError):
    """A file read from elsewhere that is not what it should be: not a regular file, a line or row over the
    bound, JSON nested too deeply, not UTF-8 or not JSON. The message names the file and the line or row."""


def row_bytes(max_row_mb: float) -> int:
    """The bound `max_row_mb` (MB, 10^6 bytes) in bytes."""
    return max(1, int(max_row_mb * 1_000_000))


def too_long(where: str, max_bytes: int, bound: str = "the bound of one row (max_row_mb)") -> UnreadableFile:
    return UnreadableFile(f"{where} is longer than {max_bytes / 1e6:g} MB, {bound}")


def open_for_reading(path: Path) -> IO[bytes]:
    """`path` opened for reading in binary, if it is a regular file (a link to one is followed): opened without
    blocking (O_NONBLOCK: a FIFO does not wait for a writer), then checked with fstat. A FIFO, device, socket or
    folder is an UnreadableFile naming it; a missing or unreadable file the OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket
            raise UnreadableFile(f"{path} is not a regular file (a socket)") from None
        raise
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        kind = ("a folder" if stat.S_ISDIR(found.st_mode) else "a FIFO" if stat.S_ISFIFO(found.st_mode) else
                "a device" if stat.S_ISCHR(found.st_mode) or stat.S_ISBLK(found.st_mode) else "not a file")
        raise UnreadableFile(f"{path} is not a regular file ({kind})")
    return os.fdopen(fd, "rb")


def bounded_lines(f: IO[bytes], path: Path, max_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """(line number, offset, line with its newline) of each line of `f`, the last one perhaps without a newline
    (a torn write); a line of more than `max_bytes` bytes (its newline aside) is an UnreadableFile naming the file
    and the line, and is never read whole."""
    number, offset = 0, f.tell()
    while line := f.readline(max_bytes + 1):
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            raise too_long(f"{path}: line {number}", max_bytes)
        yield number, offset, line
        offset += len(line)


# A JSON string, escapes and all; one left open runs to the end of the text, so that no match fails after a long
# try (removing the strings stays linear in the text)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')
_BRACKETS = re.compile(rb"[\[{]+|[\]}]+")


def nesting(text: bytes, depth: int = 0) -> tuple[int, int, int]:
    """(deepest, lowest, last) bracket depth of JSON text outside its strings, starting at `depth` (a JSON string
    holds no raw newline, so a document may be scanned line by line, each line from the last one's depth)."""
    deepest = lowest = depth
    for run in _BRACKETS.finditer(_STRING.sub(b"", text)):
        step = len(run.group())
        depth += step if run.group()[0] in b"[{" else -step
        deepest, lowest = max(deepest, depth), min(lowest, depth)
    return deepest, lowest, depth


def too_deep(text: bytes) -> bool:
    """Whether one JSON value's brackets nest deeper than MAX_DEPTH outside its strings (`nesting`); cheap where
    the text holds few brackets."""
    return text.count(b"[") + text.count(b"{") > MAX_DEPTH and nesting(text)[0] > MAX_DEPTH


def json_value(text: bytes, where: str) -> Any:
    """The JSON value of `text` (one line, or a whole file), its nesting checked first (MAX_DEPTH); an
    UnreadableFile naming `where` when it is nested too deeply, not UTF-8 or not JSON."""
    if too_deep(text):
        raise UnreadableFile(f"{where} is nested too deeply (over {MAX_DEPTH} levels)")
    try:
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"{where} is not JSON: not UTF-8 text (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise UnreadableFile(f"{where} is not JSON ({str(exc)[:80]})") from None


def read_json(path: Path, max_bytes: int, bound: str = "the bound of one row (max_row_mb)") -> Any:
    """The JSON value of a whole file read from elsewhere (a manifest): a regular file (`open_for_reading`) of at
    most `max_bytes`, its nesting checked before it is parsed; an UnreadableFile naming it otherwise."""
    with open_for_reading(path) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_long(str(path), max_bytes, bound)
    return json_value(data, str(path))


def note(message: str) -> None:
    """One `note:` line on stderr: something the reader of a result should know, which stops nothing."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr)
