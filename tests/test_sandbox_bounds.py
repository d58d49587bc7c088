"""The sandbox's bounds beyond rlimits: memory that RLIMIT_AS does not count (memfd, SysV and POSIX shared memory,
other processes of the tree), the system calls its seccomp filter refuses, nothing left running or on disk when
the caller is SIGKILLed, and the wall clock kept inside the sandbox. Hostile programs go through `run_tests`,
the function that `scb run`'s scorer calls (and, with the in-process guard on, through the scorer itself)."""

import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from speccascade_bench.tasks import sandbox
from speccascade_bench.tasks.sandbox import SandboxUnavailable, bounds, run_tests, syscalls

from .test_sandbox import SOLUTION, TESTS, confined, processes_running, run, score_as_run, sleep_marker  # noqa: F401 - fixtures

MEMORY_MB = 128

# 1 GiB in memfd files: four times over the limit, in 16 MiB files (the file-size limit) of 1 MiB writes
MEMFD_HOARD = """
import os
held = 0
fds = []
for _ in range(64):
    fd = os.memfd_create("hoard")
    for _ in range(16):
        os.write(fd, b"x" * (1 << 20))
        held += 1
    fds.append(fd)
"""

# 1.5 GiB of SysV shared memory in 128 MiB segments, each attached, filled and detached (it stays held)
SHM_HOARD = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
held = 0
for _ in range(12):
    segment = libc.shmget(0, 128 << 20, 0o1600)
    if segment < 0:
        raise OSError(ctypes.get_errno(), "shmget: " + os.strerror(ctypes.get_errno()))
    address = libc.shmat(segment, None, 0)
    ctypes.memset(address, 1, 128 << 20)
    libc.shmdt(ctypes.c_void_p(address))
    held += 128
