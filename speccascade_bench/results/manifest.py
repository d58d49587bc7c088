"""The manifest of a results folder: the resolved config, versions, hardware and start times; what a
resumed run must match (`check_resume`), and the kinds of device its rows ran on (`check_devices`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
import re
import subprocess
import uuid
from collections import Counter
from importlib import metadata
from pathlib import Path

from ..files import ResultsError
from ..models.fingerprint import tokenizer_fingerprint, weights_fingerprint
from ..models.settings import chain_roles
from ..plugins import plugin_file
from ..settings import plain
from ..tasks.data import DataError
from ..tasks.kinds import source_file
from ..tasks.settings import TaskConfig
from ..tasks.sources import hook, source_of
from .folder import FORMAT, MANIFEST_FILE, read_manifest, write_json_atomic
from .record import ExampleRow
from .rows import example_files, examples_dir, read_run
from .settings import RunConfig

# A resumed run must match the folder's manifest in these config sections and hardware fields.
RESUME_SECTIONS = ("task", "models", "decoding", "timing")

RESUME_HARDWARE = ("device", "cpu", "gpu", "torch_threads")


def tokenizer_of(tokenizer: str | None, verifier: str) -> str:
    """The name a router records for a run's tokenizer: the configured one, else the verifier's."""
    return tokenizer or verifier


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("speccascade-bench", "torch", "transformers", "datasets", "sacrebleu", "rouge-score", "lm_eval"):
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
    that a resume notices when the file at that path has changed; so too the task's code and config files
    (`task_files`) and each method run's router, by run id (`run_files`)."""
    resolved = {
        "name": config.name, "file": config.file, "variant": config.variant,
        "task": plain(config.task), "models": plain(config.models),
        "decoding": plain(config.decoding), "timing": plain(config.timing),
        "methods": [{"run_id": r.run_id, "method": r.method, "params": r.params} for r in config.methods],
    }
    if config.plugins:
        resolved["plugins"] = list(config.plugins)
    if config.overrides:  # recorded as given; a resume compares the values they set, as a config edit's
        resolved["overrides"] = list(config.overrides)
    if config.task.is_local or config.task.data_files:  # an lm-eval task's dataset is its evaluated split's file
        resolved["data"] = data_fingerprint(Path(config.task.dataset).expanduser())
    if config.task.data_files:  # and its other local files, those of the shots
        others = {split: path for split, path in config.task.data_files.items() if path != config.task.dataset}
        if others:
            resolved["data_shots"] = {split: data_fingerprint(Path(path).expanduser())
                                      for split, path in others.items()}
    fewshot = config.task.fewshot
    if fewshot is not None and fewshot.n and fewshot.is_local:
        resolved["data_shots"] = data_fingerprint(Path(fewshot.dataset).expanduser())
    weights = {role: fingerprint for role, name in zip(config.models.roles, config.models.chain, strict=True)
               if (fingerprint := weights_fingerprint(name)) is not None}
    if weights:  # a model trained again at the same path decodes otherwise under the same run ids
        resolved["weights"] = weights
    tokenizer = tokenizer_fingerprint(tokenizer_of(config.models.tokenizer, config.models.verifier))
    if tokenizer is not None:  # a tokenizer or chat template edited in place prompts otherwise under the same run ids
        resolved["tokenizer"] = tokenizer
    routers = sorted({r.params["router"] for r in config.methods if "router" in r.params})
    if routers:  # a router fitted again at the same path decodes otherwise under the same run ids
        resolved["routers"] = {path: data_fingerprint(Path(path).expanduser()) for path in routers}
    files = {label: _file_print(path) for label, path in [*task_files(config.task), *plugin_files(config.plugins)]}
    if files:  # a row function, an lm-eval task or a plugin edited in place decodes otherwise under the same run ids
        resolved["task_files"] = files
    if routers:  # by run id: another router of the same file name decodes otherwise under the same run id
        resolved["run_files"] = run_files(config.methods)
    return resolved


MAX_BESIDE = 64  # Python files beside a process file that a resume compares (the modules it may import)


def task_files(task: TaskConfig) -> list[tuple[str, Path]]:
    """The code and config files a task reads besides its data, each with its label in a manifest's `task_files`:
    the `process` function's file (unless a built-in kind) and the Python files beside it (the modules it may
    import, up to MAX_BESIDE), an lm-eval task's configs and code."""
    files = []
    process = source_file(task.process) if task.process else None
    if process is not None:
        files.append(("process", process))
        beside = sorted(path for path in process.parent.glob("*.py") if path != process and path.is_file())
        files += [(f"module {path.name} beside the process", path) for path in beside[:MAX_BESIDE]]
    found = hook(source := source_of(task), "files", task)
    if not isinstance(found, list) or not all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                                              and isinstance(item[1], Path) for item in found):
        raise DataError(f"the task source {source.name!r} named its files as {str(found)[:80]!r}, not a list of "
                        "(label, Path)", "dataset")
    return files + found


