"""Drafters: what proposes the tokens a speculative round verifies.

A `Drafter` proposes up to `wanted` tokens after the current prefix, with their draft distributions q (and q at
the next position when a cascade's bonus needs it), and is told after the round's one host read what was kept:
`advance`. Two are built in:

- `ModelDrafter`: a model (the pair's drafter) sampling on the device; its distributions are its own.
- `PromptLookupDrafter`: prompt lookup (n-gram) decoding, as transformers' `prompt_lookup_num_tokens`: the last
  n tokens (n from `max_ngram` down to 1) are looked up in the sequence so far, and the tokens that followed
  their first earlier occurrence are the drafts. Its q is one-hot at each draft: with the verifier's distribution
  as the target, a draft x is accepted with probability p(x) and a rejection resamples from p without x, so the
  output follows the verifier exactly (docs/ALGORITHMS.md, "Drafters").

`DRAFTERS` names the drafters that can stand at the bottom of a chain in the drafter model's place
(`staged_spec_decode`'s `drafter`): `model` (the drafter model itself), `prompt_lookup`, and any a plugin registers
with `register_drafter`. A chain points such a drafter at any prefix (`follow`) before it proposes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from ..models.cached import CachedDecoder, ModelPair
from ..settings import check_registered_name
from .rules import Dists
from .sampling import draw_on_device, scaled
from .settings import DecodingConfig

MAX_NGRAM = 2  # prompt lookup's longest n-gram by default (transformers' max_matching_ngram_size)


class Drafter(Protocol):
    calls: int  # model forward calls made so far (0 for a drafter without a model)

    def follow(self, output: list[int]) -> None:
        """Point the drafter at the output `output` (host values): a chain's bottom drafter drafts after any prefix
        the level above asks about, not only after what it was told by `advance`. Needed in a chain only."""

    def propose(self, settings: DecodingConfig, wanted: int, with_next: bool,
                generator: torch.Generator | None) -> tuple[Tensor, Dists]:
        """At most `wanted` drafts [k] on the device and their distributions [k, V] (with `with_next`, also the
        next position's, [k + 1, V]), without a host read."""

    def advance(self, kept: int, accepted: list[int], next_t: Tensor | None, next_token: int) -> None:
        """After the round: the output is now `kept` tokens long, the last `len(accepted)` of them the accepted
        drafts; then `next_token` (`next_t` on the device), unless `next_t` is None (decoding ends)."""


def advance_decoder(decoder: CachedDecoder, kept: int, accepted: list[int], next_t: Tensor | None,
                    next_token: int) -> None:
    """`Drafter.advance` for a model's decoder (the verifier's too): roll back past the rejected drafts, learn the
    accepted ones' values, and append the next token."""
    decoder.truncate(decoder.prompt_length + kept)
    decoder.resolve(accepted)
    if next_t is not None:
        decoder.extend(next_t, known=[next_token])


def follow_decoder(decoder: CachedDecoder, tokens: list[int]) -> None:
    """Point a decoder at the output `tokens`: keep what it shares with them (cache included), drop the rest (and
    any tokens only the device holds), append what it lacks, and leave the last position uncached, so that the next
    `logits` scores after it."""
    if decoder.pending:  # drafts never read back (a chain's horizontal drafts): their values are not known here
        decoder.truncate(decoder.length - decoder.pending)
    have = decoder.generated
    common = 0
    for mine, theirs in zip(have, tokens, strict=False):
        if mine != theirs:
            break
        common += 1
    if common < len(have):
        decoder.truncate(decoder.prompt_length + common)
    decoder.extend(tokens[common:])
    decoder.uncache(1)


class ModelDrafter:
    """The pair's drafter model: `wanted` tokens sampled one by one on the device."""

    def __init__(self, decoder: CachedDecoder):
        self.decoder = decoder

    @property
    def calls(self) -> int:
        return self.decoder.calls

    def follow(self, output: list[int]) -> None:
        follow_decoder(self.decoder, output)

    def propose(self, settings: DecodingConfig, wanted: int, with_next: bool,
                generator: torch.Generator | None) -> tuple[Tensor, Dists]:
        return draft_on_device(self.decoder, settings, wanted, with_next, generator)

    def advance(self, kept: int, accepted: list[int], next_t: Tensor | None, next_token: int) -> None:
        advance_decoder(self.decoder, kept, accepted, next_t, next_token)


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


class PromptLookupDrafter:
    """Prompt lookup over the sequence the verifier reads (transformers' `PromptLookupCandidateGenerator`): a
    decoder-only model's prompt and output, an encoder-decoder's decoder sequence (its start token and output).
    For n from `max_ngram` down to 1 (below the sequence's length), the first earlier occurrence of the last n
    tokens gives the drafts: the tokens after it, at most `wanted` and up to the end of the sequence, cut before
    the first EOS. No match at any n: no drafts, and the round is one verifier step. The sequence's values are
    on the host (the prompt read once, the output as each round's read returns it); the first occurrence of every
    n-gram is indexed as tokens arrive, so a lookup costs `max_ngram` dictionary reads."""

    calls = 0

    def __init__(self, pair: ModelPair, input_ids: Tensor, max_ngram: int):
        self.device, self.max_ngram = input_ids.device, max_ngram
        self.eos = pair.eos_token_ids
        width = pair.vocab_size or getattr(pair.verifier.get_output_embeddings(), "out_features", None)
        self.width = int(width or pair.verifier.config.get_text_config(decoder=True).vocab_size)
        self.sequence: list[int] = []
        self.first: dict[tuple[int, ...], int] = {}
        self._add([pair.start_token_id] if pair.is_encoder_decoder else input_ids[0].tolist())  # one read
        self.start = len(self.sequence)  # where the output begins

    def _add(self, tokens: list[int]) -> None:
        for token in tokens:
            self.sequence.append(token)
            end = len(self.sequence)
            for n in range(1, min(self.max_ngram, end) + 1):
                self.first.setdefault(tuple(self.sequence[end - n:]), end - n)

    def lookup(self, wanted: int) -> list[int]:
        """The drafts after the sequence so far (a list, possibly empty)."""
        length = len(self.sequence)
        for n in range(min(self.max_ngram, length - 1), 0, -1):
            start = self.first[tuple(self.sequence[length - n:])] + n
            if start < length:  # an occurrence before the last n tokens themselves
                drafts = self.sequence[start:min(start + wanted, length)]
                cut = next((i for i, token in enumerate(drafts) if token in self.eos), len(drafts))
                return drafts[:cut]
        return []

    def follow(self, output: list[int]) -> None:
        """Point the lookup at the output `output`: what it shares with the output so far is kept, and the index is
        built again only when the output is not an extension."""
        have = self.sequence[self.start:]
        if output[:len(have)] != have:
            prompt = self.sequence[:self.start]
            self.sequence, self.first = [], {}
            self._add(prompt)
            have = []
        self._add(output[len(have):])

    def propose(self, settings: DecodingConfig, wanted: int, with_next: bool,
                generator: torch.Generator | None) -> tuple[Tensor, Dists]:
        if with_next:
            raise ValueError("prompt lookup has no draft distribution after its drafts (a cascade's bonus target)")
        drafts = torch.tensor(self.lookup(wanted), dtype=torch.long, device=self.device)
        # scattered, not `one_hot`, which reads the ids' range on the host
        one_hot = torch.zeros(drafts.shape[0], self.width, device=self.device).scatter_(1, drafts[:, None], 1.0)
        return drafts, Dists(one_hot, one_hot)

    def advance(self, kept: int, accepted: list[int], next_t: Tensor | None, next_token: int) -> None:
        self._add(accepted + ([] if next_t is None else [next_token]))


DrafterMaker = Callable[[ModelPair, Tensor, dict], Drafter]  # (pair, input_ids, the method's params) -> a drafter

DRAFTERS: dict[str, DrafterMaker | None] = {"model": None}  # None: the pair's drafter model itself


def register_drafter(name: str):
    """Register the decorated function `(pair, input_ids, params) -> Drafter` as the drafter `name`, which
    `staged_spec_decode`'s `drafter` then names (a plugin's too). Its drafter needs `follow` besides the round's
    methods, and its `calls` are counted as the drafter model's."""

    def register(make: DrafterMaker) -> DrafterMaker:
        check_registered_name("drafter", name)
        if name in DRAFTERS:
            raise ValueError(f"the drafter {name!r} is registered twice")
        DRAFTERS[name] = make
        return make

    return register


@register_drafter("prompt_lookup")
def prompt_lookup(pair: ModelPair, input_ids: Tensor, params: dict) -> PromptLookupDrafter:
    return PromptLookupDrafter(pair, input_ids, int(params.get("max_ngram", MAX_NGRAM)))
