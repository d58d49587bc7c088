"""Shape presets: models with the T5 v1.1 shapes and random weights, for latency-only runs where the hub
cannot be reached. Their quality is meaningless; their per-call costs are real.

Use them as `models.drafter` / `models.verifier`, e.g. `random:t5-v1_1-small`.
"""

from __future__ import annotations

PREFIX = "random:"

# d_model, d_ff, encoder and decoder layers, heads (d_kv 64), as in the T5 v1.1 checkpoints.
T5_V1_1_SHAPES = {
    "t5-v1_1-small": dict(d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6),
    "t5-v1_1-base": dict(d_model=768, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12),
    "t5-v1_1-large": dict(d_model=1024, d_ff=2816, num_layers=24, num_decoder_layers=24, num_heads=16),
    "t5-v1_1-xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32),
}


def is_preset(name: str) -> bool:
    return name.startswith(PREFIX)


def preset_shape(name: str) -> str:
    return name[len(PREFIX):]


def build_preset(name: str, seed: int = 0):
    """A T5ForConditionalGeneration with a preset's shape and random weights (vocabulary 32128,
    gated-GELU, no decoder output scaling as in v1.1, pad/decoder start 0, EOS 1). Transformers 5 ties
    T5's output embedding to its input embedding, so the model holds fewer parameters than the v1.1
    checkpoint (60M for small instead of 77M); the compute per call is the same."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    shape = T5_V1_1_SHAPES[preset_shape(name)]
    config = T5Config(vocab_size=32128, d_kv=64, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **shape)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)
