"""`scb run`: decode every selected example with every configured method run, timing each, and append
the results per example so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

from ..files import ResultsError, row_bytes
from ..models.loading import load_pair, resolve_device
from ..results.derived import write_derived
from ..results.folder import CALL_COSTS_FILE, LOCK_FILE, RunLock, check_output, clean, write_json_atomic
from ..results.manifest import check_resume, start_manifest
from ..results.rows import ExampleWriter, count_examples, examples_dir, read_run
from ..results.settings import MethodRun, RunConfig
from ..tasks.data import Example
from ..tasks.scoring import Scorer
from .plan import PROBE_EXAMPLES, Job, prepare
from .session import Session, device_info, worker_label
from .settings import Finisher, Progress, RunOptions

log = logging.getLogger(__name__)


def done_examples(job: Job) -> dict[str, set[int]]:
    """The examples each decoded method run already has in the (locked) results folder: what a resume skips.
    Read as `scb report` reads them (`results.rows.read_run`): rows of another run or conflicting rows are refused."""
    bound = row_bytes(job.config.task.max_row_mb)
    return {run.run_id: {row.example_id for row in read_run(examples_dir(job.out) / f"{run.run_id}.jsonl",
                                                                bound, keep=("example_id",))[0]}
            for run in job.decoded}


def remaining(job: Job, done: dict[str, set[int]]) -> list[tuple[Example, list[MethodRun]]]:
    """Each example that some method run has still to decode, with those runs, in the examples' order."""
    todo = []
    for example in job.examples:
        runs = [run for run in job.decoded if example.example_id not in done[run.run_id]]
        if runs:
            todo.append((example, runs))
    return todo


def run(config: RunConfig, options: RunOptions | None = None, progress: Progress | None = None) -> Path:
    """Decode, time and record; returns the results directory. Every input is checked before a model
    loads; finished examples are skipped on a re-run."""
    options = options or RunOptions()
    return run_job(prepare(config, options), options.fresh, progress)


def run_job(job: Job, fresh: bool = False, progress: Progress | None = None, last: Finisher | None = None) -> Path:
    """Decode, time and record a prepared run in this process; returns the results directory. `last` is
    called with the folder after every example is decoded, while the folder is still locked (`scb run`
    writes the summary there)."""
    models = job.config.models
    device = resolve_device(models.device)
    hardware = device_info(device)
    with results_folder(job.out, fresh):
        check_resume(job.out, job.resolved, hardware)
        todo = remaining(job, done_examples(job))
        pair = load_pair(models.drafter, models.verifier, models.tokenizer, models.device, models.dtype,
                         models.middle)
        session = Session(job.config, pair, job.decoded, device, job.examples[0],
                          worker_label(hardware, session=job.session), progress,
                          Scorer(job.config.task, job.allow_code_execution, hidden=(job.out.resolve(),)))
        write_results(start_manifest, job.out, job.resolved, hardware, **job.manifest_fields())
        if todo:
            costs = session.warm_up(job.examples, progress)
            write_results(write_call_costs, job.out, costs, len(job.examples[:PROBE_EXAMPLES]))
        _decode_all(session, job.out, todo, progress)
        finish(job, last)
    return job.out


def finish(job: Job, last: Finisher | None = None) -> None:
    """After every example is decoded: the derived runs' files, then `last` (the summary, in `scb run`)."""
    write_results(write_derived, job.out, job.derived)
    if last is not None:
        write_results(last, job.out)


def write_results(function, out: Path, *args, **kwargs):
    """Call a function that writes into the results folder; an OSError becomes a ResultsError."""
    try:
        return function(out, *args, **kwargs)
    except OSError as exc:
        raise ResultsError(f"cannot write the results to {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def results_folder(out: Path, fresh: bool):
    """Hold the results folder for a run: create it, lock it (results.RunLock) and, with `fresh`, delete
    what earlier runs wrote there. A folder this run created is removed again if the run fails before
    writing anything into it; an unwritable folder is a ResultsError."""
    created = not out.exists()
    lock = RunLock(out)
    try:
        write_results(lambda path: path.mkdir(parents=True, exist_ok=True), out)
        write_results(lambda path: lock.acquire(), out)
        if fresh and check_output(out):
            write_results(clean, out)
        yield
    except BaseException:
        if created and lock.held and {entry.name for entry in out.iterdir()} == {LOCK_FILE}:
            (out / LOCK_FILE).unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


def _decode_all(session: Session, out: Path, todo: list[tuple[Example, list[MethodRun]]],
                progress: Progress | None) -> None:
    """Decode, time and append the `todo` examples to the (locked) results folder, each line on disk before
    the next method run starts."""
    total = sum(len(runs) for _, runs in todo)
    finished = 0
    writers = {run.run_id: ExampleWriter(examples_dir(out) / f"{run.run_id}.jsonl") for run in session.runs}

    def write(row: dict) -> None:
        nonlocal finished
        writers[row["run_id"]].write(row)
        finished += 1
        if progress:
            progress(row["run_id"], finished, total)

    try:
        if progress and todo:
            progress(todo[0][1][0].run_id, 0, total)
        for example, runs in todo:
            session.decode_example(example, runs, write)
        if progress:
            progress("", total, total)
    finally:
        for writer in writers.values():
            writer.close()


def write_call_costs(out: Path, costs: dict[str, float], inputs: int) -> None:
    """Write measured call costs to CALL_COSTS_FILE (nothing when no draft length could be timed)."""
    if costs:
        write_json_atomic(out / CALL_COSTS_FILE, {"verify_call_cost": costs, "inputs": inputs})


@contextlib.contextmanager
def signals_as_interrupts(received: list[int]):
    """SIGINT and SIGTERM raise KeyboardInterrupt (recorded in `received`), so that either one stops a run
    through the same path: the progress display restores the terminal, finished examples stay on disk."""

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave the handlers alone
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted_note(jobs: list[Job], folders: list[Path]) -> str:
    """What an interrupted `scb run` says it kept: the examples finished in each folder (every run of the folder's
    job prepared, or none)."""
    run_ids = {job.out: [run.run_id for run in job.decoded] for job in jobs}
    kept = [f"{count_examples(folder, run_ids.get(folder)) if folder.is_dir() else 0} examples kept in {folder}"
            for folder in folders]
    return f"interrupted; {', '.join(kept)}; run the same command to resume"
