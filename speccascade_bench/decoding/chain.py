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
Every model's cache follows the sequence it is asked about (`_sync`), so rolled-back tokens are cropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..models.cached import CachedDecoder
from ..models.settings import middle_role
from . import deferral, rules
from .deferral import RULES
from .drafters import DRAFTERS, Drafter, draft_on_device
from .rules import Dists, Target
from .sampling import DecodeResult, Ending, autoregressive, ending, judge_round


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


def _sync(decoder: CachedDecoder, tokens: list[int]) -> None:
    """Point a decoder at the output `tokens`: keep what it shares with them (cache included), drop the rest,
    append what it lacks."""
    have = decoder.generated
    common = 0
    for mine, theirs in zip(have, tokens, strict=False):
        if mine != theirs:
            break
        common += 1
    if common < len(have):
        decoder.truncate(decoder.prompt_length + common)
    decoder.extend(tokens[common:])


def cascade_level(rule: str, alpha: float, draft: Dists, verifier: Dists) -> tuple[Dists, Tensor]:
    """A deferral rule's target at n positions (paper eqs. 6 and 11) as Dists, and each position's deferral
    probability [n]. The scaled part is the target; the unscaled part is the same mixture of the unscaled
    distributions, with the same decisions: what the level above reads as this level's confidence."""
    mix, decided, deferred = rules.cascade_decision(rule, alpha, draft, verifier)
    return Dists(mix(draft.probs, verifier.probs, decided), mix(draft.scaled, verifier.scaled, decided)), deferred


