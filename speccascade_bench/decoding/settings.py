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

    max_new_tokens: int = option(64, low=1, high=32_768, doc='the most tokens decoded per example')
    temperature: float = option(0.0, low=0.0, high=100.0, doc='0 is greedy, else 0.01 to 100')
    top_p: float = option(1.0, low=1e-6, high=1.0,
                          doc='nucleus sampling on the temperature-scaled distributions, in (0, 1]')
    draft_length: int = option(5, low=1, high=64,
                               doc=('gamma, the tokens drafted per round; a method entry may override it (a value or '
                                    'a list)'))
    seed: int = option(0, low=0, high=2**32 - 1, doc="the seed of sampling and of the examples' draw")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
