"""The speculative methods, one loop: `speculative_sample` drafts gamma tokens with the drafter, scores
them with one verifier call and accepts or resamples against a target distribution from `rules`. With the
verifier's distribution as the target it is lossless speculative decoding; lossy speculative decoding and
the speculative cascades change only the target function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.cached import CachedDecoder, ModelPair
from . import rules
from .router import read_router
from .rules import Dists
from .sampling import DecodeResult, Ending, draw, ending, scaled
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
        wanted = min(gamma, limit - base)
        # q at the bonus position too, for a cascade's bonus target (no bonus after EOS, a stop or the limit)
        draft_tokens, draft, ended = draft_alone(drafter, settings, end, result.tokens, wanted,
                                                 needs_draft_at_bonus and base + wanted < limit, generator)
        k = len(draft_tokens)
        bonus_kept = not ended and base + k < limit
        verifier.extend(draft_tokens)
        verifier_logits = verifier.logits(keep=k + 1)
        target = target_fn(draft, Dists.from_logits(verifier_logits, settings.temperature, settings.top_p))
        outcome = rules.verify_round(torch.tensor(draft_tokens, device=verifier_logits.device),
                                     draft.scaled[:k], target, generator)
        new_tokens = draft_tokens[: outcome.accepted]
        if outcome.next_token is not None:
            new_tokens.append(outcome.next_token)
        result.count_round(outcome, k, target.deferral, bonus_kept)
        for decoder in (drafter, verifier):
            decoder.truncate(decoder.prompt_length + base + outcome.accepted)
            decoder.extend(new_tokens[outcome.accepted:])
        # Drafting stopped at its first token that ends decoding: of the accepted tokens only the last can.
        result.tokens = end.clip(result.tokens + new_tokens, start=base + max(0, outcome.accepted - 1))
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
    return result


def draft_alone(drafter: CachedDecoder, settings: DecodingConfig, end: Ending, prefix: list[int], wanted: int,
                with_next: bool, generator: torch.Generator | None) -> tuple[list[int], Dists, bool]:
    """Up to `wanted` drafts sampled by `drafter` (whose uncached tokens end at `prefix`, the output so far), their
    distributions (and, with `with_next`, the next position's when decoding does not end within them), and
    whether it does: drafting stops at the first token that ends decoding (EOS, a stop string, the limit)."""
    tokens: list[int] = []
    logits_rows: list[Tensor] = []
    scaled_rows: list[Tensor] = []
    ended = False
    for _ in range(wanted):
        logits = drafter.logits()[-1]
        distribution = scaled(settings, logits)
        token = draw(settings, distribution, generator)
        logits_rows.append(logits)
        scaled_rows.append(distribution)
        tokens.append(token)
        drafter.extend([token])
        if end.reached(prefix + tokens):
            ended = True
            break
    if with_next and not ended:
        logits = drafter.logits()[-1]
        logits_rows.append(logits)
        scaled_rows.append(scaled(settings, logits))
    return tokens, Dists(torch.softmax(torch.stack(logits_rows), -1), torch.stack(scaled_rows)), ended


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
    router = read_router(params["router"]) if "router" in params else None
    target = rules.cascade_rule_target(params["rule"], params["alpha"], bonus_from_verifier=from_verifier,
                                       router=router)
    return speculative_sample(pair, input_ids, settings, _gamma(settings, params), target, not from_verifier,
                              generator)
