"""`scb run --workers N` on a local Ray instance (one per module, 2 CPUs, so 2 workers of 1 CPU each) with tiny
random models saved to disk: the same example lines as one process at temperature 1, no duplicates, a killed
worker or driver that loses nothing finished, several variants in one command, a cluster joined with
`--ray-address`, and the report's refusal to mix kinds of device."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.results.record import WRITTEN
from speccascade_bench.results.rows import read_lines
from speccascade_bench.run import cluster, workers
from speccascade_bench.run.plan import prepare
from speccascade_bench.run.settings import RunOptions

from .helpers import save_byte_pair, write_jsonl

pytestmark = pytest.mark.serial  # Ray takes both cores and prints its timings: run alone

N = 8  # examples of the main task
N_LONG = 30  # examples of the task a driver is killed in
TIMED = ("latency_s", "latency_trials_s", "worker")  # what differs between two runs of the same examples
METHODS = [{"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode"},
           {"method": "seq_cascade", "alpha": [0.5]}, {"method": "spec_cascade", "rule": "opt", "alpha": [0.0, 0.5]},
           {"method": "token_cascade", "alpha": [0.3]}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    save_byte_pair(root)
    write_jsonl(root / "task.jsonl", [{"src": f"sentence number {i}", "tgt": f"Satz Nummer {i}"}
                                       for i in range(N_LONG)])
    return root


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module, 2 CPUs; the address other processes join it by. If Ray cannot
    start, the tests that need it fail."""
    import ray

    environ, sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                       logging_level="ERROR")
    signal.signal(signal.SIGTERM, sigterm)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(environ)


def make_config(root: Path, output: Path, name: str = "tiny", **overrides) -> str:
    config = {
        "name": name,
        "task": {"dataset": str(root / "task.jsonl"), "source": "src", "target": "tgt", "sample": N},
        "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
        "decoding": {"max_new_tokens": 8, "temperature": 1.0, "draft_length": 3, "seed": 0},
        "methods": METHODS,
        "timing": {"warmup": 1, "trials": 2},
        "output": str(output),
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    path = root / f"{name}-{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def lines(out: Path) -> dict[str, list[dict]]:
    """Each run's lines, checked complete and free of duplicates, without what timing changes, by example."""
    runs = {}
    for path in sorted((out / "examples").glob("*.jsonl")):
        rows = read_lines(path)
        ids = [row["example_id"] for row in rows]
        assert len(ids) == len(set(ids)), f"duplicate lines in {path}"
        assert all(set(WRITTEN) <= set(row) for row in rows)
        runs[path.stem] = sorted(({k: v for k, v in row.items() if k not in TIMED} for row in rows),
                                 key=lambda row: row["example_id"])
    return runs


def scb_subprocess(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "speccascade_bench.cli", *args],
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, **kwargs)


@pytest.fixture(scope="module")
def one_process(workspace):
    """The main task decoded by one process with one torch thread (as each worker has here), in a process that
    never imports Ray."""
    out = workspace / "one"
    code = ("import sys\nfrom speccascade_bench.cli import app\ntry:\n"
            f"    app(['run', '-c', {make_config(workspace, out)!r}])\n"
            "except SystemExit as exit:\n    assert 'ray' not in sys.modules, 'a run without --workers imported ray'\n"
            "    sys.exit(exit.code)\n")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    print(f"one process: {time.perf_counter() - started:.1f} s")
    return lines(out)