""".replace("import ctypes", "import ctypes, os")


@pytest.fixture
def cgroup():
    """Skips where no memory cgroup can be made (not root, or cgroup v2 without the memory controller delegated)."""
    parent, _, why = bounds.cgroup_parent()
    if parent is None:
        pytest.skip(why)
    return parent


@pytest.fixture
def seccomp():
    why = syscalls.unavailable()
    if why:
        pytest.skip(why)


@pytest.fixture
def without_seccomp(monkeypatch, cgroup):
    """The memory cgroup alone: what bounds a machine that has no seccomp binding."""
    layers = sandbox.layers
    monkeypatch.setattr(sandbox, "layers", lambda: (False, *layers()[1:]))


def test_memfd_through_the_scorer_is_refused(confined, seccomp):  # noqa: F811
    verdict = score_as_run(SOLUTION, TESTS, setup=MEMFD_HOARD)
    assert verdict.startswith("error: PermissionError") and "setup line" in verdict, verdict


def test_memfd_and_shared_memory_are_refused_without_the_guard(confined, seccomp):  # noqa: F811
    for hoard in (MEMFD_HOARD, SHM_HOARD):
        verdict = run(hoard + SOLUTION, memory_mb=MEMORY_MB, in_process_guard=False)
        assert not verdict.passed and "Operation not permitted" in verdict.reason, verdict


def test_memfd_beyond_the_limit_is_killed_by_the_cgroup(confined, without_seccomp):  # noqa: F811
    verdict = run(MEMFD_HOARD + SOLUTION, memory_mb=MEMORY_MB, in_process_guard=False)
    assert not verdict.passed and verdict.reason == "memory", verdict


def test_shared_memory_is_closed_in_the_code_ipc_namespace(confined, without_seccomp):  # noqa: F811
    verdict = run(SHM_HOARD + SOLUTION, memory_mb=MEMORY_MB, in_process_guard=False)
    assert not verdict.passed and "shmget" in verdict.reason, verdict  # the namespace's shmmax/shmall are 0
    program = "import os\nlimits = [open(f'/proc/sys/kernel/{k}').read().strip() for k in ('shmmax', 'shmmni')]\n"
    assert run(program + SOLUTION, "assert limits == ['0', '0'], limits\n" + TESTS, in_process_guard=False).passed


def test_posix_shared_memory_and_message_queues_cannot_be_made(confined):  # noqa: F811
    program = textwrap.dedent("""
        import ctypes, os
        try:
            open("/dev/shm/hoard", "wb").write(b"x" * (1 << 20))
            shm = "made"
        except OSError as exc:
            shm = type(exc).__name__
        librt = ctypes.CDLL(None, use_errno=True)
        queue = librt.mq_open(b"/hoard", os.O_CREAT | os.O_RDWR, 0o600, None)
        """)
    tests = "assert shm in ('FileNotFoundError', 'PermissionError', 'OSError'), shm\nassert queue == -1, queue\n"
    assert run(program + SOLUTION, tests + TESTS, in_process_guard=False).passed


def test_the_process_tree_shares_one_memory_limit(confined, cgroup):  # noqa: F811
    # Eight children of 96 MiB each, with a 128 MiB limit for the whole tree: one at a time fits, not eight.
    program = textwrap.dedent("""
        import os, signal, time
        children = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                hoard = bytearray(96 << 20)
                for i in range(0, len(hoard), 4096):
                    hoard[i] = 1
                time.sleep(1.5)
                os._exit(0)
            children.append(pid)
        statuses = [os.waitpid(pid, 0)[1] for pid in children]
        killed = sum(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses)
        """)
    verdict = run(program + SOLUTION, "assert killed >= 6, killed\n" + TESTS, memory_mb=MEMORY_MB, timeout_s=10,
                  in_process_guard=False)
    assert verdict.passed, verdict


# x86-64 and arm64 numbers; io_uring's and later calls share one number on every architecture
_CALLS = {"x86_64": {"userfaultfd": 323, "bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248,
                     "unshare": 272, "setns": 308},
          "aarch64": {"userfaultfd": 282, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217,
                      "unshare": 97, "setns": 268}}


def test_the_filter_refuses_io_uring_and_the_other_listed_calls(confined, seccomp):  # noqa: F811
    if platform.machine() not in _CALLS:
        pytest.skip(f"no system call numbers listed for {platform.machine()}")
    calls = dict(_CALLS[platform.machine()], io_uring_setup=425, memfd_secret=447)
    program = textwrap.dedent(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        params = ctypes.create_string_buffer(120)
        answers = {{}}
        for name, number in {calls!r}.items():
            args = (8, params) if name == "io_uring_setup" else (0x20000,) if name == "unshare" else (0, 0, 0, 0)
            result = libc.syscall(ctypes.c_long(number), *args)
            answers[name] = os.strerror(ctypes.get_errno()) if result == -1 else "allowed"
        clone_user = libc.syscall(ctypes.c_long({56 if platform.machine() == "x86_64" else 220}),
                                  ctypes.c_ulong(0x10000000 | 17), 0, 0, 0, 0)
        clone_error = os.strerror(ctypes.get_errno())
        """)
    tests = ("assert all(answer == 'Operation not permitted' for answer in answers.values()), answers\n"
             "assert clone_user == -1 and clone_error == 'Operation not permitted', clone_error\n")
    verdict = run(program + SOLUTION, tests + TESTS, in_process_guard=False)
    assert verdict.passed, verdict
    threads = "import threading\nran = []\nthread = threading.Thread(target=ran.append, args=[1])\n"
    threads += "thread.start()\nthread.join()\nimport subprocess\nechoed = subprocess.run(['echo', 'x'], "
    threads += "capture_output=True).stdout\n"
    verdict = run(threads + SOLUTION, "assert ran == [1] and echoed == b'x\\n'\n" + TESTS, in_process_guard=False)
    assert verdict.passed, verdict  # threads and processes start (clone3 falls back to clone)


KILLED_CALLER = """
import sys
from speccascade_bench.tasks.sandbox import run_tests
program = '''
import os, time
if os.fork() == 0:
    os.execv("/bin/sleep", ["sleep", "MARK"])
time.sleep(60)
'''
run_tests(program, "assert True", timeout_s=60, memory_mb=256, in_process_guard=False)
"""


