"""The `scb` command line. Each verb parses its options, loads a config and calls one package function.

Expected failures (a bad config, missing or unreadable files, a model or dataset that cannot be loaded,
a results folder that does not fit) end every verb the same way, in `verbs.Verbs.invoke`: one line
`error: <message>` on stderr and exit code 2. `--debug` (or SCB_DEBUG=1) shows their traceback instead.
"""

from __future__ import annotations

import logging
import signal
import textwrap
from importlib import metadata
from pathlib import Path

import typer

from .files import MAX_ROW_MB, row_bytes
from .finetune.config import load_finetune_config
from .verbs import LOG_HELP, Verbs, decode_jobs, show_results
from .verbs import fail as _fail
from .verbs import message as _message


def _count(option: str, most: int = 10**9, least: int = 1):
    """A count option's parser: a whole number from `least` to `most`; else one `error:` line, not click's usage
    box."""
    def parse(value) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            _fail(f"{option} must be a whole number of at least {least}, got {str(value)[:100]!r}")
        if not least <= number <= most:
            bound = f"at least {least}" if number < least else f"at most {most}"
            _fail(f"{option} must be {bound}, got {str(number)[:100]}")
        return number
    return parse


def _folder_option(out: str | Path | None) -> Path | None:
    """An `--out` folder as given: a name that is not empty, written into as it is named, never through a link (one
    `error:` line otherwise)."""
    if out is None:
        return None
    if not str(out).strip():
        _fail("--out must name a folder, got an empty name")
    path = Path(out)
    if path.is_symlink():
        _fail(f"--out {path} is a link; give the folder itself")
    return path



app = typer.Typer(cls=Verbs, help="Benchmark cascades, speculative decoding and speculative cascades.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"speccascade-bench {metadata.version('speccascade-bench')}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         verbose: bool = typer.Option(False, "--verbose", "-v", help="log details"),
         debug: bool = typer.Option(False, "--debug", envvar="SCB_DEBUG",
                                    help="show the traceback of an error instead of one line"),
         _: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                help="print the version and exit")) -> None:
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


TOY_TASKS = {"translation": Path("data/toy"), "arithmetic": Path("data/toy_llm")}  # and their default folders


@app.command("toy-data")
def toy_data(out: str = typer.Option(None, help="folder for the JSONL files; default data/toy (translation) or "
                                     "data/toy_llm (arithmetic)"),
             task: str = typer.Option("translation", help="translation (for seq2seq models) or arithmetic "
                                      "(few-shot documents for decoder-only models, plus shots.jsonl)"),
             seed: int = typer.Option(0, help="generator seed"),
             train: int = typer.Option(20000, parser=_count("--train", 10**7)),
             validation: int = typer.Option(200, parser=_count("--validation", 10**7)),
             test: int = typer.Option(500, parser=_count("--test", 10**7)),
             shots: int = typer.Option(None, parser=_count("--shots", 10**7), help="arithmetic: questions for "
                                       "few-shot prompts (shots.jsonl) [default: 8]")) -> None:
    """Generate a synthetic toy task (deterministic in the seed). Files of the folder that it did not write are
    never overwritten."""
    from .toy import arithmetic, language

    if task not in TOY_TASKS:
        from .settings import suggest

        _fail(f"unknown --task {task!r}{suggest(task[:100], TOY_TASKS)}; choose from {', '.join(TOY_TASKS)}")
    if shots is not None and task != "arithmetic":
        _fail("--shots applies to --task arithmetic only")
    folder = TOY_TASKS[task] if out is None else _folder_option(out)
    _folder_option(folder)
    sizes = {"train": train, **({"shots": shots or 8} if task == "arithmetic" else {}), "validation": validation,
             "test": test}
    paths = (arithmetic if task == "arithmetic" else language).write_splits(folder, seed, sizes)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command()
