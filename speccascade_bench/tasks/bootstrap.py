"""The paired bootstrap of a quality difference: metric(a) - metric(b) on the same examples, with a percentile
interval. Mean metrics resample example scores; BLEU and chrF resample per-sentence sufficient statistics and
rescore the corpus, since a corpus BLEU is not the mean of sentence BLEUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import CORPUS_METRICS, check_metric, example_score, reference_list, sacrebleu_metric


@dataclass(frozen=True)
class BootstrapInterval:
    """metric(a) - metric(b) on all examples, and its bootstrap percentile interval [low, high]."""

    difference: float
    low: float
    high: float
    resamples: int


SENTENCES = 10_000  # sentences whose BLEU or chrF statistics are extracted at a time


def example_values(metric: str, predictions: Sequence[str], references, scores: Sequence[float] | None = None,
                   answer_pattern: str | None = None, normalize: str = "squad") -> np.ndarray:
    """What a resample sums, (n, k): per-sentence sufficient statistics for BLEU/chrF, else the example
    scores as a column (given, or computed with `example_score`)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if metric in CORPUS_METRICS:
        if scores is not None:
            raise ValueError(f"{metric} is a corpus metric: it is resampled from sentence statistics, not scores")
        first, scorer = [reference_list(refs)[0] for refs in references], sacrebleu_metric(metric)
        # each sentence's statistics are its own: extracted by blocks, only a block's references are held at a time
        blocks = (scorer._extract_corpus_statistics(list(predictions[i:i + SENTENCES]), [first[i:i + SENTENCES]])
                  for i in range(0, len(first), SENTENCES))
        return np.asarray([stats for block in blocks for stats in block], dtype=np.float64)
    if scores is None:
        scores = [example_score(metric, pred, refs, answer_pattern, normalize)
                  for pred, refs in zip(predictions, references, strict=True)]
    if len(scores) != len(predictions):
        raise ValueError(f"{len(scores)} scores but {len(predictions)} predictions")
    return np.asarray(scores, dtype=np.float64)[:, None]


def systems_values(metric: str, systems: Sequence[Sequence[str]], references) -> list[np.ndarray]:
    """`example_values` of several systems' predictions on the same references, one array per system. For BLEU
    and chrF each block's references are read once for all systems (sacrebleu's reference cache), and a sentence
    that an earlier system predicted for the same example takes that system's statistics: a lossless method's
    outputs are mostly the verifier's own."""
    if metric not in CORPUS_METRICS:
        return [example_values(metric, predictions, references) for predictions in systems]
    for predictions in systems:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    first, scorer = [reference_list(refs)[0] for refs in references], sacrebleu_metric(metric)
    blocks: list[list[list]] = [[] for _ in systems]
    for start in range(0, len(first), SENTENCES):
        cache = scorer._cache_references([first[start:start + SENTENCES]])
        done: list[list] = []
        for predictions in systems:
            block = list(predictions[start:start + SENTENCES])
            stats: list = [None] * len(block)
            for earlier, earlier_stats in zip(systems, done, strict=False):  # the systems before
                for i, sentence in enumerate(block):
                    if stats[i] is None and earlier[start + i] == sentence:
                        stats[i] = earlier_stats[i]
            new = [i for i, value in enumerate(stats) if value is None]
            if new:
                scorer._ref_cache = [cache[i] for i in new]
                for i, value in zip(new, scorer._extract_corpus_statistics([block[i] for i in new], None), strict=True):
                    stats[i] = value
            done.append(stats)
        for system, stats in zip(blocks, done, strict=True):
            system.append(stats)
    return [np.asarray([stats for block in system for stats in block], dtype=np.float64) for system in blocks]


