"""A few-shot task end to end on a tiny decoder-only pair saved to disk: prompts with shots fitted to the
token budget, stop strings, answer extraction, per-example scores, and bootstrap intervals in the report;
pass_at_1 refused without --allow-code-execution before any model loads."""

import time
from dataclasses import replace

import pytest
import yaml
from transformers import ByT5Tokenizer
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.results.rows import read_lines
from speccascade_bench.tasks.data import Example
from speccascade_bench.tasks.prompts import PromptParts
from speccascade_bench.tasks.scoring import CodeExecutionRefused, Scorer

from .helpers import perturbed, tiny_llama, write_jsonl

N_EXAMPLES = 10  # the report's bootstrap intervals need at least 10
STOPS = ["\n\n", "Q"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    tokenizer = ByT5Tokenizer()
    verifier = tiny_llama(0, vocab=len(tokenizer), layers=2)
    for name, model in (("verifier", verifier), ("drafter", perturbed(verifier, 0.3, 1))):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    for name, count in (("test", N_EXAMPLES + 2), ("shots", 4)):
        write_jsonl(root / f"{name}.jsonl", [{"question": f"{name} {i} plus {i}?",
                                             "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(count)])
    return root


def make_config(root, output, **task):
    config = {
        "name": "fewshot",
        "task": {"dataset": str(root / "test.jsonl"), "prompt": "Q: {question}\nA:", "target": "answer",
                 "fewshot": {"n": 3, "dataset": str(root / "shots.jsonl"), "order": "first"}, "stop": STOPS,
                 "metric": "exact_match", "answer_pattern": "#### (-?[0-9.,]+)", "sample": N_EXAMPLES,
                 "max_source_tokens": 100, **task},
        "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
        "decoding": {"max_new_tokens": 12, "temperature": 0.0, "draft_length": 3},
        "methods": [{"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode"},
                    {"method": "spec_cascade", "rule": "opt", "alpha": [0.3]}],
        "timing": {"warmup": 1, "trials": 1},
        "output": str(output),
    }
    path = root / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fewshot_run_records_scores_shots_and_intervals(workspace, one_thread):
    out = workspace / "results"
    result = CliRunner().invoke(app, ["run", "--config", str(make_config(workspace, out))])
    assert result.exit_code == 0, result.output
    verifier = read_lines(out / "examples" / "verifier.jsonl")
    spec = read_lines(out / "examples" / "spec_decode-g3.jsonl")
    assert len(verifier) == N_EXAMPLES
    for row in verifier + spec:
        assert row["score"] in (0.0, 100.0) and row["references"] == [row["reference"]]
        assert row["input_tokens"] <= 100 and 0 <= row["shots"] <= 3
        assert not any(stop in row["prediction"] for stop in STOPS)
    # the 100-token budget (bytes) keeps the shots nearest the question that fit: shots 2, 1, 0 in that order
    shots = [f"Q: shots {i} plus {i}?\nA: {i} + {i} = {2 * i}\n#### {2 * i}\n\n" for i in range(3)]
    for row in verifier:
        query = len(f"Q: test {row['example_id']} plus {row['example_id']}?\nA:")
        expected = max(k for k in range(4) if query + sum(len(shot) for shot in shots[3 - k:]) <= 100)
        assert row["shots"] == expected, row["example_id"]
    assert {row["shots"] for row in verifier} == {1, 2}  # both cases occur
    assert [r["prediction"] for r in spec] == [r["prediction"] for r in verifier]  # lossless, with stops
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "vs verifier (95% CI)" in report.output and "+0.00 [+0.00, +0.00] =" in report.output


def test_answer_pattern_and_aliases_decide_the_score(workspace):
    task = load_run_config(make_config(workspace, workspace / "unused")).task
    example = Example(0, "", "1 + 1 = 2\n#### 2", ("1 + 1 = 2\n#### 2",), PromptParts("", (), "q"))
    scorer = Scorer(task)
    assert scorer.score(example, " 1 + 1 = 2\n#### 2")[0] == 100.0
    assert scorer.score(example, " 2")[0] == 0.0  # no `#### N`: no answer
    assert scorer.score(example, " 1 + 1 = 3\n#### 3")[0] == 0.0
    aliases = Scorer(replace(task, answer_pattern=None, normalize="triviaqa"))
    example = replace(example, references=("The Beatles", "Beatles, the"))
    assert aliases.score(example, "beatles")[0] == 100.0


def test_pass_at_1_needs_allow_code_execution_before_any_model_loads(workspace):
    path = make_config(workspace, workspace / "code", metric="pass_at_1", tests="answer", answer_pattern=None)
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "task.metric" in result.output and "--allow-code-execution" in result.output
    assert not (workspace / "code").exists()
    with pytest.raises(CodeExecutionRefused):
        Scorer(load_run_config(path).task)


def test_a_machine_without_user_namespaces_is_one_line_before_any_model_loads(workspace, monkeypatch):
    from speccascade_bench.run import local
    from speccascade_bench.tasks import sandbox

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(sandbox, "_UNSHARE_FLAGS", 0x1)  # an unshare the kernel refuses, as in a container
    monkeypatch.setattr(local, "load_pair", loaded)
    assert "unshare" in sandbox.probe()
    path = make_config(workspace, workspace / "code", metric="pass_at_1", tests="answer", answer_pattern=None)
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--allow-code-execution"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if "eta" not in line] == [result.output.splitlines()[-1]]
    assert "task.metric" in result.output and "sandbox, which cannot be set up on this machine" in result.output
    assert "unshare" in result.output
    assert not (workspace / "code").exists()


def test_pass_at_1_scores_code_in_the_sandbox(workspace):
    path = make_config(workspace, workspace / "code", metric="pass_at_1", tests="answer",
                       answer_pattern="(?s)```python\n(.*?)```", fewshot=None, code_timeout_s=5.0)
    task = load_run_config(path).task
    scorer = Scorer(task, allow_code_execution=True, hidden=(workspace,))
    example = Example(0, "", "", (), PromptParts("", (), "q"), tests="assert add(1, 2) == 3\nassert add(0, 0) == 0")
    right = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    assert scorer.score(example, right) == (100.0, "passed")
    score, verdict = scorer.score(example, right.replace("a + b", "a - b"))
    assert score == 0.0 and verdict.startswith("failed: AssertionError")
    score, verdict = scorer.score(example, "no code block at all")
    assert score == 0.0 and verdict != "passed"
    reader = f"```python\ndef add(a, b):\n    return len(open({str(workspace / 'test.jsonl')!r}).read())\n```"
    score, verdict = scorer.score(example, reader)  # the results folder (hidden) cannot be read
    assert score == 0.0 and ("No such file" in verdict or "ermission" in verdict), verdict


def test_pass_at_1_run_records_the_sandbox_verdicts(workspace, one_thread):
    out = workspace / "code-run"
    rows = [{"question": f"add {i} and {i}?", "answer": "", "tests": f"assert add({i}, {i}) == {2 * i}"}
            for i in range(3)]
    path = make_config(workspace, out, metric="pass_at_1", tests="tests", answer_pattern=None, sample=2,
                       code_timeout_s=5.0, dataset=_rows_file(workspace, "code-rows", rows))
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--methods", "verifier",
                                      "--allow-code-execution"])
    assert result.exit_code == 0, result.output
    rows = read_lines(out / "examples" / "verifier.jsonl")
    assert len(rows) == 2 and all(row["score"] == 0.0 and row["verdict"] != "passed" for row in rows)


CHAT_REFUSING_SYSTEM = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
                        "supported') }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}")


def _rows_file(root, name, rows):
    return str(write_jsonl(root / f"{name}.jsonl", rows))


@pytest.mark.parametrize("case", ["null_field", "empty_prompt", "format_spec", "pattern_with_bleu",
                                  "normalize_with_bleu", "empty_target_bleu", "empty_tests", "null_tests",
                                  "slow_pattern", "names_target", "local_split", "chat_refuses_system",
                                  "no_chat_template", "small_shot_pool", "blank_prompt_with_shots", "comment_tests",
                                  "pass_tests", "broken_tests", "huge_repeat_pattern", "prompt_past_positions",
                                  "new_tokens_past_positions"])
def test_bad_few_shot_inputs_are_one_line_errors_before_any_model_loads(workspace, case):
    root = workspace
    rows = [{"question": "a?", "answer": "1"}, {"question": "b?", "answer": "2"}]
    task = {"sample": None, "fewshot": None}
    if case == "null_field":
        task["dataset"] = _rows_file(root, case, rows + [{"question": None, "answer": "3"}])
    elif case == "empty_prompt":
        task.update(dataset=_rows_file(root, case, [{"question": "", "answer": "1"}]), prompt="{question}")
    elif case == "format_spec":
        task["prompt"] = "Q: {question:>1000000000}"
    elif case == "pattern_with_bleu":
        task["metric"] = "bleu"
    elif case == "normalize_with_bleu":
        task.update(metric="bleu", answer_pattern=None, normalize="triviaqa")
    elif case == "empty_target_bleu":
        task.update(dataset=_rows_file(root, case, [{"question": "a?", "answer": []}]), metric="bleu",
                    answer_pattern=None)
    elif case in ("empty_tests", "null_tests"):
        tests = "" if case == "empty_tests" else None
        task.update(dataset=_rows_file(root, case, [{"question": "a?", "answer": "1", "tests": tests}]),
                    metric="pass_at_1", tests="tests", answer_pattern=None)
    elif case == "slow_pattern":
        task.update(dataset=_rows_file(root, case, [{"question": "a?", "answer": "a" * 3000}]),
                    answer_pattern="(.*a){25}b")
    elif case == "names_target":
        task["prompt"] = "Q: {question} ({answer})"
    elif case == "local_split":
        task["fewshot"] = {"n": 1, "split": "train"}
    elif case in ("chat_refuses_system", "no_chat_template"):
        tokenizer = ByT5Tokenizer()
        if case == "chat_refuses_system":
            tokenizer.chat_template = CHAT_REFUSING_SYSTEM
            task["system"] = "be brief"
        tokenizer.save_pretrained(root / f"tokenizer-{case}")
        task["chat"] = True
    elif case == "small_shot_pool":
        task["fewshot"] = {"n": 9, "dataset": str(root / "shots.jsonl")}
    elif case == "blank_prompt_with_shots":  # not blamed on the pool, whose shots render blank too
        task.update(prompt="{note}", dataset=_rows_file(root, case, [{"note": " ", "question": "a?", "answer": "1"}]),
                    fewshot={"n": 1, "dataset": _rows_file(root, f"{case}-shots", [{"note": " ", "answer": "1"}] * 3)})
    elif case in ("comment_tests", "pass_tests", "broken_tests"):
        tests = {"comment_tests": "# assert f(1) == 2\n", "pass_tests": "pass  # to do\n'a docstring'\n",
                 "broken_tests": "assert f(1) == (2\n"}[case]
        task.update(dataset=_rows_file(root, case, [{"question": "a?", "answer": "1", "tests": tests}]),
                    metric="pass_at_1", tests="tests", answer_pattern=None)
    elif case == "huge_repeat_pattern":  # minutes and gigabytes to compile, were it compiled here
        task["answer_pattern"] = "(a{1000000000})"
    elif case == "prompt_past_positions":  # the tiny models have 256 positions
        task["max_source_tokens"] = 250
    elif case == "new_tokens_past_positions":
        config_overrides = {"max_new_tokens": 300}
    out = root / f"bad-{case}"
    path = make_config(root, out, **task)
    if case == "new_tokens_past_positions":
        config = yaml.safe_load(path.read_text())
        config["decoding"].update(config_overrides)
        path.write_text(yaml.safe_dump(config))
    if case in ("chat_refuses_system", "no_chat_template"):
        config = yaml.safe_load(path.read_text())
        config["models"]["tokenizer"] = str(root / f"tokenizer-{case}")
        path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", "--config", str(path), "--allow-code-execution"])
    assert result.exit_code == 2, (case, result.output)
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(path) in line and ("task." in line or "decoding." in line), \
        (case, result.output)
    assert "Traceback" not in result.output and not out.exists(), case
    expected = {"blank_prompt_with_shots": ("task.prompt", "renders to blank text"),
                "comment_tests": ("task.tests", "no assert, raise or call", "any program would pass"),
                "pass_tests": ("task.tests", "no assert, raise or call"),
                "broken_tests": ("task.tests", "not valid Python", "every program would fail"),
                "huge_repeat_pattern": ("task.answer_pattern", "MiB to compile"),
                "prompt_past_positions": ("task.max_source_tokens", "256 positions", "at most 244"),
                "new_tokens_past_positions": ("decoding.max_new_tokens", "256 positions", "at most 255")}
    for words in expected.get(case, ()):
        assert words in line, (case, line)
    assert "few-shot pool" not in line or case == "small_shot_pool", line


def test_number_targets_keep_their_text(tmp_path):
    from speccascade_bench.tasks.examples import load_examples
    from speccascade_bench.tasks.settings import TaskConfig

    csv = tmp_path / "t.csv"
    csv.write_text("q,a\nx,007\ny,1e3\n")
    examples = load_examples(TaskConfig(dataset=str(csv), target="a", source="q", metric="exact_match"), 0)
    assert [ex.references for ex in examples] == [("007",), ("1e3",)]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"q": "x", "a": 1}\n{"q": "y", "a": 2.5}\n{"q": "z", "a": [3, "c"]}\n')
    examples = load_examples(TaskConfig(dataset=str(jsonl), target="a", source="q", metric="exact_match"), 0)
    assert [ex.references for ex in examples] == [("1",), ("2.5",), ("3", "c")]