def plugin_files(plugins: tuple[str, ...]) -> list[tuple[str, Path]]:
    """The file of each plugin (`plugins`) that has one, with its label in a manifest's `task_files`."""
    return [(f"plugin {entry}", path) for entry in plugins if (path := plugin_file(entry)) is not None]


def run_files(runs) -> dict[str, dict]:
    """The files that each of `runs` reads of its own (its router), by run id, each as its path, size and SHA-256: a
    resume refuses to add rows to a run whose router changed since it wrote its first row, wherever it is now."""
    prints: dict[str, dict] = {}
    for path in {run.params["router"] for run in runs if "router" in run.params}:
        prints[path] = _file_print(Path(path).expanduser(), path)
    return {run.run_id: {"router": prints[run.params["router"]]} for run in runs if "router" in run.params}


def _file_print(path: Path, name: str | None = None) -> dict:
    return {"path": name or str(path), **data_fingerprint(path)}


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
    if fields.get("tracking_key"):
        previous.setdefault("tracking_key", fields["tracking_key"])
    named = {run["run_id"] for run in resolved["methods"]}  # a run no longer configured stays named while it has rows
    previous["config"]["methods"] = resolved["methods"] + [
        run for run in previous["config"].get("methods") or [] if run["run_id"] not in named
        and _has_rows(out, run["run_id"])]
    config = previous["config"]
    # the files of the folder's first rows stay recorded: the task's, and each run's that has rows
    kept = {run_id: files for run_id, files in (config.get("run_files") or {}).items() if _has_rows(out, run_id)}
    for record, old in (("task_files", config.get("task_files") or {}), ("run_files", kept)):
        merged = {**(resolved.get(record) or {}), **old}
        if merged:
            config[record] = merged
    write_json_atomic(path, previous)


def tracking_key(manifest: dict) -> str:
    """The key that ties a results folder to its experiment-tracker run (`scb run --log`, `scb report --log`): the
    manifest's `tracking_key`, or, in a folder recorded before there was one, a key made from its first start."""
    key = manifest.get("tracking_key")
    if isinstance(key, str) and re.fullmatch(r"[0-9a-f]{32}", key):
        return key
    first = f"{manifest.get('started_at')} {(manifest.get('config') or {}).get('name')}"
    return hashlib.sha256(first.encode()).hexdigest()[:32]


def folder_tracking_key(out: Path, fresh: bool) -> str:
    """The tracking key a run into `out` records: the folder's own when it resumes one, else a new one."""
    if not fresh and (out / MANIFEST_FILE).is_file():
        try:
            return tracking_key(read_manifest(out))
        except ResultsError:
            pass  # the resume refuses the folder with its own error
    return uuid.uuid4().hex


def record_trackers(out: Path, sent: dict[str, dict]) -> None:
    """Record in the manifest where the folder went in each experiment tracker (`trackers`: by tracker, its run
    id and store), beside the tracking key that finds that run again."""
    manifest = read_manifest(out)
    manifest["trackers"] = {**(manifest.get("trackers") or {}), **sent}
    write_json_atomic(out / MANIFEST_FILE, manifest)


def _comparable(section: str, values: dict) -> dict:
    """A config section as a resume compares it (the manifest's already completed by `read_manifest` with
    the defaults of keys added since it was recorded): without the models' `device` setting, which the
    hardware check covers (`auto` and `cpu` on the same CPU are the same measurement), nor the task's `max_row_mb`,
    a bound on what is read that changes no example."""
    return {k: v for k, v in values.items() if (section, k) not in (("models", "device"), ("task", "max_row_mb"))}


def _changed(old: dict, resolved: dict, record: str) -> list[str]:
    """The entries of a fingerprint record (`routers` by path, `weights` by role) that both configs hold and whose
    fingerprints differ."""
    now = resolved.get(record) or {}
    return [key for key, print_ in (old.get(record) or {}).items() if key in now and now[key] != print_]


def _file_record(out: Path, old: dict, record: str) -> dict:
    """The folder's `task_files` ({label: fingerprint}) or `run_files` ({run id: {label: fingerprint}}) record, {}
    when it was recorded without one; a damaged one is a ResultsError naming it."""
    value = old.get(record) or {}

    def prints(mapping) -> bool:
        return isinstance(mapping, dict) and all(isinstance(v, dict) for v in mapping.values())

    if not prints(value) or record == "run_files" and not all(prints(files) for files in value.values()):
        keys = "labels" if record == "task_files" else "run ids to labels"
        raise ResultsError(f"{out / MANIFEST_FILE}: config.{record}: must map {keys} to fingerprints; restore the "
                           "manifest from a copy, or move the folder aside and run again into a new one")
    return value


