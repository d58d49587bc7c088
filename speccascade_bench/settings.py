"""Typed settings, shared by every layer.

Each layer owns the dataclasses of its settings (`models.settings`, `decoding.settings`, `tasks.settings`,
`results.settings`); a field is declared once with `option()`: its type, default, valid range or choices. The
strict reader `Section` derives the allowed keys, the type checks and the defaults from those fields, and a
`ConfigError` names the file and the dotted key. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import sys
from dataclasses import MISSING, Field, asdict, field, fields, is_dataclass
from pathlib import Path
from typing import Any

# A run or variant name: it becomes a folder name, so no separators, no leading dot, nothing empty.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

# A registered method's or drafter's name: it names run ids (`spec_decode-g3`, `...-drafter_repeat`), whose parts
# '-' separates.
REGISTERED_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_registered_name(kind: str, name: str) -> None:
    """A ValueError unless `name` is a REGISTERED_NAME: a plugin's method or drafter that run ids cannot hold."""
    if not REGISTERED_NAME.match(name):
        raise ValueError(f"the {kind} name {name!r}: lower-case letters, digits and '_', a letter first (it names "
                         "run ids, which '-' separates)")

MAX_MESSAGE = 400

_repr = reprlib.Repr()

_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict, _repr.maxlevel = 60, 60, 4, 4, 2


def short(value: Any) -> str:
    """A repr of a config value bounded in size, whatever the value (a 1 MB string, an alias bomb)."""
    return _repr.repr(value)


def interval_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """A valid range as it is written in messages and the docs, e.g. `[0, 1)`; None is unbounded (-inf, inf)."""
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def markdown_cell(text: Any) -> str:
    """Text in a cell of a generated Markdown table: on one line, its bars escaped, angle brackets as text, not
    HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


class ConfigError(ValueError):
    """A config problem, located by file and dotted key."""

    def __init__(self, file: str | Path, key: str, message: str):
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "..."
        key = key if len(key) <= 100 else key[:100] + "..."
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")

    def __reduce__(self):  # pickled as its three parts (a Ray worker's error reaches the command)
        return type(self), (self.file, self.key, self.message)


MAX_ERRORS = 20  # the config errors reported at once; more are counted


class ConfigErrors(ConfigError):
    """Several config problems found in one pass (`Collect`), each a ConfigError; the first stands for all where one
    is read (its file, key and message), `errors` holds every one."""

    def __init__(self, errors: list[ConfigError]):
        flat = [e for error in errors for e in (error.errors if isinstance(error, ConfigErrors) else [error])]
        self.errors = flat
        super().__init__(flat[0].file, flat[0].key, flat[0].message)

    def lines(self) -> list[str]:
        shown = [str(error) for error in self.errors[:MAX_ERRORS]]
        more = len(self.errors) - MAX_ERRORS
        return shown + ([f"{self.file}: {more} more error(s) after these; mend them and run again"] if more > 0 else [])

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __reduce__(self):
        return type(self), (self.errors,)


def each_error(error: ConfigError, change) -> ConfigError:
    """`error` with `change` (a ConfigError -> ConfigError) applied to it, or to each of several."""
    if isinstance(error, ConfigErrors):
        return ConfigErrors([change(e) for e in error.errors])
    return change(error)


class Collect:
    """Read parts of a config independently, so that one pass finds every problem: `collect(read, ...)` returns what
    `read` returns, or None after keeping its ConfigError; `done()` raises what was kept (one error, or several as
    ConfigErrors)."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def __call__(self, read, *args, **kwargs):
        try:
            return read(*args, **kwargs)
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def done(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


def option(default: Any = MISSING, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, choices: tuple[str, ...] = (), pattern: re.Pattern | None = None,
           section: str = "", internal: bool = False, doc: str = "") -> Any:
    """A config field: its default (none: required), its valid range or choices, the name pattern a string
    must match, the section it is read from (for flat dataclasses such as FinetuneConfig), or `internal`
    for a field that is not a key of the file; `doc`, what it means, for the generated configuration reference
    (every key of a file has one: `config.reference`)."""
    metadata = {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices,
                "pattern": pattern, "section": section, "internal": internal, "doc": doc}
    return field(default=default, metadata=metadata)


_KINDS = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "tuple": tuple}

MAX_STRINGS = 64  # items of a list of strings (stop strings)


def _kind(f: Field, owner: type) -> tuple[type, bool]:
    """The Python type of a field's value and whether it may be null, from its annotation."""
    text = str(f.type)
    nullable = text.endswith("| None")
    base = text.removesuffix("| None").strip().split("[")[0]
    return _KINDS.get(base) or vars(sys.modules[owner.__module__])[base], nullable  # a section's dataclass


