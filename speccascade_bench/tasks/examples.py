"""A task's evaluated examples: each selected row's prompt (with its shots from a `ShotPool`), its
accepted answers and, for code tasks, its tests; every problem found before any model loads, with its row.
"""

from __future__ import annotations

import random

from .data import DataError, Example, present_field, task_indices, text_field
from .metrics import ANSWER_METRICS, CODE_METRICS
from .patterns import PatternTimeout, extract_answer
from .prompts import PromptParts, as_text, get_field, render
from .settings import TaskConfig
from .sources import RowSource, hook, source_of, task_rows


def load_examples(task: TaskConfig, seed: int, limit: int | None = None, tokenizer=None) -> list[Example]:
    """The evaluated examples, by row index: their prompts (with the shots), references and tests; the task's
    selection (`task.sample` or `task.first`: `data.task_indices`), then its first `limit` (`scb run --limit`). An
    source that builds its own examples (`sources.TaskSource.examples`: lm-eval's, whose first documents are taken as
    lm-eval's `--limit` takes them) gives them, with `chat` rendered by `tokenizer`'s chat template."""
    source = source_of(task)
    if not isinstance(source, RowSource):
        limits = [n for n in (task.first, limit) if n is not None]
        examples = hook(source, "examples", task, min(limits) if limits else None, tokenizer)
        if not isinstance(examples, list) or not all(isinstance(example, Example) for example in examples):
            raise DataError(f"the task source {source.name!r} gave {type(examples).__name__} for {task.dataset!r}, "
                            "not a list of tasks.data.Example", "dataset")
        return examples
    rows = task_rows(task)
    indices = task_indices(task, len(rows), seed)
    if limit is not None:
        indices = indices[:limit]
    pool = ShotPool(task, rows) if task.fewshot and task.fewshot.n else None
    examples = []
    for i in indices:
        where = f"{task.dataset}: row {i} (0-based)"
        query = render_prompt(task, rows[i], i)
        if not query.strip():  # before the shots: an empty question would also skip every shot as itself
            what = f"task.prompt {task.prompt!r} renders to" if task.prompt else \
                f"field {task.source!r} (task.source) is"
            raise DataError(f"{where}: {what} blank text; there is no question to ask", "prompt" if task.prompt
                            else "source")
        shots = pool.shots_for(i, query) if pool else ()
        references = target_texts(rows[i], task, i)
        parts = PromptParts(task.prefix, shots, query)
        text = parts.text(None, task.target_delimiter, task.fewshot.delimiter if task.fewshot else "")
        if not references and task.metric not in ANSWER_METRICS:  # an empty list: an unanswerable question
            raise DataError(f"{where}: field {task.target!r} (task.target) is an empty list; {task.metric} needs a "
                            "reference", "target")
        _check_pattern(task, references, where)
        examples.append(Example(i, text, references[0] if references else "", references, parts,
                                _code_field(rows[i], task, "tests", i), _code_field(rows[i], task, "test_setup", i)))
    return examples


def _check_pattern(task: TaskConfig, references: tuple[str, ...], where: str) -> None:
    """An answer pattern that takes too long on a reference fails before any model loads."""
    if task.answer_pattern is None or task.metric in CODE_METRICS:
        return
    for reference in references:
        try:
            extract_answer(reference, task.answer_pattern)
        except PatternTimeout as exc:
            raise DataError(f"{where}: {exc}; simplify the pattern", "answer_pattern") from None


def render_prompt(task: TaskConfig, row: dict, index: int, dataset: str | None = None) -> str:
    """A row's prompt without the prefix or shots: the `prompt` template over its fields, or its `source`."""
    if task.prompt is None:
        return text_field(row, task, "source", index, dataset)
    where = f"{dataset or task.dataset}: row {index} (0-based)"
    try:
        return render(task.prompt, row)
    except KeyError as exc:
        raise DataError(f"{where} has no field {exc.args[0]!r} named by task.prompt; the row's fields: "
                        f"{', '.join(map(str, row))}", "prompt") from None
    except TypeError as exc:
        raise DataError(f"{where}: a field named by task.prompt is {exc}, not text", "prompt") from None


def target_texts(row: dict, task: TaskConfig, index: int, field_name: str | None = None,
                 dataset: str | None = None, key: str = "target") -> tuple[str, ...]:
    """A row's accepted answers: its target field's text, or each item of a list of them (empty for an
    unanswerable question). `key` is the config key that names the field (target, fewshot.target)."""
    where, value = present_field(row, field_name or task.target, key, index, dataset or task.dataset)
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if item is None or isinstance(item, bool) or not isinstance(item, str | int | float):
            raise DataError(f"{where} must be text or a list of texts, got {type(item).__name__}", key)
    return tuple(as_text(item) for item in items)


