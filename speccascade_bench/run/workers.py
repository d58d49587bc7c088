"""`scb run --workers N`: the examples of one or more run configs decoded by N Ray workers.

The driver (this process) prepares every run as `run.local.run_job` does, holds each results folder's lock and
is the only process that writes into them: it computes what is left to do from the folders (`run.local.
done_examples`), sends one example at a time to an idle worker, and appends the rows the worker returns.
A worker is a Ray actor holding one GPU (or a share of the CPUs) and one loaded model pair; it decodes each
example it is sent with all of that example's method runs through `run.session.Session.decode_example`, exactly
as a single-process run does, after its own warm-up and call-cost probe. The random seed of an example
depends only on the example, so sampled outputs do not depend on which worker decoded them.

A worker that dies (its process, or its node) loses the example it held: the example goes back to the queue
and the worker is replaced; an example that keeps losing its worker, or workers that keep dying, end the
run with an error. Ray is imported only here, and this module only with `--workers`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..decoding.methods import refresh_rule_params
from ..files import ResultsError
from ..plugins import load_plugins
from ..results.folder import MANIFEST_FILE
from ..results.manifest import add_worker, check_resume, package_versions, start_manifest
from ..results.rows import ExampleWriter, examples_dir
from ..settings import ConfigError
from ..tasks.data import DataError, Example
from ..tasks.metrics import CODE_METRICS
from ..tasks.scoring import Scorer
from .cluster import WorkerError, check_reachable, import_ray, ray_connection
from .local import done_examples, finish, remaining, results_folder, write_call_costs, write_results
from .plan import PROBE_EXAMPLES, Job, check_sandbox
from .session import Session, device_info, worker_label
from .settings import Finisher, Progress

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often the driver looks up from waiting for results

START_TIMEOUT_S = 900.0  # the run fails when no worker has been up for this long

MAX_ATTEMPTS = 3  # an example whose worker dies this many times ends the run: it may be what kills them

MAX_OPEN_FILES = 128  # results files the driver keeps open at once


@dataclass
class _Item:
    """An example still to decode, with the method runs it lacks."""

    job: int
    example: Example
    runs: list
    attempts: int = 0


@dataclass
class _Slot:
    """One of the N workers: its actor, where it runs once it is up (`describe`), and the example it holds."""

    handle: Any = None
    info: dict | None = None
    item: _Item | None = None


@dataclass
class _State:
    """A run's bookkeeping on the driver: what is done, its open files, whether this command wrote its
    manifest entry and call costs yet."""

    job: Job
    done: dict[str, set[int]]
    writers: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    call_costs_written: bool = False


class ExampleWorker:
    """A Ray actor: one device and the model pair of the run it works on, set up on its first example of that
    run (pair loaded, `Session` warm-up and call-cost probe) and kept while it decodes the run's examples."""

    def __init__(self, device: str, threads: int | None):
        import ray
        import torch

        from ..models.loading import resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.hardware = device_info(self.device)
        gpus = ray.get_gpu_ids() if self.device.type == "cuda" else []
        self.label = worker_label(self.hardware, f"cuda:{gpus[0]}" if gpus else None)
        self._pair, self._pair_key, self._session, self._job = None, None, None, None

    def describe(self) -> dict:
        """Where this worker runs: host, process, device (GPU name and driver on CUDA), package versions."""
        return {"host": self.label["host"], "pid": os.getpid(), "device": self.label["device"],
                "kind": self.label["kind"], "hardware": self.hardware, "versions": package_versions()}

    def run(self, key: str, spec: dict, example: Example, runs: list) -> dict:
        """Decode one example of the run `key` with each of `runs`; returns its rows, and after setting up for
        the run, what the set-up measured (`setup`)."""
        setup = self._start(key, spec) if key != self._job else None
        return {"rows": self._session.decode_example(example, runs), "setup": setup}

    def _start(self, key: str, spec: dict) -> dict:
        from ..models.loading import load_pair

        config = spec["config"]
        models = config.models
        self._session = self._job = None
        load_plugins(config.file, config.plugins)  # what they register, this process must know too
        refresh_rule_params()
        if config.task.metric in CODE_METRICS and spec["allow_code_execution"]:
            check_sandbox(config, f"on the worker on {self.label['host']}")  # before its models load
        pair_key = repr(models) if models.cache == "dynamic" else None  # a static cache is sized per run
        if pair_key is None or pair_key != self._pair_key:
            self._pair = None
            self._pair = load_pair(models.drafter, models.verifier, models.tokenizer, models.device, models.dtype,
                                   models.middle)
        self._pair_key = pair_key
        started = time.perf_counter()
        scorer = Scorer(config.task, spec["allow_code_execution"], hidden=(Path(spec["hidden"]),))
        session = Session(config, self._pair, spec["runs"], self.device, spec["head"][0],
                          {**self.label, "session": spec["session"]}, scorer=scorer)
        costs = session.warm_up(spec["head"])
        self._session, self._job = session, key
        return {"verify_call_cost": costs, "setup_s": round(time.perf_counter() - started, 3)}


