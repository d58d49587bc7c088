"""The results directory: its files, how they are written, and the summary derived from them.

    manifest.json           resolved config, versions, device, dtype, git commit, start time (and the Ray
                            workers of a distributed run)
    examples/<run_id>.jsonl one line per example and method run, appended and flushed as it finishes; its
                            `worker` says where it ran
    call_costs.json         what a verifier call over gamma + 1 positions costs in one-token steps (r), per gamma
    summary.csv             one row per method run (written by `scb run` and `scb report`)
    report.md, quality_*.png/pdf   written by `scb report` and `scb plot`
    .scb.lock               held by the run writing into the folder

Guarantees: a folder is adopted only if it is empty or holds a readable manifest; one run at a time
writes into it (an exclusive lock); a resumed run must match the manifest's task, models, decoding,
timing and hardware (a distributed run checks no hardware: its rows name their device, and `scb report`
refuses to mix kinds of device); `--fresh` deletes only the files listed above; the manifest is replaced
atomically; no file is written or appended to through a link (`open_for_writing`); every row must name
its file's run, and an example twice only with the same content (`read_run`).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import json
import math
import os
import platform
import stat
import statistics
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

import pandas as pd

from .config import RECORDED_SECTIONS, ConfigError, RunConfig, plain, recorded_section
from .methods import DRAFTER, METHODS, PARAMETERS, REFERENCE
from .metrics import BootstrapInterval, corpus_score, paired_bootstrap
from .tradeoff import acceptance_probability, drafter_calls_per_round, leviathan_speedup, per_call_cost

EXAMPLE_FIELDS = (
    "example_id", "run_id", "method", "params", "prediction", "reference", "output_tokens", "input_tokens",
    "latency_s", "latency_trials_s", "drafter_calls", "verifier_calls", "drafted", "accepted", "rounds",
    "accepted_per_round", "rejections", "deferred", "confidence", "worker", "references", "shots", "score",
)  # and `verdict`, the code sandbox's, in the rows of a pass_at_1 task
SCORED_METRICS = ("exact_match", "f1", "pass_at_1")  # their quality is the mean of the rows' `score`
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
MIN_BOOTSTRAP_EXAMPLES = 10  # fewer examples give no interval: a resample of 2 examples says nothing
SUMMARY_COLUMNS = (
    "run_id", "method", *PARAMETERS, "temperature", "n", "metric",
    "quality", "quality_vs_verifier", "quality_ci_low", "quality_ci_high", "latency_mean_s", "latency_p50_s",
    "latency_std_s", "trial_cv", "relative_latency", "speedup",
    "acceptance_rate", "acceptance_prob", "tokens_per_round", "deferral_rate", "output_tokens_mean",
    "drafter_calls_mean", "verifier_calls_mean", "cost_ratio", "predicted_speedup", "verify_cost",
    "predicted_speedup_at_r", "relative_cost",
)
CALL_COSTS_FILE = "call_costs.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".scb.lock"
FORMAT = "speccascade-bench results"
# Every file the suite writes into a results folder (besides examples/*.jsonl): what --fresh may delete.
WRITTEN_FILES = (MANIFEST_FILE, CALL_COSTS_FILE, "summary.csv", "report.md", "quality_latency.png",
                 "quality_latency.pdf", "quality_cost.png", "quality_cost.pdf")
# A resumed run must match the folder's manifest in these config sections and hardware fields.
RESUME_SECTIONS = ("task", "models", "decoding", "timing")
RESUME_HARDWARE = ("device", "cpu", "gpu", "torch_threads")


class ResultsError(RuntimeError):
    """A results directory is missing files, is damaged, is in use, or holds another run."""


def examples_dir(results: Path) -> Path:
    return results / "examples"


def example_files(results: Path) -> list[Path]:
    """The results files of the folder's method runs (examples/*.jsonl), in name order; [] without an
    examples/ folder. An examples/ folder that cannot be listed is an OSError, never an empty list."""
    folder = examples_dir(results)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == ".jsonl")


def _link_error(path: Path) -> ResultsError:
    return ResultsError(f"{path} is a link, which this suite never writes; move it aside")


def refuse_link(path: Path) -> Path:
    """`path`, unless it is a link (a ResultsError naming it): no file is written through a link."""
    if path.is_symlink():
        raise _link_error(path)
    return path


def open_for_writing(path: Path, flags: int) -> int:
    """A descriptor of the regular file `path` opened with `flags` (os.O_WRONLY, O_CREAT, O_TRUNC, O_APPEND...)
    and never through a link: a symbolic link (O_NOFOLLOW), a file with other hard links, or a FIFO, device
    or socket at `path` is a ResultsError naming it, and nothing is written or truncated."""
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise ResultsError(f"{path} is not a regular file; move it aside") from None
        raise
    found = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(found.st_mode) else
               f"has {found.st_nlink - 1} other hard link(s), which this suite never writes through"
               if found.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise ResultsError(f"{path} {problem}; move it aside")
    if flags & os.O_TRUNC:
        os.ftruncate(fd, 0)
    return fd


def write_file(path: Path, data: str | bytes, sync: bool = False) -> None:
    """Create or overwrite `path` with `data` (text as UTF-8), never through a link (`open_for_writing`);
    with `sync`, force it to disk."""
    with os.fdopen(open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def write_atomic(path: Path, data: str, tmp: Path | None = None) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never a torn one: write a
    temporary file beside it (`tmp`, default `.<name>.tmp`), force it to disk, rename it over the old one,
    force the rename. Neither name may be a link (a ResultsError naming it, before anything is written)."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    refuse_link(path)
    write_file(tmp, data, sync=True)
    refuse_link(path)
    tmp.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def note(message: str) -> None:
    """One `note:` line on stderr: something the reader of a result should know, which stops nothing."""
    print(f"note: {' '.join(message.split())}", file=sys.stderr)


def read_lines(path: Path) -> list[dict]:
    """The complete lines of a results file; a torn last line (an interrupted write) is ignored. A complete
    line that is not an example record is a ResultsError naming the file and the line."""
    return [row for _, row in _numbered_records(path)]


def _numbered_records(path: Path):
    """(line number, record) for each complete line of a results file (see `read_lines`)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # torn write: the example will be decoded again
            row, problem = _parse_record(line)
            if problem:
                raise ResultsError(f"{path}: line {number} {problem}; delete that line (its example is decoded "
                                   "again) or move the file aside")
            yield number, row


