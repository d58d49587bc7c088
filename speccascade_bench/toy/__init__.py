"""The offline defaults: generated tasks (translation for the T5 pair, few-shot arithmetic for the
decoder-only pair) and the small pairs trained on them."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl_splits(out_dir: Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each split's rows as `<out_dir>/<split>.jsonl`, never through a link (every path is checked
    before the first is written); returns the paths."""
    from ..files import refuse_link, write_file

    paths = {name: refuse_link(out_dir / f"{name}.jsonl") for name in splits}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_file(paths[name], "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return paths