def run(jobs: list[Job], workers: int, address: str | None = None, fresh: bool = False,
        progress: Progress | None = None, verbose: bool = False, source: str = "--ray-address",
        last: Finisher | None = None) -> list[Path]:
    """Decode the prepared runs `jobs` on `workers` Ray workers, each into its own results folder, with the
    guarantees of a single-process run; returns the folders. `address` joins a running Ray cluster; without
    it a local Ray instance is started (and stopped at the end). A process already connected to Ray keeps
    its connection. Ray and the cluster's address are checked before any folder is touched."""
    import_ray()
    if address:
        check_reachable(address, source)
    with contextlib.ExitStack() as stack:
        states = []
        for job in jobs:
            stack.enter_context(results_folder(job.out, fresh))
            if check_resume(job.out, job.resolved, None):  # an existing folder: the resume is recorded now
                write_results(start_manifest, job.out, job.resolved, None, **job.manifest_fields())
            states.append(_State(job, done_examples(job)))
        items = [_Item(i, example, runs) for i, state in enumerate(states)
                 for example, runs in remaining(state.job, state.done)]
        if items:
            ray = stack.enter_context(ray_connection(address, verbose, source))
            try:
                _Pool(ray, states, workers, progress).drive(items)
            finally:
                for state in states:
                    for writer in state.writers.values():
                        writer.close()
        for state in states:
            finish(state.job, last)
    return [job.out for job in jobs]


class _Pool:
    """The N workers and the driver's loop: hand each idle worker the next example, write the rows that come
    back, replace workers that die."""

    def __init__(self, ray, states: list[_State], size: int, progress: Progress | None):
        from ray.exceptions import ObjectLostError, OutOfMemoryError, RayActorError, RayTaskError

        self.ray, self.states, self.progress = ray, states, progress
        self.lost_errors = (RayActorError, ObjectLostError, OutOfMemoryError)
        self.task_error = RayTaskError
        options, device, threads = _resources(ray, [s.job for s in states], size)
        self.actor_class = ray.remote(ExampleWorker).options(max_restarts=0, **options)
        self.actor_args = (device, threads)
        self.slots = [_Slot() for _ in range(size)]
        self.calls: dict[Any, tuple[_Slot, _Item | None]] = {}
        self.deaths, self.max_deaths = 0, 2 * size + 2
        self.specs = [ray.put(_worker_spec(s.job, device)) for s in states]
        names = [s.job.config.name for s in states]
        self.label = ", ".join(names) if len(names) <= 2 else f"{len(names)} runs"
        self.finished = self.total = 0

    def drive(self, items: list[_Item]) -> None:
        pending = collections.deque(items)
        self.total = sum(len(item.runs) for item in items)
        for slot in self.slots:
            self._start(slot)
        up_since = time.monotonic()
        self._report()
        try:
            while pending or any(slot.item for slot in self.slots):
                for slot in self.slots:
                    if slot.info and not slot.item and pending:
                        self._send(slot, pending.popleft())
                if any(slot.info for slot in self.slots):
                    up_since = time.monotonic()
                elif time.monotonic() - up_since > START_TIMEOUT_S:
                    raise WorkerError(f"no worker has been up for {START_TIMEOUT_S:.0f} s (does the Ray cluster "
                                      "have the resources they ask for?); run the same command to resume")
                ready, _ = self.ray.wait(list(self.calls), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    self._receive(ref, pending)
        finally:
            for slot in self.slots:
                with contextlib.suppress(Exception):
                    self.ray.kill(slot.handle, no_restart=True)

    def _start(self, slot: _Slot) -> None:
        slot.handle, slot.info, slot.item = self.actor_class.remote(*self.actor_args), None, None
        self.calls[slot.handle.describe.remote()] = (slot, None)

    def _send(self, slot: _Slot, item: _Item) -> None:
        slot.item = item
        state = self.states[item.job]
        ref = slot.handle.run.remote(str(state.job.out), self.specs[item.job], item.example, item.runs)
        self.calls[ref] = (slot, item)

    def _receive(self, ref, pending: collections.deque) -> None:
        slot, item = self.calls.pop(ref)
        try:
            value = self.ray.get(ref)
        except self.task_error as exc:  # the worker's code raised: the run fails as it would in one process
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ConfigError | DataError | ResultsError | OSError) or _load_error(cause):
                raise cause from None
            raise
        except self.lost_errors as exc:
            self._lost(slot, item, exc, pending)
            return
        if item is None:
            slot.info = value
            log.info("worker up: %s pid %s on %s (%s)", value["host"], value["pid"], value["device"], value["kind"])
            self._report()
            return
        slot.item = None
        state = self.states[item.job]
        if value["setup"] is not None:
            self._set_up(state, slot.info, value["setup"])
        for row in value["rows"]:
            run_id = row["run_id"]
            if row["example_id"] in state.done[run_id]:
                continue  # an example a lost worker may have finished after all
            self._writer(state, run_id).write(row)
            state.done[run_id].add(row["example_id"])
            self.finished += 1
        self._report()

    def _lost(self, slot: _Slot, item: _Item | None, exc: Exception, pending: collections.deque) -> None:
        """A worker died (or its node, or its result): requeue its example and replace it."""
        reason = " ".join(str(exc).split())[:300]
        where = f"{slot.info['host']} pid {slot.info['pid']}" if slot.info else "a starting worker"
        self.deaths += 1
        if item is not None:
            item.attempts += 1
            if item.attempts >= MAX_ATTEMPTS:
                raise WorkerError(f"example {item.example.example_id} of {self.states[item.job].job.config.name} "
                                  f"lost its worker {item.attempts} times (last: {reason}); run the same command "
                                  "to resume")
            pending.appendleft(item)
        if self.deaths > self.max_deaths:
            raise WorkerError(f"workers died {self.deaths} times (last, {where}: {reason}); run the same command "
                              "to resume")
        log.warning("worker %s lost (%s); replacing it", where, reason)
        with contextlib.suppress(Exception):
            self.ray.kill(slot.handle, no_restart=True)
        self._start(slot)
        self._report()

    def _set_up(self, state: _State, info: dict, setup: dict) -> None:
        """A worker set up for a run: the run's manifest (created with this worker's hardware if the folder is
        new) records it, and the first worker's call costs of this command go to call_costs.json."""
        job = state.job
        if not (job.out / MANIFEST_FILE).exists():
            write_results(start_manifest, job.out, job.resolved, info["hardware"], **job.manifest_fields())
        entry = {key: info[key] for key in ("host", "pid", "device", "kind", "hardware", "versions")}
        write_results(add_worker, job.out, {**entry, **setup})
        if not state.call_costs_written:
            write_results(write_call_costs, job.out, setup["verify_call_cost"],
                          len(job.examples[:PROBE_EXAMPLES]))
            state.call_costs_written = True

    def _writer(self, state: _State, run_id: str) -> ExampleWriter:
        """The run's results file, opened for appending; the least recently used are closed beyond
        MAX_OPEN_FILES in all."""
        writer = state.writers.pop(run_id, None)
        if writer is None:
            writer = ExampleWriter(examples_dir(state.job.out) / f"{run_id}.jsonl")
            open_files = [(s, key) for s in self.states for key in s.writers]
            if len(open_files) >= MAX_OPEN_FILES:
                oldest_state, oldest = open_files[0]
                oldest_state.writers.pop(oldest).close()
        state.writers[run_id] = writer
        return writer

    def _report(self) -> None:
        if self.progress:
            up = sum(slot.info is not None for slot in self.slots)
            self.progress(f"{self.label} ({up}/{len(self.slots)} workers)", self.finished, self.total)


