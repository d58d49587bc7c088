"""Every decoding method behind one signature, `decode(method, pair, input_ids, settings, params, generator)`:
each method's decoder is the function its `MethodSpec.decoder` names (`module:function` in this package),
imported when the method is first decoded, or a registered method's own function (`methods.register_method`). A
new method is its spec and its decoder, nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..models.cached import ModelPair
from ..settings import suggest
from .methods import METHODS, resolve_hook
from .sampling import DecodeResult
from .settings import DecodingConfig

Decoder = Callable[[ModelPair, Tensor, DecodingConfig, dict[str, Any], "torch.Generator | None"], DecodeResult]


def decoder_of(method: str) -> Decoder:
    """The function that decodes `method`: its spec's `decoder`, a registered method's function, or the
    `module:function` it names, imported once."""
    hook = METHODS[method].decoder
    return hook if callable(hook) else _imported(hook)


@functools.cache
def _imported(hook) -> Decoder:
    return resolve_hook(hook, __package__)


def decode(method: str, pair: ModelPair, input_ids: Tensor, settings: DecodingConfig,
           params: dict[str, Any] | None = None, generator: torch.Generator | None = None) -> DecodeResult:
    """Decode one input ([1, L] ids) with a named method at batch size 1."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}{suggest(method, METHODS)}")
    return decoder_of(method)(pair, input_ids, settings, dict(params or {}), generator)
