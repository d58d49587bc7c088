"""The non-speculative methods: each model alone, the sequence-level cascade (the drafter, then the
verifier when the drafter's confidence is low), the token-level cascade and BiLD.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.cached import CachedDecoder
from ..settings import suggest
from . import deferral, rules
from .methods import METHODS
from .sampling import DecodeResult, Ending, autoregressive, ending, sample
from .speculative import draft_length_of


def decode_drafter(pair, input_ids, settings, params, generator) -> DecodeResult:
    decoder = pair.decoder("drafter", input_ids)
    tokens, logprobs = autoregressive(decoder, settings, ending(pair, settings), generator, track_logprob=True)
    return DecodeResult(tokens, drafter_calls=decoder.calls, drafter_token_logprobs=logprobs)


def decode_verifier(pair, input_ids, settings, params, generator) -> DecodeResult:
    decoder = pair.decoder("verifier", input_ids)
    tokens, _ = autoregressive(decoder, settings, ending(pair, settings), generator)
    return DecodeResult(tokens, verifier_calls=decoder.calls, deferred=float(len(tokens)))


def decode_seq_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Chow on a sequence confidence (`sequence_score`, default the mean log q; `deferral.sequence_score`): keep
    the drafter's output unless its confidence is below the threshold, else decode again from scratch with the
    verifier. (A deferral-rate sweep is evaluated
    from the drafter's and verifier's outputs instead; see `results.derived.seq_cascade_rows`.)"""
    if "threshold" not in params:
        raise ValueError("seq_cascade decodes one example only with an absolute threshold; deferral rates "
                         "(alpha) are evaluated over a whole run from the drafter and verifier outputs")
    draft = decode_drafter(pair, input_ids, settings, params, generator)
    score = deferral.sequence_score(draft.drafter_token_logprobs, params.get("sequence_score", "chow_average"),
                                    params.get("quantile"))
    if score >= params["threshold"]:
        return draft
    verified = decode_verifier(pair, input_ids, settings, params, generator)
    verified.drafter_calls, verified.drafter_token_logprobs = draft.drafter_calls, draft.drafter_token_logprobs
    return verified