def test_nothing_outlives_a_sigkilled_caller_and_the_next_run_sweeps_its_leftovers(confined, sleep_marker):  # noqa: F811
    caller = subprocess.Popen([sys.executable, "-c", KILLED_CALLER.replace("MARK", sleep_marker)])
    try:
        deadline = time.monotonic() + 20
        while not processes_running(["sleep", sleep_marker], within_s=0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_running(["sleep", sleep_marker], within_s=0), "the example never started"
        tag = f"{caller.pid}-"
        folders = [p for p in bounds.workspace().iterdir() if p.name.startswith(tag)]
        assert len(folders) == 1
    finally:
        caller.send_signal(signal.SIGKILL)
        caller.wait()
    assert processes_running(["sleep", sleep_marker]) == []
    assert _working_in(folders[0]) == []  # the sandbox's first process, outside the namespace
    parent, _, _ = bounds.cgroup_parent()
    left_cgroups = list(parent.glob(bounds.PREFIX + tag + "*")) if parent is not None else []
    assert run(SOLUTION).passed
    assert not folders[0].exists()
    assert not any(path.exists() for path in left_cgroups)


def _working_in(folder: Path, within_s: float = 2.0) -> list[int]:
    """Pids of live processes whose working directory is `folder`, after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "cwd") == str(folder):
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_the_sweep_spares_live_owners_links_and_what_is_not_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = bounds.workspace()
    assert base == tmp_path / f"{bounds.PREFIX}{os.geteuid()}" and base.stat().st_mode & 0o777 == 0o700
    live = base / f"{bounds.owner_tag()}-abc"
    dead = base / "999999999-1-abc"
    squatted = tmp_path / f"{bounds.PREFIX}1-0-mydata"  # named like a leftover, but not in the sandbox's folder
    target = tmp_path / "kept"
    for folder in (live, dead, squatted, target):
        folder.mkdir()
        (folder / "file").write_text("x")
    link = base / "999999998-1-abc"
    link.symlink_to(target)
    removed = bounds.sweep_leftovers()
    assert dead in removed and not dead.exists() and live not in removed and link not in removed
    assert live.exists() and (squatted / "file").exists() and (target / "file").exists() and link.is_symlink()


def test_a_sandbox_folder_that_is_not_private_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    taken = tmp_path / f"{bounds.PREFIX}{os.geteuid()}"
    taken.mkdir(mode=0o777)
    taken.chmod(0o777)  # a folder others may write: a place to plant what the sweep would remove
    with pytest.raises(SandboxUnavailable, match="is not a private folder of this user"):
        run_tests(SOLUTION, TESTS, timeout_s=5, memory_mb=256)
    assert "is not a private folder" in sandbox.probe()


def test_the_wall_clock_is_kept_inside_the_sandbox(confined, monkeypatch, sleep_marker):  # noqa: F811
    supervise = sandbox.supervise
    monkeypatch.setattr(sandbox, "supervise", lambda proc, fd, payload, deadline, *rest:
                        supervise(proc, fd, payload, deadline + 30, *rest))  # a parent that never stops it
    program = f"import os, time\nos.system('sleep {sleep_marker} &')\ntime.sleep(60)\n"
    start = time.monotonic()
    verdict = run_tests(program + SOLUTION, TESTS, timeout_s=1, memory_mb=256, in_process_guard=False)
    assert verdict.reason == "timeout" and time.monotonic() - start < 1 + sandbox._INSIDE_GRACE_S + 2, verdict
    assert processes_running(["sleep", sleep_marker]) == []


def test_without_a_filter_or_a_cgroup_the_sandbox_fails_closed(monkeypatch):
    monkeypatch.setattr(syscalls, "unavailable", lambda: "no seccomp binding (install pyseccomp)")
    monkeypatch.setattr(bounds, "cgroup_parent", lambda: (None, 0, "no memory cgroup can be made here"))
    with pytest.raises(SandboxUnavailable, match="cannot be bounded here: no seccomp binding .*no memory cgroup"):
        run_tests(SOLUTION, TESTS, timeout_s=5, memory_mb=256)
    assert "no seccomp binding" in sandbox.probe()


def test_describe_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(bounds, "cgroup_parent", lambda: (None, 0, "no memory cgroup can be made here"))
    if syscalls.unavailable():
        pytest.skip(syscalls.unavailable())
    line, complete = sandbox.describe()
    assert not complete and "per process (RLIMIT_AS)" in line and "no memory cgroup can be made here" in line
    assert "\n" not in line


def test_a_run_names_a_missing_bound_in_one_warning_before_any_model_loads(confined, monkeypatch, caplog):  # noqa: F811
    from types import SimpleNamespace

    from speccascade_bench.run.plan import check_sandbox

    monkeypatch.setattr(bounds, "cgroup_parent", lambda: (None, 0, "no memory cgroup can be made here"))
    if syscalls.unavailable():
        pytest.skip(syscalls.unavailable())
    with caplog.at_level("WARNING"):
        check_sandbox(SimpleNamespace(file="run.yaml"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "per process (RLIMIT_AS)" in warnings[0] and "on this machine" in warnings[0]
