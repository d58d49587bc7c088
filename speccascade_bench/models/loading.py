"""Loading models and tokenizers by hub name or local path (or a shape preset), with one-line errors.

A drafter and a verifier (and the models of a chain between them) must share a vocabulary
(`check_compatible`); a tokenizer must fit its model
(`check_tokenizer`). `load_pair` returns the `ModelPair` that decoding drives.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .cached import SPECIAL_TOKENS, ModelPair
from .fingerprint import TOKENIZER_FILES
from .presets import build_preset, is_preset
from .settings import chain_roles


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded, or a pair does not fit together."""


def check_compatible(drafter_config, verifier_config, names: tuple[str, str] = ("drafter", "verifier"),
                     tokens: int | None = None) -> None:
    """Refuse a pair that does not share the vocabulary, special tokens and architecture family. Embedding
    tables of different sizes are accepted when the tokenizer's `tokens` fit the smaller one (Qwen2.5 pads
    its models' tables to different sizes for one tokenizer): the rows past it are padding."""
    problems = []
    if drafter_config.is_encoder_decoder != verifier_config.is_encoder_decoder:
        problems.append("one is an encoder-decoder model and the other is decoder-only")
    sizes = (drafter_config.vocab_size, verifier_config.vocab_size)
    if sizes[0] != sizes[1] and (tokens is None or tokens > min(sizes)):
        fits = "" if tokens is None else f", and the tokenizer's {tokens} tokens do not fit the smaller"
        problems.append(f"vocab_size {sizes[0]} != {sizes[1]}{fits}")
    for attr in SPECIAL_TOKENS:
        a, b = getattr(drafter_config, attr, None), getattr(verifier_config, attr, None)
        if a != b:
            problems.append(f"{attr} {a} != {b}")
    if problems:
        raise ModelLoadError(f"the {names[0]} and the {names[1]} do not share a vocabulary: " + "; ".join(problems))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but CUDA is not available")
    return torch.device(device)


# Plain lowercase words, which every real tokenizer reproduces (up to spaces); an empty one makes them unknown.
_PROBE = "the quick brown fox jumps over the lazy dog"


def damaged_weights(folder: Path) -> tuple[Path, str] | None:
    """The first safetensors file in a model folder whose header or length is broken, with the reason."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own error type for every kind of damage
            return path, str(exc)
    return None


def model_load_error(name: str, role: str, exc: Exception) -> ModelLoadError:
    """One line for a model that failed to load: the damaged file of a local folder, or the hub name."""
    path = Path(name).expanduser()
    if path.exists():
        damaged = damaged_weights(path) if path.is_dir() else None
        if damaged:
            return ModelLoadError(f"could not load the {role} from {path}: {damaged[0]} is damaged ({damaged[1]}); "
                                  "save or copy the model again")
        return ModelLoadError(f"could not load the {role} from {path}: {exc}")
    return ModelLoadError(
        f"could not load the {role} {name!r} (hub name): {exc}. Without network access, give a local path or "
        "a model already in the Hugging Face cache."
    )


def _load_model(name: str, role: str, device: torch.device, dtype: torch.dtype):
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    if is_preset(name):
        with torch.device(device):
            model = build_preset(name)
        return model.to(dtype).eval()
    try:
        config = AutoConfig.from_pretrained(name)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError, SafetensorError) as exc:
        raise model_load_error(name, role, exc) from None
    return model.to(device).eval()


def load_tokenizer(name: str, setting: str = "models.tokenizer"):
    """`byt5` gives ByT5's byte-level tokenizer, which needs no files; anything else is a hub name or a
    local folder that holds tokenizer files (`setting` is the config key to name in the error)."""
    from transformers import AutoTokenizer, ByT5Tokenizer

    if name == "byt5":
        return ByT5Tokenizer()
    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / file).exists() for file in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder} has no tokenizer files (such as tokenizer.json or tokenizer_config.json); "
                             f"set {setting} to the tokenizer the model was trained with (byt5, a hub name or a "
                             "folder)")
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer {name!r}: {exc}") from None


def check_tokenizer(tokenizer, model, name: str, setting: str = "models.tokenizer") -> None:
    """Refuse a tokenizer that does not fit the model: more tokens than the model has embedding rows,
    special tokens out of its range, or one that turns plain words into unknown tokens (an empty
    tokenizer, as transformers builds for a folder without tokenizer files)."""
    rows = model.get_input_embeddings().weight.shape[0]
    fix = f"set {setting} to the tokenizer the model was trained with"
    if len(tokenizer) > rows:
        raise ModelLoadError(f"the tokenizer {name!r} has {len(tokenizer)} tokens but the model has {rows} "
                             f"embedding rows: they do not belong together; {fix}")
    for attr in ("eos_token_id", "pad_token_id"):
        token = getattr(tokenizer, attr, None)
        if token is not None and not 0 <= token < rows:
            raise ModelLoadError(f"the tokenizer {name!r} has {attr} {token}, outside the model's {rows} "
                                 f"embedding rows; {fix}")
    ids = tokenizer(_PROBE, add_special_tokens=False).input_ids
    round_trip = tokenizer.decode(ids, skip_special_tokens=True)
    if "".join(round_trip.split()).lower() != "".join(_PROBE.split()):
        raise ModelLoadError(f"the tokenizer {name!r} does not reproduce plain text ({_PROBE!r} comes back as "
                             f"{round_trip!r}): it is empty or not the model's; {fix}")


def load_pair(drafter: str, verifier: str, tokenizer: str | None = None, device: str = "auto",
              dtype: str = "float32", middle: tuple[str, ...] = ()) -> ModelPair:
    """Load a drafter/verifier pair (with `middle`, a chain: the models between them, smallest first) by hub name
    or local path and check that every model and the tokenizer fit together. The tokenizer defaults to the
    verifier's (`byt5` for shape presets)."""
    torch_device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    names = (drafter, *middle, verifier)
    roles = chain_roles(len(names))
    models = [_load_model(name, role, torch_device, torch_dtype) for name, role in zip(names, roles, strict=True)]
    name = tokenizer or ("byt5" if is_preset(verifier) else verifier)
    tok = load_tokenizer(name)
    for role, model in zip(roles, models, strict=True):
        if role != "verifier":
            check_compatible(model.config, models[-1].config, (role, "verifier"), tokens=len(tok))
    for model in reversed(models):
        check_tokenizer(tok, model, name)
    sizes = {model.config.vocab_size for model in models}
    vocab = None if len(sizes) == 1 else min(sizes)
    return ModelPair(models[0], models[-1], tok, torch_device, torch_dtype, vocab_size=vocab,
                     middle=tuple(models[1:-1]))
