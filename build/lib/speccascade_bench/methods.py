"""The registry of decoding methods: names, parameters and their valid ranges.

This module is pure data (no torch) so that configs can be validated without loading anything.
The decoders that implement each method are registered in `speccascade_bench.decoding`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

RULES = ("chow", "diff", "opt", "token_v1", "token_v2", "token_v3")

# Valid alpha range of each deferral rule (ALGORITHMS.md); None means unbounded.
RULE_ALPHA_RANGE: dict[str, tuple[float | None, float | None]] = {
    "chow": (0.0, 1.0),
    "diff": (-1.0, 1.0),
    "opt": (None, None),
    "token_v1": (-1.0, 1.0),
    "token_v2": (-1.0, 1.0),
    "token_v3": (0.0, 1.0),
}


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    default: float | str | None = None
    required: bool = False
    sweepable: bool = True
    choices: tuple[str, ...] = ()

    def range_text(self) -> str:
        if self.choices:
            return " | ".join(self.choices)
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}{')' if self.high_open else ']'}"

    def check(self, value: float) -> str | None:
        """Returns an error message, or None if `value` is in range."""
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        too_low = self.low is not None and value < self.low
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            return f"must be in {self.range_text()}, got {value:g}"
        return None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    uses_drafter: bool = True
    uses_verifier: bool = True

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


DRAFT_LENGTH = Param("draft_length", "tokens drafted per round (gamma); defaults to decoding.draft_length", 1, 64)

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("drafter", "autoregressive decoding with the drafter alone", uses_verifier=False),
        MethodSpec("verifier", "autoregressive decoding with the verifier alone", uses_drafter=False),
        MethodSpec(
            "seq_cascade",
            "Chow cascade on a sequence confidence: defer the whole output to the verifier when the "
            "drafter's mean token log-probability is low",
            (
                Param("alpha", "deferral rate: the fraction of examples deferred (a quantile of the confidence)",
                      0.0, 1.0),
                Param("threshold", "absolute confidence threshold (mean log q); defer when below", None, 0.0),
            ),
        ),
        MethodSpec(
            "token_cascade",
            "Chow cascade per token: defer a position to the verifier when max q < 1 - alpha",
            (Param("alpha", "deferral parameter", 0.0, 1.0, required=True),),
        ),
        MethodSpec("spec_decode", "lossless speculative decoding / sampling", (DRAFT_LENGTH,)),
        MethodSpec(
            "lossy_spec_decode",
            "lossy speculative decoding (Tran-Thien): accept with min(1, p / ((1 - alpha) q)), "
            "residual norm(max(0, p - beta q))",
            (
                Param("alpha", "lenience: 0 is lossless", 0.0, 1.0, high_open=True, required=True),
                Param("beta", "residual weight of the drafter", 0.0, 1.0, default=1.0),
                DRAFT_LENGTH,
            ),
        ),
        MethodSpec(
            "spec_cascade",
            "speculative cascade: speculative sampling towards a deferral-rule target",
            (
                Param("rule", "deferral rule", required=True, sweepable=False, choices=RULES),
                Param("alpha", "deferral parameter; its range depends on the rule", required=True),
                DRAFT_LENGTH,
                Param("bonus", "distribution of the bonus token after a fully accepted draft: the target "
                      "(needs one more drafter step) or the verifier's", default="target", sweepable=False,
                      choices=("target", "verifier")),
            ),
        ),
        MethodSpec(
            "bild",
            "Big Little Decoder (Kim et al. 2023): the drafter decodes until its max probability falls below "
            "alpha (fallback) or it has emitted draft_length tokens in a row; the verifier then scores those "
            "tokens in one call, rolls back from the first whose cross-entropy under it exceeds beta, and "
            "emits the next token",
            (
                Param("alpha", "fallback threshold on the drafter's max probability", 0.0, 1.0, required=True),
                Param("beta", "rollback threshold on -log p(token) in nats", 0.0, None, required=True),
                Param("draft_length", "most drafter tokens in a row before the verifier is called; defaults "
                      "to decoding.draft_length", 1, 4096),
            ),
        ),
    )
}


def suggest(name: str, options) -> str:
    """A ' (did you mean ...?)' suffix for an unknown name, or ''."""
    close = difflib.get_close_matches(name, list(options), n=2, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def alpha_param(method: str, rule: str | None) -> Param | None:
    """The alpha parameter of a method, with the range of its rule for spec_cascade."""
    spec = METHODS[method]
    base = spec.param("alpha")
    if base is None or method != "spec_cascade" or rule is None:
        return base
    low, high = RULE_ALPHA_RANGE[rule]
    return Param("alpha", base.description, low, high, required=True)
