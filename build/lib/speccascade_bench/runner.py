"""`scb run`: decode every selected example with every configured method run, timing each, and append
the results per example so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import torch

from .config import ConfigError, MethodRun, RunConfig, validate_resources
from .data import Example, load_examples
from .decoding import DecodeSettings, decode
from .lm import StaticShapes
from .presets import is_preset
from .results import (
    CALL_COSTS_FILE,
    ExampleWriter,
    ResultsError,
    examples_dir,
    read_lines,
    seq_cascade_rows,
    write_summary,
)
from .timing import timed, wide_call_cost

Progress = Callable[[str, int, int], None]  # (run_id, done, total)


@dataclass(frozen=True)
class RunOptions:
    output: Path | None = None
    limit: int | None = None
    device: str | None = None
    methods: tuple[str, ...] | None = None
    fresh: bool = False


def plan(config: RunConfig, methods: tuple[str, ...] | None = None) -> tuple[list[MethodRun], list[MethodRun]]:
    """The method runs to decode and the seq_cascade deferral-rate runs derived from drafter/verifier.

    The verifier is always decoded (it is the latency reference); the drafter too when a deferral-rate
    seq_cascade needs it."""
    runs = [r for r in config.methods if methods is None or r.method in methods]
    if methods is not None:
        unknown = set(methods) - {r.method for r in config.methods}
        if unknown:
            raise ConfigError(config.file, "methods", f"--methods names {', '.join(sorted(unknown))}, which the "
                              f"config does not configure (it has {', '.join(config.method_names())})")
    derived = [r for r in runs if r.method == "seq_cascade" and "alpha" in r.params]
    decoded = [r for r in runs if r not in derived]
    needed = ["verifier"] + (["drafter"] if derived else [])
    for name in reversed(needed):
        if not any(r.method == name for r in decoded):
            decoded.insert(0, MethodRun(name, {}))
    return decoded, derived


def static_shapes(config: RunConfig, runs: list[MethodRun]) -> StaticShapes:
    """The static cache sizes of a run: its token limits, and compiled steps up to the longest
    verification (draft length + 1) of any method run; an encoder-decoder verifier's first forward
    scores the start token and a full draft."""
    gammas = {int(r.params.get("draft_length", config.decoding.draft_length)) for r in runs}
    gammas.add(config.decoding.draft_length)
    mode = None if config.models.compile == "none" else config.models.compile
    return StaticShapes(config.decoding.max_new_tokens, config.task.max_source_tokens, max(gammas) + 1,
                        tuple(sorted({1} | {g + 1 for g in gammas})), mode)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("speccascade-bench", "torch", "transformers", "datasets", "sacrebleu", "rouge-score"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, driver=_nvidia_driver())
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _manifest_config(config: RunConfig) -> dict:
    return {
        "name": config.name, "file": config.file, "variant": config.variant,
        "task": asdict(config.task), "models": asdict(config.models),
        "decoding": asdict(config.decoding), "timing": asdict(config.timing),
        "methods": [{"run_id": r.run_id, "method": r.method, "params": r.params} for r in config.methods],
    }


def _prepare_output(config: RunConfig, out: Path, fresh: bool, limit: int | None, device: torch.device) -> None:
    manifest_path = out / "manifest.json"
    resolved = _manifest_config(config)
    if fresh and out.exists():
        shutil.rmtree(out)
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        keys = ("task", "models", "decoding")
        if any(previous["config"][k] != resolved[k] for k in keys):
            raise ResultsError(f"{out} holds results of a different task, model pair or decoding settings; "
                               "use --fresh to start over or --output for another folder")
        previous.setdefault("resumed_at", []).append(dt.datetime.now(dt.timezone.utc).isoformat())
        previous["config"]["methods"] = resolved["methods"]
        manifest_path.write_text(json.dumps(previous, indent=2) + "\n")
        return
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "config": resolved,
        "limit": limit,
        "versions": _versions(),
        "hardware": device_info(device),
        "dtype": config.models.dtype,
        "random_weights": [role for role in ("drafter", "verifier") if is_preset(getattr(config.models, role))],
        "git_commit": _git_commit(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def _record(example: Example, run: MethodRun, result, prediction: str, latencies: list[float],
            input_tokens: int) -> dict:
    return {
        "example_id": example.example_id, "run_id": run.run_id, "method": run.method, "params": run.params,
        "prediction": prediction, "reference": example.reference, "output_tokens": result.output_length,
        "input_tokens": input_tokens, "latency_s": sum(latencies) / len(latencies),
        "latency_trials_s": latencies, "drafter_calls": result.drafter_calls,
        "verifier_calls": result.verifier_calls, "drafted": result.drafted, "accepted": result.accepted,
        "rounds": result.rounds, "accepted_per_round": result.accepted_per_round, "rejections": result.rejections,
        "deferred": result.deferred,
        "confidence": result.confidence,
    }


def run(config: RunConfig, options: RunOptions = RunOptions(), progress: Progress | None = None) -> Path:
    """Decode, time and record; returns the results directory. Every input is checked before a model
    loads; finished examples are skipped on a re-run."""
    from .lm import load_pair, resolve_device

    if options.device:
        config = replace(config, models=replace(config.models, device=options.device))
    validate_resources(config)
    decoded, derived = plan(config, options.methods)
    out = Path(options.output or config.output)
    device = resolve_device(config.models.device)
    examples = load_examples(config.task, config.decoding.seed, options.limit)
    if not examples:
        raise ResultsError("the task selected no examples")
    pair = load_pair(config.models.drafter, config.models.verifier, config.models.tokenizer,
                     config.models.device, config.models.dtype)
    _prepare_output(config, out, options.fresh, options.limit, device)
    settings = DecodeSettings(config.decoding.max_new_tokens, config.decoding.temperature, config.decoding.top_p,
                              config.decoding.draft_length)
    inputs = {ex.example_id: pair.encode(ex.source, config.task.max_source_tokens) for ex in examples}
    if config.models.cache == "static":
        if progress and config.models.compile != "none":
            progress("compiling decode steps", 0, 0)
        pair.use_static_caches(static_shapes(config, decoded), next(iter(inputs.values())))
    files = {run.run_id: examples_dir(out) / f"{run.run_id}.jsonl" for run in decoded}
    done = {run_id: {row["example_id"] for row in read_lines(path)} for run_id, path in files.items()}
    todo = [(ex, run) for ex in examples for run in decoded if ex.example_id not in done[run.run_id]]

    def generator(example_id: int) -> torch.Generator:
        # The same seed for every method and trial of an example: common random numbers.
        return torch.Generator(device=device).manual_seed(config.decoding.seed * 1_000_003 + example_id)

    def decode_once(example: Example, run: MethodRun):
        return decode(run.method, pair, inputs[example.example_id], settings, run.params,
                      generator(example.example_id))

    if todo:
        for example in examples[: config.timing.warmup]:
            for run in decoded:
                decode_once(example, run)
        if progress:
            progress("measuring call costs", 0, 0)
        record_call_costs(out, pair, config, decoded, [inputs[ex.example_id] for ex in examples[:3]])
    writers = {run_id: ExampleWriter(path) for run_id, path in files.items()}
    try:
        for i, (example, run) in enumerate(todo):
            if progress:
                progress(run.run_id, i, len(todo))
            latencies = []
            for _ in range(config.timing.trials):
                result, seconds = timed(lambda ex=example, r=run: decode_once(ex, r), device)
                latencies.append(seconds)
            row = _record(example, run, result, pair.decode(result.tokens), latencies,
                          int(inputs[example.example_id].shape[1]))
            writers[run.run_id].write(row)
        if progress:
            progress("", len(todo), len(todo))
    finally:
        for writer in writers.values():
            writer.close()
    _write_derived(out, derived)
    write_summary(out)
    return out


def record_call_costs(out: Path, pair, config: RunConfig, runs: list[MethodRun], inputs: list[torch.Tensor]) -> None:
    """Write what one verifier call over gamma + 1 positions costs, in one-token verifier steps, for each
    draft length gamma of the runs (`timing.wide_call_cost`, from three positions spread over the output
    length), to CALL_COSTS_FILE; the summary prices Leviathan et al.'s prediction with it."""
    gammas = sorted({int(r.params["draft_length"]) for r in runs if "draft_length" in r.params})
    costs = {}
    for gamma in gammas:
        room = config.decoding.max_new_tokens - gamma - 1  # a position and a call must fit in max_new_tokens
        if room < 1:  # outputs too short to time a call over gamma + 1 positions after the first
            continue
        positions = tuple(sorted({max(1, room * k // 4) for k in (1, 2, 3)}))
        costs[str(gamma)] = wide_call_cost(pair, "verifier", inputs, gamma + 1, positions, repeats=5)
    if costs:
        (out / CALL_COSTS_FILE).write_text(json.dumps({"verify_call_cost": costs, "inputs": len(inputs)}, indent=2))


def _write_derived(out: Path, derived: list[MethodRun]) -> None:
    drafter = read_lines(examples_dir(out) / "drafter.jsonl")
    verifier = read_lines(examples_dir(out) / "verifier.jsonl")
    for run in derived:
        rows = seq_cascade_rows(drafter, verifier, run.params["alpha"], run.run_id, run.params)
        path = examples_dir(out) / f"{run.run_id}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(path)
