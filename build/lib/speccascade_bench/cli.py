"""The `scb` command line. Each verb parses its options, loads a config and calls one package function."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from .config import ConfigError, load_finetune_config

app = typer.Typer(help="Benchmark cascades, speculative decoding and speculative cascades.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log details")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@app.command("toy-data")
def toy_data(out: Path = typer.Option(Path("data/toy"), help="folder for train/validation/test JSONL"),
             seed: int = typer.Option(0, help="generator seed"),
             train: int = typer.Option(20000, min=1), validation: int = typer.Option(200, min=1),
             test: int = typer.Option(500, min=1)) -> None:
    """Generate the synthetic toy translation task (deterministic in the seed)."""
    from .toy.language import write_splits

    paths = write_splits(out, seed, {"train": train, "validation": validation, "test": test})
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def finetune(config: Path = typer.Option(..., "--config", "-c", help="fine-tuning YAML config"),
             fresh: bool = typer.Option(False, help="ignore existing checkpoints and start over"),
             max_steps: int = typer.Option(None, min=1, help="override training.max_steps, e.g. to train on "
                                           "from the last checkpoint")) -> None:
    """Train or fine-tune a seq2seq model on a task's training split and save it with save_pretrained.
    An existing checkpoint in the output folder is resumed unless --fresh is given."""
    from dataclasses import replace

    from .finetune import finetune as run_finetune

    try:
        cfg = load_finetune_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    if max_steps is not None:
        cfg = replace(cfg, max_steps=max_steps)
    summary = run_finetune(cfg, fresh=fresh)
    typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))


def _load(config: Path, variant: str | None = None):
    from .config import load_run_config

    try:
        return load_run_config(config, variant)
    except ConfigError as exc:
        _fail(str(exc))


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


VARIANT_HELP = "a variant of the config (its `variants` section), e.g. greedy"


@app.command()
def validate(config: Path = typer.Option(..., "--config", "-c", help="run config (YAML)"),
             variant: str = typer.Option(None, help=VARIANT_HELP + "; default: the base and every variant")) -> None:
    """Check a config and its variants completely without loading any model or dataset."""
    from .config import load_run_configs, validate_resources
    from .runner import plan

    try:
        configs = [_load(config, variant)] if variant else load_run_configs(config)
        for cfg in configs:
            validate_resources(cfg)
    except ConfigError as exc:
        _fail(str(exc))
    for cfg in configs:
        decoded, derived = plan(cfg)
        label = f"{config} [{cfg.variant}]" if cfg.variant else str(config)
        typer.echo(f"{label}: ok, {cfg.name} -> {cfg.output} ({len(decoded)} decoded method runs, "
                   f"{len(derived)} derived): " + ", ".join(r.run_id for r in decoded + derived))


@app.command()
def methods() -> None:
    """List the methods, their parameters and valid ranges."""
    from .methods import METHODS, RULE_ALPHA_RANGE

    for spec in METHODS.values():
        typer.echo(f"{spec.name}: {spec.description}")
        for param in spec.params:
            extra = " (required)" if param.required else f" (default {param.default})" if param.default else ""
            typer.echo(f"    {param.name} in {param.range_text()}{extra}: {param.description}")
    typer.echo("spec_cascade alpha ranges by rule: " + ", ".join(
        f"{rule} [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        for rule, (lo, hi) in RULE_ALPHA_RANGE.items()))


@app.command()
def run(config: Path = typer.Option(..., "--config", "-c", help="run config (YAML)"),
        variant: str = typer.Option(None, help=VARIANT_HELP),
        output: Path = typer.Option(None, help="results folder (default: the config's output)"),
        limit: int = typer.Option(None, min=1, help="decode only the first N selected examples"),
        device: str = typer.Option(None, help="auto | cpu | cuda (default: the config's)"),
        methods: str = typer.Option(None, help="comma-separated method names to run, e.g. verifier,spec_decode"),
        fresh: bool = typer.Option(False, help="delete earlier results in the folder and start over")) -> None:
    """Decode every selected example with every configured method run, recording quality and latency."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .data import DataError
    from .lm import ModelLoadError
    from .results import ResultsError
    from .runner import RunOptions
    from .runner import run as run_benchmark

    if device is not None and device not in ("auto", "cpu", "cuda"):
        _fail(f"--device must be auto, cpu or cuda, got {device!r}")
    cfg = _load(config, variant)
    _quiet_libraries()
    options = RunOptions(output=output, limit=limit, device=device, fresh=fresh,
                         methods=tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(cfg.name, total=None)

        def progress(run_id: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None, description=f"{cfg.name} {run_id}".strip())

        try:
            out = run_benchmark(cfg, options, progress)
        except (ConfigError, DataError, ModelLoadError, ResultsError) as exc:
            bar.stop()
            _fail(str(exc))
    typer.echo(f"results: {out}")


@app.command()
def report(results: Path = typer.Argument(..., help="results folder of `scb run`")) -> None:
    """Print the summary table in Markdown (also written to RESULTS/report.md and summary.csv)."""
    from .report import build_report
    from .results import ResultsError

    try:
        typer.echo(build_report(results))
    except ResultsError as exc:
        _fail(str(exc))


@app.command()
def plot(results: list[Path] = typer.Argument(..., help="results folders of `scb run` (e.g. one per task)"),
         out: Path = typer.Option(None, help="folder for the figures (default: each results folder; with "
                                  "several folders the combined figure goes to the first one's parent)")) -> None:
    """Draw quality against latency relative to the verifier (PNG and PDF), one figure per results
    folder; with several folders also a combined figure with a panel per folder."""
    from .plot import plot_folders
    from .results import ResultsError

    try:
        paths = plot_folders(results, out)
    except ResultsError as exc:
        _fail(str(exc))
    for path in paths:
        typer.echo(str(path))


if __name__ == "__main__":
    app()
