"""The `models` section of a run: which model plays which role, on which device, in which dtype and cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import option

DTYPES = ("float32", "bfloat16", "float16")

DEVICES = ("auto", "cpu", "cuda")

CACHES = ("dynamic", "static")

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class ModelsConfig:
    drafter: str = option()
    verifier: str = option()
    tokenizer: str | None = option(None)
    dtype: str = option("float32", choices=DTYPES)
    device: str = option("auto", choices=DEVICES)
    cache: str = option("dynamic", choices=CACHES)
    compile: str = option("none", choices=COMPILE_MODES)
