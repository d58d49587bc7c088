"""How each curve is drawn, the same in every figure and every run: a colour per method of the registry (per
rule for the speculative cascade, per sequence score for the sequence cascades), and a marker and line style per
variant of it (a beta, a bonus, a loop, a router).

A curve's style depends on its name only (`summary.group_key`), never on which other curves a figure holds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..decoding.methods import METHODS

# The registry's methods and spec_cascade's rules, each with its colour (colour-blind-safe where it can be).
COLORS = {
    "verifier": "#000000",
    "drafter": "#7f7f7f",
    "middle": "#bcbd22",
    "seq_cascade": "#8c564b",
    "token_cascade": "#9467bd",
    "spec_decode": "#2ca02c",
    "lossy_spec_decode": "#d62728",
    "bild": "#e377c2",
    "staged_spec_decode": "#17becf",
    "chain_spec_cascade": "#393b79",
    "chain_seq_cascade": "#c49c94",
    "spec_cascade chow": "#1f77b4",
    "spec_cascade diff": "#ff7f0e",
    "spec_cascade opt": "#637939",
    "spec_cascade token_v1": "#98df8a",
    "spec_cascade token_v2": "#ffbb78",
    "spec_cascade token_v3": "#9edae5",
    "spec_cascade learned": "#7b4173",
    "spec_cascade round_opt": "#b5cf6b",
    "spec_cascade budget_opt": "#e7ba52",
    "seq_cascade sequence_score=chow_sum": "#e7969c",
    "seq_cascade sequence_score=chow_quantile": "#bd9e39",
    "seq_cascade sequence_score=learned": "#5254a3",
}
# For methods and rules registered beyond these (plugins): a colour chosen by their name.
SPARE_COLORS = ("#6b6ecf", "#8c6d31", "#843c39", "#ad494a", "#3182bd", "#e6550d", "#31a354", "#756bb1")
FAMILY_CHOICE = ("sequence_score=",)  # a variant that starts a family of its own (with its colour), after the method

MARKERS = ("o", "v", "^", "<", ">", "p", "h", "X", "d", "8")
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str
    point: bool  # a method without a sweep: one large marker (the registry's), no line


def _pick(name: str, choices: tuple) -> object:
    return choices[zlib.crc32(name.encode()) % len(choices)]


def family(curve: str) -> tuple[str, str]:
    """A curve's family (its method; for spec_cascade its method and rule, for the sequence cascades their method
    and sequence score) and the rest of its name."""
    parts = curve.split(" ")
    second = parts[1] if len(parts) > 1 else ""
    size = 2 if (parts[0] == "spec_cascade" and second) or second.startswith(FAMILY_CHOICE) else 1
    return " ".join(parts[:size]), " ".join(parts[size:])


def curve_style(curve: str) -> Style:
    """The style of the curve named `curve`: its family's colour; the registry's marker for a method drawn as a
    point; for a curve, a round marker and a solid line when it is its family's plain variant, else a marker and a
    line style chosen by the variant's name."""
    name, variant = family(curve)
    color = COLORS.get(name) or str(_pick(name, SPARE_COLORS))
    spec = METHODS.get(curve.split(" ")[0])
    if spec is not None and spec.marker:
        return Style(color, spec.marker, "none", True)
    if not variant:
        return Style(color, "o", "-", False)
    return Style(color, str(_pick(variant, MARKERS[1:])), str(_pick(variant + "/", LINESTYLES[1:])), False)
