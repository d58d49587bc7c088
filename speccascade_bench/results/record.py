"""The example row, defined once: one line of `examples/<run_id>.jsonl`, one example decoded by one method run.

`ExampleRow` is what a run writes (`Session` builds it; the derived runs copy and change it); its fields'
metadata say what a reader demands of each field (`problem`: the checks of `results.rows.read_run`), which
numbers the summary sums (SUMMED), and what each field means: the results page's table of the row is
`markdown_table()`, and a test compares the two.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _finite(value: Any) -> bool:
    kind = type(value)  # a JSON number is an int or a float: those first, without isinstance
    if kind is float:
        return math.isfinite(value)
    return kind is int or isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


MAX_COUNT = 10**12  # the most of anything a row counts (tokens, calls, positions): more is no decode's


def _id(name: str, value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"has no integer {name}"
    return _bounded(name, value)


def _count(name: str, value: Any) -> str | None:
    if not _finite(value):
        return f"has no finite {name}"
    return _bounded(name, value)


def _bounded(name: str, value: int | float) -> str | None:
    if value < 0:
        return f"has a negative {name} ({value})"
    return f"has a {name} of {value:g}, over 10^12" if value > MAX_COUNT else None


def _counts(name: str, value: Any) -> str | None:
    """A list of whole counts (`_id`)."""
    if not isinstance(value, list):
        return f"has a {name} that is not a list of counts"
    return _each_count(name, value)


def _role_counts(name: str, value: Any) -> str | None:
    """A mapping of role names to whole counts (`calls`)."""
    if not isinstance(value, dict):
        return f"has a {name} that is not a mapping of roles to counts"
    return _each_count(name, value.values())


def _each_count(name: str, items) -> str | None:
    for item in items:
        if _id(name, item):
            return f"has a {name} entry that is not a whole number from 0 to 10^12"
    return None


MAX_SECONDS = 86_400.0  # a day: the longest time an example's decode may have taken


def _seconds(name: str, value: Any) -> str | None:
    """A time measured around a decode: a finite number of seconds above 0 and at most MAX_SECONDS."""
    if not _finite(value):
        return f"has no finite {name}"
    if not 0 < value <= MAX_SECONDS:
        return f"has a {name} of {value:g} s, not above 0 and at most {MAX_SECONDS:g} (a day)"
    return None


def _trials(name: str, value: Any) -> str | None:
    """The seconds of each timed trial (`_seconds`), a list."""
    if not isinstance(value, list):
        return f"has a {name} that is not a list"
    for trial in value:
        why = _seconds(name, trial)
        if why:
            return why
    return None


LEVEL_COUNTS = ("drafted", "accepted", "rounds", "rejections", "deferred")


def _levels(name: str, value: Any) -> str | None:
    """A chain row's `levels`: a list of mappings, each with every count of LEVEL_COUNTS, finite and >= 0."""
    if not isinstance(value, list) or not value:
        return f"has a {name} that is not a non-empty list"
    for level in value:
        if not isinstance(level, dict) or any(_count(key, level.get(key)) for key in LEVEL_COUNTS):
            return f"has a {name} entry without every count ({', '.join(LEVEL_COUNTS)}) as a number >= 0"
    return None


# kind -> (what the docs call it, why a present value is wrong or None)
KINDS = {
    "id": ("integer >= 0", _id),
    "counts": ("integers >= 0", _counts),
    "role_counts": ("mapping of roles to integers >= 0", _role_counts),
    "count": ("number >= 0", _count),
    "seconds": (f"seconds, > 0 and <= {MAX_SECONDS:g}", _seconds),
    "trials": (f"list of seconds, each > 0 and <= {MAX_SECONDS:g}", _trials),
    "number": ("number", lambda name, v: None if _finite(v) else f"has no finite {name}"),
    "score": ("number, 0-100", lambda name, v: None if _finite(v) and 0 <= v <= 100 else
              f"has a {name} that is not a number from 0 to 100"),
    "text": ("text", lambda name, v: None if isinstance(v, str) else f"has no text {name}"),
    "mapping": ("mapping", lambda name, v: None if isinstance(v, dict) else f"has a {name} that is not a mapping"),
    "list": ("list", lambda name, v: None if isinstance(v, list) else f"has a {name} that is not a list"),
    "levels": ("list of counts per level", _levels),
}


