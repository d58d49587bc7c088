"""Chains of models M_0 < M_1 < ... < M_n (the drafter, the middle models, the verifier): staged speculative
decoding and the speculative cascade across a chain, one recursive sampler.

Level j (1..n) is the pair (M_{j-1}, M_j). The drafts for M_j come from the levels below: M_0 samples them
alone; for j >= 2, M_{j-1} verifies M_{j-2}'s drafts in rounds of speculative sampling and the tokens it
settles are M_j's drafts. Each level's tokens follow a known distribution at every position (its row): M_0's
own, or the target of the level that settled them (the verifier's distribution for lossless levels, a
deferral rule's mixture for cascade levels). M_j's round accepts them against its own target with those rows
as the draft distribution (paper Alg. 4), so every level is exact in its target and the verifier's output
follows the top level's target: the verifier's distribution for staged speculative decoding, the cascades'
composed mixture otherwise (docs/ALGORITHMS.md, "Chains").

A level asked for m drafts settles rounds until it has m tokens, or m + 1 when the level above needs the
row at its bonus position (a cascade with `bonus: target`): the extra token is dropped, its row kept.
Every model's cache follows the sequence it is asked about (`drafters.follow_decoder`), so rolled-back tokens are
cropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..models.settings import middle_role
from . import deferral, rules
from .deferral import RULES
from .drafters import DRAFTERS, Drafter, ModelDrafter
from .rules import Dists, Target
from .sampling import DecodeResult, Ending, autoregressive, ending
from .speculative import Rounds


@dataclass(frozen=True)
class Level:
    """How level j settles its tokens: its draft length, its deferral rule and alpha (None: lossless), and
    whether its bonus token is drawn from its target (then the level below gives the row at the bonus position);
    with `horizontal`, only a round's first `horizontal` drafts come from the level below, the rest from M_0."""

    gamma: int
    rule: str | None = None
    alpha: float = 0.0
    bonus_from_target: bool = False
    horizontal: int | None = None  # drafts past this many positions of a round come from M_0 directly


def cascade_level(rule: str, alpha: float, draft: Dists, verifier: Dists) -> tuple[Dists, Tensor]:
    """A deferral rule's target at n positions (paper eqs. 6 and 11) as Dists, and each position's deferral
    probability [n]. The scaled part is the target; the unscaled part is the same mixture of the unscaled
    distributions, with the same decisions: what the level above reads as this level's confidence."""
    mix, decided, deferred = rules.cascade_decision(rule, alpha, draft, verifier)
    return Dists(mix(draft.probs, verifier.probs, decided), mix(draft.scaled, verifier.scaled, decided)), deferred


def level_target(level: Level, with_rows: bool) -> rules.TargetFn:
    """A level's target function for its rounds (`speculative.Rounds`): the verifier's distribution (lossless) or
    its deferral rule's mixture; `with_rows`, the rows of its settled positions too (k + 1: the bonus position's is
    the distribution its bonus token is drawn from), which the level above reads."""
    if level.rule is None:
        if not with_rows:
            return rules.lossless_target

        def lossless(draft: Dists, verifier: Dists) -> Target:
            return replace(rules.lossless_target(draft, verifier), rows=verifier)

        return lossless

    def cascade(draft: Dists, verifier: Dists) -> Target:
        mixed, deferred = cascade_level(level.rule, level.alpha, draft, verifier.head(len(draft)))
        target = rules.mixture_target(mixed.scaled, draft, verifier, deferred, not level.bonus_from_target)
        if not with_rows:
            return target
        if len(mixed) < len(verifier):  # the bonus comes from the verifier: so does its row
            k = len(mixed)
            mixed = Dists(torch.cat([mixed.probs, verifier.probs[k:]]), torch.cat([mixed.scaled, verifier.scaled[k:]]))
        return replace(target, rows=mixed)

    return cascade