def finetune(config: Path = typer.Option(..., "--config", "-c", help="fine-tuning YAML config"),
             fresh: bool = typer.Option(False, help="ignore existing checkpoints and start over"),
             max_steps: int = typer.Option(None, parser=_count("--max-steps"), help="override training.max_steps, "
                                           "e.g. to train on from the last checkpoint")) -> None:
    """Train or fine-tune a seq2seq or (model.kind: causal) decoder-only model on a task's training split and
    save it with save_pretrained.
    An existing checkpoint in the output folder is resumed unless --fresh is given."""
    from dataclasses import replace

    from .finetune.train import finetune as run_finetune

    cfg = load_finetune_config(config)
    if max_steps is not None:
        cfg = replace(cfg, max_steps=max_steps)
    summary = run_finetune(cfg, fresh=fresh)
    typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


VARIANT_HELP = "a variant of the config (its `variants` section), e.g. greedy"


SET_HELP = ("KEY=VALUE: set a config key (dotted, e.g. decoding.temperature=0.5 or models.verifier=PATH), the value "
            "read as YAML and checked as the file's; repeat it for several; recorded in the manifest")


@app.command()
def validate(config: Path = typer.Option(..., "--config", "-c", help="run config (YAML)"),
             variant: str = typer.Option(None, help=VARIANT_HELP + "; default: the base and every variant"),
             overrides: list[str] = typer.Option(None, "--set", help=SET_HELP),
             check_env: bool = typer.Option(False, "--check-env", help="also check the machine: CUDA where the config "
                                            "asks for it, the hub models and datasets reachable (or cached), room "
                                            "on the disk for the results")) -> None:
    """Check a config and its variants without loading any model or dataset: every key, value and range, the local
    files, routers and plugins. Without --check-env it does not check the machine (CUDA, the hub, the disk)."""
    from .config.run import load_run_config, load_run_configs
    from .finetune.config import is_finetune_config
    from .run.plan import plan, validate_resources
    from .run.routers import check_routers

    if is_finetune_config(config):
        from .finetune.train import check_resources

        cfg = load_finetune_config(config)
        check_resources(cfg)
        source = cfg.pretrained or f"a new T5 ({', '.join(f'{k}={v}' for k, v in cfg.architecture.items())})"
        typer.echo(f"{config}: ok, fine-tuning config {cfg.name}: {source} for {cfg.max_steps} steps -> {cfg.output}")
        return
    overrides = tuple(overrides or ())
    configs = [load_run_config(config, variant, overrides)] if variant else load_run_configs(config, overrides)
    for cfg in configs:
        validate_resources(cfg)
    for cfg in configs:
        decoded, derived = plan(cfg)
        check_routers(cfg, [*decoded, *derived], [])  # the overlap with the examples: `scb run`, which reads them
        label = f"{config} [{cfg.variant}]" if cfg.variant else str(config)
        typer.echo(f"{label}: ok, {cfg.name} -> {cfg.output} ({len(decoded)} decoded method runs, "
                   f"{len(derived)} derived):")
        typer.echo(textwrap.fill(", ".join(r.run_id for r in decoded + derived), width=100, initial_indent="  ",
                                 subsequent_indent="  ", break_on_hyphens=False, break_long_words=False))
    if check_env:
        from .run.environment import check_environment

        problems = 0
        for cfg in configs:
            fine, bad = check_environment(cfg)
            for line in fine:
                typer.echo(f"  env ok: {line}")
            for line in bad:
                typer.echo(f"error: {cfg.file}: {line}", err=True)
            problems += len(bad)
        if problems:
            raise typer.Exit(2)


@app.command()
def methods() -> None:
    """List the methods, their parameters and valid ranges."""
    from .decoding.catalog import methods_text

    typer.echo(methods_text())


