"""The speculative methods, one round engine (`Rounds`): a round drafts gamma tokens with a drafter (the pair's
drafter model, prompt lookup, a plugin's: `drafters`; in a chain, the level below), scores them with one verifier
call and accepts or resamples against a target distribution from `rules`. With the verifier's distribution as the
target it is lossless speculative decoding; lossy speculative decoding and the speculative cascades change only the
target function. `speculative_sample` runs a pair's rounds; `chain` stacks them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.cached import CachedDecoder, ModelPair
from . import rules
from .deferral import RULES
from .drafters import Drafter, ModelDrafter, advance_decoder, follow_decoder, prompt_lookup
from .router import read_router
from .rules import Dists
from .sampling import DecodeResult, Ending, ending, judge_round
from .settings import DecodingConfig


class Rounds:
    """The round engine of every speculative method: one verifier, the drafter below it and a target function.
    A pair's loop runs its rounds to the end (`run`); a chain stacks them, each level's `Rounds` the drafter of the
    level above (`chain.LevelDrafter`, through `settle`), so that every level's round is this one.

    A round reads the device once: drafting, the acceptance test, the draw of the next token and the caches'
    tokens stay on it, and the accepted count, the next token and the drafts come back together. Where decoding
    ends (EOS, a stop string, the limit) is then found on the host, once per round: the drafts after the first
    that ends it are discarded, and the round counts the drafts up to it, as if drafting had stopped there."""

    def __init__(self, verifier: CachedDecoder, drafter: Drafter, target_fn: rules.TargetFn, settings: DecodingConfig,
                 end: Ending, gamma: int, needs_draft_at_bonus: bool, generator: torch.Generator | None,
                 counts: DecodeResult, lossless: bool | None = None):
        self.verifier, self.drafter, self.target_fn = verifier, drafter, target_fn
        self.settings, self.end, self.gamma, self.generator, self.counts = settings, end, gamma, generator, counts
        self.needs_draft_at_bonus = needs_draft_at_bonus
        # nothing to defer: no deferral to sum and read
        self.lossless = target_fn is rules.lossless_target if lossless is None else lossless
        self.settle_rule = getattr(target_fn, "settle", None)  # a coupled rule's state, told what each round kept

    def round(self, tokens: list[int]) -> tuple[list[int], rules.Target, int]:
        """One round after the output `tokens` (which the verifier and the drafter follow): the output after it,
        the round's target (its `rows` where the level above reads them) and how many drafts it accepted."""
        end, settings, generator, verifier = self.end, self.settings, self.generator, self.verifier
        base = len(tokens)
        wanted = min(self.gamma, end.limit - base)
        # q at the bonus position too, for a cascade's bonus target (a bonus after the limit is not kept)
        drafts, draft = self.drafter.propose(settings, wanted, self.needs_draft_at_bonus and base + wanted < end.limit,
                                             generator)
        k = drafts.shape[0]  # a model drafts `wanted`; prompt lookup, or a level that ends decoding, at most that
        verifier.extend(drafts)
        verifier_logits = verifier.logits(keep=k + 1)
        target = self.target_fn(draft, Dists.from_logits(verifier_logits, settings.temperature, settings.top_p))
        accepted_t, next_t = rules.verify_on_device(drafts, draft.scaled[:k], target, generator)
        accepted, next_token, *drafted = torch.cat([accepted_t, next_t, drafts]).tolist()  # the round's one read
        new_tokens, accepted, k, bonus_kept = judge_round(end, base, drafted, end.first_end(tokens, drafted),
                                                          accepted, next_token)
        self.counts.count_round(accepted, k, None if self.lossless else target.deferral, bonus_kept, on_device=True)
        if self.settle_rule is not None:
            self.settle_rule(accepted, k, bonus_kept)
        keep_next = next_t if len(new_tokens) > accepted else None
        advance_decoder(verifier, base + accepted, drafted[:accepted], keep_next, next_token)
        self.drafter.advance(base + accepted, drafted[:accepted], keep_next, next_token)
        # Of the accepted drafts only the last can end decoding (`first_end`); the next token may too.
        return end.clip(tokens + new_tokens, start=base + max(0, accepted - 1)), target, accepted

    def run(self) -> list[int]:
        """Rounds from an empty output to the end of decoding: the output."""
        tokens: list[int] = []
        while not self.end.reached(tokens):
            tokens = self.round(tokens)[0]
        return tokens

    def follow(self, output: list[int]) -> None:
        """Point the verifier and the drafter at the output `output` (a chain's level, asked about the prefixes
        of the level above)."""
        follow_decoder(self.verifier, output)
        self.drafter.follow(output)

    def settle(self, prefix: list[int], wanted: int, with_next: bool) -> tuple[list[int], Dists | None, bool]:
        """A lower level of a chain: rounds after `prefix` until `wanted` tokens (one more with `with_next`, for its
        row) or the end of decoding. The tokens (at most `wanted`), the distribution each follows (and with
        `with_next`, the next position's, unless decoding ends) and whether decoding ends with them."""
        self.follow(prefix)
        output, probs, scaled_rows = prefix, [], []
        ended = False
        while len(output) - len(prefix) < wanted + with_next and not ended:
            before = len(output)
            output, target, _ = self.round(output)
            kept = len(output) - before
            probs.append(target.rows.probs[:kept])
            scaled_rows.append(target.rows.scaled[:kept])
            ended = self.end.reached(output)
        tokens = output[len(prefix):]
        ended = ended and len(tokens) <= wanted  # an end among the dropped tokens is no end of these
        rows = Dists(torch.cat(probs), torch.cat(scaled_rows)) if probs else None
        if rows is not None:
            rows = rows.head(min(len(tokens), wanted) + (with_next and not ended))
        return tokens[:wanted], rows, ended


