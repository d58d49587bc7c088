"""The sandbox that scores model-written code: verdicts, limits, and what the code cannot reach or leave behind.

Tests that disable the in-process guard (`in_process_guard=False`) check the namespaces and rlimits
themselves. Every run asserts that the verdict came within its time limit."""

import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from speccascade_bench.tasks import sandbox
from speccascade_bench.tasks.data import Example
from speccascade_bench.tasks.sandbox import SandboxUnavailable, Verdict, limits, run_tests
from speccascade_bench.tasks.scoring import Scorer
from speccascade_bench.tasks.settings import TaskConfig

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
                  tests=f"assert 0 < children < {limits.MAX_PROCESSES}, children\n" + TESTS, in_process_guard=False)
    assert verdict.passed, verdict
    assert processes_running(["sleep", sleep_marker]) == []


def test_fork_bomb_is_contained(confined, sleep_marker):
    # Run the bomb only where the cap demonstrably holds: every process forks until the cap refuses, then sleeps.
    probe = run(FORK_COUNT.replace("MARK", sleep_marker), tests=f"assert children < {limits.MAX_PROCESSES}\n",
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
    """A world-readable folder inside the code's view (the interpreter's prefix is one of its folders)."""
    folder = Path(tempfile.mkdtemp(dir=sys.prefix, prefix="scb-secret-"))
    folder.chmod(0o755)
    (folder / "secret.txt").write_text("s3cret")
    (folder / "secret.txt").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def outside_folder():
    """A world-readable folder outside the code's view."""
    if not Path("/var/tmp").is_dir():
        pytest.skip("no /var/tmp")
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    folder.chmod(0o755)
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


def test_folders_outside_the_view_do_not_exist_for_the_code(confined, outside_folder):
    tests = "assert (before, after) == ('FileNotFoundError', 'FileNotFoundError'), (before, after)\n"
    assert run(reach(outside_folder) + SOLUTION, tests=tests, in_process_guard=False).passed
    assert (outside_folder / "secret.txt").read_text() == "s3cret"


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


# Hostile programs through the entry point that `scb run` scores pass_at_1 rows with (`Scorer.score`).


def score_as_run(program: str, tests: str, setup: str = "", hidden: tuple[Path, ...] = ()) -> str:
    """Score `program` as a pass_at_1 prediction exactly as a run does; returns the recorded verdict."""
    task = TaskConfig(dataset="rows.jsonl", target="code", prompt="{text}", metric="pass_at_1", tests="tests",
                      test_setup="setup", code_timeout_s=5.0, code_memory_mb=256)
    example = Example(0, "write it", "", tests=tests, setup=setup)
    start = time.monotonic()
    score, verdict = Scorer(task, allow_code_execution=True, hidden=hidden).score(example, program)
    assert time.monotonic() - start < task.code_timeout_s + 2
    assert score == (100.0 if verdict == "passed" else 0.0)
    return verdict


@pytest.fixture
def host_socket():
    """A root-only Unix socket listener in /run, as a host service's; yields its path and what it received."""
    folder = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.mkdtemp())
    path = folder / f"scb-test-{secrets.token_hex(6)}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    path.chmod(0o600)
    server.listen(4)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(100))
                    conn.sendall(b"host-reply")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received
    stop.set()
    thread.join(2)
    server.close()
    path.unlink(missing_ok=True)


SOCKET_REACH = """
import os
def reach(path):
    try:
        import _socket
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        _socket.socket.connect(s, path)
        s.send(b"from-sandbox")
        return s.recv(100).decode()
    except Exception as exc:
        return type(exc).__name__
reply = reach({path!r})
abstract = reach("\\0scb-test-abstract")
"""


def test_host_unix_sockets_are_unreachable(confined, host_socket):
    path, received = host_socket
    control = socket.socket(socket.AF_UNIX)  # the listener answers on the host
    control.connect(str(path))
    control.send(b"control")
    assert control.recv(100) == b"host-reply"
    control.close()
    program = SOCKET_REACH.format(path=str(path)) + SOLUTION
    tests = "assert reply != 'host-reply' and abstract != 'host-reply', (reply, abstract)\n" + TESTS
    assert score_as_run(program, tests) == "passed"
    assert run(program, tests, in_process_guard=False).passed  # the confinement alone, without the guard
    assert run(program, tests, in_process_guard=False, hidden=[path.parent]).passed
    assert received == [b"control"]


ESCAPE = """
import ctypes, os
libc = ctypes.CDLL(None)
if os.fork() == 0:
    os.setsid()
    libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG: none
    os.execv("/bin/sleep", ["sleep", "MARK"])
os.setsid()
libc.prctl(1, 0, 0, 0, 0)
"""


@pytest.mark.parametrize("then", ["exit", "exec"])
def test_processes_that_leave_their_session_die_with_the_verdict(confined, sleep_marker, then):
    """The code's process and a child both call setsid, clear their death signal and exec a sleep: after the
    verdict (the code's exit, or the time limit), none of them survives."""
    program = ESCAPE.replace("MARK", sleep_marker)
    if then == "exec":
        program += f"os.execv('/bin/sleep', ['sleep', '{sleep_marker}'])\n"
    verdict = run(program + SOLUTION, timeout_s=2, in_process_guard=False)
    assert verdict.passed == (then == "exit"), verdict
    assert processes_running(["sleep", sleep_marker]) == []
    # with the guard on (as in a run), setsid and exec are refused before anything starts
    assert score_as_run(program + SOLUTION, TESTS).startswith("error: ")
    assert processes_running(["sleep", sleep_marker]) == []


def test_root_only_files_are_unreadable(confined):
    if os.geteuid() != 0:
        pytest.skip("the caller is not root: root-only files are unreadable to it anyway")
    path = Path(sys.prefix) / f"scb-root-only-{secrets.token_hex(6)}"
    path.write_text("root-s3cret")
    path.chmod(0o600)
    try:
        program = f"""
import os
try:
    seen = open({str(path)!r}).read()
except OSError as exc:
    seen = type(exc).__name__
ids = (os.getuid(), os.geteuid())
""" + SOLUTION
        tests = "assert seen == 'PermissionError', seen\nassert ids == (1, 1), ids\n" + TESTS
        assert score_as_run(program, tests) == "passed"
        assert run(program, tests, in_process_guard=False).passed
    finally:
        path.unlink()


def test_a_relative_hidden_path_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        run_tests(SOLUTION, TESTS, hidden=[Path("results/x")])
