"""The offline defaults: generated tasks (translation for the T5 pair, few-shot arithmetic for the
decoder-only pair) and the small pairs trained on them.

`scb toy-data` writes into a folder that may hold other files: it marks the files it writes (MARK, beside them,
records each one's SHA-256) and never overwrites a file it did not write, or one changed since it wrote it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MARK = ".toy-data.json"  # in each folder toy-data writes: the files it wrote there, by name and SHA-256

MARK_BYTES = 10**6  # a few names and digests
FORMAT = "speccascade-bench toy-data"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _marked(mark: Path) -> dict[str, str]:
    """The files a folder's MARK says toy-data wrote (name -> SHA-256); {} without one; a ResultsError when a file
    of that name is there and is not one."""
    from ..files import ResultsError, read_json

    if not mark.exists():
        return {}
    try:  # a regular file, opened without blocking: a FIFO there is refused, not waited on
        data = read_json(mark, MARK_BYTES, "the bound of a toy-data mark")
        files = data["files"] if data.get("format") == FORMAT else None
    except (OSError, ValueError, AttributeError, KeyError, RecursionError):
        files = None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ResultsError(f"{mark} exists and was not written by `scb toy-data`; move it aside or give another --out")
    return files


def _check_overwrite(path: Path, text: bytes, marked: dict[str, str]) -> None:
    """Refuse (a ResultsError) to replace a file that toy-data did not write (as MARK records it) or that changed
    since, unless it already holds `text`."""
    from ..files import ResultsError

    if not path.exists():
        return
    if not path.is_file():
        raise ResultsError(f"{path} is not a regular file; move it aside or give another --out")
    data = path.read_bytes()
    if data != text and marked.get(path.name) != _sha256(data):
        raise ResultsError(f"{path} exists and was not written by `scb toy-data` (or was changed since); move it "
                           "aside or give another --out")


def write_jsonl_splits(out_dir: Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """Write each split's rows as `<out_dir>/<split>.jsonl`, never through a link and never over a file that this
    function did not write (every path is checked before the first is written), then mark them (MARK); returns
    the paths."""
    from ..files import refuse_link, write_atomic

    texts = {name: "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows) for name, rows in
             splits.items()}
    refuse_link(out_dir)
    paths = {name: refuse_link(out_dir / f"{name}.jsonl") for name in splits}
    mark = refuse_link(out_dir / MARK)
    marked = _marked(mark)
    for name, path in paths.items():
        _check_overwrite(path, texts[name].encode("utf-8"), marked)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        write_atomic(paths[name], text)
        marked[paths[name].name] = _sha256(text.encode("utf-8"))
    write_atomic(mark, json.dumps({"format": FORMAT, "files": marked}, indent=1) + "\n")
    return paths