def test_a_slow_pattern_on_a_prediction_is_no_answer(monkeypatch):
    from speccascade_bench.tasks import metrics, patterns

    monkeypatch.setattr(patterns, "PATTERN_SECONDS", 0.05)
    assert metrics.example_score("exact_match", "a" * 3000, ["7"], answer_pattern="(.*a){25}b") == 0.0
    with pytest.raises(patterns.PatternTimeout):
        patterns.extract_answer("a" * 3000, "(.*a){25}b")


def test_answer_patterns_compile_under_a_time_and_memory_limit(monkeypatch):
    from speccascade_bench.tasks import patterns

    assert patterns.check_pattern("#### (-?[0-9.,]+)") == 1 and patterns.check_pattern("(a)(b)?") == 2
    with pytest.raises(ValueError, match="not a valid regular expression: missing \\)"):
        patterns.check_pattern("(a")
    started = time.monotonic()
    with pytest.raises(ValueError, match="needs more than 1024 MiB to compile"):
        patterns.check_pattern("(a{1000000000})")  # minutes and gigabytes, were it compiled in this process
    with pytest.raises(ValueError, match="characters long"):
        patterns.check_pattern("a" * (patterns.PATTERN_CHARS + 1))
    monkeypatch.setattr(patterns, "PATTERN_COMPILE_SECONDS", 0.5)
    with pytest.raises(ValueError, match="takes more than 0.5 s to compile"):
        patterns.check_pattern("((a{3000}){3000})")  # 9 million repeats: seconds, in little memory
    assert time.monotonic() - started < 30
