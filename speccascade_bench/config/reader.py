"""Reading YAML strictly: no duplicate keys, bounded size and alias expansion, one-line errors with the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..settings import ConfigError, short

MAX_CONFIG_BYTES = 1 << 20

MAX_CONFIG_NODES = 100_000  # values in a loaded config, aliases expanded: bounds any walk over it


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"duplicate key {short(key)} (line {line})")
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable: the mapping constructor reports it
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_size(data: Any) -> None:
    """Walk the loaded config, aliases expanded, and refuse it past MAX_CONFIG_NODES values."""
    stack, count = [data], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ValueError(f"has more than {MAX_CONFIG_NODES} values once its aliases are expanded")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_yaml(text: str) -> Any:
    """Strict YAML: duplicate keys, files over MAX_CONFIG_BYTES and alias bombs are refused (yaml.YAMLError
    or ValueError)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ValueError("is nested too deeply") from None
    _check_size(data)
    return data


def read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(path, "", "config file not found")
    if path.is_dir():
        raise ConfigError(path, "", "is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(path, "", "is not a regular file (a device or a pipe?)")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(path, "", f"the config is larger than {MAX_CONFIG_BYTES} bytes")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the config: {exc.strerror or exc}") from None
    try:
        return parse_yaml(text)
    except _DuplicateKey as exc:
        raise ConfigError(path, "", str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"not valid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise ConfigError(path, "", f"the config {exc}") from None


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]
