"""A run config's `plugins:`: the user's own Python files or modules, imported before the rest of the config is
read, so that what they register is known to it: deferral rules (`decoding.deferral.deferral_rule`), metrics
(`tasks.metrics.register_metric`), task kinds (`tasks.kinds.task_kind`), methods with their own drafter or
target (`decoding.methods.register_method`, whose decoder may call `decoding.speculative.speculative_sample` with
any `decoding.drafters.Drafter`), and drafters for a chain's bottom (`decoding.drafters.register_drafter`).

An entry ending in `.py` is a file (relative to the working folder, as every path of a config); any other entry is
an importable module name. Each file runs once per process, however many configs name it; a Ray worker imports
its run's plugins before it decodes. A results folder records each plugin's file by size and SHA-256, and a
resume refuses a plugin edited since (`results.manifest.task_files`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from .settings import ConfigError

MAX_PLUGINS = 32

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_loaded: dict[str, object] = {}  # entry (a file's resolved path, or a module name) -> its module


def check_entries(file: str | Path, entries: object) -> tuple[str, ...]:
    """The `plugins` list as given, checked for form: a list of at most MAX_PLUGINS strings, each a `.py` file's
    path or a module name. Raises ConfigError naming `plugins[i]`."""
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise ConfigError(file, "plugins", "must be a list of Python files (x.py) or module names")
    if len(entries) > MAX_PLUGINS:
        raise ConfigError(file, "plugins", f"names {len(entries)} plugins; at most {MAX_PLUGINS}")
    for i, entry in enumerate(entries):
        if not entry.endswith(".py") and not MODULE_NAME.match(entry):
            raise ConfigError(file, f"plugins[{i}]", f"{entry[:100]!r} is neither a .py file nor a module name")
    return tuple(entries)


def load_plugins(file: str | Path, entries: tuple[str, ...]) -> None:
    """Import each plugin once per process. Raises ConfigError naming `plugins[i]` and the plugin's own error."""
    for i, entry in enumerate(entries):
        key = str(Path(entry).expanduser().resolve()) if entry.endswith(".py") else entry
        if key in _loaded:
            continue
        try:
            _loaded[key] = _import(entry, Path(key))
        except ConfigError:
            raise
        except (Exception, SystemExit) as exc:  # the user's code failed (or called exit): its own error, in one line
            message = " ".join(str(exc).split())[:200]
            raise ConfigError(file, f"plugins[{i}]", f"cannot import {entry[:100]}: {type(exc).__name__}: "
                              f"{message}") from None


def _import(entry: str, path: Path):
    if not entry.endswith(".py"):
        return importlib.import_module(entry)
    if not path.is_file():
        raise FileNotFoundError(f"{entry} is not a file")
    name = f"scb_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before it runs: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def plugin_file(entry: str) -> Path | None:
    """The Python file a plugin entry runs: the file itself, or an imported module's source (None when it has
    none)."""
    if entry.endswith(".py"):
        return Path(entry).expanduser()
    try:
        spec = importlib.util.find_spec(entry)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None