class LevelDrafter:
    """Level j - 1 as level j's drafter: the tokens it settles (`Rounds.settle`) are level j's drafts, and the
    distribution each follows is that draft's q. With `horizontal` (CS Drafting's horizontal cascade), only a
    round's first `horizontal` drafts come from the level below, the rest from the `bottom` drafter (M_0) alone."""

    def __init__(self, below: Rounds, device: torch.device, horizontal: int | None = None,
                 bottom: Drafter | None = None):
        self.below, self.device, self.horizontal, self.bottom = below, device, horizontal, bottom
        self.output: list[int] = []  # level j's output, which its drafts follow

    @property
    def calls(self) -> int:
        return self.below.verifier.calls

    def follow(self, output: list[int]) -> None:
        self.output = list(output)

    def propose(self, settings, wanted: int, with_next: bool, generator) -> tuple[Tensor, Dists]:
        head = self.horizontal
        if head is None or head >= wanted:
            tokens, rows, _ = self.below.settle(self.output, wanted, with_next)
            return self._on_device(tokens), rows
        tokens, rows, ended = self.below.settle(self.output, head, False)
        if ended:
            return self._on_device(tokens), rows
        self.bottom.follow(self.output + tokens)
        tail, tail_rows = self.bottom.propose(settings, wanted - head, with_next, generator)
        return torch.cat([self._on_device(tokens), tail]), Dists(torch.cat([rows.probs, tail_rows.probs]),
                                                                 torch.cat([rows.scaled, tail_rows.scaled]))

    def _on_device(self, tokens: list[int]) -> Tensor:
        return torch.tensor(tokens, dtype=torch.long, device=self.device)  # long also when empty

    def advance(self, kept: int, accepted: list[int], next_t: Tensor | None, next_token: int) -> None:
        self.output = self.output[:kept - len(accepted)] + accepted + ([] if next_t is None else [next_token])


class ChainSampler:
    """One example decoded through a chain, each level a `speculative.Rounds` whose drafter is the level below
    (`LevelDrafter`) or, at level 1, the drafter model; `run()` is the whole output. With a `bottom` drafter
    (`drafters.DRAFTERS`: prompt lookup, a plugin's), it drafts at the bottom in the drafter model's place, which is
    then never called."""

    def __init__(self, pair, input_ids: Tensor, settings, levels: list[Level], generator,
                 bottom: Drafter | None = None):
        self.roles = pair.roles
        self.decoders = [None if i == 0 and bottom else pair.decoder(role, input_ids)
                         for i, role in enumerate(self.roles)]
        if len(levels) != len(self.decoders) - 1:
            raise ValueError(f"a chain of {len(self.decoders)} models has {len(self.decoders) - 1} levels, "
                             f"got settings for {len(levels)}")
        self.bottom = bottom or ModelDrafter(self.decoders[0])
        self.end: Ending = ending(pair, settings)
        self.counts = [DecodeResult() for _ in levels]  # each level's round counters
        drafter: Drafter = self.bottom
        for j, level in enumerate(levels):
            if j:
                drafter = LevelDrafter(self.rounds, input_ids.device, level.horizontal, self.bottom)
            self.rounds = Rounds(self.decoders[j + 1], drafter, level_target(level, j < len(levels) - 1), settings,
                                 self.end, level.gamma, level.bonus_from_target, generator, self.counts[j],
                                 lossless=level.rule is None)

    def run(self) -> DecodeResult:
        tokens = self.rounds.run()
        for counts in self.counts:
            counts.settle()
        top = self.counts[-1]
        calls = {role: (decoder or self.bottom).calls for role, decoder in zip(self.roles, self.decoders, strict=True)}
        return DecodeResult(tokens, drafter_calls=calls["drafter"], verifier_calls=calls["verifier"],
                            drafted=top.drafted, accepted=top.accepted, rounds=top.rounds,
                            accepted_per_round=top.accepted_per_round, rejections=top.rejections,
                            deferred=top.deferred, calls=calls, levels=[c.level_counts() for c in self.counts])


def _per_level(params: dict, name: str, levels: int, default) -> list:
    values = params.get(name, [default] * levels)
    values = list(values) if isinstance(values, list | tuple) else [values] * levels
    if len(values) != levels:
        raise ValueError(f"{name} has {len(values)} values; the chain has {levels} levels")
    return values