class ChainSampler:
    """One example decoded through a chain; `settle(len(models) - 1, [], limit)` is the whole output. With a
    `bottom` drafter (`drafters.DRAFTERS`: prompt lookup, a plugin's), it drafts at the bottom in the drafter model's
    place, which is then never called."""

    def __init__(self, pair, input_ids: Tensor, settings, levels: list[Level], generator,
                 bottom: Drafter | None = None):
        self.roles = pair.roles
        self.bottom = bottom
        self.decoders = [None if i == 0 and bottom else pair.decoder(role, input_ids)
                         for i, role in enumerate(self.roles)]
        if len(levels) != len(self.decoders) - 1:
            raise ValueError(f"a chain of {len(self.decoders)} models has {len(self.decoders) - 1} levels, "
                             f"got settings for {len(levels)}")
        self.settings, self.levels, self.generator = settings, levels, generator
        self.end: Ending = ending(pair, settings)
        self.counts = [DecodeResult() for _ in levels]  # each level's round counters

    def draft(self, prefix: list[int], wanted: int, with_next: bool) -> tuple[list[int], Dists, int | None]:
        """M_0 alone, as the pair's drafter drafts (`drafters.draft_on_device`): `wanted` tokens after `prefix`,
        their rows (and the next position's with `with_next`), and how many of them it takes to end decoding
        (None: they do not end it). The tokens after an end are drafted too; the round discards them. A `bottom`
        drafter may draft fewer than `wanted` (prompt lookup: one-hot rows)."""
        if self.bottom is not None:
            self.bottom.follow(prefix)
            drafts, rows = self.bottom.propose(self.settings, wanted, with_next, self.generator)
            tokens = drafts.tolist()
            return tokens, rows, self.end.first_end(prefix, tokens)
        decoder = self.decoders[0]
        _sync(decoder, prefix)
        decoder.uncache(1)  # the prefix may be all cached (the drafter's own tokens, settled above)
        drafts, rows = draft_on_device(decoder, self.settings, wanted, with_next, self.generator)
        tokens = drafts.tolist()
        decoder.resolve(tokens)
        return tokens, rows, self.end.first_end(prefix, tokens)

    def settle(self, model: int, prefix: list[int], wanted: int,
               with_next: bool = False) -> tuple[list[int], Dists | None, int | None]:
        """Tokens of model `model`'s level after `prefix`: rounds until `wanted` tokens (one more with `with_next`,
        for its row) or the end of decoding; returns the tokens (at most `wanted`), their rows and, when decoding
        ends within them, how many there are (the last ends it; else None)."""
        if model == 0:
            return self.draft(prefix, wanted, with_next)
        level, counts = self.levels[model - 1], self.counts[model - 1]
        limit = self.end.limit
        tokens: list[int] = []
        probs: list[Tensor] = []
        scaled_rows: list[Tensor] = []
        ended = False
        while len(tokens) < wanted + with_next and not ended:
            base = prefix + tokens
            asked = min(level.gamma, limit - len(base))
            bonus_row = level.bonus_from_target and len(base) + asked < limit
            drafts, draft, stop = self._drafts(model, base, asked, bonus_row)
            new, rows, accepted = self._round(model, base, drafts, draft, stop, counts)
            kept = self.end.clip(base + new, start=len(base) + max(0, accepted - 1))[len(base):]
            tokens += kept
            probs.append(rows.probs[: len(kept)])
            scaled_rows.append(rows.scaled[: len(kept)])
            ended = len(kept) < len(new) or self.end.reached(prefix + tokens)
        ended = ended and len(tokens) <= wanted  # an end among the dropped tokens is no end of these
        rows = Dists(torch.cat(probs), torch.cat(scaled_rows)) if probs else None
        if rows is not None:
            rows = rows.head(min(len(tokens), wanted) + (with_next and not ended))
        return tokens[:wanted], rows, len(tokens) if ended else None

    def _drafts(self, model: int, base: list[int], asked: int,
                with_next: bool) -> tuple[list[int], Dists, int | None]:
        """A round's drafts for model `model` and their rows: from the level below, or with `horizontal` (CS
        Drafting's horizontal cascade) its first positions from the level below and the rest from M_0 alone.
        Each draft's row is the distribution it was drawn from, so the round stays exact."""
        head = self.levels[model - 1].horizontal
        if head is None or model < 2 or head >= asked:
            return self.settle(model - 1, base, asked, with_next)
        drafts, rows, stop = self.settle(model - 1, base, head)
        if stop is not None:
            return drafts, rows, stop
        tail, tail_rows, stop = self.draft(base + drafts, asked - head, with_next)
        return drafts + tail, Dists(torch.cat([rows.probs, tail_rows.probs]),
                                    torch.cat([rows.scaled, tail_rows.scaled])), None if stop is None else head + stop

    def _round(self, model: int, base: list[int], drafts: list[int], draft: Dists, stop: int | None,
               counts: DecodeResult) -> tuple[list[int], Dists, int]:
        """One round of model `model` over `drafts` (rows `draft`), as the pair's round (`speculative_sample`):
        every draft is scored, and the drafts after the `stop`-th (the first that ends decoding) are discarded.
        Returns the settled tokens, each one's row, and how many drafts it accepted."""
        level, settings = self.levels[model - 1], self.settings
        n = len(drafts)
        decoder = self.decoders[model]
        _sync(decoder, base + drafts)
        decoder.uncache(n + 1)
        verifier = Dists.from_logits(decoder.logits(keep=n + 1), settings.temperature, settings.top_p)
        target, settled = self._target(level, draft, verifier)
        drafted = torch.tensor(drafts, dtype=torch.long, device=verifier.probs.device)  # long also when empty
        outcome = rules.verify_on_device(drafted, draft.scaled[:n], target, self.generator)
        accepted, next_token = torch.cat(outcome).tolist()
        new, accepted, k, bonus_kept = judge_round(self.end, len(base), drafts, stop, accepted, next_token)
        counts.count_round(accepted, k, target.deferral, bonus_kept)
        return new, settled, accepted

    def _target(self, level: Level, draft: Dists, verifier: Dists) -> tuple[Target, Dists]:
        """A level's Target for `rules.verify_on_device` and the rows of its settled positions (k + 1: the bonus
        position's is the distribution its bonus token is drawn from)."""
        if level.rule is None:
            return rules.lossless_target(draft, verifier), verifier
        mixed, deferred = cascade_level(level.rule, level.alpha, draft, verifier.head(len(draft)))
        target = rules.mixture_target(mixed.scaled, draft, verifier, deferred, not level.bonus_from_target)
        if len(mixed) < len(verifier):  # the bonus comes from the verifier: so does its row
            k = len(mixed)
            mixed = Dists(torch.cat([mixed.probs, verifier.probs[k:]]), torch.cat([mixed.scaled, verifier.scaled[k:]]))
        return target, mixed

    def result(self, tokens: list[int]) -> DecodeResult:
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
    sampler = ChainSampler(pair, input_ids, settings, levels, generator, bottom)
    tokens, _, _ = sampler.settle(len(levels), [], settings.max_new_tokens)
    return sampler.result(tokens)


def decode_staged_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Staged speculative decoding; with a `drafter` other than `model` (`drafters.DRAFTERS`), that drafter drafts
    for the first model above the drafter (on a pair: the verifier; `prompt_lookup` is then the prompt_lookup
    method)."""
    make = DRAFTERS[params.get("drafter", "model")]
    bottom = make(pair, input_ids, params) if make else None
    return _decode_chain(pair, input_ids, settings, chain_levels(pair, settings, params, False), generator, bottom)


def decode_chain_spec_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    return _decode_chain(pair, input_ids, settings, chain_levels(pair, settings, params, True), generator)


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
