"""`scb run`: decode every selected example with every configured method run, timing each, and append
the results per example so that an interrupted run resumes where it stopped."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .config import ConfigError, MethodRun, RunConfig, validate_resources
from .data import Example, load_examples
from .decoding import decode
from .lm import StaticShapes
from .methods import DRAFTER, METHODS, REFERENCE
from .presets import is_preset
from .results import (
    CALL_COSTS_FILE,
    LOCK_FILE,
    ExampleWriter,
    ResultsError,
    RunLock,
    check_output,
    check_resume,
    clean,
    examples_dir,
    manifest_config,
    read_lines,
    seq_cascade_rows,
    start_manifest,
    write_json_atomic,
    write_summary,
)
from .timing import timed, wide_call_cost

Progress = Callable[[str, int, int], None]  # (run_id, done, total)
PROBE_POSITIONS = 256  # call costs are probed within the first this many output positions


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
    derived = [r for r in runs if METHODS[r.method].derived_by in r.params]
    decoded = [r for r in runs if r not in derived]
    needed = [REFERENCE] + ([DRAFTER] if derived else [])
    for name in reversed(needed):
        if not any(r.method == name for r in decoded):
            decoded.insert(0, MethodRun(name, {}))
    return decoded, derived


def static_shapes(config: RunConfig, runs: list[MethodRun]) -> StaticShapes:
    """The static cache sizes of a run: its token limits, and compiled steps up to the longest
    verification (draft length + 1) of any method run."""
    gammas = {int(r.params.get("draft_length", config.decoding.draft_length)) for r in runs}
    gammas.add(config.decoding.draft_length)
    mode = None if config.models.compile == "none" else config.models.compile
    return shapes_for(config.decoding.max_new_tokens, config.task.max_source_tokens, gammas, mode)


def shapes_for(max_new_tokens: int, max_source_tokens: int, gammas, compile_mode: str | None) -> StaticShapes:
    """Static cache sizes for these token limits, with compiled steps of one token and of every draft length
    + 1 (a verification; an encoder-decoder verifier's first forward scores the start token and a full draft)."""
    widths = sorted({1} | {int(g) + 1 for g in gammas})
    return StaticShapes(max_new_tokens, max_source_tokens, max(widths), tuple(widths), compile_mode)


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
    check_output(out)
    device = resolve_device(config.models.device)
    examples = load_examples(config.task, config.decoding.seed, options.limit)
    if not examples:
        raise ResultsError("the task selected no examples")
    resolved, hardware = manifest_config(config), device_info(device)
    with _results_folder(out, options.fresh):
        check_resume(out, resolved, hardware)
        files = {run.run_id: examples_dir(out) / f"{run.run_id}.jsonl" for run in decoded}
        done = {run_id: {row["example_id"] for row in read_lines(path)} for run_id, path in files.items()}
        todo = [(ex, run) for ex in examples for run in decoded if ex.example_id not in done[run.run_id]]
        pair = load_pair(config.models.drafter, config.models.verifier, config.models.tokenizer,
                         config.models.device, config.models.dtype)
        _write(start_manifest, out, resolved, hardware, limit=options.limit, dtype=config.models.dtype,
               random_weights=[role for role in ("drafter", "verifier") if is_preset(getattr(config.models, role))])
        _decode_all(config, pair, out, decoded, examples, todo, device, progress)
        _write_derived(out, derived)
        write_summary(out)
    return out


def _write(function, out: Path, *args, **kwargs):
    """Call a function that writes into the results folder; an OSError becomes a ResultsError."""
    try:
        return function(out, *args, **kwargs)
    except OSError as exc:
        raise ResultsError(f"cannot write the results to {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _results_folder(out: Path, fresh: bool):
    """Hold the results folder for a run: create it, lock it (results.RunLock) and, with `fresh`, delete
    what earlier runs wrote there. A folder this run created is removed again if the run fails before
    writing anything into it; an unwritable folder is a ResultsError."""
    created = not out.exists()
    lock = RunLock(out)
    try:
        _write(lambda path: path.mkdir(parents=True, exist_ok=True), out)
        _write(lambda path: lock.acquire(), out)
        if fresh and check_output(out):
            _write(clean, out)
        yield
    except BaseException:
        if created and lock.held and {entry.name for entry in out.iterdir()} == {LOCK_FILE}:
            (out / LOCK_FILE).unlink()
            out.rmdir()
        raise
    finally:
        lock.release()


def _decode_all(config: RunConfig, pair, out: Path, decoded: list[MethodRun], examples: list[Example],
                todo: list[tuple[Example, MethodRun]], device: torch.device, progress: Progress | None) -> None:
    """Decode, time and append the `todo` examples to the (locked) results folder."""
    settings = config.decoding
    inputs = {ex.example_id: pair.encode(ex.source, config.task.max_source_tokens) for ex in examples}
    if config.models.cache == "static":
        if progress and config.models.compile != "none":
            progress("compiling decode steps", 0, 0)
        pair.use_static_caches(static_shapes(config, decoded), next(iter(inputs.values())))

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
        _write(record_call_costs, out, pair, config, decoded, [inputs[ex.example_id] for ex in examples[:3]])
    writers = {run.run_id: ExampleWriter(examples_dir(out) / f"{run.run_id}.jsonl") for run in decoded}
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


def record_call_costs(out: Path, pair, config: RunConfig, runs: list[MethodRun], inputs: list[torch.Tensor]) -> None:
    """Write what one verifier call over gamma + 1 positions costs, in one-token verifier steps, for each
    draft length gamma of the runs (`timing.wide_call_cost`, from three positions spread over the output
    length), to CALL_COSTS_FILE; the summary prices Leviathan et al.'s prediction with it."""
    gammas = sorted({int(r.params["draft_length"]) for r in runs if "draft_length" in r.params})
    costs = {}
    for gamma in gammas:
        # A position and a call must fit in the outputs; positions past PROBE_POSITIONS are not probed.
        room = min(config.decoding.max_new_tokens, PROBE_POSITIONS) - gamma - 1
        if room < 1:  # outputs too short to time a call over gamma + 1 positions after the first
            continue
        positions = tuple(sorted({max(1, room * k // 4) for k in (1, 2, 3)}))
        costs[str(gamma)] = wide_call_cost(pair, "verifier", inputs, gamma + 1, positions, repeats=5)
    if costs:
        write_json_atomic(out / CALL_COSTS_FILE, {"verify_call_cost": costs, "inputs": len(inputs)})


def _write_derived(out: Path, derived: list[MethodRun]) -> None:
    drafter = read_lines(examples_dir(out) / f"{DRAFTER}.jsonl")
    verifier = read_lines(examples_dir(out) / f"{REFERENCE}.jsonl")
    for run in derived:
        rows = seq_cascade_rows(drafter, verifier, run.params["alpha"], run.run_id, run.params)
        path = examples_dir(out) / f"{run.run_id}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(path)
