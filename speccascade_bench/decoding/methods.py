"""The registry of decoding methods: names, parameters and their valid ranges.

This module is pure data (no torch) so that configs can be validated without loading anything.
The decoders that implement each method are registered in `decoding.dispatch`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePath

from ..models.settings import middle_role
from ..settings import check_registered_name, interval_text
from . import budget_rule as _budget_rule  # noqa: F401  (registers budget_opt)
from . import round_rule as _round_rule  # noqa: F401  (registers round_opt)
from . import router as _router  # noqa: F401  (registers the learned deferral rule)
from .deferral import LEARNED, SEQUENCE_SCORES
from .deferral import RULES as DEFERRAL_RULES
from .drafters import DRAFTERS, MAX_NGRAM


class _AlphaRanges(Mapping):
    """Each registered deferral rule's valid alpha range (`deferral.RULES`, docs/ALGORITHMS.md), read live: a
    rule registered after this module is imported is in it at once."""

    def __getitem__(self, rule: str) -> tuple[float | None, float | None]:
        return DEFERRAL_RULES[rule].alpha

    def __iter__(self) -> Iterator[str]:
        return iter(DEFERRAL_RULES)

    def __len__(self) -> int:
        return len(DEFERRAL_RULES)


RULE_ALPHA_RANGE = _AlphaRanges()
RULES = DEFERRAL_RULES.keys()  # the deferral rules of spec_cascade, live as well


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
    choices: Collection[str] = ()  # a live view for `rule`: the deferral registry's names
    tag: str = ""              # the prefix of its value in a run id (alpha 0.3 -> a0.3); default: its name
    integer: bool = False
    labels_curve: bool = False  # part of a curve's name (not the swept parameter that traces the curve)
    needs: tuple[str, str] | None = None  # (choice, value): it applies, and is then required, only at that value
    per_level: bool = False  # a chain method's list of one value per level (per adjacent pair of models)
    path: bool = False  # a file's path (a router): named in run ids and curves by its file's stem


    def range_text(self) -> str:
        if self.path:
            return "a file's path"
        if self.choices:
            return " | ".join(self.choices)
        return interval_text(self.low, self.high, high_open=self.high_open)

    def label(self, value, number: str, sep: str) -> str | None:
        """The parameter at `value` in a name (a run id, a curve's name): `number`, the caller's text of a
        numeric value; a required choice as its value; an optional choice as name, `sep`, value, or None
        (not shown) at its default."""
        if self.path:
            stem = PurePath(str(value)).stem
            return f"{self.name}={stem}" if sep == "=" else f"{self.tag or self.name}{stem}"
        if not self.choices:
            return number
        if self.required:
            return str(value)
        return None if value == self.default else f"{self.name}{sep}{value}"

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
    roles: tuple[str, ...] = ("drafter", "verifier")  # the models it calls
    one_of: tuple[str, ...] = ()     # exactly one of these parameters must be given
    derived_by: str | None = None    # a run setting this parameter is evaluated from the baselines' outputs
    marker: str | None = None        # drawn as a single point with this marker (no parameter to sweep)
    chain: bool = False              # calls every model of the chain; its per-level parameters have one value per level
    baseline: bool = False           # one model alone: its rows give that model's cost per forward call
    decoder: str | Callable = ""     # `module:function` in decoding/ (imported when first used); a plugin's: a function
    derive: str = ""                 # with `derived_by` set: `module:function` in results/ giving its rows from others'
    router_level: str | None = None  # the level of router its `router` parameter names (`scb fit-router --level`)

    def roles_for(self, chain_roles: tuple[str, ...], params: dict | None = None) -> tuple[str, ...]:
        """The roles of the models it calls in a chain with `chain_roles` (a middle model's run: that model)."""
        if self.chain:
            return chain_roles
        if self.name == MIDDLE:
            return (middle_role((params or {})["level"]),)
        return self.roles

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)



DRAFT_LENGTH = Param("draft_length", "tokens drafted per round (gamma); defaults to decoding.draft_length", 1, 64,
                     tag="g", integer=True)

# The baselines every run records: the verifier is the reference of relative latency and quality; both give
# the per-call costs of the summary.
REFERENCE = "verifier"

DRAFTER = "drafter"

MIDDLE = "middle"  # a middle model of a chain alone (its `level`: 1 is the one after the drafter)

def ROUTER_PARAM(choice: str) -> Param:  # noqa: N802  (a constant's maker)
    """The router file of a learned deferral (`scb fit-router`), needed when `choice` is `learned`."""
    return Param("router", "the router file of `learned` (`scb fit-router`: JSON, fitted on this pair's outputs on "
                 "another split)", sweepable=False, tag="r", labels_curve=True, path=True, needs=(choice, LEARNED))


def rule_params() -> tuple[Param, ...]:
    """spec_cascade's parameters beyond alpha of the coupled rules registered so far (`deferral.RuleParam`), each
    taken with its rule only: rho traces a curve, the others name one."""
    return tuple(Param(p.name, p.description, p.low, p.high, default=p.default, tag=p.tag, needs=("rule", rule.name),
                       labels_curve=p.name != "rho")
                 for rule in DEFERRAL_RULES.values() for p in rule.params)


PER_LEVEL_GAMMA = Param("draft_lengths", "tokens each model drafts per round for the next, one per level (the "
                        "drafter's first); defaults to decoding.draft_length at every level", 1, 64, tag="g",
                        integer=True, per_level=True)

BOTTOM_DRAFTER = Param("drafter", "what drafts at the bottom of the chain: the drafter model, or a drafter in its "
                       "place (`prompt_lookup`, or a plugin's: the drafter model is then never called; on a pair, "
                       "prompt_lookup here is the prompt_lookup method)", default="model", choices=DRAFTERS,
                       sweepable=False, labels_curve=True)
BOTTOM_NGRAM = Param("max_ngram", "with drafter: prompt_lookup, the longest n-gram looked up", 1, 64, default=MAX_NGRAM,
                     tag="n", integer=True, needs=("drafter", "prompt_lookup"))

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(DRAFTER, "autoregressive decoding with the drafter alone", roles=("drafter",), marker="s",
                   baseline=True, decoder="loops:decode_drafter"),
        MethodSpec(REFERENCE, "autoregressive decoding with the verifier alone", roles=("verifier",),
                   marker="*", baseline=True, decoder="loops:decode_verifier"),
        MethodSpec(MIDDLE, "autoregressive decoding with one middle model of a chain alone",
                   (Param("level", "which middle model: 1 is the one after the drafter", 1, 62, required=True,
                          tag="l", integer=True, sweepable=False),), roles=(), marker="^", baseline=True,
                   decoder="chain:decode_middle"),
        MethodSpec(
            "seq_cascade",
            "Chow cascade on a sequence confidence: defer the whole output to the verifier when the "
            "drafter's mean token log-probability is low",
            (
                Param("alpha", "deferral rate: the fraction of examples deferred (a quantile of the confidence)",
                      0.0, 1.0, tag="a"),
                Param("threshold", "absolute confidence threshold (of the sequence score); defer when below", None,
                      0.0, tag="t"),
                Param("sequence_score", "the sequence confidence (Gupta et al. 2024): chow_average (the mean token "
                      "log q), chow_sum (their sum), chow_quantile (a quantile of them), learned (minus a router's "
                      "probability that deferring pays; `scb fit-router`)", default="chow_average",
                      sweepable=False, choices=(*SEQUENCE_SCORES, LEARNED), labels_curve=True),
                Param("quantile", "chow_quantile's quantile of the token log-probabilities (low: the least "
                      "confident tokens decide)", 0.0, 1.0, tag="q", labels_curve=True,
                      needs=("sequence_score", "chow_quantile")),
                ROUTER_PARAM("sequence_score"),
            ),
            one_of=("alpha", "threshold"),
            derived_by="alpha",
            derive="derived:seq_cascade_run",
            router_level="sequence",
            decoder="loops:decode_seq_cascade",
        ),
        MethodSpec(
            "token_cascade",
            "Chow cascade per token: defer a position to the verifier when max q < 1 - alpha",
            (Param("alpha", "deferral parameter", 0.0, 1.0, required=True, tag="a"),),
            decoder="loops:decode_token_cascade",
        ),
        MethodSpec("spec_decode", "lossless speculative decoding / sampling", (DRAFT_LENGTH,), marker="D",
                   decoder="speculative:decode_spec"),
        MethodSpec(
            "prompt_lookup",
            "lossless speculative decoding with prompt lookup as the drafter (transformers' "
            "prompt_lookup_num_tokens): the tokens after the first earlier occurrence of the sequence's last n "
            "tokens are the drafts; no drafter model is called",
            (DRAFT_LENGTH,
             Param("max_ngram", "the longest n-gram looked up (n from it down to 1; transformers' "
                   "max_matching_ngram_size)", 1, 64, default=MAX_NGRAM, tag="n", integer=True)),
            roles=("verifier",), marker="X", decoder="speculative:decode_prompt_lookup",
        ),
        MethodSpec(
            "lossy_spec_decode",
            "lossy speculative decoding (Tran-Thien): accept with min(1, p / ((1 - alpha) q)), "
            "residual norm(max(0, p - beta q))",
            (
                Param("alpha", "lenience: 0 is lossless", 0.0, 1.0, high_open=True, required=True, tag="a"),
                Param("beta", "residual weight of the drafter", 0.0, 1.0, default=1.0, tag="b", labels_curve=True),
                DRAFT_LENGTH,
            ),
            decoder="speculative:decode_lossy_spec",
        ),
        MethodSpec(
            "spec_cascade",
            "speculative cascade: speculative sampling towards a deferral-rule target",
            (
                Param("rule", "deferral rule", required=True, sweepable=False, choices=RULES, labels_curve=True),
                Param("alpha", "deferral parameter; its range depends on the rule", required=True, tag="a"),
                DRAFT_LENGTH,
                Param("bonus", "distribution of the bonus token after a fully accepted draft: the target "
                      "(exact; needs one more drafter step) or the verifier's (an approximation: the output "
                      "then no longer follows the target at that position)", default="target", sweepable=False,
                      choices=("target", "verifier"), labels_curve=True),
                ROUTER_PARAM("rule"),
                *rule_params(),
            ),
            decoder="speculative:decode_spec_cascade",
            router_level="token",
        ),
        MethodSpec(
            "bild",
            "Big Little Decoder (Kim et al. 2023): the verifier emits the first token; the drafter then decodes "
            "until its max probability falls below alpha (fallback) or it has emitted draft_length tokens in a "
            "row; the verifier scores those tokens in one call, rolls back from the first whose cross-entropy "
            "under it exceeds beta (and then also emits the token after its replacement), or else emits the "
            "next token",
            (
                Param("alpha", "fallback threshold on the drafter's max probability", 0.0, 1.0, required=True,
                      tag="a"),
                Param("beta", "rollback threshold on -log p(token) in nats", 0.0, None, required=True, tag="b",
                      labels_curve=True),
                Param("draft_length", "most drafter tokens in a row before the verifier is called; defaults "
                      "to decoding.draft_length", 1, 4096, tag="g", integer=True),
                Param("loop", "reference: the authors' T5BiLDModel greedy loop (the verifier emits the first "
                      "token, and the token after a rollback's replacement); drafter_first: this suite's earlier "
                      "loop (the drafter starts, and takes over right after every verifier token)",
                      default="reference", sweepable=False, choices=("reference", "drafter_first"),
                      labels_curve=True),
            ),
            decoder="loops:decode_bild",
        ),
        MethodSpec(
            "staged_spec_decode",
            "staged speculative decoding (Spector and Re 2023; CS Drafting's vertical cascade): each model of the "
            "chain drafts for the next by lossless speculative decoding; the output follows the verifier exactly",
            (PER_LEVEL_GAMMA,
             Param("horizontal", "CS Drafting's horizontal cascade: the verifier's drafts come from the level "
                   "below for the first `horizontal` positions of a round and from the drafter directly for the rest "
                   "(a chain of three or more models; below the top level's draft length)", 1, 63, tag="h",
                   integer=True, labels_curve=True),
             BOTTOM_DRAFTER, BOTTOM_NGRAM),
            chain=True, marker="P", decoder="chain:decode_staged_spec",
        ),
        MethodSpec(
            "chain_spec_cascade",
            "speculative cascade across a chain: at each level the next model verifies the drafts of the levels "
            "below against the target of that level's deferral rule (on a pair: spec_cascade)",
            (
                Param("rules", "deferral rule per level", required=True, sweepable=False, choices=RULES,
                      labels_curve=True, per_level=True),
                Param("alphas", "deferral parameter per level; each in its rule's range", required=True, tag="a",
                      per_level=True),
                PER_LEVEL_GAMMA,
                Param("bonus", "as spec_cascade's, at every level", default="target", sweepable=False,
                      choices=("target", "verifier"), labels_curve=True),
                replace(BOTTOM_DRAFTER, description="what drafts at the bottom of the chain: the drafter model, "
                        "or a drafter in its place (`prompt_lookup`, or a plugin's; the drafter model is then never "
                        "called). Its q is one-hot, and passes up where a level keeps a draft: every level's rule must "
                        "read p at the draft (token_v2, token_v3; `deferral.ONE_HOT_RULES`), and bonus must be "
                        "verifier"),
                BOTTOM_NGRAM,
            ),
            chain=True, decoder="chain:decode_chain_spec_cascade",
        ),
        MethodSpec(
            "chain_seq_cascade",
            "Chow cascade over a chain: each model keeps its output unless its sequence confidence is low, else "
            "the next model decodes from scratch",
            (
                Param("alphas", "deferral rate per level: the fraction of the examples reaching a model that it "
                      "defers to the next (a quantile of its confidence over them)", 0.0, 1.0, tag="a",
                      per_level=True),
                Param("thresholds", "absolute confidence threshold per level; a model defers when below", None,
                      0.0, tag="t", per_level=True),
                Param("sequence_score", "as seq_cascade's, for every model", default="chow_average",
                      sweepable=False, choices=SEQUENCE_SCORES, labels_curve=True),
                Param("quantile", "chow_quantile's quantile, as seq_cascade's", 0.0, 1.0, tag="q", labels_curve=True,
                      needs=("sequence_score", "chow_quantile")),
            ),
            one_of=("alphas", "thresholds"),
            derived_by="alphas",
            derive="derived:chain_seq_cascade_run",
            chain=True, decoder="chain:decode_chain_seq_cascade",
        ),
    )
}


