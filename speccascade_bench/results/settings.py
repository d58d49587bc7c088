"""What a run is, as its results folder records it: the methods at their settings (`MethodRun`, whose `run_id`
names a run's file), the timing, and the whole run config (`RunConfig`) that a manifest holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..decoding.methods import METHODS
from ..decoding.settings import DecodingConfig
from ..models.settings import ModelsConfig
from ..settings import NAME, option
from ..tasks.settings import TaskConfig


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = option(2, low=0, high=1000, doc='examples decoded first with every method and not recorded')
    trials: int = option(1, low=1, high=100, doc='timed repetitions per example; its latency is their mean')


@dataclass(frozen=True)
class MethodRun:
    """One method at one parameter setting: a curve point. `run_id` names its results file: the method,
    then each parameter in the registry's order (numbers after their tag, a required choice as its value,
    an optional choice as `name_value` when it is not the default; a chain's per-level values joined by `+`)."""

    method: str
    params: dict[str, Any]

    @property
    def run_id(self) -> str:
        parts = [self.method]
        for param in METHODS[self.method].params:
            if param.name not in self.params:
                continue
            value = self.params[param.name]
            if isinstance(value, list | tuple):  # one value per level of a chain
                value = "+".join(str(v) if param.choices else _number_text(v) for v in value)
                number = "" if param.choices else f"{param.tag or param.name}{value}"
            else:
                number = "" if param.choices or param.path else f"{param.tag or param.name}{_number_text(value)}"
            text = param.label(value, number, "_")
            if text is not None:
                parts.append(text)
        return "-".join(parts)


def _number_text(value: float) -> str:
    """A parameter value in a run id: short (`0.3`, `5`), and exact, so that two values never share an id."""
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


@dataclass(frozen=True)
class RunConfig:
    name: str = option(pattern=NAME, doc="letters, digits, '_', '.', '+', '-'; it names the output folder")
    task: TaskConfig = option(doc='what is decoded and how it is scored: the `task` keys')
    models: ModelsConfig = option(doc='the pair or chain: the `models` keys')
    methods: tuple[MethodRun, ...] = option(
                                            doc=('each entry a method and its parameters; lists are swept (their '
                                                 'cartesian product): see Methods'))
    decoding: DecodingConfig = option(DecodingConfig(), doc='the `decoding` keys')
    timing: TimingConfig = option(TimingConfig(), doc='the `timing` keys')
    output: str = option("", doc='the results folder (default: results/<name>)')
    record: tuple[str, ...] = option((),
                                     doc=('extra per-example records: `tokens` (per-position records of both models '
                                          "on each reference, in the drafter's rows, for `scb fit-router --level "
                                          'token`)'))
    plugins: tuple[str, ...] = option((),
                                      doc=('your .py files or module names, imported before the rest is read: the '
                                           'rules, metrics and task kinds they register the config may name'))
    file: str = option("", internal=True)
    variant: str | None = option(None, internal=True)
    variants: tuple[str, ...] = option((), internal=True)
    raw: dict = field(default_factory=dict, compare=False, metadata={"internal": True})
    overrides: tuple[str, ...] = field(default=(), metadata={"internal": True})  # `scb run --set`, as given

    def method_names(self) -> list[str]:
        return list(dict.fromkeys(m.method for m in self.methods))
