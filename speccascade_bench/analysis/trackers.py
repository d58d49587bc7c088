"""The trackers of one command (`scb run --log`, `scb report --log`): each folder's tracker runs opened, told the
progress, sent the folder (`tracking.folder_record`) and closed. A tracker that fails never stops the command or
touches the folder: it gives one warning line, and `scb report FOLDER --log ...` sends the folder again later."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..results.manifest import record_trackers
from .tracking import Target, TrackingError, folder_record

log = logging.getLogger(__name__)

PROGRESS_EVERY = 10.0  # seconds between two progress metrics of a folder


class Trackers:
    """The trackers of one command: each folder's tracker runs opened (`open`, a resume finds its run again by the
    folder's tracking key), told the progress (`progress`), sent the folder (`send`) and closed (`close`). Every
    call to a tracker is guarded: its failure is one warning, after which that tracker is left alone for that
    folder."""

    def __init__(self, targets: tuple[Target, ...] = ()) -> None:
        self.targets = targets
        self.backends = {}
        for target in targets:
            try:
                self.backends[target.kind] = _backend(target)
            except Exception as exc:  # a library that cannot start here: one line, before anything runs
                raise TrackingError(f"{target}: {' '.join(str(exc).split())[:300]}") from None
        self.handles: dict[tuple[str, Path], object] = {}
        self.failed: set[tuple[str, Path]] = set()
        self.folders: dict[Path, tuple[str, str]] = {}  # folder -> (tracking key, config name), for `progress`
        self.last_progress: dict[Path, float] = {}

    def _guard(self, kind: str, folder: Path, doing: str, call):
        if (kind, folder) in self.failed:
            return None
        try:
            return call()
        except Exception as exc:  # a tracker's failure, whatever it is, stops nothing local
            self.failed.add((kind, folder))
            target = next(t for t in self.targets if t.kind == kind)
            text = " ".join(str(exc).split()) or type(exc).__name__
            text = text if len(text) <= 200 else text[:200] + "..."
            log.warning("%s could not %s %s (%s); the results folder is complete: send it later with "
                        "`scb report %s --log %s`", kind, doing, folder, text, folder, target)
            return None

    def expect(self, folder: Path, key: str, name: str) -> None:
        """Name a folder this command will decode into: its tracker runs open with its first progress."""
        self.folders[folder] = (key, name)

    def _open(self, folder: Path, key: str, name: str) -> None:
        for kind, backend in self.backends.items():
            if (kind, folder) not in self.handles:
                handle = self._guard(kind, folder, "start a run for", lambda b=backend: b.open(folder, key, name))
                if handle is not None:
                    self.handles[(kind, folder)] = handle

    def progress(self, folder: Path, done: int, total: int) -> None:
        """Log a folder's progress (decodes done of the total), at most every PROGRESS_EVERY seconds and at its
        end; opens the folder's tracker runs (`expect`) at the first call."""
        if not self.targets or folder not in self.folders:
            return
        now = time.monotonic()
        if now - self.last_progress.get(folder, -math.inf) < PROGRESS_EVERY and done < total:
            return
        self.last_progress[folder] = now
        self._open(folder, *self.folders[folder])
        for kind, backend in self.backends.items():
            handle = self.handles.get((kind, folder))
            if handle is not None:
                self._guard(kind, folder, "log the progress of", lambda b=backend, h=handle: b.progress(h, done, total))

    def send(self, folder: Path, frame: pd.DataFrame | None = None,
             runs: dict[str, list[dict]] | None = None) -> dict[str, dict]:
        """Send a finished folder to each tracker (opening its run if `open` did not), with its summary and rows
        where the caller has them already (`folder_record`); returns, by tracker, where it went (the tracker's run
        id and store), for the manifest."""
        if not self.targets:
            return {}
        with tempfile.TemporaryDirectory(prefix="scb-figures-") as drawn:  # the figures, where the folder has none
            record = self._guard(self.targets[0].kind, folder, "read",
                                 lambda: folder_record(folder, frame, Path(drawn), runs))
            if record is None:
                return {}
            self._open(folder, record.key, record.name)
            sent = {}
            for kind, backend in self.backends.items():
                handle = self.handles.get((kind, folder))
                if handle is not None:
                    where = self._guard(kind, folder, "send", lambda b=backend, h=handle: b.send(h, record))
                    if where is not None:
                        sent[kind] = where
        return sent

    def close(self, failed: bool = False) -> None:
        """End every open tracker run: finished, or failed (an interrupted or failed command)."""
        for (kind, folder), handle in list(self.handles.items()):
            self._guard(kind, folder, "end the run of", lambda b=self.backends[kind], h=handle: b.close(h, failed))
        self.handles.clear()


def record_sent(folder: Path, sent: dict[str, dict]) -> None:
    """Record in a folder's manifest where `Trackers.send` sent it (in `scb run`, under the folder's lock)."""
    if sent:
        record_trackers(folder, sent)


def _backend(target: Target):
    if target.kind == "mlflow":
        from .tracking_mlflow import MlflowBackend

        return MlflowBackend(target.where)
    from .tracking_wandb import WandbBackend

    return WandbBackend(target.where)
