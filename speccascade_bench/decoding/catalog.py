"""The method and rule registries as text: `scb methods`' listing, and the docs site's methods page (generated from
the registries, so that it cannot drift from what a config may name)."""

from __future__ import annotations

import re

from ..settings import markdown_cell
from .deferral import RULES
from .methods import METHODS, RULE_ALPHA_RANGE


def methods_text() -> str:
    """`scb methods`: each method with its parameters, their ranges and defaults, and spec_cascade's alpha range
    by rule."""
    lines = []
    for spec in METHODS.values():
        lines.append(f"{spec.name}: {spec.description}")
        for param in spec.params:
            extra = " (required)" if param.required else f" (default {param.default})" if param.default else ""
            if param.needs:
                choice = f"{param.needs[0]}: {param.needs[1]}"
                extra = f" (with {choice}" + (f", default {param.default})" if param.default is not None else
                                               ", required there)")
            lines.append(f"    {param.name} in {param.range_text()}{extra}: {param.description}")
    lines.append("spec_cascade alpha ranges by rule: " + ", ".join(
        f"{rule} {_alpha_range(rule)}" for rule in RULE_ALPHA_RANGE))
    return "\n".join(lines)


def _alpha_range(rule: str) -> str:
    """A rule's alpha range as `scb methods` has always written it (its bounds as given, e.g. [0.0, 1.0])."""
    low, high = RULE_ALPHA_RANGE[rule]
    return f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"


def methods_markdown() -> str:
    """The methods and deferral rules as the docs site's methods page shows them, from the registries: each method
    with its parameters (valid values, defaults, meaning), then each rule with its alpha range and kind."""

    lines = ["| method | what it runs |", "| --- | --- |"]
    lines += [f"| [`{spec.name}`](#{spec.name}) | {markdown_cell(spec.description)} |" for spec in METHODS.values()]
    for spec in METHODS.values():
        lines += ["", f"### {spec.name}", "", markdown_cell(spec.description), ""]
        if not spec.params:
            lines.append("No parameters.")
            continue
        lines += ["| parameter | values | default | meaning |", "| --- | --- | --- | --- |"]
        for param in spec.params:
            default = "required" if param.required else "-" if param.default is None else f"`{param.default}`"
            if param.needs:
                default += f" (with {param.needs[0]}: {param.needs[1]})"
            lines.append(f"| `{param.name}` | {markdown_cell(param.range_text())} | {default} | "
                         f"{markdown_cell(param.description)} |")
    lines += ["", "### Deferral rules", "", "`spec_cascade`'s `rule` (and `chain_spec_cascade`'s `rules`):", "",
              "| rule | alpha | decides | parameters | what it is |", "| --- | --- | --- | --- | --- |"]
    for rule in RULES.values():
        kind = ("per token" if rule.per_token else "per position") + (", learned (a router)" if rule.uses_router
                                                                       else "") + (", coupled" if rule.coupled else "")
        params = ", ".join(f"`{p.name}`" for p in rule.params) or "-"
        what = re.split(r"(?<!Eq)\. ", " ".join((rule.decide.__doc__ or "").split()))[0].rstrip(".")
        lines.append(f"| `{rule.name}` | {_alpha_range(rule.name)} | {kind} | {params} | {markdown_cell(what)} |")
    return "\n".join(lines)
