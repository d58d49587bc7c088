"""What a local model folder's weights are, recorded where results depend on them: a results folder's manifest (a
resume refuses to add rows decoded with other weights at the same path) and a router (a run refuses a router fitted
with other weights). A hub name or a preset has no local folder and no fingerprint.

The fingerprint hashes each weight file's name and size and, for a file over `SAMPLES` blocks, `SAMPLES` evenly
spaced blocks of it (first and last included); smaller files are hashed whole. Training changes every block of
a checkpoint, so a sample tells checkpoints apart while a run over a 50 GB model reads 8 MiB per file, not 50 GB.

A local tokenizer folder has a fingerprint too (`tokenizer_fingerprint`, its files hashed whole): its vocabulary,
special tokens and chat template make the prompts, which a resume must not change under the same run ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")
# Files of which a tokenizer saved with `save_pretrained` (or shipped on the hub) has at least one, and the files
# beside them that also shape its output, chat templates included
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json",
                   "vocab.txt", "sentencepiece.bpe.model")
TOKENIZER_EXTRAS = ("special_tokens_map.json", "added_tokens.json", "merges.txt", "chat_template.jinja",
                    "chat_template.json")
BLOCK = 1 << 20
SAMPLES = 8


def weights_fingerprint(name: str) -> dict | None:
    """The fingerprint of the model folder `name` ({"bytes", "sampled_sha256"}), or None when `name` is not a
    local folder with weight files."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in WEIGHT_FILES or p.name == "config.json"))
    if not any(p.suffix in WEIGHT_FILES for p in files):
        return None
    digest, total = hashlib.sha256(), 0
    for path in files:
        size = path.stat().st_size
        total += size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as f:
            if size <= SAMPLES * BLOCK:
                digest.update(f.read())
                continue
            for i in range(SAMPLES):
                f.seek((size - BLOCK) * i // (SAMPLES - 1))
                digest.update(f.read(BLOCK))
    return {"bytes": total, "sampled_sha256": digest.hexdigest()}


def tokenizer_fingerprint(name: str) -> dict | None:
    """The fingerprint of the tokenizer files in the local folder `name` ({"bytes", "sha256"}: names, sizes and
    contents of TOKENIZER_FILES, TOKENIZER_EXTRAS and `additional_chat_templates/`), or None when it is not a local
    folder with any."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    extra = folder / "additional_chat_templates"
    files = [folder / file for file in TOKENIZER_FILES + TOKENIZER_EXTRAS if (folder / file).is_file()]
    files += sorted(p for p in extra.iterdir() if p.is_file()) if extra.is_dir() else []
    if not files:
        return None
    digest, total = hashlib.sha256(), 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        digest.update(f"{path.relative_to(folder)}\0{len(data)}\0".encode())
        digest.update(data)
    return {"bytes": total, "sha256": digest.hexdigest()}
