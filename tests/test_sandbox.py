"""The sandbox that scores model-written code: verdicts, limits, and what the code cannot reach or leave behind.

Tests that disable the in-process guard (`in_process_guard=False`) check the namespaces and rlimits
themselves. Every run asserts that the verdict came within its time limit."""

import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from speccascade_bench import sandbox
from speccascade_bench.sandbox import SandboxUnavailable, Verdict, run_tests

SOLUTION = "def add_one(x):\n    return x + 1\n"
TESTS = "assert add_one(1) == 2\nassert add_one(-1) == 0\n"


def run(program: str, tests: str = TESTS, *, timeout_s: float = 5.0, **kwargs) -> Verdict:
    start = time.monotonic()
    verdict = run_tests(program, tests, timeout_s=timeout_s, memory_mb=kwargs.pop("memory_mb", 256), **kwargs)
    elapsed = time.monotonic() - start
    assert verdict.seconds <= elapsed < timeout_s + 2, (verdict, elapsed)
    assert "\n" not in verdict.reason and len(verdict.reason) <= sandbox.REASON_CHARS
    return verdict


def processes_running(argv: list[str], within_s: float = 2.0) -> list[int]:
    """Host pids whose command line starts with `argv` (a PID namespace's processes are visible from the host)
    and that are still alive after `within_s` seconds: a SIGKILLed process leaves /proc once it is reaped."""
    wanted = [arg.encode() for arg in argv]
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                except (OSError, IndexError):
                    continue
                if cmdline[:len(wanted)] == wanted and state not in ("Z", "X"):
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def sleep_marker():
    """A `sleep` duration no other process uses; any survivor is killed after the test (which then fails)."""
    marker = f"{10**6 + secrets.randbelow(10**6)}.5"
    yield marker
    for pid in processes_running(["sleep", marker]):
        os.kill(pid, 9)


@pytest.fixture(scope="module")
def confined():
    try:
        verdict = run_tests(SOLUTION, TESTS, timeout_s=5, memory_mb=256)
    except SandboxUnavailable as exc:
        pytest.skip(f"namespaces unavailable here: {exc}")
    assert verdict.passed and verdict.confined


FORK_COUNT = """
import os
children = 0
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.execv("/bin/sleep", ["sleep", "MARK"])
    children += 1
"""


def test_passing_solution(confined):
    verdict = run(SOLUTION, setup="import math\nOFFSET = math.floor(1.5)\n",
                  tests=TESTS + "assert add_one(OFFSET) == 2\n")
    assert verdict.passed and verdict.reason == "passed" and verdict.confined


def test_failing_assertion_names_the_test_line(confined):
    verdict = run("def add_one(x):\n    return x\n")
    assert not verdict.passed
    assert verdict.reason == "failed: AssertionError (tests line 1: assert add_one(1) == 2)"


def test_exception_and_syntax_error_are_errors_with_bounded_reasons(confined):
    verdict = run("def add_one(x):\n    raise ValueError('no\\n' * 500)\n")
    assert not verdict.passed and verdict.reason.startswith("error: ValueError: no no")
    verdict = run("def add_one(x)\n    return x + 1\n")
    assert not verdict.passed and verdict.reason.startswith("error: SyntaxError") and "program line 1" in verdict.reason


@pytest.mark.parametrize("early_exit", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()"])
def test_exit_before_the_tests_is_not_a_pass(confined, early_exit):
    verdict = run(SOLUTION + early_exit + "\n")
    assert not verdict.passed and verdict.reason.startswith("error:")
    verdict = run(SOLUTION, tests="assert add_one(1) == 2\n" + early_exit + "\nassert add_one(1) == 3\n")
    assert not verdict.passed


def test_infinite_loop_times_out(confined):
    verdict = run(SOLUTION + "while True:\n    pass\n", timeout_s=2)
    assert not verdict.passed and verdict.reason == "timeout" and verdict.seconds >= 2


def test_memory_exhaustion(confined):
    verdict = run(SOLUTION + "hoard = [0] * 10**9\n", memory_mb=256)
    assert not verdict.passed and verdict.reason == "memory"


def test_endless_output_is_stopped_and_bounded(confined):
    verdict = run(SOLUTION + "while True:\n    print('x' * 10000)\n")
    assert not verdict.passed and verdict.reason.startswith("error: output exceeded")
    assert 0 < len(verdict.output) <= sandbox.OUTPUT_KEPT


def test_guard_refuses_shell_and_network(confined):
    verdict = run("import os\nos.system('echo escaped')\n" + SOLUTION)
    assert not verdict.passed and "os.system is disabled" in verdict.reason and "escaped" not in verdict.output
    verdict = run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n" + SOLUTION)
    assert not verdict.passed and "network access" in verdict.reason


def test_network_is_unreachable_without_the_guard(confined):
    verdict = run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n" + SOLUTION,
                  in_process_guard=False)
    assert not verdict.passed and "Network is unreachable" in verdict.reason


