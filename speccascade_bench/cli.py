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
             fresh: bool = typer.Option(False, help="ignore existing checkpoints and start over")) -> None:
    """Train or fine-tune a seq2seq model on a task's training split and save it with save_pretrained."""
    from .finetune import finetune as run_finetune

    try:
        cfg = load_finetune_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    summary = run_finetune(cfg, fresh=fresh)
    typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
