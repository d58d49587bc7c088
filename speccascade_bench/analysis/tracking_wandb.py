"""Weights & Biases as a tracker (`--log wandb[=PROJECT]`): a W&B run per results folder, its id the folder's
tracking key (so a resume continues it), grouped by the config's name. W&B has no child runs: each method run is a
row of the `runs` table and its metrics are summary keys `RUN_ID/METRIC`."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import wandb

from .tracking import FolderRecord

PROJECT = "speccascade-bench"  # the project without `--log wandb=PROJECT` or WANDB_PROJECT


def logged_in() -> bool:
    """Whether W&B has an API key here (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbBackend:
    """W&B in the project given, else WANDB_PROJECT, else PROJECT; online only where the user has logged in (else
    offline: the run is kept under ./wandb for `wandb sync`), unless WANDB_MODE says otherwise."""

    def __init__(self, project: str | None) -> None:
        self.project = project or os.environ.get("WANDB_PROJECT") or PROJECT
        self.mode = None if os.environ.get("WANDB_MODE") else ("online" if logged_in() else "offline")

    def open(self, folder: Path, key: str, name: str):
        return wandb.init(project=self.project, id=key, resume="allow", name=folder.name, group=name,
                          job_type="scb", mode=self.mode, reinit="create_new",
                          settings=wandb.Settings(silent=True, console="off", init_timeout=60))

    def progress(self, run, done: int, total: int) -> None:
        run.log({"decodes_done": done, **({"progress": done / total} if total else {})})

    def send(self, run, record: FolderRecord) -> dict:
        run.config.update({**record.params, "provenance": record.tags}, allow_val_change=True)
        run.tags = tuple(dict.fromkeys([*run.tags, *(f"{key}={record.tags[key]}"[:64] for key in
                                                     ("device", "git_commit") if key in record.tags)]))
        for method in record.runs:
            for name, value in method.metrics.items():
                run.summary[f"{method.run_id}/{name}"] = value
        table = pd.DataFrame([{"run_id": m.run_id, **m.params, **m.metrics} for m in record.runs])
        run.log({"runs": wandb.Table(dataframe=table.astype(object).where(table.notna(), None)),
                 "latencies": wandb.Table(dataframe=record.latencies)})
        artifact = wandb.Artifact(f"results-{record.key[:12]}", type="results",
                                  description=f"the results folder {record.folder.name}")
        for path in record.artifacts:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        return {"project": self.project, "run_id": run.id, "mode": run.settings.mode, "dir": run.dir}

    def close(self, run, failed: bool) -> None:
        run.finish(exit_code=1 if failed else 0)
