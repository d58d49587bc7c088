"""Wall-clock timing: the device is synchronised before each clock read."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """Run `fn` once; returns its result and the seconds it took, with the device idle at both ends."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def wide_call_cost(pair, role: str, inputs: list[torch.Tensor], width: int, positions: tuple[int, ...] = (8, 16, 24),
                   repeats: int = 10) -> float:
    """How many one-token steps one forward over `width` new tokens costs a model of `pair` (`role`):
    the median time of `width`-token calls over that of one-token calls, timed in turn from the same
    cache positions of each input ([1, L] ids), each call rolled back before the next. Leviathan et
    al.'s prediction assumes 1 for the verifier's call over a round's gamma + 1 positions."""
    device = pair.device
    filler = pair.eos_token_id  # the cost of a call does not depend on which tokens it reads
    seconds: dict[int, list[float]] = {1: [], width: []}
    for input_ids in inputs:
        decoder = pair.decoder(role, input_ids)
        decoder.logits()  # an example's first forward has a shape of its own
        for position in positions:
            while decoder.cached < decoder.prompt_length + position:
                decoder.extend([filler])
                decoder.logits()
            length = decoder.length
            for _ in range(repeats):
                for n in (1, width):
                    decoder.extend([filler] * n)
                    seconds[n].append(timed(functools.partial(decoder.logits, keep=n), device)[1])
                    decoder.truncate(length)
    return statistics.median(seconds[width]) / statistics.median(seconds[1])
