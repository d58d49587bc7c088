"""The offline defaults: generated tasks (translation for the T5 pair, few-shot arithmetic for the
decoder-only pair) and the small pairs trained on them."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl_splits(out_dir: Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each split's rows as `<out_dir>/<split>.jsonl`; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in splits.items():
        path = out_dir / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths[name] = path
    return paths