def _code_field(row: dict, task: TaskConfig, key: str, index: int) -> str | None:
    """A pass_at_1 row's test code (`tests`, which must not be empty: no tests would pass any program) or its
    set-up code (`test_setup`, which may be empty or null)."""
    dotted = getattr(task, key)
    if dotted is None:
        return None
    where = f"{task.dataset}: row {index} (0-based): field {dotted!r} (task.{key})"
    try:
        value = get_field(row, dotted)
    except KeyError:
        raise DataError(f"{where} is missing", key) from None
    if value is None and key == "test_setup":
        return ""
    try:
        code = as_text(value)
    except TypeError as exc:
        raise DataError(f"{where} is {exc}, not code", key) from None
    if key == "tests":
        _check_tests(code, where)
    return code


def _check_tests(code: str, where: str) -> None:
    """Tests that can fail: valid Python holding at least one assert, raise or call (comments, `pass` or bare
    constants would pass any program; code that does not parse would fail every one)."""
    import ast

    if not code.strip():
        raise DataError(f"{where} is empty: any program would pass", "tests")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise DataError(f"{where} is not valid Python ({exc.msg}, line {exc.lineno}): every program would fail",
                        "tests") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a null byte, or nesting too deep to parse
        raise DataError(f"{where} cannot be parsed ({type(exc).__name__}): every program would fail",
                        "tests") from None
    if not any(isinstance(node, ast.Assert | ast.Raise | ast.Call) for node in ast.walk(tree)):
        raise DataError(f"{where} holds no assert, raise or call, only comments, pass or constants: any program "
                        "would pass", "tests")


class ShotPool:
    """The rows few-shot examples are drawn from (another split of the dataset, or a local file), in the
    order they are tried: drawn for each example (`order: per_example`: a generator seeded by the seed and the
    example's row, so an example gets the same shots in every run, on every worker and after a resume), one
    seeded order for all (`random`), or file order (`first`). An example's shots are the first `n` of them that
    are not the example itself (same row of the same split, or the same prompt)."""

    def __init__(self, task: TaskConfig, eval_rows):
        from dataclasses import replace

        fewshot = task.fewshot
        self.task, self.n = task, fewshot.n
        if fewshot.is_local:
            self.name = fewshot.dataset
            self.rows = task_rows(replace(task, dataset=fewshot.dataset, subset=None, revision=None))
        else:
            self.name = f"{task.dataset} split {fewshot.split!r}"
            self.rows = eval_rows if fewshot.split == task.split else task_rows(replace(task, split=fewshot.split))
        self.same_rows = not fewshot.is_local and fewshot.split == task.split
        order = list(range(fewshot.offset if fewshot.order == "first" else 0, len(self.rows)))
        if fewshot.order == "random":
            random.Random(fewshot.seed).shuffle(order)
        self.order, self.per_example = order, fewshot.order == "per_example"
        self._rendered: dict[int, tuple[str, str]] = {}
        if len(order) < self.n:
            raise DataError(f"few-shot pool {self.name} has {len(order)} rows to draw from; fewshot.n is {self.n}",
                            "fewshot")

    def _shot(self, index: int) -> tuple[str, str]:
        if index not in self._rendered:
            row, fewshot = self.rows[index], self.task.fewshot
            prompt = render_prompt(self.task, row, index, self.name)
            key = "fewshot.target" if fewshot.target else "target"
            targets = target_texts(row, self.task, index, fewshot.target, self.name, key)
            self._rendered[index] = (prompt, targets[0] if targets else "")
        return self._rendered[index]

    def _order_for(self, example_index: int):
        """The rows tried for one example: n + 1 drawn for it (one may be the example itself), then, should the
        pool hold repeats of its prompt, the rest in an order drawn for it too."""
        if not self.per_example:
            yield from self.order
            return
        rng = random.Random(f"{self.task.fewshot.seed}/{example_index}")
        drawn = rng.sample(self.order, min(len(self.order), self.n + 1))
        yield from drawn
        rest = sorted(set(self.order) - set(drawn))
        rng.shuffle(rest)
        yield from rest

    def shots_for(self, example_index: int, query: str) -> tuple[tuple[str, str], ...]:
        shots = []
        for index in self._order_for(example_index):
            if self.same_rows and index == example_index:
                continue
            shot = self._shot(index)
            if shot[0] == query:  # the evaluated question itself, in another split or file
                continue
            shots.append(shot)
            if len(shots) == self.n:
                return tuple(shots)
        raise DataError(f"few-shot pool {self.name} has fewer than {self.n} rows besides example {example_index}",
                        "fewshot")
