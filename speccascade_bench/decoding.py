"""Every decoding method behind one signature, `decode(pair, input_ids, settings, params, generator)`.

The speculative methods (`spec_decode`, `lossy_spec_decode`, `spec_cascade`) are one loop,
`speculative_sample`, with different target functions from `rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import rules
from .config import DecodingConfig
from .lm import CachedDecoder, ModelPair
from .methods import METHODS, suggest
from .rules import Dists


def scaled(settings: DecodingConfig, logits: Tensor) -> Tensor:
    """The sampling distribution of [..., V] logits at the settings' temperature and top_p."""
    return rules.scaled_probs(logits, settings.temperature, settings.top_p)


def draw(settings: DecodingConfig, distribution: Tensor, generator: torch.Generator | None) -> int:
    """One token from a [V] distribution made by `scaled`; at temperature 0 (one-hot) its argmax, without
    a multinomial call."""
    return int(distribution.argmax()) if settings.greedy else rules.sample(distribution, generator)


def sample(settings: DecodingConfig, logits: Tensor, generator: torch.Generator | None) -> int:
    """One token from [V] logits at the settings' temperature and top_p."""
    return draw(settings, scaled(settings, logits), generator)


@dataclass
class DecodeResult:
    """Output ids (without the prompt or start token) and the counters of one decode."""

    tokens: list[int] = field(default_factory=list)
    drafter_calls: int = 0
    verifier_calls: int = 0
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    accepted_per_round: list[int] = field(default_factory=list)
    rejections: int = 0              # rounds that ended at a rejected draft token (not all accepted)
    deferred: float = 0.0            # positions deferred to the verifier (expected mass for token rules)
    drafter_logprob: float | None = None  # sum of unscaled log q over the drafter's own output tokens

    @property
    def output_length(self) -> int:
        return len(self.tokens)

    @property
    def confidence(self) -> float | None:
        """Sequence confidence of a drafter output: the mean unscaled token log-probability."""
        if self.drafter_logprob is None:
            return None
        return self.drafter_logprob / max(1, len(self.tokens))


@dataclass(frozen=True)
class Ending:
    """When a decode ends: at an EOS token (`eos`: a model may have several), at the token limit, or at the
    token whose text completes a stop string (`text` gives the text of output ids). Every method ends through
    this one test, and drafting ends where decoding would: a draft stops at a stop string as it does at
    EOS."""

    eos: frozenset[int]
    limit: int
    stop: tuple[str, ...] = ()
    text: Callable[[list[int]], str] | None = None

    def _window(self) -> int:
        """Tokens decoded to find a stop string completed by the last token: enough for the longest stop
        even at one character per token, plus a margin for tokens that decode to nothing."""
        return 2 * max(len(s) for s in self.stop) + 8

    def _stops_at(self, tokens: list[int], end: int) -> bool:
        """Whether tokens[:end] holds a stop string that tokens[:end - 1] does not."""
        start = max(0, end - self._window())
        tail = self.text(tokens[start:end])
        found = [s for s in self.stop if s in tail]
        if not found:  # the common case: one decode
            return False
        before = self.text(tokens[start:end - 1])
        return any(s not in before for s in found)

    def ended(self, tokens: list[int]) -> bool:
        """Whether `tokens` end at EOS or fill the token limit."""
        return len(tokens) >= self.limit or (bool(tokens) and tokens[-1] in self.eos)

    def reached(self, tokens: list[int]) -> bool:
        """Whether decoding ends after `tokens` (EOS, the limit or a stop string), their every token before the
        last tested already."""
        if self.ended(tokens):
            return True
        return bool(self.stop and tokens) and self._stops_at(tokens, len(tokens))

    def clip(self, tokens: list[int], start: int = 0) -> list[int]:
        """Cut after the first EOS or stop-completing token at or past `start` (the earlier ones were tested),
        and at the token limit."""
        for end in range(start + 1, min(len(tokens), self.limit) + 1):
            if tokens[end - 1] in self.eos or (self.stop and self._stops_at(tokens, end)):
                return tokens[:end]
        return tokens[: self.limit]


def ending(pair: ModelPair, settings: DecodingConfig) -> Ending:
    """The pair's EOS and stop strings (`ModelPair.stop`) at the settings' token limit."""
    return Ending(pair.eos_token_ids, settings.max_new_tokens, tuple(pair.stop), pair.decode)


def autoregressive(decoder: CachedDecoder, settings: DecodingConfig, end: Ending,
                   generator: torch.Generator | None, track_logprob: bool = False) -> tuple[list[int], float]:
    """Decode with one model alone; returns the tokens and (if tracked) the sum of their unscaled
    log-probabilities."""
    tokens: list[int] = []
    logprob = 0.0
    while not end.reached(tokens):
        logits = decoder.logits()[-1]
        token = sample(settings, logits, generator)
        if track_logprob:
            logprob += float(torch.log_softmax(logits, -1)[token])
        tokens.append(token)
        decoder.extend([token])
    return tokens, logprob