def speculative_sample(pair: ModelPair, input_ids: Tensor, settings: DecodingConfig, gamma: int,
                       target_fn: rules.TargetFn, needs_draft_at_bonus: bool,
                       generator: torch.Generator | None, drafter: Drafter | None = None) -> DecodeResult:
    """The generic speculative sampler (paper Alg. 4): draft up to gamma tokens, score them with one
    verifier forward, accept a prefix by the target's rule, roll both back past the rejection (`Rounds`). The
    drafts come from `drafter` (`drafters`), by default the pair's drafter model."""
    drafter = drafter or ModelDrafter(pair.decoder("drafter", input_ids))
    result = DecodeResult()
    rounds = Rounds(pair.decoder("verifier", input_ids), drafter, target_fn, settings, ending(pair, settings), gamma,
                    needs_draft_at_bonus, generator, result)
    result.tokens = rounds.run()
    result.settle()
    result.drafter_calls, result.verifier_calls = drafter.calls, rounds.verifier.calls
    return result


def draft_length_of(settings: DecodingConfig, params: dict) -> int:
    return int(params.get("draft_length", settings.draft_length))


def decode_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    return speculative_sample(pair, input_ids, settings, draft_length_of(settings, params), rules.lossless_target,
                              False, generator)


def decode_lossy_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    target = rules.lossy_target(params["alpha"], params.get("beta", 1.0), settings.greedy)
    return speculative_sample(pair, input_ids, settings, draft_length_of(settings, params), target, False, generator)


def decode_spec_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    from_verifier = params.get("bonus", "target") == "verifier"
    router = read_router(params["router"]) if "router" in params else None
    gamma = draft_length_of(settings, params)
    rule_params = {p.name: params[p.name] for p in RULES[params["rule"]].params if p.name in params}
    target = rules.cascade_rule_target(params["rule"], params["alpha"], bonus_from_verifier=from_verifier,
                                       router=router, gamma=gamma, params=rule_params)
    return speculative_sample(pair, input_ids, settings, gamma, target, not from_verifier, generator)


def decode_prompt_lookup(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Lossless speculative decoding with prompt lookup as the drafter (no drafter model is called)."""
    return speculative_sample(pair, input_ids, settings, draft_length_of(settings, params), rules.lossless_target,
                              False, generator, prompt_lookup(pair, input_ids, params))
