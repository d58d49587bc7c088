"""Answer patterns: regular expressions that take a task's answer out of a model's output (lm-evaluation-harness's
regex filter), bounded in compile time, memory and search time, since a config's pattern could backtrack for ever.
"""

from __future__ import annotations

import functools
import re

import regex

_NUMBER = re.compile(r"\s*[-+]?[0-9.,]*[0-9][0-9.,]*\s*")

ANSWER_SELECT = ("first", "last")  # which match of an answer pattern is the answer (lm-eval's group_select 0, -1)

PATTERN_SECONDS = 1.0  # the longest an answer pattern may search one text (a pattern can backtrack for ever)
PATTERN_COMPILE_SECONDS = 5.0  # the longest an answer pattern may take to compile (compile time grows with repeats)
PATTERN_COMPILE_MB = 1024  # the most memory compiling it may take

PATTERN_CHARS = 2000


@functools.lru_cache(maxsize=256)
def check_pattern(pattern: str) -> int:
    """The number of groups of the answer pattern `pattern`, once it is known to compile within
    PATTERN_COMPILE_SECONDS and PATTERN_COMPILE_MB (in a separate interpreter under those limits: compiling
    `(a{1000000000})` would take minutes and gigabytes, and cannot be stopped in this process). A ValueError
    says why a pattern is refused."""
    import resource
    import subprocess
    import sys

    if len(pattern) > PATTERN_CHARS:
        raise ValueError(f"is {len(pattern)} characters long; the limit is {PATTERN_CHARS}")
    limit = PATTERN_COMPILE_MB * 2**20

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    code = ("import regex, sys\ntry:\n    print(regex.compile(sys.stdin.read()).groups)\n"
            "except regex.error as exc:\n    print('error', ' '.join(str(exc).split()))\n")
    try:
        done = subprocess.run([sys.executable, "-I", "-c", code], input=pattern, capture_output=True, text=True,
                              timeout=PATTERN_COMPILE_SECONDS, preexec_fn=bounded)
    except subprocess.TimeoutExpired:
        raise ValueError(f"takes more than {PATTERN_COMPILE_SECONDS:g} s to compile; use smaller repeat "
                         "counts") from None
    answer = done.stdout.strip()
    if done.returncode != 0 or not answer:
        if "MemoryError" in done.stderr:
            raise ValueError(f"needs more than {PATTERN_COMPILE_MB} MiB to compile; use smaller repeat counts")
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise ValueError(f"could not be compiled ({last[:200]})")
    if answer.startswith("error"):
        raise ValueError(f"is not a valid regular expression: {answer.removeprefix('error ')}")
    return int(answer)


class PatternTimeout(ValueError):
    """An answer pattern took longer than PATTERN_SECONDS on one text."""


class AnswerPattern(str):
    """An answer pattern with the match it selects (`select`, ANSWER_SELECT): what a score function receives as its
    `pattern`, a str to every function that reads it as one."""
    select: str

    def __new__(cls, pattern: str, select: str = "first"):
        if select not in ANSWER_SELECT:
            raise ValueError(f"answer_select must be one of {', '.join(ANSWER_SELECT)}, got {select!r}")
        made = super().__new__(cls, pattern)
        made.select = select
        return made


def extract_answer(text: str, pattern: str | None, select: str | None = None) -> str | None:
    """The answer `pattern` finds in `text`; None when it does not match; `text` unchanged when `pattern` is None.
    `select` (default: the pattern's own, an AnswerPattern's, else first): `first` takes the first search match,
    `last` the last (lm-evaluation-harness's RegexFilter with group_select 0 and -1); of the match, its first
    non-empty group (the whole match when the pattern has no group; None when every group is empty), stripped by
    `last` as lm-eval strips (its GSM8K patterns capture no space, so `first` is its strict match as it is). The
    search (the `regex` module, Python's `re` syntax) stops after PATTERN_SECONDS with PatternTimeout.
    GSM8K's reference answers end with "#### 72" and are extracted with r"#### (\\-?[0-9\\.\\,]+)"."""
    if pattern is None:
        return text
    select = select or getattr(pattern, "select", "first")
    if select not in ANSWER_SELECT:
        raise ValueError(f"answer_select must be one of {', '.join(ANSWER_SELECT)}, got {select!r}")
    pattern = str(pattern)
    try:
        if select == "first":
            match = regex.search(pattern, text, timeout=PATTERN_SECONDS)
            if match is None or not match.re.groups:
                return None if match is None else match.group(0)
            return next((group for group in match.groups() if group is not None), None)
        matches = list(regex.finditer(pattern, text, timeout=PATTERN_SECONDS))
    except TimeoutError:
        raise PatternTimeout(f"the answer pattern {pattern!r} searched a {len(text)}-character text for more than "
                             f"{PATTERN_SECONDS:g} s") from None
    if not matches:
        return None
    last = matches[-1]
    if not last.re.groups:
        return last.group(0).strip()
    found = [group for group in last.groups() if group]
    return found[0].strip() if found else None


def clean_number(text: str) -> str:
    """Delete the commas of a number, as GSM8K's reference extraction does after matching
    ("1,000" -> "1000", "-3" unchanged); text that is not a number is returned unchanged.
    Applied to extracted answers (predictions and golds) whenever an answer pattern is given."""
    return text.replace(",", "") if _NUMBER.fullmatch(text) else text
