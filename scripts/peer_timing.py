"""The measuring passes of scripts/bench_peers.py: the clocks of the models' calls, and each pass over the cases (the
warm-up, the host reads, the forward and first-call shares, the interleaved timed runs)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from speccascade_bench.decoding.host_reads import count_reads
from speccascade_bench.models.cached import CachedDecoder
from speccascade_bench.run.timing import synchronize, timed


class ForwardClock:
    """Seconds spent inside the models' forward calls (the outermost hooked call only, so that an encoder called
    from its model's forward counts once), the device synchronised at both ends of each call."""

    def __init__(self, modules, device: torch.device):
        self.seconds, self.depth, self.device, self.started = 0.0, 0, device, 0.0
        self.handles = []
        for module in modules:
            self.handles += [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]

    def _enter(self, *_):
        if self.depth == 0:
            synchronize(self.device)
            self.started = time.perf_counter()
        self.depth += 1

    def _leave(self, *_):
        self.depth -= 1
        if self.depth == 0:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self.started

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


class ModelCallClock:
    """Seconds inside the suite's model calls, `CachedDecoder.logits` (the forward and the copy of its logits out) and
    an encoder-decoder's encoder (run when its decoder is made), and of those in each model's first calls of an
    example (a decoder-only model's prompt; an encoder-decoder's encoder and first decoder step). Timed by wrapping
    the methods, outside any compiled step: a forward hook would be traced into the compiled steps and recompile
    them."""

    def __init__(self, device: torch.device):
        self.seconds = self.first = 0.0
        self.device, self.original = device, (CachedDecoder.logits, CachedDecoder.__init__)

    def __enter__(self):
        clock, (logits, init) = self, self.original

        def timed_logits(decoder, keep: int = 1):
            first = decoder.calls == 0
            out, spent = timed(lambda: logits(decoder, keep), clock.device)
            clock.seconds += spent
            clock.first += spent if first else 0.0
            return out

        def timed_init(decoder, *args, **kwargs):
            _, spent = timed(lambda: init(decoder, *args, **kwargs), clock.device)
            if decoder.is_encoder_decoder:  # the encoder ran
                clock.seconds += spent
                clock.first += spent

        CachedDecoder.logits, CachedDecoder.__init__ = timed_logits, timed_init
        return self

    def __exit__(self, *_):
        CachedDecoder.logits, CachedDecoder.__init__ = self.original


@dataclass
class Measured:
    """What the passes measured, by case: the graphs compiled in the warm-up, the host reads, the time inside the
    models' calls and in their first calls (each as [inside, whole]), each example's fastest time and its output."""

    graphs: dict = field(default_factory=dict)
    reads: dict = field(default_factory=dict)
    in_forward: dict = field(default_factory=dict)
    prompt_share: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)

    @property
    def total(self) -> dict:
        return {name: sum(v) for name, v in self.seconds.items()}


def warm_up(cases: dict, n: int, measured: Measured) -> None:
    """Each case on each example once, untimed (compilation and warm-up), counting the graphs each compiled: a
    compiled peer that compiled nothing would be running eagerly."""
    measured.graphs = dict.fromkeys(cases, 0)
    stats = torch._dynamo.utils.counters["stats"]
    for i in range(n):
        for name, fn in cases.items():
            before = stats["unique_graphs"]
            fn(i)
            measured.graphs[name] += stats["unique_graphs"] - before


def host_reads(cases: dict, n: int, measured: Measured) -> list[str]:
    """Host reads, counted in a pass of their own (the counter slows what it counts). Not in the compiled cases: a
    counting mode is part of what a compiled step is guarded on, so it would recompile them; their loops are the
    same as the eager cases'. Returns the cases counted."""
    counted = [name for name in cases if "compiled" not in name]
    measured.reads = {name: 0 for name in counted}
    for i in range(n):
        for name in counted:
            measured.reads[name] += count_reads(cases[name], i)[1].total
    return counted


def forward_shares(cases: dict, counted: list[str], n: int, pair, device, measured: Measured) -> None:
    """The share of each eager case's time spent inside the models' forward calls, in another untimed pass: what is
    left is the loop's own work, and the forward time alone bounds how fast any loop making those calls can be."""
    hooked = [pair.drafter, pair.verifier]
    if pair.is_encoder_decoder:
        hooked += [pair.drafter.get_encoder(), pair.verifier.get_encoder()]
    measured.in_forward = {name: [0.0, 0.0] for name in counted}
    clock = ForwardClock(hooked, device)
    try:
        for i in range(n):
            for name in counted:
                before = clock.seconds
                _, s = timed(lambda fn=cases[name], i=i: fn(i), device)
                measured.in_forward[name][0] += clock.seconds - before
                measured.in_forward[name][1] += s
    finally:
        clock.close()


def first_call_shares(cases: dict, n: int, device, measured: Measured) -> None:
    """The same for the compiled cases, at the suite's model-call boundary; and for every suite case the time of its
    models' first calls: a decoder-only model's prompt, which no loop avoids."""
    for i in range(n):
        for name in cases:
            if "(suite" not in name:
                continue
            with ModelCallClock(device) as calls:
                _, s = timed(lambda fn=cases[name], i=i: fn(i), device)
            if "compiled" in name:
                measured.in_forward.setdefault(name, [0.0, 0.0])
                measured.in_forward[name][0] += calls.seconds
                measured.in_forward[name][1] += s
            measured.prompt_share.setdefault(name, [0.0, 0.0])
            measured.prompt_share[name][0] += calls.first
            measured.prompt_share[name][1] += s


def timed_runs(cases: dict, n: int, repeats: int, device, measured: Measured) -> None:
    """Each example's time in each case: the fastest of `repeats` runs, the cases interleaved per example and their
    order rotated per repeat (a burst of load from elsewhere slows some runs, rarely all of them)."""
    runs = {name: [[] for _ in range(n)] for name in cases}
    measured.outputs = {name: [None] * n for name in cases}
    names = list(cases)
    for repeat in range(repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for i in range(n):
            for name in order:
                out, s = timed(lambda fn=cases[name], i=i: fn(i), device)
                runs[name][i].append(s)
                measured.outputs[name][i] = out
    measured.seconds = {name: [min(r) for r in per_example] for name, per_example in runs.items()}


def measure(cases: dict, n: int, repeats: int, pair, device) -> Measured:
    """Every pass over the cases, in order."""
    measured = Measured()
    warm_up(cases, n, measured)
    counted = host_reads(cases, n, measured)
    forward_shares(cases, counted, n, pair, device, measured)
    first_call_shares(cases, n, device, measured)
    timed_runs(cases, n, repeats, device, measured)
    return measured
