"""Learned deferral: a router fitted on a pair's own outputs (`scb fit-router`) that scores how much deferring to
the verifier is worth, at two levels.

- sequence: from the drafter's whole output (quantiles of its token log-probabilities and its length), the
  probability that the verifier's output scores better; `seq_cascade` with `sequence_score: learned` defers the
  examples it ranks highest.
- token: from the drafter's and the verifier's distributions at a position, the probability that the verifier
  puts more mass on the reference token; `spec_cascade` with `rule: learned` mixes the target
  T = (1 - delta) q + delta p with delta that probability, tilted by alpha (docs/ALGORITHMS.md).

A router is a standardised logistic model stored as JSON (never pickle): `Router.from_dict` checks every field.
This module holds the maths and the record; it reads no file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..files import UnreadableFile, read_json
from .deferral import LEARNED, deferral_rule, sequence_score
from .settings import DecodingConfig

FORMAT = "speccascade-bench router"
VERSION = 1

LEVELS = ("sequence", "token")

# The features of each level, by name, in the order a router's coefficients follow.
SEQUENCE_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
SEQUENCE_FEATURES = (*(f"logprob_q{q:g}" for q in SEQUENCE_QUANTILES), "logprob_mean", "length")
TOKEN_FEATURES = ("max_q", "max_p", "tv", "entropy_q", "entropy_p")
FEATURES = {"sequence": SEQUENCE_FEATURES, "token": TOKEN_FEATURES}

# The range of each feature, which bounds a router's logit (`logit_bound`): log-probabilities are floored at
# LOGPROB_FLOOR, an output has at most decoding.max_new_tokens tokens, probabilities and their total variation lie in
# [0, 1], an entropy in [0, log V] for a vocabulary of at most 2^24 tokens.
LOGPROB_FLOOR = -1e4
MAX_LENGTH = next(f.metadata["high"] for f in fields(DecodingConfig) if f.name == "max_new_tokens")
MAX_ENTROPY = math.log(2**24)
RANGES = {"sequence": ((LOGPROB_FLOOR, 0.0),) * (len(SEQUENCE_FEATURES) - 1) + ((0.0, float(MAX_LENGTH)),),
          "token": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, MAX_ENTROPY), (0.0, MAX_ENTROPY))}
# The most any number of a router or its logit may be: the token rule computes logits in float32 (at most 3.4e38)
LIMIT = 1e30


def sequence_features(token_logprobs: Sequence[float]) -> list[float]:
    """SEQUENCE_FEATURES of one output from the drafter's log-probabilities of its own tokens: their quantiles
    (`deferral.sequence_score`'s chow_quantile), their mean and their number (an empty output: zeros); a
    log-probability below LOGPROB_FLOOR (-inf included) or NaN counts as LOGPROB_FLOOR, so that the features stay
    in their RANGES."""
    values = [value if value >= LOGPROB_FLOOR else LOGPROB_FLOOR for value in map(float, token_logprobs)]
    quantiles = [sequence_score(values, "chow_quantile", q) for q in SEQUENCE_QUANTILES]
    return [*quantiles, sequence_score(values, "chow_average"), float(len(values))]


def token_features(draft_probs, verifier_probs):
    """TOKEN_FEATURES at n positions from the unscaled distributions q and p [n, V] -> [n, 5]: max q, max p, their
    total variation distance and each one's entropy in nats."""
    import torch

    def entropy(probs):
        return -(probs * probs.clamp_min(1e-30).log()).sum(-1)

    tv = 0.5 * (draft_probs - verifier_probs).abs().sum(-1)
    return torch.stack([draft_probs.amax(-1), verifier_probs.amax(-1), tv, entropy(draft_probs),
                        entropy(verifier_probs)], dim=-1)


class RouterError(ValueError):
    """A router record that is not one (its field and why)."""


def _number(value) -> float | None:
    """`value` as a float when it is a number within ±LIMIT (a 400-digit integer is none), else None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= LIMIT else None


def _numbers(value, name: str, size: int) -> list[float]:
    numbers = [_number(v) for v in value] if isinstance(value, list) else [None]
    if None in numbers:
        raise RouterError(f"`{name}` must be a list of finite numbers within ±{LIMIT:g}")
    if len(numbers) != size:
        raise RouterError(f"`{name}` has {len(numbers)} values for {size} features")
    return numbers


def standard_extremes(level: str, mean, scale) -> list[float]:
    """Each feature's largest |standardised value| (x - mean) / scale over its range (RANGES)."""
    return [max(abs(low - m), abs(high - m)) / s for (low, high), m, s in zip(RANGES[level], mean, scale, strict=True)]


def logit_bound(level: str, mean, scale, coef, intercept: float) -> float:
    """The largest |logit| of a router over its features' RANGES (the logit is linear: each term is largest at an
    end of its feature's range)."""
    return abs(intercept) + sum(abs(c) * e for c, e in zip(coef, standard_extremes(level, mean, scale), strict=True))


def _check_fitted(fitted: dict) -> None:
    """The record of what a router was fitted on, as the checks of a run read it."""
    pair, task, examples = fitted.get("pair", {}), fitted.get("task", {}), fitted.get("examples", [])
    if not isinstance(pair, dict) or not all(isinstance(pair.get(role), str) for role in ("drafter", "verifier")):
        raise RouterError("`fitted.pair` must name the drafter and the verifier")
    if not isinstance(fitted.get("tokenizer"), str):
        raise RouterError("`fitted.tokenizer` must be a name")
    if not isinstance(task, dict) or not all(isinstance(task.get(key), str | None) for key in
                                             ("dataset", "subset", "split")):
        raise RouterError("`fitted.task` must be a mapping of dataset, subset and split names")
    if not isinstance(examples, list) or not all(isinstance(e, int) and not isinstance(e, bool) for e in examples):
        raise RouterError("`fitted.examples` must be a list of example ids")
    weights = fitted.get("weights", {})
    if not isinstance(weights, dict) or not all(isinstance(v, dict) for v in weights.values()):
        raise RouterError("`fitted.weights` must map roles to the fingerprints of their weights")


@dataclass(frozen=True)
class Router:
    """A fitted router: logit(x) = sum_i coef_i (x_i - mean_i) / scale_i + intercept over `features`, and what it
    was fitted on (`fitted`: pair, tokenizer, task, split, example ids, model and cross-validation scores)."""

    level: str
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    fitted: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data) -> Router:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RouterError(f"not a router file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise RouterError(f"router format version {data.get('version')!r}; this suite reads {VERSION}")
        level = data.get("level")
        if level not in LEVELS:
            raise RouterError(f"`level` must be one of {', '.join(LEVELS)}, got {level!r}")
        features = data.get("features")
        if features != list(FEATURES[level]):
            raise RouterError(f"`features` {features!r} are not this suite's {level} features "
                              f"({', '.join(FEATURES[level])}): fit the router again with `scb fit-router`")
        n = len(features)
        mean, scale, coef = (_numbers(data.get(name), name, n) for name in ("mean", "scale", "coef"))
        if any(s <= 0 for s in scale):
            raise RouterError("`scale` must be positive")
        intercept = _number(data.get("intercept"))
        if intercept is None:
            raise RouterError(f"`intercept` must be a finite number within ±{LIMIT:g}")
        extremes = standard_extremes(level, mean, scale)
        if max(extremes) > LIMIT:  # beyond float32, even where the feature's coefficient is 0
            i = extremes.index(max(extremes))
            raise RouterError(f"`scale` and `mean` standardise {features[i]} to {extremes[i]:.3g} at an end of its "
                              f"range; at most {LIMIT:g}")
        bound = logit_bound(level, mean, scale, coef, intercept)
        if bound > LIMIT:
            raise RouterError(f"`coef` with this `mean`, `scale` and `intercept` gives logits up to {bound:.3g} at "
                              f"the ends of the features' ranges; at most {LIMIT:g}")
        fitted = data.get("fitted", {})
        if not isinstance(fitted, dict):
            raise RouterError("`fitted` must be a mapping")
        _check_fitted(fitted)
        return cls(level, tuple(features), tuple(mean), tuple(scale), tuple(coef), intercept, fitted)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "level": self.level, "features": list(self.features),
                "mean": list(self.mean), "scale": list(self.scale), "coef": list(self.coef),
                "intercept": self.intercept, "fitted": self.fitted}

    def logit(self, features: Sequence[float]) -> float:
        """The router's logit for one feature vector."""
        return self.intercept + sum(c * (x - m) / s for c, x, m, s in
                                    zip(self.coef, features, self.mean, self.scale, strict=True))

    def probability(self, features: Sequence[float]) -> float:
        """The fitted probability that deferring pays, for one feature vector."""
        z = self.logit(features)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def logits(self, features):
        """The logits of a tensor of feature vectors [n, F] -> [n]."""
        import torch

        coef = torch.tensor(self.coef, dtype=features.dtype, device=features.device)
        mean = torch.tensor(self.mean, dtype=features.dtype, device=features.device)
        scale = torch.tensor(self.scale, dtype=features.dtype, device=features.device)
        return ((features - mean) / scale) @ coef + self.intercept


