"""A run's quality, and its difference from the verifier's on the same examples with a paired bootstrap interval.
`Qualities` computes each run's per-example values once (`bootstrap.example_values`: a BLEU or chrF run's sentence
statistics, the example scores of another metric) and draws both from them: a BLEU folder of four runs extracts
four sets of sentence statistics, where a quality and a comparison each would extract ten, and `share` extracts
them for all runs together (`bootstrap.systems_values`: each reference read once, a sentence two runs share once).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..files import ResultsError
from ..results.record import ExampleRow
from ..tasks.bootstrap import (
    BootstrapInterval,
    corpus_of,
    example_values,
    paired_bootstrap,
    paired_interval,
    systems_values,
)
from ..tasks.metrics import CORPUS_METRICS, REGISTRY, SCORED_METRICS, corpus_score

BOOTSTRAP_RESAMPLES = 1000

CONFIDENCE = 0.95

MIN_BOOTSTRAP_EXAMPLES = 10  # fewer examples give no interval: a resample of 2 examples says nothing


def scored(metric: str) -> bool:
    """Whether a run's quality is the mean of its rows' scores: a metric scored per example when decoded, or one
    this process does not know (a plugin's, `plugins:`, registered where the run decoded and scored it)."""
    return metric in SCORED_METRICS or metric not in REGISTRY


def quality(results: Path, metric: str, rows: list[ExampleRow]) -> float:
    """A run's quality: the corpus score of its predictions, or for exact_match, f1 and pass_at_1 the mean of
    the rows' scores (computed at run time with the task's answer pattern and normalisation, or the sandbox)."""
    if scored(metric):
        unscored = [row.example_id for row in rows if row.score is None]
        if unscored:
            raise ResultsError(f"{results}: {len(unscored)} lines of {rows[0].run_id} have no score (example "
                               f"{unscored[0]}); {metric} is scored per example when it is decoded")
        return sum(row.score for row in rows) / len(rows) if rows else math.nan
    return corpus_score(metric, [r.prediction for r in rows], [r.reference for r in rows])


def quality_difference(metric: str, rows: list[ExampleRow], reference_rows: list[ExampleRow]) -> BootstrapInterval:
    """A run's quality minus the verifier's on the same examples, with a paired bootstrap interval
    (CONFIDENCE, BOOTSTRAP_RESAMPLES, seed 0): `bootstrap.paired_bootstrap` over the rows matched by example.
    NaN with fewer than MIN_BOOTSTRAP_EXAMPLES examples."""
    by_id = {row.example_id: row for row in reference_rows}
    pairs = [(row, by_id[row.example_id]) for row in rows if row.example_id in by_id]
    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    by_score = scored(metric)
    if len(pairs) < MIN_BOOTSTRAP_EXAMPLES:
        return BootstrapInterval(math.nan, math.nan, math.nan, 0)
    return paired_bootstrap(metric, [r.prediction for r in ours], [r.prediction for r in theirs],
                            [r.reference for r in theirs],
                            [r.score for r in ours] if by_score else None,
                            [r.score for r in theirs] if by_score else None,
                            resamples=BOOTSTRAP_RESAMPLES, seed=0, confidence=CONFIDENCE)


class Qualities:
    """`quality` and `quality_difference` of a folder's runs, each run's per-example values computed once. A run
    whose rows are the verifier's examples in the same order (every run, over the examples all runs share) draws
    both from its values against the verifier's references; another run falls back to the functions above."""

    def __init__(self, results: Path, metric: str, reference_rows: list[ExampleRow]):
        self.results, self.metric, self.reference_rows = results, metric, reference_rows
        self.ids = [row.example_id for row in reference_rows]
        self.references = [row.reference for row in reference_rows]
        self._values: dict[int, np.ndarray] = {}

    def _paired(self, rows: list[ExampleRow]) -> bool:
        """Whether `rows` are the verifier's examples, in its order."""
        return bool(rows) and [row.example_id for row in rows] == self.ids

    def share(self, runs: list[list[ExampleRow]]) -> None:
        """Compute the BLEU or chrF values of every run paired with the verifier together (`systems_values`),
        so that `values` finds them."""
        paired = [rows for rows in runs if self._paired(rows) and id(rows) not in self._values]
        if self.metric in CORPUS_METRICS and paired:
            computed = systems_values(self.metric, [[row.prediction for row in rows] for rows in paired],
                                      self.references)
            self._values.update((id(rows), values) for rows, values in zip(paired, computed, strict=True))

    def values(self, rows: list[ExampleRow]) -> np.ndarray:
        """A run's `example_values` against the verifier's references (its scores for a scored metric)."""
        if id(rows) not in self._values:
            if scored(self.metric):
                quality(self.results, self.metric, rows)  # a ResultsError where a row has no score
            scores = [row.score for row in rows] if scored(self.metric) else None
            self._values[id(rows)] = example_values(self.metric, [row.prediction for row in rows],
                                                    self.references, scores)
        return self._values[id(rows)]

    def quality(self, rows: list[ExampleRow]) -> float:
        """`quality`; from the run's values where they are its own (its references are the verifier's)."""
        if scored(self.metric) or not self._paired(rows) or \
                [row.reference for row in rows] != self.references:
            return quality(self.results, self.metric, rows)
        return corpus_of(self.metric, self.values(rows))

    def versus(self, rows: list[ExampleRow]) -> BootstrapInterval:
        """`quality_difference` against the verifier; 0 exactly for the verifier itself."""
        if not self._paired(rows) or len(rows) < MIN_BOOTSTRAP_EXAMPLES:
            return quality_difference(self.metric, rows, self.reference_rows) if self.reference_rows else \
                BootstrapInterval(math.nan, math.nan, math.nan, 0)
        if rows is self.reference_rows:
            return BootstrapInterval(0.0, 0.0, 0.0, BOOTSTRAP_RESAMPLES)  # every resample's difference is 0
        return paired_interval(self.metric, self.values(rows), self.values(self.reference_rows),
                               BOOTSTRAP_RESAMPLES, 0, CONFIDENCE)