def read_run(path: Path) -> tuple[list[dict], int]:
    """A method run's rows from its results file `examples/<run_id>.jsonl`, one per example in example order,
    and how many exact duplicate rows were dropped. Every row must name the file's run (`run_id`, and as
    `method` the run id's first part) and may repeat an example only with the same content: otherwise a
    ResultsError names the file, the line and the field."""
    run_id = path.stem
    expected = {"run_id": run_id, "method": run_id.split("-")[0]}
    first: dict[int, tuple[int, dict]] = {}
    repeated = 0
    for number, row in _numbered_records(path):
        for field, value in expected.items():
            if row.get(field) != value:
                raise ResultsError(f"{path}: line {number} has {field} {_shown(row.get(field))}, but the file is "
                                   f"named for {value!r}; move the line to its own run's file or delete it")
        seen = first.setdefault(row["example_id"], (number, row))
        if seen[1] is row:
            continue
        if _canonical(seen[1]) != _canonical(row):
            raise ResultsError(f"{path}: line {number} has example_id {row['example_id']} of line {seen[0]} with "
                               "other content; delete the wrong one of the two lines")
        repeated += 1
    return [first[i][1] for i in sorted(first)], repeated


def _shown(value) -> str:
    """A value of a record, short enough for a one-line error."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _parse_record(line: str) -> tuple[dict, str | None]:
    """An example record from one line, and why the line is not one (None when it is)."""
    try:
        row = json.loads(line)
    except ValueError:
        return {}, "is not JSON"
    except RecursionError:
        return {}, "is nested too deeply"
    if not isinstance(row, dict):
        return {}, "is not a JSON object"
    if not isinstance(row.get("example_id"), int) or isinstance(row.get("example_id"), bool):
        return row, "has no integer example_id"
    if row["example_id"] < 0:  # a row index of the task's data
        return row, f"has a negative example_id ({row['example_id']})"
    if not isinstance(row.get("params"), dict) or not isinstance(row.get("method"), str):
        return row, "has no method and params"
    for name in RECORD_NUMBERS:
        value = row.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            return row, f"has no finite {name}"
    for name in ("prediction", "reference"):
        if not isinstance(row.get(name), str):
            return row, f"has no text {name}"
    score = row.get("score")
    if "score" in row and (not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 100):
        return row, "has a score that is not a number from 0 to 100"
    return row, None


# The numbers of an example record that the summary reads: each must be present, finite and >= 0.
RECORD_NUMBERS = ("latency_s", "output_tokens", "drafter_calls", "verifier_calls", "drafted", "accepted", "rounds",
                  "deferred")


def repair(path: Path) -> None:
    """Cut a torn last line, so that appending starts on a fresh line (never through a link)."""
    if not path.exists() and not path.is_symlink():
        return
    with os.fdopen(open_for_writing(path, os.O_RDWR), "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


class ExampleWriter:
    """Appends one JSON line per finished example and forces it to disk."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            repair(path)
            fd = open_for_writing(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, row: dict) -> None:
        try:
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise ResultsError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._file.close()


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON, atomically and never through a link (`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_manifest(results: Path) -> dict:
    """The folder's manifest; a ResultsError saying how to recover when it is missing, empty or damaged."""
    path = results / MANIFEST_FILE
    if results.exists() and not results.is_dir():
        raise ResultsError(f"{results} is a file, not a results directory")
    if not path.is_file():
        raise ResultsError(f"{results} is not a results directory: {MANIFEST_FILE} not found")
    try:
        manifest = _read_json(path)
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path} is unreadable ({' '.join(str(exc).split())[:120]}); restore it from a copy, or "
                           "move the folder aside and run again into a new one") from None
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("task", "decoding")):
        raise ResultsError(f"{path} is not a manifest of this suite (no config); restore it from a copy, or move "
                           "the folder aside and run again into a new one")
    try:
        if not isinstance(config.get("name"), str):
            raise ConfigError(path, "config.name", "is missing")
        for key in RECORDED_SECTIONS:
            config[key] = recorded_section(path, key, config.get(key))
    except ConfigError as exc:
        raise ResultsError(f"{exc}; restore the manifest from a copy, or move the folder aside and run again into "
                           "a new one") from None
    return manifest


def _read_json(path: Path):
    """A JSON file's value; a ValueError when it is not JSON or is nested too deeply to parse."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_call_costs(results: Path) -> dict[str, float]:
    """r per draft length from CALL_COSTS_FILE ({} when the run measured none); a ResultsError when damaged."""
    path = results / CALL_COSTS_FILE
    if not path.exists():
        return {}
    try:
        costs = _read_json(path)["verify_call_cost"]
        if not isinstance(costs, dict):
            raise TypeError
        return {str(gamma): float(value) for gamma, value in costs.items()}
    except (OSError, ValueError, TypeError, KeyError):
        raise ResultsError(f"{path} is damaged; delete it (the summary then goes without r) or run again with "
                           "--fresh") from None


def check_output(out: Path) -> bool:
    """Whether `out` already holds results. Refuses (ResultsError) a path this suite must not write into: a
    file, or a folder that is neither empty nor a results folder with a readable manifest."""
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out} is a file; give --output a folder")
    if not out.exists():
        return False
    entries = {entry.name for entry in out.iterdir()}
    if not entries - {LOCK_FILE}:
        return False
    if MANIFEST_FILE not in entries:
        if "examples" in entries:
            raise ResultsError(f"{out} holds results but no {MANIFEST_FILE}; restore it from a copy, or move the "
                               "folder aside and run again into a new one")
        raise ResultsError(f"{out} exists and is not a results folder of this suite; choose another --output "
                           "(nothing was written)")
    folder = examples_dir(out)
    if folder.is_symlink() or folder.exists() and not folder.is_dir():
        raise ResultsError(f"{folder} is not a folder of this suite (a link or a file); move it aside")
    for path in written_paths(out):
        if path.is_symlink():
            raise _link_error(path)
        if path.exists() and not path.is_file():
            raise ResultsError(f"{path} is not a regular file, which this suite never writes; move it aside")
        if path.is_file() and path.stat().st_nlink > 1:
            raise ResultsError(f"{path} has {path.stat().st_nlink - 1} other hard link(s), which this suite never "
                               "writes through; move it aside")
    read_manifest(out)
    return True


def written_paths(out: Path) -> list[Path]:
    """Every path of a results folder that `scb run` may write, append to or delete (WRITTEN_FILES and their
    temporary files, the lock, examples/*.jsonl and examples/*.tmp) that is there now."""
    names = (LOCK_FILE, *WRITTEN_FILES, *(f".{name}.tmp" for name in WRITTEN_FILES))
    paths = [out / name for name in names]
    folder = examples_dir(out)
    if folder.is_dir() and not folder.is_symlink():
        paths += sorted(path for path in folder.iterdir() if path.suffix in (".jsonl", ".tmp"))
    return [path for path in paths if path.is_symlink() or path.exists()]


def clean(out: Path) -> int:
    """Delete what this suite wrote into a results folder (WRITTEN_FILES and examples/*.jsonl) and nothing
    else, the manifest last (a failed clean leaves a folder that is still a results folder); returns how
    many files were deleted. The folder must pass `check_output`: no link is followed."""
    deleted = 0
    folder = examples_dir(out)
    if folder.is_dir() and not folder.is_symlink():
        for path in folder.iterdir():
            if path.is_file() and not path.is_symlink() and path.suffix in (".jsonl", ".tmp"):
                path.unlink()
                deleted += 1
        if not any(folder.iterdir()):
            folder.rmdir()
    for name in sorted(WRITTEN_FILES, key=lambda name: name == MANIFEST_FILE):
        path = out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            deleted += 1
    return deleted


class RunLock:
    """An exclusive lock on a results folder for the lifetime of one run (flock on LOCK_FILE, which holds
    the owner's pid). The kernel releases it when the process ends, however it ends."""

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ResultsError(f"{self.path} is a link, which this suite never writes; move it aside") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = self.path.read_text().strip() or "unknown"
            raise ResultsError(f"{self.path.parent} is in use by another scb run (pid {holder}); wait for it to "
                               "finish or give another --output") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (deleting it would race a waiting run)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("speccascade-bench", "torch", "transformers", "datasets", "sacrebleu", "rouge-score"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def manifest_config(config: RunConfig) -> dict:
    """The run's config as its manifest records it; a local dataset file also by its size and SHA-256, so
    that a resume notices when the file at that path has changed."""
    resolved = {
        "name": config.name, "file": config.file, "variant": config.variant,
        "task": plain(config.task), "models": plain(config.models),
        "decoding": plain(config.decoding), "timing": plain(config.timing),
        "methods": [{"run_id": r.run_id, "method": r.method, "params": r.params} for r in config.methods],
    }
    if config.task.is_local:
        resolved["data"] = data_fingerprint(Path(config.task.dataset).expanduser())
    fewshot = config.task.fewshot
    if fewshot is not None and fewshot.n and fewshot.is_local:
        resolved["data_shots"] = data_fingerprint(Path(fewshot.dataset).expanduser())
    return resolved


def data_fingerprint(path: Path) -> dict:
    """A local data file's size and SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def start_manifest(out: Path, resolved: dict, hardware: dict | None, **fields) -> None:
    """Write a new run's manifest, or check a resumed run against the folder's (`check_resume`) and record
    the resume. `resolved` is the run's config as the manifest stores it; `fields` are further entries.
    `hardware` None (a distributed run) checks no hardware; a new manifest needs it."""
    path = out / MANIFEST_FILE
    if not path.exists():
        if hardware is None:
            raise ValueError("a new manifest needs the hardware")
        write_json_atomic(path, {"format": FORMAT, "config": resolved, "hardware": hardware,
                                 "versions": package_versions(), "git_commit": git_commit(), "started_at": _now(),
                                 **fields})
        return
    previous = check_resume(out, resolved, hardware)
    previous.setdefault("resumed_at", []).append(_now())
    previous["config"]["methods"] = resolved["methods"]
    write_json_atomic(path, previous)


def _comparable(section: str, values: dict) -> dict:
    """A config section as a resume compares it (the manifest's already completed by `read_manifest` with
    the defaults of keys added since it was recorded): without the models' `device` setting, which the
    hardware check covers (`auto` and `cpu` on the same CPU are the same measurement)."""
    return {k: v for k, v in values.items() if not (section == "models" and k == "device")}


def check_resume(out: Path, resolved: dict, hardware: dict | None) -> dict:
    """The folder's manifest, after checking that a run with config `resolved` on `hardware` may add to it:
    the same task, models, decoding and timing, on the same device, CPU, GPU and thread count (no hardware
    check when `hardware` is None: a distributed run's rows name their device, see `device_kinds`)."""
    if not (out / MANIFEST_FILE).exists():
        return {}
    previous = read_manifest(out)
    old = previous["config"]
    missing = []
    if hardware is not None and not isinstance(previous.get("hardware"), dict):
        missing.append("hardware")
    if missing:
        raise ResultsError(f"{out / MANIFEST_FILE} lacks its {', '.join(missing)} record, so a resume cannot be "
                           "checked; restore it from a copy, or move the folder aside")
    differ = [k for k in RESUME_SECTIONS if _comparable(k, old[k]) != _comparable(k, resolved[k])]
    changed = [k for k in ("data", "data_shots") if old.get(k) is not None and old.get(k) != resolved.get(k)]
    if changed:
        task = resolved["task"]
        path = task["dataset"] if changed[0] == "data" else (task.get("fewshot") or {}).get("dataset")
        raise ResultsError(f"{out} holds results of another version of the data file {path} "
                           "(its size or SHA-256 changed); use --fresh to start over or --output for another folder")
    if differ:
        raise ResultsError(f"{out} holds results of another {', '.join(differ)} configuration; use --fresh to "
                           "start over or --output for another folder")
    old_hw = previous.get("hardware", {})
    moved = [k for k in RESUME_HARDWARE if hardware is not None and k in old_hw and old_hw.get(k) != hardware.get(k)]
    if moved:
        change = ", ".join(f"{k} {old_hw.get(k)} -> {hardware.get(k)}" for k in moved)
        raise ResultsError(f"{out} was measured on other hardware ({change}); latencies would mix: use "
                           "--output for another folder, or --fresh to start over")
    return previous


def add_worker(out: Path, worker: dict) -> None:
    """Record a worker of a distributed run (host, pid, device, versions, call costs) in the manifest."""
    manifest = read_manifest(out)
    manifest.setdefault("workers", []).append({**worker, "started_at": _now()})
    write_json_atomic(out / MANIFEST_FILE, manifest)


def device_kind(hardware: dict) -> str:
    """The kind of device a latency was measured on, as far as latencies may be compared: the GPU model on
    CUDA; on a CPU, the processor and the thread count."""
    if hardware.get("gpu"):
        return str(hardware["gpu"])
    return f"{hardware.get('cpu') or 'unknown'} CPU, {hardware.get('torch_threads')} threads"


def device_kinds(results: Path) -> Counter:
    """How many example lines ran on each kind of device: the rows' `worker` kind, or for rows recorded
    without one, the kind of the manifest's hardware."""
    default = device_kind(read_manifest(results).get("hardware", {}))
    kinds = Counter()
    for path in example_files(results):
        for row in read_run(path)[0]:
            worker = row.get("worker")
            kinds[worker.get("kind", default) if isinstance(worker, dict) else default] += 1
    return kinds


def check_devices(results: Path, mix: bool = False) -> Counter:
    """`device_kinds`, refusing (ResultsError) examples that ran on several kinds unless `mix`: their
    latencies would be averaged together."""
    kinds = device_kinds(results)
    if len(kinds) > 1 and not mix:
        listed = ", ".join(f"{kind}: {n} lines" for kind, n in kinds.most_common())
        raise ResultsError(f"{results}: examples ran on {len(kinds)} kinds of device ({listed}); their latencies "
                           "would mix: pass --mix-devices to report them together, or rerun one kind's examples "
                           "into another folder")
    return kinds


def count_examples(out: Path, run_ids=None) -> int:
    """How many distinct examples every method run has finished: the examples found in the results file of
    every run of `run_ids` (default: of every results file in the folder). What an interrupted run keeps, so
    it never fails: a line that is not a record is not counted, and an unreadable folder counts 0."""
    folder = examples_dir(out)
    if run_ids is None:
        try:
            run_ids = [path.stem for path in example_files(out)]
        except OSError:
            return 0
    shared = None
    for run_id in run_ids:
        ids = _finished_ids(folder / f"{run_id}.jsonl")
        shared = ids if shared is None else shared & ids
    return len(shared or ())


def _finished_ids(path: Path) -> set[int]:
    """The example ids of a results file's complete lines that are records (see `count_examples`)."""
    ids = set()
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                row, problem = _parse_record(line) if line.endswith("\n") else ({}, "torn")
                if not problem:
                    ids.add(row["example_id"])
    except OSError:
        return set()
    return ids


def load_examples(results: Path) -> dict[str, list[dict]]:
    """Every method run's rows by run_id (`read_run`: checked against their file, one per example); a `note`
    for exact duplicate rows, a ResultsError when the folder holds no example line at all."""
    folder = examples_dir(results)
    if not folder.is_dir():
        raise ResultsError(f"{results} has no examples/ folder")
    runs = {}
    for path in example_files(results):
        rows, repeated = read_run(path)
        if repeated:
            note(f"{path}: {repeated} exact duplicate rows ignored")
        if rows:
            runs[path.stem] = rows
    if not runs:
        raise ResultsError(f"{folder}: no example lines (no results file, or only empty ones); nothing to summarise "
                           "(run `scb run` first)")
    return runs


def _acceptance_prob(rows: list[dict]) -> float:
    """`acceptance_probability` over a run's rows; NaN for results recorded without `rejections`."""
    if any("rejections" not in row for row in rows):
        return math.nan
    return acceptance_probability(sum(row["accepted"] for row in rows), sum(row["rejections"] for row in rows))


def _trial_cv(rows: list[dict]) -> float:
    """The spread of repeated timings: the mean over examples of the standard deviation of an example's
    timed trials over their mean (NaN with one trial per example, or for derived runs)."""
    spreads = []
    for row in rows:
        trials = row.get("latency_trials_s") or []
        if len(trials) > 1:
            mean = sum(trials) / len(trials)
            spreads.append(statistics.pstdev(trials) / mean if mean > 0 else math.nan)
    return _mean(spreads) if spreads else math.nan


def seq_cascade_rows(drafter: list[dict], verifier: list[dict], rate: float, run_id: str,
                     params: dict) -> list[dict]:
    """Sequence-level Chow cascade at a deferral rate, from the drafter's and verifier's outputs: the
    `rate` fraction of examples with the lowest drafter confidence are deferred. Latency of a deferred
    example is the drafter's plus the verifier's."""
    by_id = {row["example_id"]: row for row in verifier}
    common = [row for row in drafter if row["example_id"] in by_id]
    order = sorted(common, key=lambda row: (row["confidence"], row["example_id"]))
    deferred_ids = {row["example_id"] for row in order[: round(rate * len(order))]}
    rows = []
    for draft in common:
        deferred = draft["example_id"] in deferred_ids
        chosen = by_id[draft["example_id"]] if deferred else draft
        other = by_id[draft["example_id"]]
        rows.append({
            **chosen,
            "run_id": run_id, "method": "seq_cascade", "params": params,
            "latency_s": draft["latency_s"] + (other["latency_s"] if deferred else 0.0),
            "latency_trials_s": None,
            "drafter_calls": draft["drafter_calls"],
            "verifier_calls": other["verifier_calls"] if deferred else 0,
            "deferred": float(chosen["output_tokens"]) if deferred else 0.0,
            "confidence": draft["confidence"],
        })
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def shared_examples(runs: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], int]:
    """Every run's rows restricted to the examples that all runs recorded (so that qualities and latencies
    are compared on the same examples, whatever was interrupted or limited), and how many recorded
    examples that leaves out."""
    if not runs:
        return runs, 0
    shared = set.intersection(*({row["example_id"] for row in rows} for rows in runs.values()))
    kept = {run_id: [row for row in rows if row["example_id"] in shared] for run_id, rows in runs.items()}
    left_out = sum(len(rows) for rows in runs.values()) - sum(len(rows) for rows in kept.values())
    return {run_id: rows for run_id, rows in kept.items() if rows}, left_out


def summarize(results: Path) -> pd.DataFrame:
    """One row per method run, from the results files only, over the examples every run recorded
    (`shared_examples`; `frame.attrs["unshared_rows"]` counts the rows left out)."""
    manifest = read_manifest(results)
    metric = manifest["config"]["task"]["metric"]
    temperature = manifest["config"]["decoding"]["temperature"]
    runs, unshared = shared_examples(load_examples(results))
    verify_costs = read_call_costs(results)
    verifier = {row["example_id"]: row["latency_s"] for row in runs.get(REFERENCE, [])}
    step_cost = {}
    for method, role in ((DRAFTER, "drafter"), (REFERENCE, "verifier")):  # the one-model runs give per-call costs
        rows = runs.get(method, [])
        step_cost[role] = per_call_cost([row["latency_s"] for row in rows], [row[f"{role}_calls"] for row in rows])
    cost_ratio = step_cost["drafter"] / step_cost["verifier"]
    verifier_cost = _mean(row["verifier_calls"] for row in runs.get(REFERENCE, [])) * step_cost["verifier"]
    records = []
    for run_id, rows in runs.items():
        params = rows[0]["params"]
        latencies = pd.Series([row["latency_s"] for row in rows])
        common = [row for row in rows if row["example_id"] in verifier]
        relative = (_mean(r["latency_s"] for r in common) / _mean(verifier[r["example_id"]] for r in common)
                    if common else math.nan)
        drafted = sum(row["drafted"] for row in rows)
        accepted = sum(row["accepted"] for row in rows)
        n_rounds = sum(row["rounds"] for row in rows)
        tokens = sum(row["output_tokens"] for row in rows)
        acceptance = accepted / drafted if drafted else math.nan
        acceptance_prob = _acceptance_prob(rows)
        gamma = params.get("draft_length")
        predicted = predicted_at_r = math.nan
        verify_cost = verify_costs.get(str(gamma), math.nan) if gamma else math.nan
        if gamma and drafted and not math.isnan(cost_ratio) and not math.isnan(acceptance_prob):
            calls = drafter_calls_per_round(params, gamma)
            predicted = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls)
            predicted_at_r = leviathan_speedup(acceptance_prob, gamma, cost_ratio, calls, verify_cost)
        records.append({
            "run_id": run_id,
            "method": rows[0]["method"],
            **{name: params.get(name) for name in PARAMETERS},
            "temperature": temperature,
            "n": len(rows),
            "metric": metric,
            "quality": quality(results, metric, rows),
            "latency_mean_s": latencies.mean(),
            "latency_p50_s": latencies.median(),
            "latency_std_s": latencies.std(ddof=0),
            "trial_cv": _trial_cv(rows),
            "relative_latency": relative,
            "speedup": 1.0 / relative if relative else math.nan,
            "acceptance_rate": acceptance,
            "acceptance_prob": acceptance_prob,
            "tokens_per_round": tokens / n_rounds if n_rounds else math.nan,
            "deferral_rate": sum(row["deferred"] for row in rows) / tokens if tokens else math.nan,
            "output_tokens_mean": tokens / len(rows),
            "drafter_calls_mean": _mean(row["drafter_calls"] for row in rows),
            "verifier_calls_mean": _mean(row["verifier_calls"] for row in rows),
            "cost_ratio": cost_ratio,
            "predicted_speedup": predicted,
            "verify_cost": verify_cost,
            "predicted_speedup_at_r": predicted_at_r,
            # Machine-independent view: counted calls weighted by the measured per-call costs.
            "relative_cost": (_mean(row["drafter_calls"] for row in rows) * step_cost["drafter"]
                              + _mean(row["verifier_calls"] for row in rows) * step_cost["verifier"])
            / verifier_cost,
        })
    reference_rows = runs.get(REFERENCE)
    for record in records:
        if reference_rows:
            interval = quality_difference(metric, runs[record["run_id"]], reference_rows)
            record.update(quality_vs_verifier=interval.difference, quality_ci_low=interval.low,
                          quality_ci_high=interval.high)
    frame = pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))
    frame["_order"] = frame["method"].map({name: i for i, name in enumerate(METHODS)})  # the registry's order
    frame["_curve"] = [group_key(row) for _, row in frame.iterrows()]
    frame = frame.sort_values(["_order", "_curve", "draft_length", *PARAMETERS], na_position="first", kind="stable")
    frame = frame.drop(columns=["_order", "_curve"]).reset_index(drop=True)
    frame.attrs["unshared_rows"] = unshared
    return frame


def quality(results: Path, metric: str, rows: list[dict]) -> float:
    """A run's quality: the corpus score of its predictions, or for exact_match, f1 and pass_at_1 the mean of
    the rows' scores (computed at run time with the task's answer pattern and normalisation, or the sandbox)."""
    if metric in SCORED_METRICS:
        unscored = [row["example_id"] for row in rows if "score" not in row]
        if unscored:
            raise ResultsError(f"{results}: {len(unscored)} lines of {rows[0]['run_id']} have no score (example "
                               f"{unscored[0]}); {metric} is scored per example when it is decoded")
        return _mean(row["score"] for row in rows)
    return corpus_score(metric, [r["prediction"] for r in rows], [r["reference"] for r in rows])


def quality_difference(metric: str, rows: list[dict], reference_rows: list[dict]) -> BootstrapInterval:
    """A run's quality minus the verifier's on the same examples, with a paired bootstrap interval
    (CONFIDENCE, BOOTSTRAP_RESAMPLES, seed 0): `metrics.paired_bootstrap` over the rows matched by example.
    NaN with fewer than MIN_BOOTSTRAP_EXAMPLES examples."""
    by_id = {row["example_id"]: row for row in reference_rows}
    pairs = [(row, by_id[row["example_id"]]) for row in rows if row["example_id"] in by_id]
    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    scored = metric in SCORED_METRICS
    if len(pairs) < MIN_BOOTSTRAP_EXAMPLES:
        return BootstrapInterval(math.nan, math.nan, math.nan, 0)
    return paired_bootstrap(metric, [r["prediction"] for r in ours], [r["prediction"] for r in theirs],
                            [r["reference"] for r in theirs],
                            [r["score"] for r in ours] if scored else None,
                            [r["score"] for r in theirs] if scored else None,
                            resamples=BOOTSTRAP_RESAMPLES, seed=0, confidence=CONFIDENCE)


SUMMARY_FILE = "summary.csv"


def write_summary(results: Path, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the summary (`summarize`, unless given) to SUMMARY_FILE, never through a link; returns it."""
    frame = summarize(results) if frame is None else frame
    refuse_link(results / SUMMARY_FILE)
    write_file(results / SUMMARY_FILE, frame.to_csv(index=False, float_format="%.6g"))
    return frame


def with_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary with a `curve` column: the curve each row belongs to (see `group_key`)."""
    return frame.assign(curve=[group_key(row) for _, row in frame.iterrows()])


def group_key(row) -> str:
    """The curve a summary row belongs to: its method and the parameters that name a curve (the registry's
    `labels_curve`: a rule, beta, a non-default choice), not the swept one."""
    spec = METHODS.get(row["method"])
    parts = [row["method"]]
    for param in spec.params if spec else ():
        value = row.get(param.name)
        if not param.labels_curve or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = param.label(value, "" if param.choices else f"{param.name}={value:g}", "=")
        if text is not None:
            parts.append(text)
    return " ".join(parts)