def column(kind: str, doc: str, *, required: bool = False, summed: bool = False, nullable: bool = False) -> Any:
    """A field of the row: its kind (KINDS), its meaning (the docs' words), whether a reader demands it
    (rows written before it existed lack it otherwise), whether the summary sums it (then it is demanded,
    finite and >= 0), and whether it may be null."""
    return field(default=None, metadata={"kind": kind, "doc": doc, "required": required or summed,
                                         "summed": summed, "nullable": nullable})


@dataclass
class ExampleRow:
    example_id: int = column("id", "the example's row in the task's data (0-based)", required=True)
    run_id: str = column("text", "the method run, as the file is named", required=True)
    method: str = column("text", "the method's registry name", required=True)
    params: dict = column("mapping", "the method run's parameters", required=True)
    prediction: str = column("text", "the decoded text, cut at the first stop string", required=True)
    reference: str = column("text", "the first accepted answer", required=True)
    references: list = column("list", "every accepted answer")
    output_tokens: int = column("id", "tokens decoded", summed=True)
    input_tokens: int = column("id", "tokens of the prompt")
    latency_s: float = column("seconds", "seconds to decode it, the mean over the timed trials", summed=True)
    latency_trials_s: list = column("trials", "the seconds of each timed trial (null for derived runs)", nullable=True)
    calls: dict = column("role_counts", "forward calls per model role, `{role: n}`: `drafter`, `verifier`, a chain's "
                         "middle models as `middle1`, `middle2`, ... (rows written before it existed have "
                         "`drafter_calls` and `verifier_calls`, which a reader reads as `calls`)")
    levels: list = column("levels", "a chain method's counters per level (drafter->middle1, ..., ->verifier), each "
                          "`{drafted, accepted, rounds, rejections, deferred}` as the fields below count them for the "
                          "last level (null for other methods)", nullable=True)
    drafted: int = column("id", "draft tokens the verifier judged", summed=True)
    accepted: int = column("id", "draft tokens it accepted", summed=True)
    rounds: int = column("id", "speculative rounds (verifier turns for BiLD)", summed=True)
    accepted_per_round: list = column("counts", "tokens accepted in each round")
    rejections: int = column("id", "rounds that ended at a rejected draft token")
    deferred: float = column("count", "positions deferred to the verifier; for token rules the deferred drafter "
                             "mass summed over positions", summed=True)
    confidence: float = column("number", "the model's mean token log-probability (drafter and middle runs)",
                               nullable=True)
    token_logprobs: list = column("list", "the model's log-probability of each of its own tokens (drafter and "
                                  "middle runs; what the sequence cascades' scores read)", nullable=True)
    token_stats: dict = column(
        "mapping", "with `record: [tokens]`, in the drafter's rows: per position of the reference (at most "
        "max_new_tokens), `features` (max q, max p, their TV distance, each one's entropy) and `q_ref`, `p_ref` (each "
        "model's probability of the reference token): what `scb fit-router --level token` fits on", nullable=True)
    shots: int = column("id", "the few-shot examples the prompt kept")
    score: float = column("score", "the example's own score (sentence BLEU or chrF, ROUGE F1, 0 or 100, F1)")
    worker: dict = column("mapping", "where and when it ran: `host`, `device`, `kind` (the kind of device its "
                          "latency may be compared with) and `session` (the start of the `scb run` that timed it: "
                          "a resume's rows have a later one); rows without it ran on the manifest's hardware")
    lm_eval: dict = column("mapping", "lm-eval tasks only: lm-eval's per-sample metrics of the prediction for each "
                           "of the task's filters, `{filter: {metric: value}}` (a corpus metric's value is its "
                           "`[reference, prediction]` item)", nullable=True)
    verdict: str = column("text", "pass_at_1 only: the sandbox's `passed`, `failed: ...`, `timeout`, `memory` or "
                          "`error: ...`")

    def to_json(self) -> dict:
        """The line's object: every field, but `verdict` and `lm_eval` only where there is one."""
        row = asdict(self)
        for name in ("verdict", "lm_eval"):
            if row[name] is None:
                del row[name]
        return row

    @classmethod
    def from_json(cls, row: dict) -> ExampleRow:
        """A line's object (checked by `problem`) as a row of this version (`upgraded`); other keys are dropped."""
        row = upgraded(row)
        return cls(**{name: row[name] for name in FIELDS if name in row})