def test_forked_and_background_children_do_not_outlive_the_verdict(confined, sleep_marker):
    forked = f"""
import os
if os.fork() == 0:
    os.setsid()
    os.execv("/bin/sleep", ["sleep", "{sleep_marker}"])
os.system("sleep {sleep_marker} &")
"""
    verdict = run(forked + SOLUTION, in_process_guard=False)
    assert verdict.passed, verdict
    assert processes_running(["sleep", sleep_marker]) == []


def test_process_count_is_capped(confined, sleep_marker):
    verdict = run(FORK_COUNT.replace("MARK", sleep_marker) + SOLUTION,
                  tests=f"assert 0 < children < {sandbox.MAX_PROCESSES}, children\n" + TESTS, in_process_guard=False)
    assert verdict.passed, verdict
    assert processes_running(["sleep", sleep_marker]) == []


def test_fork_bomb_is_contained(confined, sleep_marker):
    # Run the bomb only where the cap demonstrably holds: every process forks until the cap refuses, then sleeps.
    probe = run(FORK_COUNT.replace("MARK", sleep_marker), tests=f"assert children < {sandbox.MAX_PROCESSES}\n",
                in_process_guard=False)
    if not probe.passed:
        pytest.skip(f"the process cap does not hold here: {probe.reason}")
    bomb = f"""
import os
while True:
    try:
        os.fork()
    except OSError:
        os.execv("/bin/sleep", ["sleep", "{sleep_marker}"])
"""
    verdict = run(bomb + SOLUTION, timeout_s=2, in_process_guard=False)
    assert not verdict.passed and verdict.reason == "timeout"
    assert processes_running(["sleep", sleep_marker]) == []


@pytest.fixture
def secret_folder():
    if not Path("/var/tmp").is_dir():
        pytest.skip("no /var/tmp")
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))  # outside /tmp, which the sandbox replaces anyway
    (folder / "secret.txt").write_text("s3cret")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def reach(folder: Path) -> str:
    """A program that reads `folder`, tries to unmount whatever covers it, reads again, then deletes and writes."""
    return f"""
import ctypes, os, shutil
def read():
    try:
        return open(os.path.join({str(folder)!r}, "secret.txt")).read()
    except OSError as exc:
        return type(exc).__name__
before = read()
ctypes.CDLL(None).umount2({str(folder)!r}.encode(), 2)
after = read()
shutil.rmtree({str(folder)!r}, ignore_errors=True)
try:
    open(os.path.join({str(folder)!r}, "planted.txt"), "w").write("x")
except OSError:
    pass
"""


def test_hidden_folder_cannot_be_read_or_uncovered(confined, secret_folder):
    tests = "assert 's3cret' not in (before, after), (before, after)\n"
    verdict = run(reach(secret_folder) + SOLUTION, tests=tests, hidden=[secret_folder], in_process_guard=False)
    assert verdict.passed, verdict
    verdict = run(reach(secret_folder) + SOLUTION, tests=tests, hidden=[secret_folder / "secret.txt"],
                  in_process_guard=False)
    assert verdict.passed, verdict
    control = run(reach(secret_folder) + SOLUTION, tests=tests, in_process_guard=False)  # the probe can read
    assert not control.passed and "s3cret" in control.reason


def test_files_outside_cannot_be_deleted_or_written(confined, secret_folder):
    verdict = run(reach(secret_folder) + SOLUTION, in_process_guard=False)
    assert verdict.passed
    assert sorted(p.name for p in secret_folder.iterdir()) == ["secret.txt"]
    assert (secret_folder / "secret.txt").read_text() == "s3cret"


def test_dev_is_minimal_and_usable(confined):
    program = "import os\nopen('/dev/null', 'w').write('x')\nnoise = open('/dev/urandom', 'rb').read(8)\n"
    tests = "assert sorted(os.listdir('/dev')) == ['fd', 'full', 'null', 'random', 'stderr', 'stdin', 'stdout', " \
            "'urandom', 'zero'], os.listdir('/dev')\nassert len(noise) == 8\n"
    assert run(program + SOLUTION, tests=tests + TESTS, in_process_guard=False).passed


def test_unavailable_namespaces_fail_closed(monkeypatch, sleep_marker):
    monkeypatch.setattr(sandbox, "_UNSHARE_FLAGS", 0x1)  # an invalid unshare(2) flag: the call fails as it would
    with pytest.raises(SandboxUnavailable, match="unshare"):
        run_tests(SOLUTION, TESTS, timeout_s=5, memory_mb=256)
    verdict = run(f"import os\nos.system('sleep {sleep_marker} &')\n" + SOLUTION, in_process_guard=False,
                  allow_unconfined=True)
    assert verdict.passed and not verdict.confined
    assert processes_running(["sleep", sleep_marker]) == []  # the process group is killed
    verdict = run(SOLUTION + "while True:\n    pass\n", timeout_s=2, allow_unconfined=True)
    assert verdict.reason == "timeout" and not verdict.confined