def tilted_deferral(router: Router, draft_probs, verifier_probs, alpha: float):
    """The learned token rule's deferral weight delta [n] in [0, 1]: the router's probability with its logit
    shifted by logit(alpha). alpha 1/2 is the fitted router; alpha 0 never defers (the drafter's q), alpha 1
    always does (the verifier's p)."""
    import torch

    n = draft_probs.shape[0]
    if alpha <= 0.0:
        return torch.zeros(n, dtype=draft_probs.dtype, device=draft_probs.device)
    if alpha >= 1.0:
        return torch.ones(n, dtype=draft_probs.dtype, device=draft_probs.device)
    z = router.logits(token_features(draft_probs, verifier_probs)) + math.log(alpha / (1.0 - alpha))
    return torch.sigmoid(z)


@deferral_rule(LEARNED, alpha=(0.0, 1.0), uses_router=True)
def defer_learned(draft, verifier, alpha: float, router: Router):
    """The learned token rule: defer each position with weight delta (`tilted_deferral`); the target is
    (1 - delta) q + delta p."""
    return tilted_deferral(router, draft.probs, verifier.probs, alpha)


def read_router(path: str | Path) -> Router:
    """The router in a JSON file (a RouterError naming the file when it is not one; OSError when unreadable),
    read once per file and modification time."""
    path = Path(path)
    return _read_router(str(path.resolve()), path.stat().st_mtime_ns)


ROUTER_BYTES = 16 * 10**6  # a router file is numbers and names: a few kilobytes


@functools.lru_cache(maxsize=16)
def _read_router(path: str, mtime: int) -> Router:
    try:  # a regular file, opened without blocking, bounded and depth-checked before the parser sees it
        data = read_json(Path(path), ROUTER_BYTES, "the bound of a router file")
    except UnreadableFile as exc:
        raise RouterError(str(exc)) from None
    try:
        return Router.from_dict(data)
    except RouterError as exc:
        raise RouterError(f"{path}: {exc}") from None
