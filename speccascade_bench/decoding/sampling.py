"""What every decoding loop shares: temperature and filters on logits, one draw, the record of a
decoded sequence (`DecodeResult`), when decoding ends (`Ending`: EOS ids, stop strings, the token budget) and
plain autoregressive decoding of one model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.cached import CachedDecoder, ModelPair
from . import rules
from .settings import DecodingConfig


def scaled(settings: DecodingConfig, logits: Tensor) -> Tensor:
    """The sampling distribution of [..., V] logits at the settings' temperature and top_p."""
    return rules.scaled_probs(logits, settings.temperature, settings.top_p)


def draw(settings: DecodingConfig, distribution: Tensor, generator: torch.Generator | None) -> int:
    """One token from a [V] distribution made by `scaled`; at temperature 0 (one-hot) its argmax, without
    a multinomial call."""
    return int(distribution.argmax()) if settings.greedy else rules.sample(distribution, generator)


def draw_on_device(settings: DecodingConfig, distribution: Tensor, generator: torch.Generator | None) -> Tensor:
    """`draw`, its token left on the device: a [1] tensor, and no host read."""
    if settings.greedy:
        return distribution.argmax().view(1)
    return torch.multinomial(distribution, 1, generator=generator)


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
    drafter_token_logprobs: list[float] | None = None  # unscaled log q of each of the drafter's own output tokens
    calls: dict[str, int] | None = None  # forward calls per role, where more than the drafter and verifier ran
    levels: list[dict] | None = None     # a chain's counters per level (drafter->middle1, ..., ->verifier)
    _deferred_on_device: list[Tensor] = field(default_factory=list, repr=False)

    def count_round(self, accepted: int, drafted: int, deferral: Tensor | None, bonus_kept: bool,
                    on_device: bool = False) -> None:
        """Add one verification round of `drafted` drafts, `accepted` of them, and the deferral of the positions it
        decided: the accepted drafts, then the replacement's, or the bonus's when a bonus is kept (one drawn past
        EOS or the token limit is discarded and decides nothing); None where nothing can be deferred (a lossless
        target). With `on_device`, the deferral is summed on the device, and read once by `settle`."""
        if deferral is not None:
            decided = min(accepted + (accepted < drafted or bonus_kept), deferral.shape[0])
            if on_device:
                self._deferred_on_device.append(deferral[:decided].sum())
            else:
                self.deferred += float(deferral[:decided].sum())
        self.rounds += 1
        self.drafted += drafted
        self.accepted += accepted
        self.accepted_per_round.append(accepted)
        self.rejections += accepted < drafted

    def settle(self) -> None:
        """Read the counters kept on the device (one host read)."""
        if self._deferred_on_device:
            for total in torch.stack(self._deferred_on_device).tolist():  # added as `count_round` adds them
                self.deferred += total
            self._deferred_on_device = []

    def level_counts(self) -> dict:
        """The round counters a chain row records per level (`levels`)."""
        return {"drafted": self.drafted, "accepted": self.accepted, "rounds": self.rounds,
                "rejections": self.rejections, "deferred": self.deferred}

    def calls_by_role(self) -> dict[str, int]:
        return self.calls if self.calls is not None else {"drafter": self.drafter_calls,
                                                          "verifier": self.verifier_calls}

    @property
    def output_length(self) -> int:
        return len(self.tokens)

    @property
    def confidence(self) -> float | None:
        """Sequence confidence of a drafter output: the mean unscaled token log-probability."""
        if self.drafter_token_logprobs is None:
            return None
        return sum(self.drafter_token_logprobs) / max(1, len(self.tokens))


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

    def first_end(self, tokens: list[int], new: list[int]) -> int | None:
        """How many of the `new` tokens, appended to `tokens` (which do not end decoding), it takes to end decoding
        (EOS, the limit or a stop string); None when they do not end it."""
        for n in range(1, len(new) + 1):
            if self.reached(tokens + new[:n]):
                return n
        return None

    def clip(self, tokens: list[int], start: int = 0) -> list[int]:
        """Cut after the first EOS or stop-completing token at or past `start` (the earlier ones were tested),
        and at the token limit."""
        for end in range(start + 1, min(len(tokens), self.limit) + 1):
            if tokens[end - 1] in self.eos or (self.stop and self._stops_at(tokens, end)):
                return tokens[:end]
        return tokens[: self.limit]


def judge_round(end: Ending, base: int, drafted: list[int], stop: int | None, accepted: int,
                next_token: int) -> tuple[list[int], int, int, bool]:
    """A speculative round's outcome once its values are on the host, after `base` output tokens: the round judges
    `k` drafts (up to the `stop`-th, the first that ends decoding, else all), accepts at most those, and keeps a
    bonus only when decoding goes on (no end among the drafts, the limit not reached). Returns the new tokens (the
    accepted drafts, then the replacement or the kept bonus), the accepted count, k and whether the bonus is kept."""
    k = len(drafted) if stop is None else stop
    accepted = min(accepted, k)
    bonus_kept = stop is None and base + k < end.limit
    new = drafted[:accepted] + ([next_token] if accepted < k or bonus_kept else [])
    return new, accepted, k, bonus_kept


def ending(pair: ModelPair, settings: DecodingConfig) -> Ending:
    """The pair's EOS and stop strings (`ModelPair.stop`) at the settings' token limit."""
    return Ending(pair.eos_token_ids, settings.max_new_tokens, tuple(pair.stop), pair.decode)


def autoregressive(decoder: CachedDecoder, settings: DecodingConfig, end: Ending,
                   generator: torch.Generator | None, track_logprob: bool = False) -> tuple[list[int], list[float]]:
    """Decode with one model alone; returns the tokens and (if tracked) their unscaled log-probabilities."""
    tokens: list[int] = []
    logprobs: list[float] = []
    while not end.reached(tokens):
        logits = decoder.logits()[-1]
        token = sample(settings, logits, generator)
        if track_logprob:
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        tokens.append(token)
        decoder.extend([token])
    return tokens, logprobs