@app.command()
def run(ctx: typer.Context,
        config: Path = typer.Option(..., "--config", "-c", help="run config (YAML)"),
        variant: list[str] = typer.Option(None, help=VARIANT_HELP + "; repeat it for several, `all` for every "
                                          "variant; each writes its own folder"),
        overrides: list[str] = typer.Option(None, "--set", help=SET_HELP),
        output: Path = typer.Option(None, help="results folder (default: the config's output)"),
        limit: int = typer.Option(None, parser=_count("--limit"), help="decode only the first N of the examples "
                                  "the config selects (task.sample or task.first)"),
        device: str = typer.Option(None, help="auto | cpu | cuda (default: the config's)"),
        methods: str = typer.Option(None, help="comma-separated method names to run, e.g. verifier,spec_decode"),
        fresh: bool = typer.Option(False, help="delete earlier results in the folder and start over"),
        workers: int = typer.Option(None, parser=_count("--workers"), help="decode on N Ray workers: one GPU each on "
                                    "CUDA, an equal share of the CPUs on a CPU"),
        ray_address: str = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                        help="with --workers: join this Ray cluster (default: start a local "
                                        "Ray instance)"),
        allow_code_execution: bool = typer.Option(False, "--allow-code-execution",
                                                  help="let a pass_at_1 task run model-written code, each example in "
                                                  "its own sandboxed process (see docs/tasks.md, 'Code execution')"),
        log_to: list[str] = typer.Option(None, "--log", help=LOG_HELP),
        ) -> None:
    """Decode every selected example with every configured method run, recording quality and latency."""
    from .analysis.trackers import Trackers
    from .analysis.tracking import parse_targets
    from .config.run import load_variants
    from .run.local import interrupted_note, signals_as_interrupts
    from .run.plan import prepare
    from .run.settings import RunOptions

    if device is not None and device not in ("auto", "cpu", "cuda"):
        _fail(f"--device must be auto, cpu or cuda, got {device!r}")
    given = getattr(ctx.get_parameter_source("ray_address"), "name", None) == "COMMANDLINE"  # not $RAY_ADDRESS
    if ray_address and given and not workers:
        _fail("--ray-address needs --workers")
    names = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods is not None else None
    if names == ():
        _fail("--methods names no method; give comma-separated method names, e.g. verifier,spec_decode")
    trackers = Trackers(parse_targets(log_to))
    configs = load_variants(config, variant, tuple(overrides or ()))
    if output is not None and len(configs) > 1:
        _fail("--output names one folder; with several variants each writes its own (the config's output)")
    _quiet_libraries()
    options = RunOptions(output=output, limit=limit, device=device, fresh=fresh,
                         allow_code_execution=allow_code_execution, methods=names)
    folders = [Path(output or cfg.output) for cfg in configs]
    repeated = [str(path) for path in folders if folders.count(path) > 1]
    if repeated:
        _fail(f"two variants write into {repeated[0]}; run them in separate commands")
    signals: list[int] = []
    jobs = []
    try:
        with signals_as_interrupts(signals):
            jobs = [prepare(cfg, options) for cfg in configs]  # every run checked before any model loads or bar shows
            outs = decode_jobs(jobs, fresh, workers, ray_address, given, trackers)
    except KeyboardInterrupt:
        trackers.close(failed=True)
        typer.echo(interrupted_note(jobs, folders), err=True)
        raise typer.Exit(128 + (signals[0] if signals else signal.SIGINT)) from None
    except BaseException:
        trackers.close(failed=True)
        raise
    trackers.close()
    for out in outs:
        show_results(out)


ROW_MB_HELP = "the longest line (or JSON file) read from a results folder, in MB; a longer one is refused"


