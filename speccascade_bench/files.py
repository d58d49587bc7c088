"""Writing files without surprises: never through a link (symbolic or hard), a FIFO or a device
(`open_for_writing`), whole-file replacement that a reader never sees torn (`write_atomic`), and the
`note:` lines that tell a reader something without stopping anything.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path


class ResultsError(RuntimeError):
    """A results directory is missing files, is damaged, is in use, or holds another run."""


def _link_error(path: Path) -> ResultsError:
    return ResultsError(f"{path} is a link, which this suite never writes; move it aside")


def refuse_link(path: Path) -> Path:
    """`path`, unless it is a link (a ResultsError naming it): no file is written through a link."""
    if path.is_symlink():
        raise _link_error(path)
    return path


def open_for_writing(path: Path, flags: int) -> int:
    """A descriptor of the regular file `path` opened with `flags` (os.O_WRONLY, O_CREAT, O_TRUNC, O_APPEND...)
    and never through a link: a symbolic link (O_NOFOLLOW), a file with other hard links, or a FIFO, device
    or socket at `path` is a ResultsError naming it, and nothing is written or truncated."""
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
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
    temporary file beside it (`tmp`, default `.<name>.tmp`), force it to disk, rename it over the old one,
    force the rename. Neither name may be a link (a ResultsError naming it, before anything is written)."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    refuse_link(path)
    write_file(tmp, data, sync=True)
    refuse_link(path)
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def note(message: str) -> None:
    """One `note:` line on stderr: something the reader of a result should know, which stops nothing."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr)