def test_two_workers_write_the_lines_of_one_process(workspace, ray_address, one_process):
    out = workspace / "two"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", "-c", make_config(workspace, out), "--workers", "2"])
    print(f"--workers 2 (Ray already up): {time.perf_counter() - started:.1f} s")
    assert result.exit_code == 0, result.output
    assert lines(out) == one_process  # sampled outputs, counters and the derived seq_cascade run
    assert len(one_process) == 7 and all(len(rows) == N for rows in one_process.values())
    manifest = json.loads((out / "manifest.json").read_text())
    workers = manifest["workers"]
    assert len({w["pid"] for w in workers}) == 2 and all(w["versions"]["torch"] for w in workers)
    assert all(w["hardware"]["torch_threads"] == 1 and w["verify_call_cost"]["3"] > 0 for w in workers)
    assert manifest["hardware"]["device"] == "cpu"
    costs = json.loads((out / "call_costs.json").read_text())["verify_call_cost"]
    assert costs["3"] in [w["verify_call_cost"]["3"] for w in workers]
    rows = read_lines(out / "examples" / "verifier.jsonl")
    assert {row["worker"]["kind"] for row in rows} == {workers[0]["kind"]}
    assert len({row["worker"]["session"] for row in rows}) == 1  # two workers, one `scb run`
    assert (out / "summary.csv").exists()
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and "decoded by 2 Ray worker processes on 1 host(s)" in report.output


def test_killed_workers_are_replaced_and_the_run_completes(workspace, ray_address, one_process):
    out = workspace / "killed_workers"
    job = prepare(load_run_config(make_config(workspace, out)), RunOptions())
    killed = []

    def kill_the_workers(label, done, total):
        """As rows come in, kill both workers that set up first: only their replacements can finish."""
        workers = json.loads((out / "manifest.json").read_text())["workers"] if done else []
        for worker in workers[:2]:
            if done < total and worker["pid"] not in killed and len(killed) < 2:
                os.kill(worker["pid"], signal.SIGKILL)
                killed.append(worker["pid"])
                return

    workers.run([job], 2, progress=kill_the_workers)
    assert len(killed) == 2  # both mid-run
    assert lines(out) == one_process
    pids = [w["pid"] for w in json.loads((out / "manifest.json").read_text())["workers"]]
    assert set(killed) < set(pids)  # a replacement set up and decoded what was left


