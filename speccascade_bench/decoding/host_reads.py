"""Counting host reads: the operations that make the host wait for a tensor's value.

On a GPU each one stalls the launch queue until the device has caught up, so a decoding loop should do as
few as it can. `HostReads` counts them while decoding runs (on any device, the CPU included): the ops
behind `.item()`, `int()`, `float()` and `bool()` of a tensor (`aten._local_scalar_dense`), `aten.nonzero` and
the other ops whose output size depends on the values (boolean-mask indexing, `masked_select`, `unique`), `aten.equal`,
and `Tensor.tolist` / `Tensor.numpy`.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_READ_OPS = frozenset({"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.equal.default",
                       "aten.is_nonzero.default", "aten.masked_select.default"})
_INDEX_OPS = frozenset({"aten.index.Tensor", "aten.index_put.default", "aten.index_put_.default",
                        "aten._index_put_impl_.default"})
# Tensor methods and functions that read values on the host. Python's conversions of an inference tensor
# (`int`, `float`, `bool`, `.item()`) do not always reach the dispatcher, so they are counted where Python calls
# them; the ops they run are then not counted again.
_READ_FUNCTIONS = frozenset({"item", "__int__", "__float__", "__bool__", "__index__", "tolist", "numpy", "nonzero",
                             "equal", "argwhere", "masked_select", "unique", "bincount"})


class _Reads:
    """The counts, and whether a counted read is running (its inner ops are part of it)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.inside = False


class _Ops(TorchDispatchMode):
    def __init__(self, reads: _Reads):
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = _KINDS.get(func)
        if kind is None:  # an op seen for the first time: its kind, by name, kept for the next calls
            name = str(func)
            kind = _KINDS[func] = (name.split(".")[1] if name in _READ_OPS
                                   else "index" if name in _INDEX_OPS else "")
        if kind and not self.reads.inside:
            if kind != "index":
                self.reads.counts[kind] += 1
            elif _masks(args[1]):  # x[mask]: the kept positions are found on the host
                self.reads.counts["mask_index"] += 1
        return func(*args, **(kwargs or {}))


_KINDS: dict = {}  # op -> what it reads on the host ("" nothing, "index" when its indices are masks)


def _masks(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _Functions(TorchFunctionMode):
    def __init__(self, reads: _Reads):
        super().__init__()
        self.reads = reads

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name not in _READ_FUNCTIONS or self.reads.inside:
            return func(*args, **(kwargs or {}))
        self.reads.counts[name.strip("_")] += 1
        self.reads.inside = True
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.reads.inside = False


class HostReads:
    """A context that counts host reads by kind (`counts`) and in all (`total`).

        with HostReads() as reads:
            decode(...)
        reads.total
    """

    def __init__(self):
        self._reads = _Reads()
        self.counts = self._reads.counts
        self._modes = (_Functions(self._reads), _Ops(self._reads))

    def __enter__(self) -> HostReads:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_reads(fn, *args, **kwargs) -> tuple[object, HostReads]:
    """Run `fn(*args, **kwargs)` counting its host reads; returns its result and the counter."""
    with HostReads() as reads:
        result = fn(*args, **kwargs)
    return result, reads
