"""The `models` section of a run: which model plays which role, on which device, in which dtype and cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import option

DTYPES = ("float32", "bfloat16", "float16")

DEVICES = ("auto", "cpu", "cuda")

CACHES = ("dynamic", "static")

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def middle_role(level: int) -> str:
    """The role of a chain's middle model `level` (1 is the one after the drafter)."""
    return f"middle{int(level)}"


def chain_roles(models: int) -> tuple[str, ...]:
    """The role names of a chain of `models` models, smallest first: the drafter, `middle1`, `middle2`, ... and
    the verifier (a pair is the chain of two)."""
    if models < 2:
        raise ValueError(f"a chain needs at least two models, got {models}")
    return ("drafter", *(middle_role(i) for i in range(1, models - 1)), "verifier")


@dataclass(frozen=True)
class ModelsConfig:
    """The models and how they run. A chain of three or more models names the models between the drafter and
    the verifier in `middle`, smallest first (a config may instead list the whole chain under `chain`)."""

    drafter: str = option(
                          doc=('the small model: a local folder or a hub name (AutoModelForSeq2SeqLM or '
                               'AutoModelForCausalLM); or give `chain`'))
    verifier: str = option(
                           doc=("the large model; it must share the drafter's vocabulary and special tokens, and be "
                                'another model'))
    middle: tuple[str, ...] = option((),
                                     doc=('a chain: the models between drafter and verifier, smallest first (at most '
                                          '8 models in all)'))
    tokenizer: str | None = option(None,
                                   doc=("default: the verifier's; `byt5` for a file-less byte tokenizer; it must fit "
                                        "the models' vocabulary"))
    dtype: str = option("float32", choices=DTYPES, doc="the models' weights and activations")
    device: str = option("auto", choices=DEVICES, doc='auto: CUDA where there is one, else the CPU')
    cache: str = option("dynamic", choices=CACHES,
                        doc="dynamic: transformers' KV cache; static: preallocated at fixed shapes (the fast path)")
    compile: str = option("none", choices=COMPILE_MODES,
                          doc=('torch.compile the decode steps (needs cache: static; reduce-overhead adds CUDA '
                               'graphs on a GPU)'))

    @property
    def chain(self) -> tuple[str, ...]:
        """Every model, smallest first: the drafter, the middle models, the verifier."""
        return (self.drafter, *self.middle, self.verifier)

    @property
    def roles(self) -> tuple[str, ...]:
        """The role of each model of `chain`: drafter, middle1, ..., verifier."""
        return chain_roles(len(self.middle) + 2)

    def name_of(self, role: str) -> str:
        return dict(zip(self.roles, self.chain, strict=True))[role]
