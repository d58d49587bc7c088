"""The `decoding` section of a run: token budget, temperature, sampling filters, draft length, seed, stops.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import option

MIN_TEMPERATURE = 0.01  # below it (but above 0, which is greedy) logits / temperature overflow


@dataclass(frozen=True)
class DecodingConfig:
    """How every method of a run decodes. `draft_length` is the default gamma of the speculative methods;
    a method entry may override it."""

    max_new_tokens: int = option(64, low=1, high=32_768)
    temperature: float = option(0.0, low=0.0, high=100.0)
    top_p: float = option(1.0, low=1e-6, high=1.0)
    draft_length: int = option(5, low=1, high=64)
    seed: int = option(0, low=0, high=2**32 - 1)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