def _index_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """(resamples, m) example indices -> (resamples, n) how often each example was drawn."""
    resamples = indices.shape[0]
    offsets = indices + n * np.arange(resamples)[:, None]
    return np.bincount(offsets.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _statistic(metric: str, summed: np.ndarray, size: int) -> np.ndarray:
    """The metric of each resample from its summed values (resamples, k); `size` examples per resample."""
    if metric in CORPUS_METRICS:
        scorer = sacrebleu_metric(metric)
        return np.array([scorer._compute_score_from_stats(row.tolist()).score for row in summed])
    return summed[:, 0] / size


def _resampled(metric: str, values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    if values.shape[1] == 1:  # example scores: summed where drawn (no (resamples, n) matrix of counts)
        return _statistic(metric, values[indices, 0].sum(axis=1, keepdims=True), indices.shape[1])
    return _statistic(metric, _index_counts(indices, len(values)) @ values, indices.shape[1])


DRAWS = 4_000_000  # example indices drawn at a time: resamples of 10^5 examples take 32 MB, not 800 MB at once


def resample_indices(rng: np.random.Generator, n: int, resamples: int) -> Iterator[np.ndarray]:
    """`rng.integers(0, n, size=(resamples, n))` in blocks of rows of at most DRAWS indices (the same draws)."""
    step = max(1, DRAWS // n)
    for start in range(0, resamples, step):
        yield rng.integers(0, n, size=(min(step, resamples - start), n))


def resampled_scores(metric: str, predictions: Sequence[str], references, indices: np.ndarray,
                     scores: Sequence[float] | None = None, *, answer_pattern: str | None = None,
                     normalize: str = "squad") -> np.ndarray:
    """The corpus metric of each resample, (resamples,), from example indices (resamples, m). One row
    holding every index once gives `corpus_score`. `scores` replaces `example_score` for mean metrics."""
    check_metric(metric, answer_pattern)
    values = example_values(metric, predictions, references, scores, answer_pattern, normalize)
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] == 0:
        raise ValueError(f"indices must be (resamples, m) with m >= 1, got shape {indices.shape}")
    return _resampled(metric, values, indices)


def paired_bootstrap(metric: str, predictions_a: Sequence[str], predictions_b: Sequence[str], references,
                     scores_a: Sequence[float] | None = None, scores_b: Sequence[float] | None = None, *,
                     resamples: int = 1000, seed: int | np.random.Generator = 0, confidence: float = 0.95,
                     answer_pattern: str | None = None, normalize: str = "squad") -> BootstrapInterval:
    """Paired bootstrap of metric(a) - metric(b): each resample draws the same example indices for both
    systems, and [low, high] is the `confidence` percentile interval of the resampled differences.
    Mean metrics resample example scores (`scores_a`/`scores_b`, or computed with `example_score`);
    BLEU and chrF resample per-sentence sufficient statistics and rescore the corpus."""
    check_metric(metric, answer_pattern)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if len(references) == 0:
        raise ValueError("no examples to resample")
    values_a = example_values(metric, predictions_a, references, scores_a, answer_pattern, normalize)
    values_b = example_values(metric, predictions_b, references, scores_b, answer_pattern, normalize)
    return paired_interval(metric, values_a, values_b, resamples, seed, confidence)


def paired_interval(metric: str, values_a: np.ndarray, values_b: np.ndarray, resamples: int = 1000,
                    seed: int | np.random.Generator = 0, confidence: float = 0.95) -> BootstrapInterval:
    """`paired_bootstrap` from each system's `example_values` on the same examples (computed once, to compare
    one system with several)."""
    n = len(values_a)
    difference = corpus_of(metric, values_a) - corpus_of(metric, values_b)
    differences = np.concatenate([_resampled(metric, values_a, indices) - _resampled(metric, values_b, indices)
                                  for indices in resample_indices(np.random.default_rng(seed), n, resamples)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return BootstrapInterval(float(difference), float(low), float(high), resamples)


def corpus_of(metric: str, values: np.ndarray) -> float:
    """The corpus metric of every example once, from their `example_values` (`corpus_score`'s value)."""
    return float(_resampled(metric, values, np.arange(len(values))[None, :])[0])
