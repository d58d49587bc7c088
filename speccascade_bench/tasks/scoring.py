"""The per-example score of a prediction, as every results row records it (`score`, 0 to 100).

Text metrics come from `metrics.example_score`; a task source that scores its own examples gives the score
and per-sample metrics (`sources.TaskSource.score`: lm-eval's filters and metrics, `harness.HarnessTask.score`).
`pass_at_1` runs the prediction's code against the example's tests in `sandbox.run_tests`, a separate sandboxed
process per example, and only when the run was given `--allow-code-execution`; the sandbox's verdict is recorded
beside the score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .data import DataError, Example
from .metrics import CODE_METRICS, example_score
from .patterns import extract_answer
from .settings import TaskConfig
from .sources import hook, source_of


class CodeExecutionRefused(RuntimeError):
    """A pass_at_1 task was scored without permission to run model-written code."""


class Scorer:
    """Scores predictions of one task. `allow_code_execution` permits pass_at_1's sandbox; `hidden` are
    folders (the results folder) that the sandboxed code must not see."""

    def __init__(self, task: TaskConfig, allow_code_execution: bool = False, hidden: Sequence[Path] = ()):
        self.task, self.allow_code_execution, self.hidden = task, allow_code_execution, tuple(hidden)
        self.source = source_of(task)
        if task.metric in CODE_METRICS and not allow_code_execution:
            raise CodeExecutionRefused(f"{task.metric} runs model-written code: it needs --allow-code-execution")

    def score(self, example: Example, prediction: str) -> tuple[float, str | None]:
        """The example's score and, for pass_at_1, the sandbox's verdict."""
        return self.scored(example, prediction)[:2]

    def scored(self, example: Example, prediction: str) -> tuple[float, str | None, dict | None]:
        """The example's score, the sandbox's verdict (pass_at_1) and lm-eval's per-sample metrics (lm_eval tasks,
        `{filter: {metric: value}}`)."""
        task = self.task
        own = hook(self.source, "score", task, example, prediction)
        if own is not None:  # a source that scores its examples itself (lm-eval's filters and metrics)
            if not (isinstance(own, tuple) and len(own) == 2 and isinstance(own[0], int | float)
                    and not isinstance(own[0], bool) and math.isfinite(own[0])
                    and (own[1] is None or isinstance(own[1], dict))):
                raise DataError(f"the task source {self.source.name!r} scored example {example.example_id} with "
                                f"{str(own)[:80]!r}, not (a number from 0 to 100, per-sample metrics or None)",
                                "dataset")
            score, metrics = own
            return min(100.0, max(0.0, float(score))), None, metrics
        if task.metric not in CODE_METRICS:
            score = example_score(task.metric, prediction, example.references, answer_pattern=task.answer_pattern,
                                  normalize=task.normalize, answer_select=task.answer_select)
            return min(100.0, max(0.0, score)), None, None  # sentence BLEU of an exact match can be 100 + 4e-14
        from .sandbox import run_tests

        code = extract_answer(prediction, task.answer_pattern)
        verdict = run_tests(code or "", example.tests or "", example.setup or "", timeout_s=task.code_timeout_s,
                            memory_mb=task.code_memory_mb, hidden=self.hidden)
        return (100.0 if verdict.passed else 0.0), verdict.reason, None