def refresh_rule_params() -> None:
    """Give spec_cascade the parameters of the coupled rules registered since this module was imported (a plugin's:
    `config.run` calls it after the plugins). The summary's parameter columns stay the package's."""
    spec = METHODS["spec_cascade"]
    kept = tuple(p for p in spec.params if p.needs is None or p.path)
    METHODS["spec_cascade"] = replace(spec, params=kept + rule_params())


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a decoded method to the registry (a plugin's: a speculative variant, a method with its own drafter), its
    `decoder` a function with `dispatch.decode`'s signature. Its parameters are the registry's `Param`s; those not
    among the package's methods' get no column of summary.csv (they still name its run ids)."""
    check_registered_name("method", spec.name)
    if spec.name in METHODS:
        raise ValueError(f"the method {spec.name!r} is registered twice")
    if not callable(spec.decoder):
        raise ValueError(f"the method {spec.name!r}: a registered method's decoder is a function")
    if spec.derived_by or spec.baseline or spec.chain:
        raise ValueError(f"the method {spec.name!r}: a registered method is decoded with the pair, not derived, a "
                         "baseline or a chain's")
    METHODS[spec.name] = spec
    return spec


def resolve_hook(text: str | Callable, package: str):
    """The function a spec's `module:function` (its `decoder`, its `derive`) names in `package`, imported now (a
    registered method's function as it is)."""
    if callable(text):
        return text
    module, sep, name = text.partition(":")
    if not (sep and module and name):
        raise ValueError(f"{text!r} is not module:function")
    return getattr(importlib.import_module(f"{package}.{module}"), name)


def alpha_param(method: str, rule: str | None) -> Param | None:
    """The alpha parameter of a method (a chain method's `alphas`), with the range of its rule (a level's rule)
    for the speculative cascades."""
    spec = METHODS[method]
    base = spec.param("alphas" if spec.chain else "alpha")
    if base is None or spec.param("rules" if spec.chain else "rule") is None or rule is None:
        return base
    low, high = RULE_ALPHA_RANGE[rule]
    return replace(base, low=low, high=high)


# Every parameter name of the registry, in order of first appearance: the summary's parameter columns.
PARAMETERS = tuple(dict.fromkeys(param.name for spec in METHODS.values() for param in spec.params))

