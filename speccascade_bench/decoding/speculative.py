"""The speculative methods, one loop: `speculative_sample` drafts gamma tokens with the drafter, scores
them with one verifier call and accepts or resamples against a target distribution from `rules`. With the
verifier's distribution as the target it is lossless speculative decoding; lossy speculative decoding and
the speculative cascades change only the target function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.cached import ModelPair
from . import rules
from .rules import Dists
from .sampling import DecodeResult, draw, ending, scaled
from .settings import DecodingConfig


def speculative_sample(pair: ModelPair, input_ids: Tensor, settings: DecodingConfig, gamma: int,
                       target_fn: rules.TargetFn, needs_draft_at_bonus: bool,
                       generator: torch.Generator | None) -> DecodeResult:
    """The generic speculative sampler (paper Alg. 4): draft up to gamma tokens, score them with one
    verifier forward, accept a prefix by the target's rule, roll both caches back past the rejection."""
    end = ending(pair, settings)
    limit = end.limit
    drafter, verifier = pair.decoder("drafter", input_ids), pair.decoder("verifier", input_ids)
    result = DecodeResult()
    while not end.reached(result.tokens):
        base = len(result.tokens)
        draft_tokens: list[int] = []
        draft_logits: list[Tensor] = []
        draft_scaled: list[Tensor] = []
        for _ in range(min(gamma, limit - base)):
            logits = drafter.logits()[-1]
            distribution = scaled(settings, logits)
            token = draw(settings, distribution, generator)
            draft_logits.append(logits)
            draft_scaled.append(distribution)
            draft_tokens.append(token)
            drafter.extend([token])
            if end.reached(result.tokens + draft_tokens):
                ended = True
                break
        else:
            ended = False
        k = len(draft_tokens)
        bonus_kept = not ended and base + k < limit  # no bonus after EOS, a stop or the limit
        if needs_draft_at_bonus and bonus_kept:  # q at the bonus position, for a cascade's bonus target
            logits = drafter.logits()[-1]
            draft_logits.append(logits)
            draft_scaled.append(scaled(settings, logits))
        verifier.extend(draft_tokens)
        verifier_logits = verifier.logits(keep=k + 1)
        draft = Dists(torch.softmax(torch.stack(draft_logits), -1), torch.stack(draft_scaled))
        target = target_fn(draft, Dists.from_logits(verifier_logits, settings.temperature, settings.top_p))
        outcome = rules.verify_round(torch.tensor(draft_tokens, device=verifier_logits.device),
                                     draft.scaled[:k], target, generator)
        new_tokens = draft_tokens[: outcome.accepted]
        if outcome.next_token is not None:
            new_tokens.append(outcome.next_token)
        # The positions this round decided: the accepted drafts, then the replacement's, or the bonus's when a
        # bonus is kept (one drawn past EOS or the token limit is discarded and decides nothing).
        decided = outcome.accepted + (outcome.accepted < k or bonus_kept)
        decided = min(decided, target.deferral.shape[0])
        result.deferred += float(target.deferral[:decided].sum())
        result.rounds += 1
        result.drafted += k
        result.accepted += outcome.accepted
        result.accepted_per_round.append(outcome.accepted)
        result.rejections += outcome.accepted < k
        for decoder in (drafter, verifier):
            decoder.truncate(decoder.prompt_length + base + outcome.accepted)
            decoder.extend(new_tokens[outcome.accepted:])
        # Drafting stopped at its first token that ends decoding: of the accepted tokens only the last can.
        result.tokens = end.clip(result.tokens + new_tokens, start=base + max(0, outcome.accepted - 1))
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
    return result


def _gamma(settings: DecodingConfig, params: dict) -> int:
    return int(params.get("draft_length", settings.draft_length))


def decode_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    return speculative_sample(pair, input_ids, settings, _gamma(settings, params), rules.lossless_target,
                              False, generator)


def decode_lossy_spec(pair, input_ids, settings, params, generator) -> DecodeResult:
    target = rules.lossy_target(params["alpha"], params.get("beta", 1.0), settings.greedy)
    return speculative_sample(pair, input_ids, settings, _gamma(settings, params), target, False, generator)


def decode_spec_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    from_verifier = params.get("bonus", "target") == "verifier"
    target = rules.cascade_rule_target(params["rule"], params["alpha"], bonus_from_verifier=from_verifier)
    return speculative_sample(pair, input_ids, settings, _gamma(settings, params), target, not from_verifier,
                              generator)
