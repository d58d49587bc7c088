"""The speculative methods, one loop: `speculative_sample` drafts gamma tokens with a drafter (the pair's drafter
model, or prompt lookup: `drafters`), scores them with one verifier call and accepts or resamples against a target
distribution from `rules`. With the verifier's distribution as the target it is lossless speculative decoding;
lossy speculative decoding and the speculative cascades change only the target function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.cached import ModelPair
from . import rules
from .deferral import RULES
from .drafters import Drafter, ModelDrafter, advance_decoder, prompt_lookup
from .router import read_router
from .rules import Dists
from .sampling import DecodeResult, ending, judge_round
from .settings import DecodingConfig


def speculative_sample(pair: ModelPair, input_ids: Tensor, settings: DecodingConfig, gamma: int,
                       target_fn: rules.TargetFn, needs_draft_at_bonus: bool,
                       generator: torch.Generator | None, drafter: Drafter | None = None) -> DecodeResult:
    """The generic speculative sampler (paper Alg. 4): draft up to gamma tokens, score them with one
    verifier forward, accept a prefix by the target's rule, roll both back past the rejection. The drafts come
    from `drafter` (`drafters`), by default the pair's drafter model.

    A round reads the device once: drafting, the acceptance test, the draw of the next token and the caches'
    tokens stay on it, and the accepted count, the next token and the drafts come back together. Where decoding
    ends (EOS, a stop string, the limit) is then found on the host, once per round: the drafts after the first
    that ends it are discarded, and the round counts the drafts up to it, as if drafting had stopped there."""
    end = ending(pair, settings)
    limit = end.limit
    drafter = drafter or ModelDrafter(pair.decoder("drafter", input_ids))
    verifier = pair.decoder("verifier", input_ids)
    lossless = target_fn is rules.lossless_target  # nothing to defer: no deferral to sum and read
    settle = getattr(target_fn, "settle", None)  # a coupled rule's state, told which positions each round kept
    result = DecodeResult()
    while not end.reached(result.tokens):
        base = len(result.tokens)
        wanted = min(gamma, limit - base)
        # q at the bonus position too, for a cascade's bonus target (a bonus after the limit is not kept)
        drafts, draft = drafter.propose(settings, wanted, needs_draft_at_bonus and base + wanted < limit, generator)
        k = drafts.shape[0]  # a model drafts `wanted`; prompt lookup at most that
        verifier.extend(drafts)
        verifier_logits = verifier.logits(keep=k + 1)
        target = target_fn(draft, Dists.from_logits(verifier_logits, settings.temperature, settings.top_p))
        accepted_t, next_t = rules.verify_on_device(drafts, draft.scaled[:k], target, generator)
        accepted, next_token, *drafted = torch.cat([accepted_t, next_t, drafts]).tolist()  # the round's one read
        new_tokens, accepted, k, bonus_kept = judge_round(end, base, drafted, end.first_end(result.tokens, drafted),
                                                          accepted, next_token)
        result.count_round(accepted, k, None if lossless else target.deferral, bonus_kept, on_device=True)
        if settle is not None:
            settle(accepted, k, bonus_kept)
        keep_next = next_t if len(new_tokens) > accepted else None
        advance_decoder(verifier, base + accepted, drafted[:accepted], keep_next, next_token)
        drafter.advance(base + accepted, drafted[:accepted], keep_next, next_token)
        # Of the accepted drafts only the last can end decoding (`first_end`); the next token may too.
        result.tokens = end.clip(result.tokens + new_tokens, start=base + max(0, accepted - 1))
    result.settle()
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
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