# The calls of rows written before `calls` existed, by role: read as `calls` (`upgraded`), never written now
LEGACY_CALLS = {"drafter_calls": "drafter", "verifier_calls": "verifier"}


def upgraded(row: dict) -> dict:
    """A checked line's object as this version writes it, changed in place: `drafter_calls` and `verifier_calls`
    become `calls` where it is missing (the values of the one where both are there: both were written from the
    same counts), and are dropped."""
    legacy = {role: row.pop(name) for name, role in LEGACY_CALLS.items() if name in row}
    if row.get("calls") is None and legacy:
        row["calls"] = legacy
    return row


FIELDS = tuple(f.name for f in fields(ExampleRow))
WRITTEN = tuple(name for name in FIELDS if name not in ("verdict", "lm_eval"))  # in every row a run writes now
SUMMED = tuple(f.name for f in fields(ExampleRow) if f.metadata["summed"])


# The type whose values pass a kind's check without a call (an int of a count or id also when >= 0): most fields
_PLAIN = {"id": int, "count": int, "text": str, "mapping": dict, "list": list}

# (name, its plain type, its check, whether it may be missing or null, whether it is demanded): what `problem`
# asks of each field, in order
_CHECKS = tuple((f.name, _PLAIN.get(f.metadata["kind"]), KINDS[f.metadata["kind"]][1],
                 f.metadata["nullable"] or not f.metadata["required"], f.metadata["required"])
                for f in fields(ExampleRow))


def problem(row: dict) -> str | None:
    """Why a line's object is not an example row (a few words), or None. A field a row may lack (one added since
    the row was written) is checked only when present; a demanded one must be there and not null."""
    for name, plain, check, may_be_null, required in _CHECKS:
        value = row.get(name)
        if value is None:
            if may_be_null and (name in row or not required):
                continue
        elif type(value) is plain and (plain is not int or 0 <= value <= MAX_COUNT):
            continue
        why = check(name, value)
        if why:
            return why
    if row.get("calls") is None:  # a row before `calls` existed has both counts it replaced
        for name in LEGACY_CALLS:
            why = _id(name, row.get(name))
            if why:
                return why if name in row else "has no calls"
    drafted, accepted = row.get("drafted"), row.get("accepted")
    if drafted is not None and accepted is not None and accepted > drafted:
        return f"has more accepted draft tokens ({accepted}) than drafted ({drafted})"
    return None


def calls_of(row: ExampleRow, role: str) -> int:
    """A read row's calls of one role (`upgraded`: every row read has `calls`)."""
    return row.calls.get(role, 0)


def markdown_table() -> str:
    """The results page's table of the row (docs/results.md, generated): one line per field, in order."""
    lines = ["| field | kind | meaning |", "|---|---|---|"]
    for f in fields(ExampleRow):
        kind = KINDS[f.metadata["kind"]][0] + (" or null" if f.metadata["nullable"] else "")
        lines.append(f"| `{f.name}` | {kind} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"
