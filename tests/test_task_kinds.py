"""Task kinds with code of their own (`task.process`): the built-in multiple-choice kind on ARC-style rows with
3, 4 and 5 choices and letter or number keys runs every method from a config alone; a row function in a file
beside the config is the one new file another layout needs; a bad kind or a row it refuses is one line before
any model loads."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from transformers import ByT5Tokenizer

from speccascade_bench.decoding.methods import METHODS
from speccascade_bench.results.rows import read_lines
from speccascade_bench.tasks.kinds import multiple_choice

from .helpers import perturbed, tiny_llama, write_jsonl
from .test_results_folder import failed, scb

ARC = Path(__file__).parent / "data" / "arc_style.jsonl"
EVERY_METHOD = [{"method": "verifier"}, {"method": "drafter"}, {"method": "seq_cascade", "alpha": [0.5]},
                {"method": "token_cascade", "alpha": [0.3]}, {"method": "spec_decode"}, {"method": "prompt_lookup"},
                {"method": "lossy_spec_decode", "alpha": [0.2]},
                {"method": "spec_cascade", "rule": "opt", "alpha": [0.5]},
                {"method": "bild", "alpha": [0.5], "beta": [1.0]}, {"method": "staged_spec_decode"},
                {"method": "chain_spec_cascade", "rules": "opt", "alphas": 0.5},
                {"method": "chain_seq_cascade", "alphas": 0.5}]  # a pair is a chain of two


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    tokenizer = ByT5Tokenizer()
    verifier = tiny_llama(0, vocab=len(tokenizer))
    for name, model in (("verifier", verifier), ("drafter", perturbed(verifier, 0.3, 1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root


def config(root: Path, folder: Path, output: Path, **task) -> str:
    data = {"name": "arc", "task": {"dataset": str(ARC), "process": "multiple_choice", "target": "answer_label",
                                    "prompt": "Question: {question}\n{choices_block}\nAnswer:", "metric": "exact_match",
                                    "answer_pattern": "([A-E1-5])", "stop": ["\n"], "max_source_tokens": 200,
                                    **task},
            "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
            "decoding": {"max_new_tokens": 3, "temperature": 0.0, "draft_length": 2},
            "methods": EVERY_METHOD, "timing": {"warmup": 0, "trials": 1}, "output": str(output)}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_multiple_choice_rows_of_three_to_five_choices_with_letter_or_number_keys():
    rows = [json.loads(line) for line in ARC.read_text().splitlines()]
    done = [multiple_choice(row) for row in rows]
    assert [len(row["choices"]["text"]) for row in rows] == [3, 4, 5, 4, 3, 5]
    assert [row["answer_label"] for row in done] == ["B", "A", "B", "2", "2", "3"]
    assert [row["answer_text"] for row in done] == ["carbon dioxide", "salt", "whale", "six", "temperature", "Jupiter"]
    assert done[3]["choices_block"] == "1. four\n2. six\n3. eight\n4. ten"
    assert multiple_choice({"choices": ["x", "y", "z"], "answer": 2})["answer_label"] == "C"  # a list and an index
    with pytest.raises(ValueError, match="answer 'F' is not one of the labels A, B, C"):
        multiple_choice({**rows[0], "answerKey": "F"})


def test_an_arc_style_task_runs_every_method_from_a_config_alone(pair, tmp_path, one_thread):
    out = tmp_path / "arc"
    result = scb("run", "-c", config(pair, tmp_path, out))
    assert result.exit_code == 0, result.output
    files = {path.stem: read_lines(path) for path in (out / "examples").glob("*.jsonl")}
    assert {run_id.split("-")[0] for run_id in files} == set(METHODS) - {"middle"}  # no middle model in a pair
    assert all(len(rows) == 6 for rows in files.values())
    verifier = files["verifier"]
    assert [row["references"] for row in verifier] == [["B"], ["A"], ["B"], ["2"], ["2"], ["3"]]
    assert all(row["score"] in (0.0, 100.0) for rows in files.values() for row in rows)
    report = scb("report", out)
    assert report.exit_code == 0 and "exact_match" in report.output


def test_another_layout_needs_one_file_beside_the_config(pair, tmp_path, one_thread):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_jsonl(folder / "rows.jsonl", [{"q": f"{i} + 1?", "options": [str(i), str(i + 1), str(i + 2)], "right": 1}
                                        for i in range(4)])
    (folder / "my_rows.py").write_text(
        "from speccascade_bench.tasks.kinds import multiple_choice\n\n\n"
        "def to_choices(row):\n"
        "    return multiple_choice({'question': row['q'], 'choices': row['options'], 'answer': row['right']})\n")
    out = tmp_path / "mine-out"
    path = config(pair, folder, out, dataset=str(folder / "rows.jsonl"), process="my_rows.py:to_choices")
    result = scb("run", "-c", path, "--methods", "verifier,spec_decode")
    assert result.exit_code == 0, result.output
    rows = read_lines(out / "examples" / "verifier.jsonl")
    assert [row["references"] for row in rows] == [["B"]] * 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["task"]["process"] == f"{folder / 'my_rows.py'}:to_choices"  # found from anywhere


@pytest.mark.parametrize("process,words", [
    ("multiple_choise", ("task.process", "neither a task kind", "multiple_choice")),
    ("missing.py:f", ("task.process", "is not a file")),
    ("json:no_such_function", ("task.process", "json has no function 'no_such_function'")),
])
def test_a_bad_task_kind_is_one_line_at_load(pair, tmp_path, process, words):
    out = tmp_path / "never"
    failed(scb("run", "-c", config(pair, tmp_path, out, process=process)), *words)
    assert not out.exists()


def test_a_row_the_kind_refuses_is_one_line_before_any_model_loads(pair, tmp_path):
    data = tmp_path / "bad.jsonl"
    shutil.copy(ARC, data)
    with data.open("a") as f:
        f.write('{"question": "?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "Z"}\n')
    out = tmp_path / "never"
    failed(scb("run", "-c", config(pair, tmp_path, out, dataset=str(data))), "task.process", "row 6 (0-based)",
           "answer 'Z' is not one of the labels A, B")
    assert not out.exists()
