"""Models: a drafter/verifier pair (or a chain of models) and driving one model's decoder with a KV cache.

This is the only layer that calls models. `CachedDecoder` holds one model's state for one example:
the token sequence so far, how much of it the KV cache covers, and (encoder-decoder models) the encoder
output, computed once. Rolling back a rejected draft crops the cache; nothing is recomputed.

Two cache kinds: dynamic (transformers' default, grows per token) and static (`StaticShapes`:
preallocated once per model at fixed sizes, reset per example, rolled back by moving the write
position). Static shapes allow `torch.compile` of the decode steps, with CUDA graphs in mode
`reduce-overhead`, as in gpt-fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .settings import chain_roles

SPECIAL_TOKENS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")


@functools.cache
def _forward_params(model_class: type) -> frozenset[str]:
    """The keyword names of a model class's forward(), looked up once per class (not per example)."""
    return frozenset(inspect.signature(model_class.forward).parameters)


@dataclass(frozen=True)
class StaticShapes:
    """Fixed sizes for static KV caches, so that every decode step has one of a few shapes.

    Encoder-decoder: the decoder cache holds `max_new_tokens + 1` positions and the encoder output is
    zero-padded (and masked) to `max_source_tokens`. Decoder-only: the cache holds the prompt, at most
    `max_source_tokens`, plus `max_new_tokens + 1`.

    With `compile_mode` set, decoder forwards run through `torch.compile(model, mode=compile_mode)` at
    the shapes compiled up front: 1 to `max_step_tokens` new tokens, and for an encoder-decoder
    example's first forward (which also fills the cross-attention cache) `first_step_tokens` new
    tokens. Every other forward (a decoder-only prompt's prefill, a longer catch-up, the encoder) runs
    eagerly, so that nothing compiles inside a timed region."""

    max_new_tokens: int
    max_source_tokens: int
    max_step_tokens: int
    first_step_tokens: tuple[int, ...] = (1,)
    compile_mode: str | None = None


@dataclass
class _StaticState:
    """One model's preallocated cache and compiled step, shared by its decoders one example at a time.
    `compiled` holds the (first forward of an example?, new tokens) shapes the step was compiled for."""

    cache: object
    capacity: int
    step: object | None
    compiled: set[tuple[bool, int]] = field(default_factory=set)
    owner: object = None
    cuda_graphs: bool = False
    warm: bool = False  # every shape compiled: calls may skip dynamo's guard checks


def _crop(cache, positions: int) -> None:
    """Remove the last `positions` positions from a (self-attention) KV cache. A static cache keeps its
    write position per layer in `cumulative_length`. Static layers have their own `crop` in transformers
    5.24 but not in 5.17, where the position is moved back here as that `crop` does."""
    layers = getattr(cache, "layers", None)
    if layers and not hasattr(type(layers[0]), "crop") and hasattr(layers[0], "cumulative_length"):
        for layer in layers:
            if getattr(layer, "is_initialized", False):
                layer.cumulative_length.sub_(positions)
        return
    cache.crop(-positions)  # negative: remove that many positions


