"""The generated few-shot arithmetic task and the decoder-only pair trained on it that ships in the package."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.toy.arithmetic import MAX_PROBLEMS, make_splits

LLM_PAIR = Path(__file__).parent.parent / "speccascade_bench" / "toy" / "llm_pair"
# The question splits as `scb toy-data --task arithmetic` writes them (drawn before the training documents).
SIZES = {"shots": 8, "validation": 200, "test": 500}
PROBLEM = re.compile(r"Question: (.+?)\nAnswer: (.+?)(?=\n\nQuestion: |\Z)", re.S)
WORKING = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\n#### (\d+)")
STYLES = {"gsm8k": WORKING, "sentence": re.compile(r"The answer is (\d+)\."), "number": re.compile(r"(\d+)")}


def _style(answer: str) -> str:
    return next(name for name, pattern in STYLES.items() if pattern.fullmatch(answer))


def _numbers(question: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", question)]


def test_arithmetic_task_is_deterministic_and_questions_are_held_out():
    sizes = {"train": 400, "shots": 8, "validation": 30, "test": 60}
    splits = make_splits(0, sizes)
    assert splits == make_splits(0, sizes) and splits != make_splits(1, sizes)
    assert [len(splits[name]) for name in sizes] == list(sizes.values())
    held_out = [row["question"] for name in ("shots", "validation", "test") for row in splits[name]]
    assert len(set(held_out)) == len(held_out)  # no question twice, within or across the question splits
    asked = {q for row in splits["train"] for q, _ in PROBLEM.findall(row["prompt"] + row["completion"])}
    assert not asked & set(held_out)
    for row in splits["test"]:
        a, op, b, c, total = WORKING.fullmatch(row["answer"]).groups()
        assert int(c) == int(total) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert _numbers(row["question"]) == [int(a), int(b)]  # the working copies the question's numbers


def test_training_documents_keep_one_answer_style():
    documents = make_splits(3, {"train": 600})["train"]
    counts, styles = set(), []
    for row in documents:
        assert row["prompt"].endswith("\nAnswer:") and row["completion"].startswith(" ")
        problems = PROBLEM.findall(row["prompt"] + row["completion"])
        assert "\n\n".join(f"Question: {q}\nAnswer: {a}" for q, a in problems) == row["prompt"] + row["completion"]
        counts.add(len(problems))
        document_styles = {_style(answer) for _, answer in problems}
        assert len(document_styles) == 1, row
        styles.append(document_styles.pop())
        for question, answer in problems:
            value = int(STYLES[styles[-1]].fullmatch(answer).groups()[-1])
            a, b = _numbers(question)
            assert value in (a + b, a - b, a * b)
    assert counts == set(range(1, MAX_PROBLEMS + 1))
    shares = {name: styles.count(name) / len(styles) for name in STYLES}
    assert 0.4 < shares["gsm8k"] < 0.6 and 0.15 < shares["sentence"] < 0.35 and 0.15 < shares["number"] < 0.35


def test_toy_data_writes_the_arithmetic_task_to_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    result = cli.invoke(app, ["toy-data", "--task", "arithmetic", "--train", "20", "--validation", "5", "--test", "6",
                              "--shots", "4"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "data" / "toy_llm"
    rows = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "shots", "validation", "test")}
    assert {name: len(r) for name, r in rows.items()} == {"train": 20, "shots": 4, "validation": 5, "test": 6}
    assert set(rows["train"][0]) == {"prompt", "completion"} and set(rows["test"][0]) == {"question", "answer"}
    assert not (tmp_path / "data" / "toy").exists()
    result = cli.invoke(app, ["toy-data", "--task", "arithmetik"])
    assert result.exit_code == 2 and "did you mean 'arithmetic'" in result.output
    result = cli.invoke(app, ["toy-data", "--shots", "4"])
    assert result.exit_code == 2 and "--task arithmetic" in result.output


def test_llm_pair_loads_follows_the_shots_and_the_verifier_beats_the_drafter():
    import torch

    from speccascade_bench.decoding.dispatch import decode
    from speccascade_bench.decoding.settings import DecodingConfig
    from speccascade_bench.finetune.train import prompt_ids
    from speccascade_bench.models.loading import load_pair

    pair = load_pair(str(LLM_PAIR / "drafter"), str(LLM_PAIR / "verifier"), device="cpu")
    assert not pair.is_encoder_decoder and pair.verifier.dtype == torch.float32
    splits = make_splits(0, SIZES)
    shots = "\n\n".join(f"Question: {row['question']}\nAnswer: {row['answer']}" for row in splits["shots"][:4])
    test = splits["test"][:60]
    settings = DecodingConfig(max_new_tokens=24, temperature=0.0)
    correct, outputs = {}, {}
    for role in ("drafter", "verifier"):
        outputs[role] = []
        for row in test:
            ids = torch.tensor([prompt_ids(pair.tokenizer, f"{shots}\n\nQuestion: {row['question']}\nAnswer:", 600)])
            tokens = decode(role, pair, ids, settings).tokens
            text = pair.decode(tokens)
            assert tokens[-1] == pair.eos_token_id or "\n\n" in text  # the answer ends
            outputs[role].append(text.split("\n\n")[0])
        assert all(WORKING.fullmatch(text.strip()) for text in outputs[role]), outputs[role]  # the shots' style
        # Exact match of the final number, as GSM8K is scored.
        correct[role] = sum(WORKING.fullmatch(text.strip())[5] == WORKING.fullmatch(row["answer"])[5]
                            for text, row in zip(outputs[role], test, strict=True))
    assert correct["verifier"] >= 0.6 * len(test), correct
    assert 1 <= correct["drafter"] <= correct["verifier"] - 0.3 * len(test), correct
    # Greedy speculative decoding of the pair gives the verifier's own output.
    for row, expected in list(zip(test, outputs["verifier"], strict=True))[:5]:
        ids = torch.tensor([prompt_ids(pair.tokenizer, f"{shots}\n\nQuestion: {row['question']}\nAnswer:", 600)])
        assert pair.decode(decode("spec_decode", pair, ids, settings).tokens).split("\n\n")[0] == expected
