"""Tiny random models built from a config (no downloads) and pairs made from them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from speccascade_bench.models.cached import ModelPair

VOCAB = 12
EOS, PAD = 1, 0


def tiny_t5(seed: int, vocab: int = VOCAB, layers: int = 2) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=layers,
                      num_decoder_layers=layers, dropout_rate=0.0, decoder_start_token_id=PAD,
                      pad_token_id=PAD, eos_token_id=EOS)
    return T5ForConditionalGeneration(config).eval()


def tiny_llama(seed: int, vocab: int = VOCAB, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, bos_token_id=2, eos_token_id=EOS, pad_token_id=PAD)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # make EOS likely: it outscores token 3 wherever token 3 has a positive logit
        model.lm_head.weight[EOS] = 1.05 * model.lm_head.weight[3]
    return model


def perturbed(model, noise: float, seed: int):
    """A drafter that agrees with `model` often but not always: its weights plus Gaussian noise."""
    drafter = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in drafter.parameters():
            param.add_(noise * param.std().nan_to_num(0.1) * torch.randn(param.shape, generator=generator))
    return drafter


def tiny_pair(family: str, seed: int = 0, noise: float = 0.3, device: torch.device | str = "cpu") -> ModelPair:
    build = tiny_t5 if family == "t5" else tiny_llama
    verifier = build(seed)
    drafter = perturbed(verifier, noise, seed + 1000)
    device = torch.device(device)
    return ModelPair(drafter.to(device), verifier.to(device), tokenizer=None, device=device, dtype=torch.float32)


def prompt(seed: int, length: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (1, length), generator=generator)


def save_byte_pair(root) -> None:
    """A tiny T5 verifier and a perturbed drafter with the byte tokenizer, saved to root/verifier and
    root/drafter as a user's local model folders (EOS 1, decoder start 0)."""
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    verifier = tiny_t5(0, vocab=len(tokenizer))
    verifier.config.eos_token_id, verifier.config.decoder_start_token_id = 1, 0
    for name, model in (("verifier", verifier), ("drafter", perturbed(verifier, 0.3, 1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)


def write_jsonl(path, rows):
    """A task data file: one JSON object per line. Returns the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# The deferral rules of Narasimhan et al. (eqs. 2, 5, 10, 13, 14, 15): what the paper's configs must sweep,
# whatever else the registry holds.
PAPER_RULES = ("chow", "diff", "opt", "token_v1", "token_v2", "token_v3")


def docs_hooks():
    """docs/hooks.py, the docs site's generated parts, as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "hooks.py"
    spec = importlib.util.spec_from_file_location("scb_docs_hooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
