"""A synthetic few-shot arithmetic task, generated deterministically from a seed.

Word problems in a handful of templates (adding, taking away, equal groups), with names, objects and
numbers small enough for a tiny byte-level model. Answers end GSM8K's way, `#### <number>`.

The training file holds few-shot documents: 1 to 5 problems, each "Question: ...\\nAnswer: ...", joined
by a blank line, every answer of a document in one style drawn for that document (the GSM8K working,
"The answer is N." or the bare number). Half of the documents have 5 problems, the length of a 4-shot
prompt with its question (the model sees no longer text than the prompts it will continue), the others
1 to 4 (and so fewer tokens of padding go to waste in a batch). A model trained on them learns to continue a
document in the style of its earlier answers, so a question alone is ambiguous and the shots of a
few-shot prompt decide the form of the answer. The shots, validation and test files hold single
questions with GSM8K-style answers, none of them asked in the training documents or in another file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from . import write_jsonl_splits

NAMES = (("Mia", "she"), ("Ben", "he"), ("Ava", "she"), ("Leo", "he"), ("Zoe", "she"), ("Sam", "he"),
         ("Ivy", "she"), ("Max", "he"), ("Lily", "she"), ("Noah", "he"), ("Emma", "she"), ("Omar", "he"),
         ("Nina", "she"), ("Tom", "he"), ("Rosa", "she"), ("Ken", "he"))
OBJECTS = ("apples", "pens", "books", "stickers", "shells", "cookies", "marbles", "cards", "eggs", "stamps",
           "coins", "flowers")
CONTAINERS = ("bags", "boxes", "jars", "baskets", "packs")
GAIN = ("buys {b} more", "finds {b} more", "gets {b} more")
LOSS = ("gives {b} to a friend", "loses {b}", "gives away {b}")
MAX_PROBLEMS = 5  # per training document: as many as a 4-shot prompt and its question
FULL_DOCUMENTS = 0.5  # the share of training documents with MAX_PROBLEMS problems; the others have 1 to 4
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Problem:
    """One word problem: `a op b = result`, with op one of + - *."""

    question: str
    a: int
    op: str
    b: int
    result: int


def make_problem(rng: random.Random) -> Problem:
    name, pronoun = rng.choice(NAMES)
    objects = rng.choice(OBJECTS)
    kind = rng.choice(("add", "take", "groups"))
    if kind == "add":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        event = rng.choice(GAIN).format(b=b)
        question = (f"{name} has {a} {objects}. {pronoun.capitalize()} {event}. "
                    f"How many {objects} does {pronoun} have now?")
        return Problem(question, a, "+", b, a + b)
    if kind == "take":
        a = rng.randint(5, 19)
        b = rng.randint(1, a - 1)
        event = rng.choice(LOSS).format(b=b)
        question = (f"{name} has {a} {objects}. {pronoun.capitalize()} {event}. "
                    f"How many {objects} does {pronoun} have left?")
        return Problem(question, a, "-", b, a - b)
    a, b = rng.randint(2, 5), rng.randint(2, 6)
    container = rng.choice(CONTAINERS)
    question = (f"{name} has {a} {container} with {b} {objects} in each. "
                f"How many {objects} does {pronoun} have in all?")
    return Problem(question, a, "*", b, a * b)


def solution(problem: Problem, style: str = "gsm8k") -> str:
    """The answer text in one style: `gsm8k` ("a + b = c\\n#### c"), `sentence` or `number`."""
    c = problem.result
    if style == "gsm8k":
        return f"{problem.a} {problem.op} {problem.b} = {c}\n#### {c}"
    if style == "sentence":
        return f"The answer is {c}."
    if style == "number":
        return str(c)
    raise ValueError(f"unknown answer style {style!r}")


# Answer styles and how often a document uses each: the GSM8K working, which asks the model to copy the
# operands, comes up most.
STYLES = {"gsm8k": 2, "sentence": 1, "number": 1}


def shot_text(question: str, answer: str) -> str:
    """One problem of a document or a few-shot prompt."""
    return f"Question: {question}\nAnswer: {answer}"


def make_document(rng: random.Random, problems: list[Problem]) -> dict[str, str]:
    """A training row: the document up to and including its last "Answer:" (`prompt`), and " " + the last
    solution (`completion`). One answer style, drawn here, serves the whole document."""
    style = rng.choices(list(STYLES), weights=list(STYLES.values()))[0]
    shots = [shot_text(p.question, solution(p, style)) for p in problems[:-1]]
    last = problems[-1]
    prompt = SEPARATOR.join([*shots, f"Question: {last.question}\nAnswer:"])
    return {"prompt": prompt, "completion": " " + solution(last, style)}


def make_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[dict[str, str]]]:
    """`train` (documents) and the question splits (any other name: shots, validation, test), e.g.
    sizes={"train": 20000, "shots": 8, "test": 200}. The question splits are drawn first, with distinct
    questions; no training document asks any of them."""
    rng = random.Random(seed)
    held_out: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for name, size in sizes.items():
        if name == "train":
            continue
        rows = []
        while len(rows) < size:
            problem = make_problem(rng)
            if problem.question not in held_out:
                held_out.add(problem.question)
                rows.append({"question": problem.question, "answer": solution(problem)})
        splits[name] = rows
    documents = []
    for _ in range(sizes.get("train", 0)):
        problems: list[Problem] = []
        count = MAX_PROBLEMS if rng.random() < FULL_DOCUMENTS else rng.randint(1, MAX_PROBLEMS - 1)
        while len(problems) < count:
            problem = make_problem(rng)
            if problem.question not in held_out:
                problems.append(problem)
        documents.append(make_document(rng, problems))
    if "train" in sizes:
        splits = {"train": documents, **splits}
    return splits


def write_splits(out_dir: Path, seed: int, sizes: dict[str, int]) -> dict[str, Path]:
    """Write each split as `<out_dir>/<split>.jsonl`; returns the paths."""
    return write_jsonl_splits(out_dir, make_splits(seed, sizes))