def decode_token_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Paper Alg. 2: per position, keep the drafter's token when max q >= 1 - alpha, else ask the
    verifier, which catches up on all tokens since its last call in one forward."""
    alpha, end = params["alpha"], ending(pair, settings)
    drafter = pair.decoder("drafter", input_ids)
    verifier: CachedDecoder | None = None  # built (and its encoder run) at the first deferral only
    result = DecodeResult()
    while not end.reached(result.tokens):
        draft_logits = drafter.logits()[-1]
        if not deferral.chow_defers(torch.softmax(draft_logits, -1), alpha):
            logits = draft_logits
        else:
            if verifier is None:
                verifier = pair.decoder("verifier", input_ids)
            verifier.extend(result.tokens[len(verifier.generated):])
            logits = verifier.logits()[-1]
            result.deferred += 1
        token = sample(settings, logits, generator)
        result.tokens.append(token)
        drafter.extend([token])
    result.drafter_calls = drafter.calls
    result.verifier_calls = 0 if verifier is None else verifier.calls
    return result


def decode_bild(pair, input_ids, settings, params, generator) -> DecodeResult:
    """BiLD (Kim et al. 2023). `alpha` is the fallback threshold on the drafter's max probability, `beta`
    the rollback threshold on the verifier's cross-entropy -log p(x) of a drafter token (nats), and
    `draft_length` the most drafter tokens in a row. Every decision uses unscaled p and q; every emitted
    token is drawn from its model's scaled distribution (its argmax at temperature 0).

    `loop: reference` (the default) is the greedy loop of the authors' `T5BiLDModel`:
    1. The verifier emits the first token.
    2. The drafter then emits tokens while its max probability is at least alpha, and at most
       `draft_length` in a row; when it is below alpha, its token is discarded. After `draft_length`
       tokens the verifier takes over without another drafter call.
    3. The verifier scores the drafter's tokens since its own last token in one forward. At the first
       whose cross-entropy is above beta it draws its own token there; if that is the drafter's token,
       nothing is rolled back (the later tokens are not tested either), else it replaces the drafter's,
       everything after it is dropped, and the verifier, in a second call, also emits the token that
       follows the replacement. Without a rollback it emits the next token. Then back to 2.
    4. Decoding ends at an EOS from either model, at a stop string or at the token limit; drafter tokens after the
       verifier's last call are never checked. Unlike the reference, whose EOS test skips a rollback's
       replacement (so that its decoding continues after that EOS), a replacement EOS ends decoding too.

    `loop: drafter_first` is the loop of earlier versions of this suite: the drafter starts, and takes
    over again right after every verifier token, a rollback's replacement included; a full run of
    `draft_length` tokens still asks the drafter once more (an unused call); and the first drafter token
    above beta is always replaced, with everything after it, even by the same token.

    Counters: a round is one verifier turn (the first one scores no drafter token); `drafted` and
    `accepted` count the drafter tokens it scored and kept; `deferred` counts tokens the verifier emitted,
    one per verifier call."""
    loop = params.get("loop", "reference")
    alpha, beta, max_run = params["alpha"], params["beta"], draft_length_of(settings, params)
    if loop == "drafter_first":
        return _bild_drafter_first(pair, input_ids, settings, alpha, beta, max_run, generator)
    if loop != "reference":
        loops = METHODS["bild"].param("loop").choices
        raise ValueError(f"unknown BiLD loop {loop!r}{suggest(loop, loops)}; known: {', '.join(loops)}")
    end = ending(pair, settings)
    drafter, verifier = pair.decoder("drafter", input_ids), pair.decoder("verifier", input_ids)
    result = DecodeResult()
    tokens = result.tokens
    while True:
        _bild_verifier_turn(drafter, verifier, result, settings, beta, end, generator)
        _bild_drafter_turn(drafter, tokens, settings, alpha, max_run, end, generator)
        # EOS or the limit end decoding at once, from either model (as in the reference); a stop string only once
        # the verifier has checked the drafter's tokens up to it.
        if end.ended(tokens) or end.reached(tokens) and len(verifier.generated) == len(tokens):
            break
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
    return result


def _bild_verifier_turn(drafter, verifier, result: DecodeResult, settings, beta: float, end: Ending,
                        generator) -> None:
    """The verifier's turn of BiLD's reference loop: score the drafter's tokens since its own last one, then emit one
    token, or, after a rollback, the replacement and the token after it (`decode_bild`)."""
    tokens = result.tokens

    def emit(logits: Tensor) -> None:  # one verifier token from [V] logits
        token = sample(settings, logits, generator)
        tokens.append(token)
        verifier.extend([token])
        result.deferred += 1

    start = len(verifier.generated)
    drafted = tokens[start:]
    verifier.extend(drafted)
    logits = verifier.logits(keep=len(drafted) + 1)  # [len(drafted) + 1, V]
    drafted_ids = torch.tensor(drafted, dtype=torch.long, device=logits.device)
    index = rules.bild_rollback_index(logits[:-1], drafted_ids, beta)
    replacement = None
    if index is not None:
        replacement = sample(settings, logits[index], generator)
        if replacement == drafted[index]:  # the reference keeps the whole draft then
            index = None
    kept = len(drafted) if index is None else index
    result.rounds += 1
    result.drafted += len(drafted)
    result.accepted += kept
    result.accepted_per_round.append(kept)
    result.rejections += index is not None
    if index is None:
        if not end.reached(tokens):  # after a checked stop string, nothing more
            emit(logits[-1])
        return
    del tokens[start + index:]
    for decoder in (drafter, verifier):
        decoder.truncate(decoder.prompt_length + start + index)
    tokens.append(replacement)
    verifier.extend([replacement])
    result.deferred += 1
    if not end.reached(tokens):
        emit(verifier.logits()[-1])


def _bild_drafter_turn(drafter, tokens: list[int], settings, alpha: float, max_run: int, end: Ending,
                       generator) -> None:
    """BiLD's drafter turn: append at most `max_run` drafter tokens to `tokens`, while the drafter's max
    probability is at least `alpha` and decoding has not reached its end."""
    for _ in range(max_run):
        if end.reached(tokens):
            break
        drafter.extend(tokens[len(drafter.generated):])
        draft_logits = drafter.logits()[-1]
        if rules.bild_falls_back(torch.softmax(draft_logits, -1), alpha):
            break
        tokens.append(sample(settings, draft_logits, generator))


def _bild_drafter_first(pair, input_ids, settings, alpha, beta, max_run, generator) -> DecodeResult:
    """BiLD's `drafter_first` loop (see `decode_bild`)."""
    end = ending(pair, settings)
    drafter = pair.decoder("drafter", input_ids)
    verifier: CachedDecoder | None = None  # built (and its encoder run) at the first fallback only
    result = DecodeResult()
    run = 0
    while not end.ended(result.tokens):
        pending = end.reached(result.tokens)  # a stop string, final once the verifier has checked it
        if pending and verifier is not None and len(verifier.generated) == len(result.tokens):
            break
        draft_logits = None if pending else drafter.logits()[-1]
        if not pending and run < max_run and not rules.bild_falls_back(torch.softmax(draft_logits, -1), alpha):
            token = sample(settings, draft_logits, generator)
            result.tokens.append(token)
            drafter.extend([token])
            run += 1
            continue
        if verifier is None:
            verifier = pair.decoder("verifier", input_ids)
        start = len(verifier.generated)
        drafted = result.tokens[start:]
        verifier.extend(drafted)
        logits = verifier.logits(keep=len(drafted) + 1)  # [len(drafted) + 1, V]
        drafted_ids = torch.tensor(drafted, dtype=torch.long, device=logits.device)
        rolled_back = rules.bild_rollback_index(logits[:-1], drafted_ids, beta)
        kept = len(drafted) if rolled_back is None else rolled_back
        token = sample(settings, logits[kept], generator)
        result.rounds += 1
        result.drafted += len(drafted)
        result.accepted += kept
        result.accepted_per_round.append(kept)
        result.rejections += kept < len(drafted)
        result.deferred += 1
        result.tokens = result.tokens[: start + kept] + [token]
        for decoder in (drafter, verifier):
            decoder.truncate(decoder.prompt_length + start + kept)
            decoder.extend([token])
        run = 0
    result.tokens = end.clip(result.tokens)
    result.drafter_calls = drafter.calls
    result.verifier_calls = 0 if verifier is None else verifier.calls
    return result
