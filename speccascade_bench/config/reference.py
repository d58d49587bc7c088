"""The configuration reference, generated from the settings dataclasses (each field's default, valid values and
`doc`), so that it cannot drift from what the readers accept: the docs site's configuration page renders it, and a
test fails on a key without a description (a fine-tuning config's: `finetune.config.finetune_reference`)."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, fields

from ..decoding.settings import DecodingConfig
from ..models.settings import ModelsConfig
from ..results.settings import RunConfig, TimingConfig
from ..settings import interval_text, markdown_cell
from ..tasks.settings import FewshotConfig, TaskConfig

# The sections of a run config, in a file's order: (the key's prefix, its dataclass)
RUN_SECTIONS = (("", RunConfig), ("task", TaskConfig), ("task.fewshot", FewshotConfig), ("models", ModelsConfig),
                ("decoding", DecodingConfig), ("timing", TimingConfig))

# Keys a reader accepts besides its dataclass's fields (config/run.py), with what they mean
EXTRA_KEYS = {
    "": (("variants", "null", "a mapping of names to partial configs", "named partial configs merged over this "
          "one, key by key (lists and values replace): `scb run --variant NAME`, its folder the output's with "
          "`-NAME` appended"),),
    "models": (("chain", "null", "a list of 2 to 8 models", "instead of drafter, middle and verifier: every model "
                "of a chain, smallest first"),),
}


def _default(f: dataclasses.Field) -> str:
    if f.default is MISSING and f.default_factory is MISSING:
        return "**required**"
    value = f.default if f.default is not MISSING else f.default_factory()
    if dataclasses.is_dataclass(value):
        return "its section's defaults"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    if isinstance(value, str):
        return f"`{value!r}`" if value.strip() != value or not value or "\n" in value else f"`{value}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _values(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta.get("choices"):
        return " \\| ".join(f"`{choice}`" for choice in meta["choices"])
    if meta.get("low") is not None or meta.get("high") is not None:
        return interval_text(meta.get("low"), meta.get("high"), meta.get("low_open"), meta.get("high_open"))
    if meta.get("pattern") is not None:
        return "a name (letters, digits, `_ . + -`)"
    text = str(f.type).replace(" | None", "").strip()
    kinds = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true \\| false",
             "dict": "a mapping", "tuple[str, ...]": "a list of text", "dict[str, Any]": "a mapping"}
    return kinds.get(text, "a section" if text[:1].isupper() and "Config" in text else "a list")


def section_keys(cls, section: str | None = None) -> list[dataclasses.Field]:
    """The keys of a section as a file gives them (not the internal fields), of `section` for a flat dataclass."""
    return [f for f in fields(cls) if not f.metadata.get("internal")
            and (section is None or f.metadata.get("section", "") == section)]


def undocumented(sections=None) -> list[str]:
    """Every key of a config's sections (a run config's by default: (prefix, dataclass[, flat section])) that has no
    description (`option(doc=...)`)."""
    return [f"{prefix + '.' if prefix else ''}{f.name}" for prefix, cls, *flat in (sections or RUN_SECTIONS)
            for f in section_keys(cls, *flat) if not f.metadata.get("doc")]


def table(prefix: str, keys: list[dataclasses.Field], extras: tuple = ()) -> list[str]:
    """A section's keys as a Markdown table: key, default, values, meaning."""
    lines = ["| key | default | values | meaning |", "| --- | --- | --- | --- |"]
    for f in keys:
        name = f"{prefix}.{f.name}" if prefix else f.name
        lines.append(f"| `{name}` | {_default(f)} | {_values(f)} | {markdown_cell(f.metadata.get('doc', ''))} |")
    for key, default, values, doc in extras:
        lines.append(f"| `{prefix + '.' if prefix else ''}{key}` | `{default}` | {values} | {doc} |")
    return lines


def config_reference() -> str:
    """The run config's keys, a Markdown table per section: default (marked required where there is none), valid
    values and meaning."""
    titles = {"": "Top level", "task": "`task`", "task.fewshot": "`task.fewshot`", "models": "`models`",
              "decoding": "`decoding`", "timing": "`timing`"}
    lines = []
    for prefix, cls in RUN_SECTIONS:
        lines += [f"### {titles[prefix]}", "", *table(prefix, section_keys(cls), EXTRA_KEYS.get(prefix, ())), ""]
    return "\n".join(lines)
