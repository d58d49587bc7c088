"""The verbs of the `scb` command line as a group: expected failures as one `error:` line and exit code 2, and help
that reads well (the verbs in the order of a first session, flags without a value type)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from .settings import ConfigError, ConfigErrors, markdown_cell

MAX_MESSAGE = 600


def fail(*messages: str) -> None:
    """Print each message as one short `error:` line (a value of any size is cut in the middle) and exit with
    code 2."""
    for message in messages:
        message = " ".join(message.split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 150] + " ... " + message[-145:]
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def expected(exc: Exception) -> bool:
    """An error of bad input or of the environment, worth one line rather than a traceback."""
    if isinstance(exc, ConfigError | OSError | UnicodeDecodeError):
        return True
    from .files import ResultsError, UnreadableFile
    from .models.loading import ModelLoadError
    from .run.cluster import WorkerError  # Ray itself is imported only by `run --workers`
    from .tasks.data import DataError

    return isinstance(exc, DataError | ModelLoadError | ResultsError | UnreadableFile | WorkerError)


def message(exc: Exception) -> str:
    """One line for an expected error. The package's errors name their file; an OSError names its own."""
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{where}: {exc.strerror or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    return " ".join(str(exc).split())


def _plain_flags(command: click.Command, ctx: click.Context) -> click.Command:
    """Show an on/off flag in the help without a value type (Typer would print `<bool>` after it)."""
    for param in [*command.params, command.get_help_option(ctx)]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return command


LOG_HELP = ("send the results to an experiment tracker: mlflow[=TRACKING_URI] (default: MLFLOW_TRACKING_URI, else "
            "MLflow's local sqlite:///mlflow.db) or wandb[=PROJECT] (offline unless logged in); repeatable. A tracker "
            "that fails gives one warning and leaves the results folder complete")

# The verbs in `scb --help`, in the order of a first session: run, look at the results, then the rest.
VERB_ORDER = ("run", "report", "plot", "validate", "methods", "fit-router", "toy-data", "finetune")


class Verbs(TyperGroup):
    """The verbs, each run so that an expected error becomes `error: <message>` and exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: VERB_ORDER.index(name) if name in VERB_ORDER else len(VERB_ORDER))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        return None if command is None else _plain_flags(command, ctx)

    def format_help(self, ctx: click.Context, formatter) -> None:
        _plain_flags(self, ctx)
        super().format_help(ctx, formatter)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if (ctx.obj or {}).get("debug") or not expected(exc):
                raise
            if isinstance(exc, ConfigErrors):  # every problem of a config found in one pass, a line each
                fail(*exc.lines())
            fail(message(exc))


def show_results(out: Path) -> None:
    """`scb run`'s last words on a folder: the summary that `finish_run` wrote as a compact table, then where the
    folder and its report.html are."""
    from .analysis.finish import finished_table

    table, page = finished_table(out)
    if table is not None:
        typer.echo(table)
    typer.echo(f"results: {out}")
    if page is not None:
        typer.echo(f"page: {page}")


def decode_jobs(jobs: list, fresh: bool, workers: int | None, ray_address: str | None, given: bool,
                trackers) -> list[Path]:
    """`scb run`'s decoding: prepared jobs under a progress bar, here or on Ray workers (`given`: the Ray address
    came from the command line, not RAY_ADDRESS); each folder's summary, report and page are
    written (`finish_run`) and sent to the trackers as it finishes, under its lock. Returns the folders."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .analysis.finish import finish_run
    from .analysis.trackers import record_sent
    from .run.local import run_job

    def last(out: Path) -> None:
        finished = finish_run(out)  # the summary and rows, which the trackers need not read again
        record_sent(out, trackers.send(out, *(finished or ())))

    for job in jobs:
        trackers.expect(job.out, job.tracking_key, job.config.name)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(jobs[0].config.name, total=None)

        def progress_of(name: str, outs: list[Path]):
            def progress(label: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total or None, description=f"{name} {label}".strip())
                for out in outs:
                    trackers.progress(out, done, total)
            return progress

        if workers:
            from .run.workers import run as run_distributed

            return run_distributed(jobs, workers, ray_address, fresh, progress_of("", [job.out for job in jobs]),
                                   verbose=logging.getLogger().isEnabledFor(logging.INFO),
                                   source="--ray-address" if given else "RAY_ADDRESS", last=last)
        return [run_job(job, fresh, progress_of(job.config.name, [job.out]), last) for job in jobs]


def _value_name(param) -> str:
    """The word `--help` shows for an option's value, from its annotation."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    names = {Path: "PATH", int: "INTEGER", float: "FLOAT", str: "TEXT"}
    return names.get(annotation) or names.get(getattr(annotation, "__args__", (None,))[0]) or "VALUE"


def cli_reference(group: click.Group) -> str:
    """The CLI reference as Markdown, from the command objects themselves (so that it cannot drift from `scb --help`):
    each verb in `scb --help`'s order with its help, its usage, and a table of its arguments and options."""
    ctx = type(group).context_class(group, info_name="scb")

    lines = ["| command | what it does |", "| --- | --- |"]
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    lines += [f"| [`scb {name}`](#scb-{name}) | {markdown_cell((command.help or '').split(chr(10) * 2)[0])} |"
              for name, command in commands]
    for name, command in commands:
        sub = type(command).context_class(command, info_name=f"scb {name}", parent=ctx)
        arguments = [f"{(p.metavar or p.name).upper()}{'...' if p.nargs == -1 else ''}" for p in command.params
                     if p.param_type_name == "argument"]
        lines += ["", f"## scb {name}", "", "```", " ".join([f"scb {name} [OPTIONS]", *arguments]), "```", "",
                  markdown_cell(command.help or ""), "", "| argument or option | default | meaning |",
                  "| --- | --- | --- |"]
        for param in command.get_params(sub):
            if param.param_type_name == "argument":
                names = f"`{(param.metavar or param.name).upper()}`" + (" ..." if param.nargs == -1 else "")
            else:
                names = ", ".join(f"`{opt}`" for opt in (*param.opts, *param.secondary_opts))
                if not getattr(param, "is_flag", False) and param.metavar != "":
                    names += f" {markdown_cell(param.metavar or _value_name(param))}"
                if getattr(param, "multiple", False):
                    names += " (repeatable)"
            default = ("required" if param.required else "" if param.default in (None, False, (), [])
                       or getattr(param, "is_flag", False) and param.name == "help" else f"`{param.default}`")
            envvar = f" (or ${param.envvar})" if isinstance(getattr(param, "envvar", None), str) else ""
            lines.append(f"| {names} | {default} | {markdown_cell(getattr(param, 'help', '') or '')}{envvar} |")
    return "\n".join(lines)