@app.command()
def report(results: list[Path] = typer.Argument(..., help="results folders of `scb run`"),
           html: bool = typer.Option(False, "--html", help="also write one self-contained report.html for all the "
                                     "folders (figures, sortable tables, links to the example files)"),
           out: str = typer.Option(None, help="folder for report.html (default: the results folder; with several "
                                   "folders, the first one's parent)"),
           mix_devices: bool = typer.Option(False, "--mix-devices", help="report examples that ran on different "
                                            "kinds of device together (refused otherwise)"),
           absolute_paths: bool = typer.Option(False, "--absolute-paths", help="show the paths of the folders, "
                                               "models and data in report.html as recorded (by default: relative "
                                               "to the results folder, or with the home folder as ~)"),
           columns: str = typer.Option(None, help="compact: at most 8 aligned columns (the default in a terminal); "
                                       "all: report.md's every column, in Markdown (the default when the output is "
                                       "not a terminal); report.md always holds every column"),
           max_row_mb: int = typer.Option(MAX_ROW_MB, parser=_count("--max-row-mb", 4096), help=ROW_MB_HELP),
           log_to: list[str] = typer.Option(None, "--log", help=LOG_HELP)) -> None:
    """Print the summary table for each folder (also written to RESULTS/report.md and summary.csv when the folder is
    writable; otherwise a one-line note on stderr says so); with --html also report.html; with --log each folder
    goes to the trackers named."""
    import sys

    from .analysis.report import terminal_report, write_report

    if columns not in (None, "compact", "all"):
        _fail(f"--columns must be compact or all, got {columns[:100]!r}")
    compact = columns == "compact" or (columns is None and sys.stdout.isatty())

    if out is not None and not html:
        _fail("--out is where report.html goes: give it with --html")
    out = _folder_option(out)
    if out is not None and (out.exists() or out.is_symlink()) and not out.is_dir():
        _fail(f"--out {out} is not a folder (a file, or a link to nothing); give a folder")
    from .analysis.trackers import Trackers
    from .analysis.tracking import parse_targets

    trackers = Trackers(parse_targets(log_to))
    frames = []  # each folder summarised once, for its report.md and for the page
    for i, folder in enumerate(results):
        text, not_written, frame = write_report(folder, mix_devices, row_bytes(max_row_mb))
        frames.append(frame)
        if compact:
            text = terminal_report(folder, frame, mix_devices)
        typer.echo(("\n" if i else "") + text)
        if not_written is not None:
            typer.echo(f"note: report.md and summary.csv not written into {folder}: {_message(not_written)}",
                       err=True)
    if html:
        from .analysis.html import write_html

        try:
            page = write_html(results, out, mix_devices, frames, absolute_paths, row_bytes(max_row_mb))
        except OSError as exc:
            _fail(f"report.html not written: {_message(exc)}; give --out with a folder you can write")
        typer.echo(f"wrote {page}", err=True)
    for folder, frame in zip(results, frames, strict=True):
        for kind, where in trackers.send(folder, frame).items():
            typer.echo(f"logged {folder} to {kind}: run {where['run_id']}", err=True)
    trackers.close()


@app.command("fit-router")
def fit_router(results: Path = typer.Argument(..., help="results folder of `scb run` with the drafter's and the "
                                              "verifier's outputs on a fitting split (not the evaluation split)"),
               out: Path = typer.Option(..., "--out", "-o", help="the router file to write (JSON)"),
               level: str = typer.Option("sequence", help="sequence (seq_cascade's `sequence_score: learned`) or "
                                         "token (spec_cascade's `rule: learned`; needs `record: \\[tokens]`)"),
               folds: int = typer.Option(5, parser=_count("--folds", least=2), help="cross-validation folds")) -> None:
    """Fit a learned deferral router on a pair's own outputs (logistic regression, cross-validated) and write it
    as JSON; prints its cross-validated AUC next to the plug-in score's."""
    from .analysis.router_fit import fit_router as fit
    from .decoding.router import LEVELS

    if level not in LEVELS:
        _fail(f"--level must be one of {', '.join(LEVELS)}, got {level!r}")
    router = fit(results, level, out, folds)
    f = router.fitted
    typer.echo(f"{out}: {level} router fitted on {len(f['examples'])} examples ({f['weighted_examples']} weighted "
               f"{'positions' if level == 'token' else 'examples'}); cross-validated weighted AUC {f['cv_auc']:.3f} "
               f"against {f['plug_in_auc']:.3f} for {f['plug_in']}")


@app.command()
def plot(results: list[Path] = typer.Argument(..., help="results folders of `scb run` (e.g. one per task)"),
         out: str = typer.Option(None, help="folder for the figures (default: each results folder; with "
                                 "several folders the combined figure goes to the first one's parent)"),
         mix_devices: bool = typer.Option(False, "--mix-devices", help="plot a folder whose examples ran on "
                                          "several kinds of device (refused otherwise)"),
         max_row_mb: int = typer.Option(MAX_ROW_MB, parser=_count("--max-row-mb", 4096), help=ROW_MB_HELP)) -> None:
    """Draw quality against latency relative to the verifier (PNG and PDF), one figure per results
    folder; with several folders also a combined figure with a panel per folder."""
    from .analysis.plot import plot_folders

    paths = plot_folders(results, _folder_option(out), mix_devices, row_bytes(max_row_mb))
    for path in paths:
        typer.echo(str(path))


if __name__ == "__main__":
    app()