def _has_rows(out: Path, run_id: str) -> bool:
    return (examples_dir(out) / f"{run_id}.jsonl").is_file()


def _same_file(a: dict, b: dict) -> bool:
    return (a.get("bytes"), a.get("sha256")) == (b.get("bytes"), b.get("sha256"))


def _edited_file(out: Path, old: dict, resolved: dict) -> str | None:
    """Why the folder's rows and this run's would be made from different files: a task file (`task_files`) or a
    run's router (`run_files`, for a run with rows in the folder) whose size or SHA-256 changed; None if none did."""
    task_files_now = resolved.get("task_files") or {}
    for label, print_ in _file_record(out, old, "task_files").items():
        new = task_files_now.get(label)
        if new is not None and not _same_file(new, print_):
            return (f"{out} holds rows prompted with another version of the task's {label} file {new['path']} (its "
                    "size or SHA-256 changed since the folder's first run)")
    run_files_now = resolved.get("run_files") or {}
    for run_id, files in _file_record(out, old, "run_files").items():
        for label, print_ in files.items():
            new = run_files_now.get(run_id, {}).get(label)
            if new is not None and _has_rows(out, run_id) and not _same_file(new, print_):
                return (f"{out} holds rows of {run_id} decoded with another {label}: {print_.get('path')} as it was "
                        f"then, not {new['path']} (their sizes or SHA-256 differ)")
    return None


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
        path = task["dataset"] if changed[0] == "data" else ((task.get("fewshot") or {}).get("dataset")
                                                             or ", ".join((task.get("data_files") or {}).values()))
        raise ResultsError(f"{out} holds results of another version of the data file {path} "
                           "(its size or SHA-256 changed); use --fresh to start over or --output for another folder")
    refit = _changed(old, resolved, "routers")
    if refit:
        raise ResultsError(f"{out} holds results decoded with another version of the router {refit[0]} (its size or "
                           "SHA-256 changed); use --fresh to start over or --output for another folder")
    edited = _edited_file(out, old, resolved)
    if edited:
        raise ResultsError(f"{edited}; use --fresh to start over or --output for another folder")
    if old.get("tokenizer") is not None and resolved.get("tokenizer") not in (None, old["tokenizer"]):
        name = tokenizer_of(resolved["models"].get("tokenizer"), resolved["models"].get("verifier"))
        raise ResultsError(f"{out} holds results prompted with another version of the tokenizer {name} (its files or "
                           "chat template changed since); use --fresh to start over or --output for another folder")
    retrained = _changed(old, resolved, "weights")
    if retrained:
        models = resolved["models"]
        chain = (models.get("drafter"), *(models.get("middle") or ()), models.get("verifier"))
        name = dict(zip(chain_roles(len(chain)), chain, strict=True)).get(retrained[0])
        raise ResultsError(f"{out} holds results decoded with other weights of the {retrained[0]} {name} (its files "
                           "changed since); use --fresh to start over or --output for another folder")
    if differ:
        raise ResultsError(f"{out} holds results of another {', '.join(differ)} configuration; use --fresh to "
                           "start over or --output for another folder")
    old_hw = previous.get("hardware") or {}
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


def device_kinds(results: Path, runs: dict[str, list[ExampleRow]] | None = None) -> Counter:
    """How many example lines ran on each kind of device: the rows' `worker` kind, or for rows recorded
    without one, the kind of the manifest's hardware. `runs`: the folder's rows by run id, if already read."""
    default = device_kind(read_manifest(results).get("hardware") or {})
    kinds = Counter()
    for rows in runs.values() if runs is not None else (read_run(path)[0] for path in example_files(results)):
        for row in rows:
            worker = row.worker
            kinds[worker.get("kind", default) if isinstance(worker, dict) else default] += 1
    return kinds


def check_devices(results: Path, mix: bool = False, runs: dict[str, list[ExampleRow]] | None = None) -> Counter:
    """`device_kinds` (of `runs`, if already read), refusing (ResultsError) examples that ran on several kinds
    unless `mix`: their latencies would be averaged together."""
    kinds = device_kinds(results, runs)
    if len(kinds) > 1 and not mix:
        listed = ", ".join(f"{kind}: {n} lines" for kind, n in kinds.most_common())
        raise ResultsError(f"{results}: examples ran on {len(kinds)} kinds of device ({listed}); their latencies "
                           "would mix: pass --mix-devices to report them together, or rerun one kind's examples "
                           "into another folder")
    return kinds