def _encoder_decoder_cache():
    """An empty cache for an encoder-decoder's first forward: two dynamic caches whose layers are made as they
    fill. The one T5 makes itself, from its config, deep-copies the config on every decode (a legacy config's
    decoder part), a fifth of a one-token decode of a tiny model."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(), DynamicCache())


class CachedDecoder:
    """One model decoding one example, with a KV cache.

    `tokens` is the decoder's whole sequence: the decoder start token (encoder-decoder) or the prompt
    (decoder-only), then the generated tokens. The cache covers `tokens[:cached]`; `logits()` runs the
    model on the rest, in one forward call.
    """

    def __init__(self, model, input_ids: Tensor, start_token_id: int | None,
                 static: tuple[StaticShapes, _StaticState] | None = None, vocab_size: int | None = None):
        self.model = model
        self.vocab_size = vocab_size
        self.device = input_ids.device
        self.calls = 0
        self._cache = None
        params = _forward_params(type(model))
        # The KV cache keyword: `cache` in transformers 5.x, `past_key_values` before.
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._keeps_logits = "logits_to_keep" in params
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        self._encoder_mask = None
        if self.is_encoder_decoder:
            with torch.inference_mode():
                self._encoder_outputs = model.get_encoder()(input_ids=input_ids)
            prompt = torch.tensor([start_token_id], device=self.device)
        else:
            self._encoder_outputs = None
            prompt = input_ids[0]
        # The sequence lives on the device (`_ids[:length]`: the prompt, then the generated tokens), so that a
        # forward never waits for the host; the host knows the generated tokens up to `_known` (`generated`), the
        # rest are `pending` until the caller that read them says their values (`resolve`).
        self.prompt_length = prompt.shape[0]
        self._ids = torch.empty(self.prompt_length + 64, dtype=torch.long, device=self.device)
        self._ids[: self.prompt_length] = prompt
        self._prompt = [start_token_id] if self.is_encoder_decoder else None
        self.length = self.prompt_length
        self._known: list[int] = []
        self.cached = 0
        self._static = None
        if static is not None:
            self._take_static(*static, source_length=input_ids.shape[1])
        elif self.is_encoder_decoder:
            self._cache = _encoder_decoder_cache()

    def _take_static(self, shapes: StaticShapes, state: _StaticState, source_length: int) -> None:
        if source_length > shapes.max_source_tokens:
            raise ValueError(f"the input has {source_length} tokens; the static cache holds "
                             f"{shapes.max_source_tokens} (task.max_source_tokens)")
        with torch.inference_mode():  # the cache tensors were made in inference mode
            state.cache.reset()
        state.owner = self
        self._static, self._cache = state, state.cache
        if self.is_encoder_decoder:  # pad the encoder output to the cross-attention cache's fixed length
            hidden = self._encoder_outputs.last_hidden_state  # [1, L, d]
            pad = shapes.max_source_tokens - source_length
            self._encoder_outputs.last_hidden_state = torch.nn.functional.pad(hidden, (0, 0, 0, pad))
            self._encoder_mask = torch.zeros(1, shapes.max_source_tokens, dtype=torch.long, device=self.device)
            self._encoder_mask[0, :source_length] = 1

    @property
    def pending(self) -> int:
        """Generated tokens whose values only the device holds."""
        return self.length - self.prompt_length - len(self._known)

    @property
    def generated(self) -> list[int]:
        """The generated tokens (after the prompt or start token), known on the host."""
        if self.pending:
            raise RuntimeError(f"{self.pending} generated tokens are on the device only: resolve them first")
        return self._known

    @property
    def tokens(self) -> list[int]:
        """The whole sequence on the host (reads the prompt from the device: not for decoding loops)."""
        if self._prompt is None:
            self._prompt = self._ids[: self.prompt_length].tolist()
        return self._prompt + self.generated

    def extend(self, new_tokens: list[int] | Tensor, known: list[int] | None = None) -> None:
        """Append tokens: host ids, or a [n] device tensor whose values are `known` or else pending."""
        if isinstance(new_tokens, Tensor):
            values = new_tokens
            if known is not None and len(known) != new_tokens.shape[0]:
                raise ValueError("known values must match the tokens")
        else:
            values, known = torch.tensor(new_tokens, dtype=torch.long, device=self.device), new_tokens
        if known is not None and self.pending:
            raise RuntimeError("tokens with known values cannot follow pending ones: resolve them first")
        n = values.shape[0]
        if self.length + n > self._ids.shape[0]:
            grown = torch.empty(2 * (self.length + n), dtype=torch.long, device=self.device)
            grown[: self.length] = self._ids[: self.length]
            self._ids = grown
        self._ids[self.length: self.length + n] = values
        self.length += n
        if known is not None:
            self._known.extend(known)

    def resolve(self, values: list[int]) -> None:
        """Say the values of the pending tokens, read by the caller."""
        if len(values) != self.pending:
            raise ValueError(f"{len(values)} values for {self.pending} pending tokens")
        self._known.extend(values)

    def truncate(self, length: int) -> None:
        """Drop tokens past `length` and crop the cache to match."""
        if length < self.prompt_length:
            raise ValueError("cannot truncate into the prompt")
        if length > self.length:
            raise ValueError(f"cannot truncate {self.length} tokens to {length}")
        del self._known[length - self.prompt_length:]
        self.uncache(self.length - length)
        self.length = length

    def uncache(self, positions: int) -> None:
        """Crop the cache so that the last `positions` tokens are not in it (`logits(keep=positions)` can then
        score them all), the tokens themselves kept."""
        keep = self.length - positions
        if self.cached > keep:
            self_attention = getattr(self._cache, "self_attention_cache", self._cache)
            with torch.inference_mode():
                _crop(self_attention, self.cached - keep)
            self.cached = keep

    @torch.inference_mode()
    def logits(self, keep: int = 1) -> Tensor:
        """Run the uncached tokens through the model; returns float32 logits [keep, V] of the last `keep`
        positions (each the next-token distribution after that position)."""
        n = self.length - self.cached
        if n < keep:
            raise ValueError(f"asked for {keep} logits but only {n} tokens are uncached")
        # [1, n] with strides (n, 1) whatever the buffer's size (`[None, a:b]` would carry the buffer's length as
        # its first stride, and a compiled step, guarded on strides, would recompile for every prompt length)
        ids = self._ids[self.cached: self.length].unsqueeze(0)
        kwargs = {self._cache_kwarg: self._cache, "use_cache": True}
        forward = self.model
        guards = contextlib.nullcontext()
        if self._static is not None:
            if self._static.owner is not self:
                raise RuntimeError("this decoder's static cache was taken by a newer decoder of the same model")
            if self.length > self._static.capacity:
                raise ValueError(f"{self.length} tokens overflow the static cache of {self._static.capacity}")
            if (self.calls == 0, n) in self._static.compiled:
                forward = self._static.step
                # Every shape the step sees was compiled up front and nothing compiles while decoding (the
                # tests check both), so dynamo need only tell its compiled variants apart, not re-check
                # every guard (tensor metadata of each parameter and input) on every call.
                if self._static.warm:
                    guards = torch.compiler.set_stance(skip_guard_eval_unsafe=True)
                if self._static.cuda_graphs:  # each call is a new step; earlier outputs were copied out
                    torch.compiler.cudagraph_mark_step_begin()
        if self.is_encoder_decoder:
            if self._encoder_mask is not None:
                kwargs["attention_mask"] = self._encoder_mask
            with guards:
                out = forward(encoder_outputs=self._encoder_outputs, decoder_input_ids=ids, **kwargs)
        else:
            if self._keeps_logits and self._static is None:  # static: one graph per input length, not per keep
                kwargs["logits_to_keep"] = keep
            with guards:
                out = forward(input_ids=ids, **kwargs)
        self._cache = getattr(out, "cache", None) or out.past_key_values
        self.cached = self.length
        self.calls += 1
        # A copy: a step compiled with CUDA graphs reuses its output buffer on the next call.
        return out.logits[0, -keep:, :self.vocab_size].to(dtype=torch.float32, copy=True)


@dataclass
class ModelPair:
    """A drafter and a verifier that share a vocabulary, with their tokenizer, and the models of a chain between
    them (`middle`, smallest first; none for a pair). Each model plays a role (`roles`): the drafter, `middle1`,
    ..., the verifier. Decoding also ends where the output's text first contains one of the `stop` strings (set
    per task)."""

    drafter: object
    verifier: object
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    static: StaticShapes | None = None
    stop: tuple[str, ...] = ()
    vocab_size: int | None = None  # logits are cut to the shared vocabulary when the embeddings differ in size
    middle: tuple[object, ...] = ()
    _static_states: dict[str, _StaticState] = field(default_factory=dict, repr=False)

    @property
    def roles(self) -> tuple[str, ...]:
        return chain_roles(len(self.middle) + 2)

    def model(self, role: str):
        """The model that plays `role`."""
        if role.startswith("middle") and role[6:].isdigit() and 1 <= int(role[6:]) <= len(self.middle):
            return self.middle[int(role[6:]) - 1]
        if role in ("drafter", "verifier"):
            return getattr(self, role)
        raise ValueError(f"no model plays the role {role!r}; the roles are {', '.join(self.roles)}")

    def use_static_caches(self, shapes: StaticShapes, sample_input: Tensor | None = None) -> None:
        """Preallocate a static KV cache per model at `shapes`' sizes; every later decoder of the pair uses
        them. With `shapes.compile_mode`, also compile each model's decode step at every shape it will
        be called with, by decoding `sample_input` ([1, L] ids) untimed."""
        from transformers import EncoderDecoderCache, StaticCache

        if shapes.compile_mode is not None and sample_input is None:
            raise ValueError("compiling the decode steps needs a sample input")
        self.static = shapes
        for role in self.roles:
            model = self.model(role)
            config = model.config.get_text_config(decoder=True)
            if model.config.is_encoder_decoder:
                capacity = shapes.max_new_tokens + 1
                cache = EncoderDecoderCache(StaticCache(config=config, max_cache_len=capacity),
                                            StaticCache(config=config, max_cache_len=shapes.max_source_tokens))
            else:
                capacity = shapes.max_source_tokens + shapes.max_new_tokens + 1
                cache = StaticCache(config=config, max_cache_len=capacity)
            step = None if shapes.compile_mode is None else torch.compile(model, mode=shapes.compile_mode,
                                                                          dynamic=False)
            cuda_graphs = shapes.compile_mode == "reduce-overhead" and self.device.type == "cuda"
            self._static_states[role] = _StaticState(cache, capacity, step, cuda_graphs=cuda_graphs)
            if step is not None:
                self._compile_steps(role, sample_input)

    def _compile_steps(self, role: str, input_ids: Tensor) -> None:
        shapes, state = self.static, self._static_states[role]
        self.decoder(role, input_ids).logits()  # eager: transformers allocates the static tensors here
        if self.is_encoder_decoder:
            first = [(True, n) for n in shapes.first_step_tokens]
        else:
            first = []  # a decoder-only model's first forward is its prompt: any length, eager
        wanted = first + [(False, n) for n in range(1, shapes.max_step_tokens + 1)]
        # Both models' forwards run transformers' shared wrapper code, whose compiled variants dynamo
        # counts together against its recompile limit.
        limit = max(torch._dynamo.config.recompile_limit, 2 * len(wanted) + 2)
        with torch._dynamo.config.patch(recompile_limit=limit):
            for is_first, n in wanted:
                state.compiled.add((is_first, n))
                decoder = self.decoder(role, input_ids)
                if not is_first:
                    decoder.logits()
                decoder.extend([self.eos_token_id] * (n - 1 if is_first else n))
                decoder.logits(keep=n)
        state.warm = True

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every id that ends an output: the verifier config's EOS (one id or a list, e.g. Gemma 2's and Llama
        3's end-of-turn tokens) and its generation config's."""
        found: list[int] = []
        for source in (self.verifier.config, getattr(self.verifier, "generation_config", None)):
            value = getattr(source, "eos_token_id", None)
            found += value if isinstance(value, list | tuple) else [] if value is None else [value]
        return frozenset(int(token) for token in found)

    @property
    def eos_token_id(self) -> int:
        """The configured EOS id (the first, when the config lists several)."""
        value = self.verifier.config.eos_token_id
        return int(value[0] if isinstance(value, list | tuple) else value)

    @property
    def start_token_id(self) -> int | None:
        return getattr(self.verifier.config, "decoder_start_token_id", None)

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.verifier.config.is_encoder_decoder)

    def decoder(self, role: str, input_ids: Tensor) -> CachedDecoder:
        static = (self.static, self._static_states[role]) if self.static is not None else None
        return CachedDecoder(self.model(role), input_ids, self.start_token_id, static, self.vocab_size)

    def encode(self, text: str, max_tokens: int) -> Tensor:
        """Tokenise one input: [1, L] ids on the pair's device."""
        ids = self.tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt").input_ids
        return ids.to(self.device)

    def decode(self, tokens: list[int]) -> str:
        """Text of output ids; ids the tokenizer does not know (random-weight presets) are dropped."""
        known = len(self.tokenizer)
        return self.tokenizer.decode([t for t in tokens if t < known], skip_special_tokens=True)