def decode_drafter(pair, input_ids, settings, params, generator) -> DecodeResult:
    decoder = pair.decoder("drafter", input_ids)
    tokens, logprob = autoregressive(decoder, settings, ending(pair, settings), generator, track_logprob=True)
    return DecodeResult(tokens, drafter_calls=decoder.calls, drafter_logprob=logprob)


def decode_verifier(pair, input_ids, settings, params, generator) -> DecodeResult:
    decoder = pair.decoder("verifier", input_ids)
    tokens, _ = autoregressive(decoder, settings, ending(pair, settings), generator)
    return DecodeResult(tokens, verifier_calls=decoder.calls, deferred=float(len(tokens)))


def decode_seq_cascade(pair, input_ids, settings, params, generator) -> DecodeResult:
    """Chow on the sequence confidence: keep the drafter's output unless its mean log q is below the
    threshold, else decode again from scratch with the verifier. (A deferral-rate sweep is evaluated
    from the drafter's and verifier's outputs instead; see `results.seq_cascade_rows`.)"""
    if "threshold" not in params:
        raise ValueError("seq_cascade decodes one example only with an absolute threshold; deferral rates "
                         "(alpha) are evaluated over a whole run from the drafter and verifier outputs")
    draft = decode_drafter(pair, input_ids, settings, params, generator)
    if draft.confidence >= params["threshold"]:
        return draft
    verified = decode_verifier(pair, input_ids, settings, params, generator)
    verified.drafter_calls, verified.drafter_logprob = draft.drafter_calls, draft.drafter_logprob
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
        if not rules.chow_defers(torch.softmax(draft_logits, -1), alpha):
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
    alpha, beta, max_run = params["alpha"], params["beta"], _gamma(settings, params)
    if loop == "drafter_first":
        return _bild_drafter_first(pair, input_ids, settings, alpha, beta, max_run, generator)
    if loop != "reference":
        loops = METHODS["bild"].param("loop").choices
        raise ValueError(f"unknown BiLD loop {loop!r}{suggest(loop, loops)}; known: {', '.join(loops)}")
    end = ending(pair, settings)
    drafter, verifier = pair.decoder("drafter", input_ids), pair.decoder("verifier", input_ids)
    result = DecodeResult()
    tokens = result.tokens

    def emit(logits: Tensor) -> None:  # one verifier token from [V] logits
        token = sample(settings, logits, generator)
        tokens.append(token)
        verifier.extend([token])
        result.deferred += 1

    while True:
        # The verifier's turn: score the drafter's tokens since its own last one, then emit one or two tokens.
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
        else:
            del tokens[start + index:]
            for decoder in (drafter, verifier):
                decoder.truncate(decoder.prompt_length + start + index)
            tokens.append(replacement)
            verifier.extend([replacement])
            result.deferred += 1
            if not end.reached(tokens):
                emit(verifier.logits()[-1])
        # The drafter's turn: at most max_run tokens, while it is confident enough.
        for _ in range(max_run):
            if end.reached(tokens):
                break
            drafter.extend(tokens[len(drafter.generated):])
            draft_logits = drafter.logits()[-1]
            if rules.bild_falls_back(torch.softmax(draft_logits, -1), alpha):
                break
            tokens.append(sample(settings, draft_logits, generator))
        # EOS or the limit end decoding at once, from either model (as in the reference); a stop string only once
        # the verifier has checked the drafter's tokens up to it.
        if end.ended(tokens) or end.reached(tokens) and len(verifier.generated) == len(tokens):
            break
    result.drafter_calls, result.verifier_calls = drafter.calls, verifier.calls
    return result


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


Decoder = Callable[[ModelPair, Tensor, DecodingConfig, dict[str, Any], "torch.Generator | None"], DecodeResult]

DECODERS: dict[str, Decoder] = {
    "drafter": decode_drafter,
    "verifier": decode_verifier,
    "seq_cascade": decode_seq_cascade,
    "token_cascade": decode_token_cascade,
    "spec_decode": decode_spec,
    "lossy_spec_decode": decode_lossy_spec,
    "spec_cascade": decode_spec_cascade,
    "bild": decode_bild,
}
assert set(DECODERS) == set(METHODS), "every registered method needs a decoder"


def decode(method: str, pair: ModelPair, input_ids: Tensor, settings: DecodingConfig,
           params: dict[str, Any] | None = None, generator: torch.Generator | None = None) -> DecodeResult:
    """Decode one input ([1, L] ids) with a named method at batch size 1."""
    if method not in DECODERS:
        raise ValueError(f"unknown method {method!r}{suggest(method, DECODERS)}")
    return DECODERS[method](pair, input_ids, settings, dict(params or {}), generator)
