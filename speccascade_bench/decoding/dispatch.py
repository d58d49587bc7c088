"""Every decoding method behind one signature, `decode(method, pair, input_ids, settings, params, generator)`:
the registry of `decoding.methods` mapped to the functions that implement each method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..models.cached import ModelPair
from ..settings import suggest
from .chain import decode_chain_seq_cascade, decode_chain_spec_cascade, decode_middle, decode_staged_spec
from .loops import decode_bild, decode_drafter, decode_seq_cascade, decode_token_cascade, decode_verifier
from .methods import METHODS
from .sampling import DecodeResult
from .settings import DecodingConfig
from .speculative import decode_lossy_spec, decode_prompt_lookup, decode_spec, decode_spec_cascade

Decoder = Callable[[ModelPair, Tensor, DecodingConfig, dict[str, Any], "torch.Generator | None"], DecodeResult]

DECODERS: dict[str, Decoder] = {
    "drafter": decode_drafter,
    "verifier": decode_verifier,
    "seq_cascade": decode_seq_cascade,
    "token_cascade": decode_token_cascade,
    "spec_decode": decode_spec,
    "prompt_lookup": decode_prompt_lookup,
    "lossy_spec_decode": decode_lossy_spec,
    "spec_cascade": decode_spec_cascade,
    "bild": decode_bild,
    "middle": decode_middle,
    "staged_spec_decode": decode_staged_spec,
    "chain_spec_cascade": decode_chain_spec_cascade,
    "chain_seq_cascade": decode_chain_seq_cascade,
}

assert set(DECODERS) == set(METHODS), "every registered method needs a decoder"


def decode(method: str, pair: ModelPair, input_ids: Tensor, settings: DecodingConfig,
           params: dict[str, Any] | None = None, generator: torch.Generator | None = None) -> DecodeResult:
    """Decode one input ([1, L] ids) with a named method at batch size 1."""
    if method not in DECODERS:
        raise ValueError(f"unknown method {method!r}{suggest(method, DECODERS)}")
    return DECODERS[method](pair, input_ids, settings, dict(params or {}), generator)