def chain_levels(pair, settings, params: dict, cascade: bool) -> list[Level]:
    """Each level's settings from a chain method's parameters (per-level lists)."""
    levels = len(pair.roles) - 1
    gammas = _per_level(params, "draft_lengths", levels, settings.draft_length)
    if not cascade:
        levels_ = [Level(int(gamma)) for gamma in gammas]
        if params.get("horizontal") is not None:
            levels_[-1] = replace(levels_[-1], horizontal=int(params["horizontal"]))
        return levels_
    from_target = params.get("bonus", "target") == "target"
    chosen = _per_level(params, "rules", levels, None)
    alphas = _per_level(params, "alphas", levels, None)
    unknown = [rule for rule in chosen if rule not in RULES]
    if unknown:
        raise ValueError(f"unknown deferral rule {unknown[0]!r}")
    return [Level(int(g), rule, float(a), from_target) for g, rule, a in zip(gammas, chosen, alphas, strict=True)]


def _decode_chain(pair, input_ids, settings, levels: list[Level], generator,
                  bottom: Drafter | None = None) -> DecodeResult:
    return ChainSampler(pair, input_ids, settings, levels, generator, bottom).run()


def _bottom(pair, input_ids, params: dict) -> Drafter | None:
    """The chain's bottom drafter where `drafter` names one other than `model` (`drafters.DRAFTERS`), which drafts
    for the first model above the drafter (on a pair: the verifier)."""
    make = DRAFTERS[params.get("drafter", "model")]
    return make(pair, input_ids, params) if make else None


def decode_staged_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Staged speculative decoding, its bottom drafter `drafter` (on a pair, `prompt_lookup` is the prompt_lookup
    method)."""
    return _decode_chain(pair, input_ids, settings, chain_levels(pair, settings, params, False), generator,
                         _bottom(pair, input_ids, params))


def decode_chain_spec_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    """The speculative cascade across a chain, its bottom drafter `drafter` (with a one-hot q, every level's rule
    one of `deferral.ONE_HOT_RULES`, and the bonus from the verifier: checked with the config)."""
    return _decode_chain(pair, input_ids, settings, chain_levels(pair, settings, params, True), generator,
                         _bottom(pair, input_ids, params))


def decode_middle(pair, input_ids, settings, params, generator) -> DecodeResult:
    """One middle model of a chain alone (`level` 1 is the one after the drafter), with its token log-probabilities
    (what chain_seq_cascade's confidences read)."""
    role = middle_role(params["level"])
    decoder = pair.decoder(role, input_ids)
    tokens, logprobs = autoregressive(decoder, settings, ending(pair, settings), generator, track_logprob=True)
    return DecodeResult(tokens, calls={role: decoder.calls}, drafter_token_logprobs=logprobs)


def decode_chain_seq_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Each model in turn decodes from scratch, and keeps its output when its sequence confidence
    (`deferral.sequence_score`) is at least its level's threshold; the verifier's output is always kept.
    (Deferral rates are evaluated over a whole run from the one-model outputs:
    `results.derived.chain_seq_cascade_rows`.)"""
    if "thresholds" not in params:
        raise ValueError("chain_seq_cascade decodes one example only with absolute thresholds; deferral rates "
                         "(alphas) are evaluated over a whole run from each model's outputs")
    roles = pair.roles
    thresholds = _per_level(params, "thresholds", len(roles) - 1, None)
    end = ending(pair, settings)
    calls: dict[str, int] = {}
    for i, role in enumerate(roles):
        decoder = pair.decoder(role, input_ids)
        tokens, logprobs = autoregressive(decoder, settings, end, generator, track_logprob=True)
        calls[role] = decoder.calls
        if role == "drafter":
            first = logprobs
        if i == len(roles) - 1 or deferral.sequence_score(logprobs, params.get("sequence_score", "chow_average"),
                                                           params.get("quantile")) >= thresholds[i]:
            break
    return DecodeResult(tokens, drafter_calls=calls["drafter"], verifier_calls=calls.get("verifier", 0),
                        deferred=float(len(tokens)) * (i == len(roles) - 1), calls={r: calls.get(r, 0) for r in roles},
                        drafter_token_logprobs=first)
