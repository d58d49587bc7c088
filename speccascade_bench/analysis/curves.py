"""The geometry of the trade-off figures, apart from drawing: the order in which a curve's points are joined,
the Pareto frontier over every method, the latency interval of a point and the zoomed window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..decoding.methods import METHODS
from ..tasks.bootstrap import resample_indices


def _number(value) -> tuple[float, ...]:
    """A parameter cell as numbers to sort by: a number, a chain's per-level values joined by `+`, or nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, int | float):
        return (float(value),)
    try:
        return tuple(float(part) for part in str(value).split("+"))
    except ValueError:
        return ()


def sweep_key(row) -> tuple:
    """Where a summary row sits along its curve: the values of its method's swept parameters (those that do not
    name the curve), in the registry's order of the method's parameters. A curve's points are joined in this
    order, so that a curve that folds back in latency shows it."""
    spec = METHODS.get(row["method"])
    params = [p.name for p in spec.params if p.sweepable and not p.labels_curve] if spec else []
    return tuple(_number(row.get(name)) for name in params)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the points on the quality-latency Pareto frontier, in order of latency: a point is on it
    when no other point has at most its latency and more quality, or less latency and at least its quality.
    Points with a NaN coordinate are never on it; of identical points the first is."""
    order = sorted((i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))),
                   key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def ratio_interval(ours: Sequence[float], theirs: Sequence[float], resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float]:
    """A paired bootstrap interval of mean(ours) / mean(theirs), resampling the pairs (examples): the spread of a
    relative latency across examples. NaN with fewer than 2 pairs."""
    a, b = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}: the pairs must match")
    if len(a) < 2:
        return math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.concatenate([a[picks].mean(axis=1) / b[picks].mean(axis=1)
                                 for picks in resample_indices(np.random.default_rng(seed), len(a), resamples)])
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


ZOOM_BELOW = 0.05  # the zoomed panel starts this fraction of the verifier's quality below it (at least 1 point)


def zoom_window(points: Sequence[tuple[float, float]], reference: float) -> tuple[tuple[float, float],
                                                                                   tuple[float, float]] | None:
    """The zoomed panel's (x range, y range): the points whose quality is within ZOOM_BELOW of the verifier's
    quality `reference` or above it, with a margin, and x = 1 (the verifier). None when no other point is there."""
    low = reference - max(1.0, ZOOM_BELOW * abs(reference))
    near = [(x, y) for x, y in points if not (math.isnan(x) or math.isnan(y)) and y >= low]
    if len(near) < 2:
        return None
    xs, ys = [x for x, _ in near] + [1.0], [y for _, y in near] + [reference]
    x_pad = 0.05 * max(max(xs) - min(xs), 0.05)
    y_pad = 0.08 * max(max(ys) - low, 0.5)
    return (min(xs) - x_pad, max(xs) + x_pad), (low - y_pad, max(ys) + y_pad)