def keys_of(cls, section: str = "") -> tuple[str, ...]:
    """The keys a config section accepts: its dataclass's fields (those of `section` for a flat one)."""
    return tuple(f.name for f in fields(cls) if not f.metadata.get("internal")
                 and f.metadata.get("section", "") == section)


class Section:
    """Reads one mapping of a config, tracking which keys were used, so that unknown keys are errors."""

    def __init__(self, file: Path, prefix: str, data: Any, allowed: tuple[str, ...]):
        self.file, self.prefix = file, prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, prefix or "(top level)", f"must be a mapping, got {type(data).__name__}")
        unknown = [ConfigError(file, self.key(short(key) if not isinstance(key, str) else key),
                               f"unknown key{suggest(str(key)[:100], allowed)}; allowed: {', '.join(allowed)}")
                   for key in data if key not in allowed]
        if unknown:
            raise unknown[0] if len(unknown) == 1 else ConfigErrors(unknown)
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), message)

    def get(self, name: str, kind: type | tuple, default: Any = ..., *, nullable: bool = False) -> Any:
        if name not in self.data:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        if value is None and nullable:
            return None
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(name, f"must be {names}, got {type(value).__name__} {short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, f"must be a finite number, got {value}")
        return value

    def strings(self, name: str, default: Any = ...) -> tuple[str, ...]:
        """A list of non-empty strings (one string is a list of one)."""
        value = self.get(name, (list, str), default)
        items = [value] if isinstance(value, str) else list(value)
        if len(items) > MAX_STRINGS:
            raise self.error(name, f"has {len(items)} items; at most {MAX_STRINGS}")
        for item in items:
            if not isinstance(item, str) or not item:
                raise self.error(name, f"must be a list of non-empty strings, got {short(item)}")
        return tuple(items)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.error(name, f"unknown value {short(value)}{suggest(value[:100], choices)}; choose from "
                             f"{', '.join(choices)}")
        return value

    def number(self, name: str, kind: type, default: Any = ..., *, low=None, high=None, low_open=False,
               high_open=False, nullable=False):
        value = self.get(name, kind, default, nullable=nullable)
        if value is None:
            return None
        bad_low = low is not None and (value <= low if low_open else value < low)
        bad_high = high is not None and (value >= high if high_open else value > high)
        if bad_low or bad_high:
            raise self.error(name, f"must be in {interval_text(low, high, low_open, high_open)}, got {value:g}")
        return value

    def fields(self, cls, section: str = "", only: tuple[str, ...] | None = None, **defaults: Any) -> dict[str, Any]:
        """The fields of `cls` (those of `section` for a flat one, or just `only`), each read with its type,
        range and default; `defaults` overrides a field's default for this kind of file."""
        values, collect = {}, Collect()
        for f in fields(cls):
            meta = f.metadata
            if meta.get("internal") or meta.get("section", "") != section or only is not None and f.name not in only:
                continue
            default = defaults.get(f.name, ... if f.default is MISSING else f.default)
            values[f.name] = collect(self._field, f, cls, default)
        collect.done()  # every field's problem at once
        return values

    def _field(self, f, cls, default: Any) -> Any:
        meta = f.metadata
        kind, nullable = _kind(f, cls)
        if meta.get("choices"):
            return self.choice(f.name, meta["choices"], default)
        if kind is tuple:
            return self.strings(f.name, default)
        if is_dataclass(kind):
            value = self.get(f.name, dict, default, nullable=nullable)
            if isinstance(value, dict):
                value = kind(**Section(self.file, self.key(f.name), value, keys_of(kind)).fields(kind))
            return value
        if kind in (int, float):
            return self.number(f.name, kind, default, low=meta.get("low"), high=meta.get("high"),
                               low_open=meta.get("low_open"), high_open=meta.get("high_open"), nullable=nullable)
        value = self.get(f.name, kind, default, nullable=nullable)
        if kind is str and value is not None and default is ... and not value.strip():
            raise self.error(f.name, "must not be empty")
        if kind is str and value is not None and meta.get("pattern") and not meta["pattern"].match(value):
            raise self.error(f.name, f"{short(value)} must be letters, digits, '_', '.', '+' or '-', "
                             "starting with a letter or digit")
        return value


def plain(section: Any) -> dict:
    """A config section as plain JSON values (as a manifest records it)."""
    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value
    return convert(asdict(section))


def suggest(name: str, options) -> str:
    """A ' (did you mean ...?)' suffix for an unknown name, or ''."""
    close = difflib.get_close_matches(name, list(options), n=2, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