def _load_error(exc) -> bool:
    from ..models.loading import ModelLoadError

    return isinstance(exc, ModelLoadError)


def _resources(ray, jobs: list[Job], size: int) -> tuple[dict, str, int | None]:
    """What each worker asks Ray for, its device and its torch threads: one GPU when the runs are on CUDA
    (`models.device` cuda, or auto on a cluster with GPUs), else an equal share of the cluster's CPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 1)
    devices = {"cuda" if job.config.models.device == "cuda" or (job.config.models.device == "auto" and gpus)
               else "cpu" for job in jobs}
    if len(devices) > 1:
        raise WorkerError("the runs name different devices (cpu and cuda); run them in separate commands")
    device = devices.pop()
    if device == "cuda":
        if not gpus:
            raise WorkerError("models.device is cuda but the Ray cluster has no GPU")
        if size > gpus:
            log.warning("%d workers but %d GPUs: the others start when GPUs free up", size, int(gpus))
        return {"num_gpus": 1, "num_cpus": 1}, "cuda", None
    threads = max(1, int(cpus // size))
    return {"num_cpus": threads}, "cpu", threads


def _worker_spec(job: Job, device: str) -> dict:
    """What a worker needs to decode the run `job`: the config (`_for_workers`), the method runs, the examples
    it warms up on, whether code may run, the run's `session` (its rows record it), and the results folder that
    the sandbox hides, by its absolute path (a worker's working directory is not the command's, and on a cluster
    not even on the same machine)."""
    return {"config": _for_workers(job, device), "runs": job.decoded, "allow_code_execution": job.allow_code_execution,
            "session": job.session, "hidden": str(job.out.resolve()),
            "head": job.examples[: max(job.config.timing.warmup, PROBE_EXAMPLES, 1)]}


def _for_workers(job: Job, device: str):
    """The config the workers load: its device the pool's, and its local model, tokenizer and plugin paths absolute
    (a worker's working directory is not the command's; on a cluster, each node needs them at these paths)."""
    models = job.config.models

    def absolute(name: str | None) -> str | None:
        return str(Path(name).expanduser().resolve()) if name and Path(name).expanduser().exists() else name

    models = replace(models, device=device, drafter=absolute(models.drafter), verifier=absolute(models.verifier),
                     tokenizer=absolute(models.tokenizer))
    plugins = tuple(absolute(entry) if entry.endswith(".py") else entry for entry in job.config.plugins)
    return replace(job.config, models=models, plugins=plugins)
