"""The results directory: its files, its lock, and what a run may write or delete there.

    manifest.json           resolved config, versions, device, dtype, git commit, start time (and the Ray
                            workers of a distributed run)
    examples/<run_id>.jsonl one line per example and method run, appended and flushed as it finishes; its
                            `worker` says where it ran
    call_costs.json         what a verifier call over gamma + 1 positions costs in one-token steps (r), per gamma
    summary.csv             one row per method run (written by `scb run` and `scb report`)
    summary.json            the same with the settings, units and trade-off table, for programs
    report.md, report.html  written by `scb report` (and by `scb run` at its end)
    quality_*.png/pdf       written by `scb plot`
    .scb.lock               held by the run writing into the folder

Guarantees: a folder is adopted only if it is empty or holds a readable manifest; one run at a time
writes into it (an exclusive lock); a resumed run must match the manifest's task, models, decoding,
timing and hardware (a distributed run checks no hardware: its rows name their device, and `scb report`
refuses to mix kinds of device); `--fresh` deletes only the files listed above; the manifest is replaced
atomically; no file is written or appended to through a link (`open_for_writing`); every row must name
its file's run, and an example twice only with the same content (`read_run`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..decoding.settings import DecodingConfig
from ..files import ResultsError, UnreadableFile, link_error, read_json, write_atomic
from ..models.settings import ModelsConfig
from ..settings import ConfigError, Section, keys_of, plain
from ..tasks.metrics import METRICS
from ..tasks.settings import TaskConfig
from .rows import MAX_ROW_BYTES, examples_dir
from .settings import TimingConfig

CALL_COSTS_FILE = "call_costs.json"

MANIFEST_FILE = "manifest.json"

LOCK_FILE = ".scb.lock"

FORMAT = "speccascade-bench results"

# Every file the suite writes into a results folder (besides examples/*.jsonl): what --fresh may delete.
WRITTEN_FILES = (MANIFEST_FILE, CALL_COSTS_FILE, "summary.csv", "summary.json", "report.md", "quality_latency.png",
                 "quality_latency.pdf", "quality_cost.png", "quality_cost.pdf")


def write_json_atomic(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON, atomically and never through a link (`write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_manifest(results: Path, max_bytes: int = MAX_ROW_BYTES) -> dict:
    """The folder's manifest (a regular file of at most `max_bytes`, read as `files.read_json` reads one); a
    ResultsError saying how to recover when it is missing, empty or damaged."""
    path = results / MANIFEST_FILE
    if results.exists() and not results.is_dir():
        raise ResultsError(f"{results} is a file, not a results directory")
    if not path.exists():
        raise ResultsError(f"{results} is not a results directory: {MANIFEST_FILE} not found")
    try:
        manifest = read_json(path, max_bytes)
    except UnreadableFile as exc:
        raise ResultsError(f"{exc}; restore it from a copy, or move the folder aside and run again into a new "
                           "one") from None
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
        for record in ("routers", "weights"):  # fingerprints by router path and by model role, which a resume compares
            value = config.get(record)
            if value is not None and not (isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())):
                raise ConfigError(path, f"config.{record}", "must map names to fingerprints")
        if config.get("tokenizer") is not None and not isinstance(config["tokenizer"], dict):
            raise ConfigError(path, "config.tokenizer", "must be a fingerprint")
        for record in ("hardware", "versions"):  # what the report prints and a resume compares
            if manifest.get(record) is not None and not isinstance(manifest[record], dict):
                raise ConfigError(path, record, "must be a mapping")
        if config.get("methods") is not None and not _method_runs(config["methods"]):
            raise ConfigError(path, "config.methods", "must be a list of method runs, each with a text run_id (named "
                              "once) and method and a mapping of params")
        plugged = _plugin_metric(config)
        if plugged:  # a metric a plugin registered where the run decoded: checked as any other name would be
            config["task"] = {**config["task"], "metric": "exact_match"}
        for key in RECORDED_SECTIONS:
            config[key] = recorded_section(path, key, config.get(key))
        if plugged:
            config["task"]["metric"] = plugged
    except ConfigError as exc:
        raise ResultsError(f"{exc}; restore the manifest from a copy, or move the folder aside and run again into "
                           "a new one") from None
    return manifest


def _plugin_metric(config: dict) -> str | None:
    """The task's metric where the manifest names plugins (`plugins:`) and this process does not know the metric:
    one of theirs, whose scores the rows hold (`analysis.quality.scored`)."""
    plugins, metric = config.get("plugins"), config["task"].get("metric")
    if isinstance(plugins, list) and plugins and isinstance(metric, str) and metric not in METRICS:
        return metric
    return None


def _method_runs(value) -> bool:
    """Whether a manifest's `config.methods` is a list of {run_id, method, params}, each run id once."""
    return isinstance(value, list) and all(
        isinstance(run, dict) and isinstance(run.get("run_id"), str) and isinstance(run.get("method"), str)
        and isinstance(run.get("params"), dict) for run in value
    ) and len({run["run_id"] for run in value}) == len(value)


def read_call_costs(results: Path) -> dict[str, float]:
    """r per draft length from CALL_COSTS_FILE ({} when the run measured none); a ResultsError when damaged."""
    path = results / CALL_COSTS_FILE
    if not path.exists():
        return {}
    try:
        costs = read_json(path, MAX_ROW_BYTES)["verify_call_cost"]
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
            raise link_error(path)
        if path.exists() and not path.is_file():
            raise ResultsError(f"{path} is not a regular file, which this suite never writes; move it aside")
        links = path.stat().st_nlink if path.is_file() else 1
        if links > 1:
            raise ResultsError(f"{path} has {links - 1} other hard link(s), which this suite never writes through; "
                               "move it aside")
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


RECORDED_SECTIONS = {"task": TaskConfig, "models": ModelsConfig, "decoding": DecodingConfig, "timing": TimingConfig}


def recorded_section(file: str | Path, key: str, values: Any) -> dict:
    """A section of a config as a results manifest records it (`config.<key>`), checked like a config file's
    (ConfigError) and completed with the defaults of keys added since it was written."""
    cls = RECORDED_SECTIONS[key]
    if key == "task" and isinstance(values, dict) and "limit" in values:
        # recorded before `sample` and `first` replaced `limit`: its meaning then, a random draw on a task defined
        # here, the first documents of an lm-eval task
        limit = values["limit"]
        values = {name: value for name, value in values.items() if name != "limit"}
        values["first" if values.get("lm_eval") else "sample"] = limit
    section = Section(Path(file), f"config.{key}", values, keys_of(cls))
    return plain(cls(**section.fields(cls)))
