"""The parent's side of a sandboxed run while it lasts: feed the payload, collect the report and the bounded
output until the child exits or a limit is hit (standard library only).
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes of stdout + stderr after which the run is stopped

OUTPUT_KEPT = 2000  # characters of output kept in the verdict

REPORT_LIMIT = 64 * 1024


@dataclass
class Outcome:
    report: list[str]
    output: bytes  # the tail
    output_bytes: int
    stopped: str | None  # "timeout", "output" or None when the child exited by itself
    returncode: int = 0
    out_of_memory: bool = False  # the memory cgroup's limit killed a process of the tree


def supervise(proc: subprocess.Popen, report_fd: int, payload: bytes, deadline: float, confined: bool,
              on_unshared: Callable[[int], None]) -> Outcome:
    """Feed the payload, collect the report and the bounded output until the child exits or a limit is hit.
    Confined, the payload waits until the child has unshared and its uid/gid maps are written."""
    stdin_fd, output_fd = proc.stdin.fileno(), proc.stdout.fileno()
    for fd in (stdin_fd, output_fd, report_fd):
        os.set_blocking(fd, False)
    outcome = Outcome(report=[], output=b"", output_bytes=0, stopped=None)
    report_buffer = b""
    pending = b"" if confined else payload
    mapped = False
    with selectors.DefaultSelector() as selector:
        selector.register(output_fd, selectors.EVENT_READ, "output")
        selector.register(report_fd, selectors.EVENT_READ, "report")
        if pending:
            selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
        exit_fd = _pidfd(proc.pid)
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ, "exit")
        try:
            exited = False
            while not exited:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcome.stopped = "timeout"
                    break
                events = selector.select(remaining if exit_fd is not None else min(remaining, 0.02))
                exited = exit_fd is None and _has_exited(proc.pid)
                for key, _ in events:
                    if key.data == "exit":
                        exited = True
                    elif key.data == "stdin":
                        pending = _feed(selector, stdin_fd, pending)
                        if not pending:
                            proc.stdin.close()  # the code reads end-of-file
                    elif key.data == "output":
                        _read_output(selector, output_fd, outcome)
                    else:
                        report_buffer = _read_report(selector, report_fd, report_buffer)
                        if confined and not mapped and b"unshared\n" in report_buffer:
                            on_unshared(proc.pid)
                            mapped, pending = True, payload
                            selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
                if outcome.output_bytes > OUTPUT_LIMIT:
                    outcome.stopped = "output"
                    break
            if outcome.stopped is None:  # what the child wrote just before it exited
                _drain(output_fd, lambda chunk: _keep_output(outcome, chunk))
                report_buffer += _drain_bytes(report_fd, REPORT_LIMIT - len(report_buffer))
        finally:
            if exit_fd is not None:
                os.close(exit_fd)
    outcome.report = report_buffer.decode(errors="replace").splitlines()
    return outcome


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel before 5.3: poll instead
        return None


def _has_exited(pid: int) -> bool:
    """Without reaping, so that the process group stays valid until it is killed."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _feed(selector: selectors.BaseSelector, fd: int, pending: bytes) -> bytes:
    try:
        pending = pending[os.write(fd, pending[:65536]):]
    except BrokenPipeError:
        pending = b""
    except BlockingIOError:
        return pending
    if not pending:
        selector.unregister(fd)
    return pending


def _read_output(selector: selectors.BaseSelector, fd: int, outcome: Outcome) -> None:
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return
    if not chunk:
        selector.unregister(fd)
    _keep_output(outcome, chunk)


def _keep_output(outcome: Outcome, chunk: bytes) -> None:
    outcome.output_bytes += len(chunk)
    outcome.output = (outcome.output + chunk)[-4 * OUTPUT_KEPT:]


def _read_report(selector: selectors.BaseSelector, fd: int, buffer: bytes) -> bytes:
    try:
        chunk = os.read(fd, 4096)
    except BlockingIOError:
        return buffer
    if not chunk or len(buffer) >= REPORT_LIMIT:
        selector.unregister(fd)
    return buffer + chunk[:REPORT_LIMIT - len(buffer)]


def _drain(fd: int, keep, limit: int = OUTPUT_LIMIT) -> None:
    read = 0
    while read <= limit:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        read += len(chunk)
        keep(chunk)


def _drain_bytes(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    _drain(fd, chunks.append, max(limit, 0))
    return b"".join(chunks)[:max(limit, 0)]
