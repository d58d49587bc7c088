"""`scb run --set key.path=value`: values over a config's own, each read as YAML and then checked exactly as the
file's values are (its type, range and key), so that an override can do nothing the file could not."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ..settings import ConfigError, short


def apply_overrides(file: Path, data: Any, overrides: tuple[str, ...]) -> Any:
    """`data` (a config's mapping) with each `key.path=value` set at its dotted key, mappings created on the way;
    the input is not changed. A ConfigError names `--set` when an override is not `key=value` or its value is not
    YAML, and the key when a part of its path holds something other than a mapping."""
    if not overrides or not isinstance(data, dict):
        return data  # the reader refuses a config that is not a mapping, with or without overrides
    data = copy.deepcopy(data)
    for text in overrides:
        key, sep, value = text.partition("=")
        parts = [part.strip() for part in key.split(".")]
        if not sep or not all(parts):
            raise ConfigError(file, "--set", f"{short(text)} is not key.path=value (e.g. decoding.temperature=0.5)")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(file, "--set", f"{short(text)}: the value is not YAML ({reason})") from None
        node = data
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(file, ".".join(parts[:depth + 1]), f"is not a mapping, so --set {short(text)} "
                                  "cannot set a key inside it")
            node = node[part]
        node[parts[-1]] = parsed
    return data


def from_override(error: ConfigError, overrides: tuple[str, ...]) -> ConfigError:
    """A config error about a key an override set (or one inside it) names that override."""
    for text in overrides:
        key = ".".join(part.strip() for part in text.partition("=")[0].split("."))
        if error.key == key or error.key.startswith(f"{key}.") or error.key.startswith(f"{key}["):
            return ConfigError(error.file, error.key, f"{error.message} (given by --set {short(text)})")
    return error
