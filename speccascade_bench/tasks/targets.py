"""An lm-eval document's target as the suite reads it: its accepted answers as text, and what makes a target one
lm-eval's own scoring cannot take (refused before any model loads, `harness.HarnessTask.examples`).
"""

from __future__ import annotations


def target_problem(target) -> str | None:
    """What makes a document's target one lm-eval's scoring cannot take: an empty list of answers (a TriviaQA document
    whose aliases are []), a missing target, or one that is neither text, a number nor a list of them."""
    scalar = (str, int, float)
    if target is None:
        return "is null"
    if isinstance(target, list | tuple):
        if not target:
            return "is an empty list of answers"
        odd = next((item for item in target if not isinstance(item, scalar) or isinstance(item, bool)), None)
        return None if odd is None and not any(item is None for item in target) else \
            f"holds {type(odd).__name__} {str(odd)[:40]!r}, not an answer"
    if not isinstance(target, scalar) or isinstance(target, bool):
        return f"is {type(target).__name__} {str(target)[:40]!r}, not an answer"
    return None


def references_of(target) -> tuple[str, ...]:
    """A document's accepted answers as text: lm-eval's target, or each item of a list of them."""
    items = target if isinstance(target, list | tuple) else [target]
    return tuple(str(item) for item in items)
