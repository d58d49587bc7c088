"""A command's options for a run (`RunOptions`) and the callbacks it takes; what a run is (its config and its
method runs, as its folder records them) is `results.settings`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (run_id, done, total)
Finisher = Callable[[Path], None]  # called with a results folder once its examples are decoded


@dataclass(frozen=True)
class RunOptions:
    output: Path | None = None
    limit: int | None = None
    device: str | None = None
    methods: tuple[str, ...] | None = None
    fresh: bool = False
    allow_code_execution: bool = False  # pass_at_1: run model-written code in the sandbox
