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
from .sampling import DecodeResult, draw_on_device, ending, judge_round, scaled
from .settings import DecodingConfig


def speculative_sample(pair: ModelPair, input_ids: Tensor, settings: DecodingConfig, gamma: int,
                       target_fn: rules.TargetFn, needs_draft_at_bonus: bool,
                       generator: torch.Generator | None) -> DecodeResult:
    """The generic speculative sampler (paper Alg. 4): draft up to gamma tokens, score them with one
    verifier forward, accept a prefix by the target's rule, roll both caches back past the rejection.

    A round reads the device once: drafting, the acceptance test, the draw of the next token and the caches'
    tokens stay on it, and the accepted count, the next token and the drafts come back together. Where decoding
    ends (EOS, a stop string, the limit) is then found on the host, once per round: the drafts after the first
    that ends it are discarded, and the round counts the drafts up to it, as if drafting had stopped there."""
    end = ending(pair, settings)
    limit = end.limit
    drafter, verifier = pair.decoder("drafter", input_ids), pair.decoder("verifier", input_ids)
    result = DecodeResult()
    while not end.reached(result.tokens):
        base = len(result.tokens)
        wanted = min(gamma, limit - base)
        # q at the bonus position too, for a cascade's bonus target (a bonus after the limit is not kept)
        drafts, draft = draft_on_device(drafter, settings, wanted, needs_draft_at_bonus and base + wanted < limit,
                                        generator)
        verifier.extend(drafts)
        verifier_logits = verifier.logits(keep=wanted + 1)
        target = target_fn(draft, Dists.from_logits(verifier_logits, settings.temperature, settings.top_p))
        accepted_t, next_t = rules.verify_on_device(drafts, draft.scaled[:wanted], target, generator)
        accepted, next_token, *drafted = torch.cat([accepted_t, next_t, drafts]).tolist()  # the round's one read
        new_tokens, accepted, k, bonus_kept = judge_round(end, base, drafted, end.first_end(result.tokens, drafted),
                                                          accepted, next_token)
        result.count_round(accepted, k, target.deferral, bonus_kept, on_device=True)
        for decoder in (drafter, verifier):
            decoder.truncate(decoder.prompt_length + base + accepted)
            decoder.resolve(drafted[:accepted])
            if len(new_tokens) > accepted:
                decoder.extend(next_t, known=[next_token])
        # Of the accepted drafts only the last can end decoding (`first_end`); the next token may too.
        result.tokens = end.clip(result.tokens + new_tokens, start=base + max(0, accepted - 1))
    result.settle()
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
    return result


def draft_on_device(drafter: CachedDecoder, settings: DecodingConfig, wanted: int, with_next: bool,
                    generator: torch.Generator | None) -> tuple[Tensor, Dists]:
    """`wanted` drafts [wanted] sampled by `drafter` on the device, without a host read, and their distributions
    (with `with_next`, also the next position's). The drafts stay pending in the drafter."""
    tokens: list[Tensor] = []
    logits_rows: list[Tensor] = []
    scaled_rows: list[Tensor] = []
    for _ in range(wanted):
        logits = drafter.logits()[-1]
        distribution = scaled(settings, logits)
        token = draw_on_device(settings, distribution, generator)
        logits_rows.append(logits)
        scaled_rows.append(distribution)
        tokens.append(token)
        drafter.extend(token)
    if with_next:
        logits = drafter.logits()[-1]
        logits_rows.append(logits)
        scaled_rows.append(scaled(settings, logits))
    return torch.cat(tokens), Dists(torch.softmax(torch.stack(logits_rows), -1), torch.stack(scaled_rows))


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