def test_a_killed_driver_resumes_with_no_duplicates_and_any_number_of_workers(workspace, ray_address):
    out = workspace / "killed_driver"
    config = make_config(workspace, out, task={"sample": N_LONG}, decoding={"max_new_tokens": 16},
                         methods=[{"method": "verifier"}, {"method": "spec_decode"}])
    driver = scb_subprocess("run", "-c", config, "--workers", "2", "--ray-address", ray_address,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    verifier = out / "examples" / "verifier.jsonl"
    deadline = time.monotonic() + 180
    while not (verifier.exists() and read_lines(verifier)) and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kept = {run: len(rows) for run, rows in lines(out).items()}
    assert 1 <= kept["verifier"] < N_LONG, kept
    result = CliRunner().invoke(app, ["run", "-c", config, "--workers", "1"])
    assert result.exit_code == 0, result.output
    runs = lines(out)
    assert {run: len(rows) for run, rows in runs.items()} == {"verifier": N_LONG, "spec_decode-g3": N_LONG}
    # one worker has both CPUs, two had one each: the report will not average their latencies ...
    kinds = {row["worker"]["kind"] for row in read_lines(verifier)}
    assert {kind.rsplit(", ", 1)[1] for kind in kinds} == {"1 threads", "2 threads"}, kinds
    assert len({row["worker"]["session"] for row in read_lines(verifier)}) == 2  # the killed run and the resume
    refused = CliRunner().invoke(app, ["report", str(out)])
    assert refused.exit_code == 2 and refused.output.count("error:") == 1 and "Traceback" not in refused.output
    assert "2 kinds of device" in refused.output and "--mix-devices" in refused.output
    # ... unless told to, and then it says so
    mixed = CliRunner().invoke(app, ["report", str(out), "--mix-devices"])
    assert mixed.exit_code == 0, mixed.output
    assert "mixed devices" in mixed.output and f"| verifier | {N_LONG} |" in mixed.output
    figures = out.parent / f"{out.name}_figures"
    refused = CliRunner().invoke(app, ["plot", str(out), "--out", str(figures)])
    assert refused.exit_code == 2 and "2 kinds of device" in refused.output and not figures.exists()
    plotted = CliRunner().invoke(app, ["plot", str(out), "--out", str(figures), "--mix-devices"])
    assert plotted.exit_code == 0 and (figures / "quality_latency.png").exists(), plotted.output


def test_several_variants_in_one_command_each_get_their_folder(workspace, ray_address):
    base = workspace / "variants"
    variants = {"greedy": {"decoding": {"temperature": 0.0}}, "g2": {"decoding": {"draft_length": 2}}}
    config = make_config(workspace, base, task={"sample": 4}, variants=variants,
                         methods=[{"method": "verifier"}, {"method": "spec_decode"}])
    result = CliRunner().invoke(app, ["run", "-c", config, "--variant", "all", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert not base.exists()
    greedy, g2 = lines(workspace / "variants-greedy"), lines(workspace / "variants-g2")
    assert set(greedy) == {"verifier", "spec_decode-g3"} and set(g2) == {"verifier", "spec_decode-g2"}
    assert all(len(rows) == 4 for rows in [*greedy.values(), *g2.values()])
    assert [r["prediction"] for r in greedy["verifier"]] == [r["prediction"] for r in greedy["spec_decode-g3"]]
    for name, variant in (("greedy", "greedy"), ("g2", "g2")):
        manifest = json.loads((workspace / f"variants-{name}" / "manifest.json").read_text())
        assert manifest["config"]["variant"] == variant and len(manifest["workers"]) >= 1
    # the same without --workers: one after another, in this process
    config = make_config(workspace, workspace / "sequential", variants=variants, methods=[{"method": "verifier"}])
    result = CliRunner().invoke(app, ["run", "-c", config, "--variant", "g2", "--variant", "greedy", "--limit", "2"])
    assert result.exit_code == 0, result.output
    for name in ("g2", "greedy"):
        assert len(read_lines(workspace / f"sequential-{name}" / "examples" / "verifier.jsonl")) == 2
    one_folder = CliRunner().invoke(app, ["run", "-c", config, "--variant", "all", "--output", str(workspace / "x")])
    assert one_folder.exit_code == 2 and "--output" in one_folder.output


def test_workers_hide_the_results_folder_by_its_absolute_path(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    job = prepare(load_run_config(make_config(workspace, Path("relative-out"))), RunOptions())
    assert not job.out.is_absolute()
    spec = workers._worker_spec(job, "cpu")
    assert spec["hidden"] == str(workspace.resolve() / "relative-out")  # not resolved again on the worker


def error_lines(result) -> int:
    return sum(line.startswith("error:") for line in result.output.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_started_with_ray_start_is_joined_with_ray_address(workspace, tmp_path):
    """The cluster steps of docs/scaling.md on one machine: `ray start --head`, then `scb run --ray-address`."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port), "--node-ip-address",
                             "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in head.stdout:
            if "Ray runtime started" in line:
                break
        assert head.poll() is None, "ray start --head failed"
        out = tmp_path / "cluster"
        tokenless = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        stranger = scb_subprocess("run", "-c", make_config(workspace, out), "--workers", "2", "--ray-address",
                                  f"127.0.0.1:{port}", env=tokenless, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        _, errors = stranger.communicate(timeout=120)  # its own process: this one may hold a Ray connection
        assert stranger.returncode == 2 and errors.count("\nerror: ") + errors.startswith("error: ") == 1, errors
        assert "refused this client" in errors and "RAY_AUTH_MODE=token" in errors
        assert not out.exists()
        driver = scb_subprocess("run", "-c", make_config(workspace, out), "--workers", "2", "--limit", "3",
                                "--ray-address", f"127.0.0.1:{port}", env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output
        assert all(len(rows) == 3 for rows in lines(out).values())
        assert len(json.loads((out / "manifest.json").read_text())["workers"]) == 2
    finally:
        head.terminate()
        head.wait(timeout=60)


def test_ray_options_that_cannot_work_are_one_line_errors(workspace, tmp_path):
    out = tmp_path / "never"
    config = make_config(workspace, out)
    alone = CliRunner().invoke(app, ["run", "-c", config, "--ray-address", "127.0.0.1:6379"])
    assert alone.exit_code == 2 and "--ray-address needs --workers" in alone.output
    nowhere = CliRunner().invoke(app, ["run", "-c", config, "--workers", "2", "--ray-address",
                                       f"127.0.0.1:{_free_port()}"])
    assert nowhere.exit_code == 2 and nowhere.output.count("error:") == 1 and "nothing answers" in nowhere.output
    from_env = CliRunner().invoke(app, ["run", "-c", config, "--workers", "2"],
                                  env={"RAY_ADDRESS": f"127.0.0.1:{_free_port()}"})
    assert from_env.exit_code == 2 and "nothing answers at RAY_ADDRESS" in from_env.output
    assert "--ray-address" not in from_env.output
    no_variants = CliRunner().invoke(app, ["run", "-c", config, "--variant", "all"])
    assert no_variants.exit_code == 2 and "has no variants" in no_variants.output
    for count in ("0", "-2"):
        zero = CliRunner().invoke(app, ["run", "-c", config, "--workers", count])
        assert zero.exit_code == 2 and zero.stderr.strip() == f"error: --workers must be at least 1, got {count}"
    assert not out.exists()


def test_a_port_that_listens_but_is_not_ray_is_one_line_within_seconds(workspace, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 2)  # Ray's connection steps, each (5 s in a real run)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    thread = threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(16)], daemon=True)
    thread.start()
    out = tmp_path / "never"
    started = time.monotonic()
    try:
        result = CliRunner().invoke(app, ["run", "-c", make_config(workspace, out), "--workers", "2",
                                          "--ray-address", f"127.0.0.1:{listener.getsockname()[1]}"])
    finally:
        listener.close()
    assert time.monotonic() - started < 2 * cluster.PROBE_TIMEOUT_S * 4 + 30
    assert result.exit_code == 2 and error_lines(result) == 1, result.output
    assert "does not answer as a Ray cluster" in result.output and "token" not in result.output
    assert accepted and not out.exists()


def test_workers_import_the_configs_plugins(workspace, ray_address, tmp_path):
    """A rule registered by a plugin file, named by a relative path: each worker imports it (by its absolute path,
    from its own working folder) before it decodes."""
    from speccascade_bench import plugins
    from speccascade_bench.decoding import deferral

    plugin = tmp_path / "worker_rule.py"
    plugin.write_text("from speccascade_bench.decoding.deferral import deferral_rule\n\n\n"
                      "@deferral_rule('worker_never', alpha=(0.0, 1.0))\n"
                      "def worker_never(draft, verifier, alpha):\n"
                      "    return verifier.probs.amax(-1) < -1.0\n")
    out = workspace / "plugged"
    methods = [{"method": "verifier"}, {"method": "drafter"},
               {"method": "spec_cascade", "rule": "worker_never", "alpha": [0.5]}]
    try:
        config = make_config(workspace, out, methods=methods, plugins=[os.path.relpath(plugin)],
                             decoding={"temperature": 0.0})
        result = CliRunner().invoke(app, ["run", "-c", config, "--workers", "2", "--limit", "4"])
        assert result.exit_code == 0, result.output
        drafter = {row["example_id"]: row["prediction"] for row in read_lines(out / "examples" / "drafter.jsonl")}
        rows = read_lines(out / "examples" / "spec_cascade-worker_never-a0.5-g3.jsonl")
        assert len(rows) == 4 and all(row["prediction"] == drafter[row["example_id"]] for row in rows)  # no deferral
        assert {row["worker"]["host"] for row in rows} and all(row["deferred"] == 0 for row in rows)
    finally:
        deferral.RULES.pop("worker_never", None)
        plugins._loaded.clear()
