"""MLflow as a tracker (`--log mlflow[=TRACKING_URI]`): a run per results folder in the experiment named after the
config, a child run per method run, found again on a resume by the folder's tracking key (tag `scb.key`)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

# A tracking server that does not answer costs seconds, not the minutes of MLflow's default retries; a user's
# own settings of these stand
for _name, _value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                      ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
    os.environ.setdefault(_name, _value)

import mlflow  # noqa: E402  (after the settings above)
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from .tracking import FolderRecord  # noqa: E402

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

BATCH = 100  # MLflow takes at most 100 params or tags per log_batch call


def _batches(items: list, size: int = BATCH):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowBackend:
    """MLflow by URI: the one given, else MLFLOW_TRACKING_URI, else MLflow's local default (sqlite:///mlflow.db in
    the working folder, its artifacts in ./mlruns)."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri or mlflow.get_tracking_uri()
        self._client = None

    @property
    def client(self) -> MlflowClient:
        """The store's client, made at the first call (a new local store is created then, not before)."""
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else self.client.create_experiment(name)

    def open(self, folder: Path, key: str, name: str) -> dict:
        experiment = self._experiment(name)
        found = self.client.search_runs([experiment], f"tags.`scb.key` = '{key}' and tags.`scb.role` = 'folder'",
                                        max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(experiment, run_name=folder.name,
                                            tags={"scb.key": key, "scb.role": "folder"}).info.run_id
        return {"experiment": experiment, "run": run_id}

    def progress(self, handle: dict, done: int, total: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric("decodes_done", done, now, done)]
        if total:
            metrics.append(Metric("progress", done / total, now, done))
        self.client.log_batch(handle["run"], metrics=metrics)

    def send(self, handle: dict, record: FolderRecord) -> dict:
        run, now = handle["run"], int(time.time() * 1000)
        params = [Param(key, value[:6000]) for key, value in record.params.items()]
        tags = [RunTag(key, value) for key, value in record.tags.items()]
        for chunk in _batches(params):
            self.client.log_batch(run, params=chunk)
        for chunk in _batches(tags):
            self.client.log_batch(run, tags=chunk)
        children = {child.data.tags.get("scb.run_id"): child.info.run_id for child in self.client.search_runs(
            [handle["experiment"]], f"tags.`mlflow.parentRunId` = '{run}'", max_results=10000)}
        for method in record.runs:
            child = children.get(method.run_id)
            if child is None:
                child = self.client.create_run(handle["experiment"], run_name=method.run_id, tags={
                    "mlflow.parentRunId": run, "scb.key": record.key, "scb.role": "method_run",
                    "scb.run_id": method.run_id}).info.run_id
            metrics = [Metric(name, value, now, 0) for name, value in method.metrics.items()]
            self.client.log_batch(child, metrics=metrics,
                                  params=[Param(name, value[:6000]) for name, value in method.params.items()])
            self.client.set_terminated(child)
        for path in record.artifacts:
            self.client.log_artifact(run, str(path))
        self.client.log_table(run, record.latencies, "latencies.json")
        return {"tracking_uri": self.uri, "experiment_id": handle["experiment"], "run_id": run}

    def close(self, handle: dict, failed: bool) -> None:
        self.client.set_terminated(handle["run"], "FAILED" if failed else "FINISHED")
