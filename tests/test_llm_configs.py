"""The decoder-only configs of Narasimhan et al.'s few-shot experiments (configs/llm): every config and variant
validates with the paper's pair, settings and method sweeps, and each task's prompts, shots, references and
answer extraction work offline on local files with the hub datasets' schemas (tests/data/llm). No models."""

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from speccascade_bench.config.run import load_run_config, load_run_configs
from speccascade_bench.decoding.methods import METHODS, RULE_ALPHA_RANGE
from speccascade_bench.run.plan import validate_resources
from speccascade_bench.tasks.examples import load_examples
from speccascade_bench.tasks.metrics import example_score
from speccascade_bench.tasks.patterns import extract_answer
from speccascade_bench.tasks.prompts import cut_at_stop
from speccascade_bench.tasks.settings import looks_like_path

from .helpers import PAPER_RULES

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "configs" / "llm"
DATA = Path(__file__).parent / "data" / "llm"

GEMMA = ("google/gemma-2-2b-it", "google/gemma-2-27b-it")
VARIANT_PAIRS = {
    "gemma9b": ("google/gemma-2-2b-it", "google/gemma-2-9b-it"),
    "llama": ("meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
    "qwen": ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
}


@dataclass(frozen=True)
class Benchmark:
    """What a config must name, and its local files: `rows` (evaluated) and `shots`, with the hub schema."""

    dataset: str
    subset: str | None
    split: str
    target: str
    metric: str
    shots: int
    shot_split: str | None
    rows: str
    shots_file: str | None = None


BENCHMARKS = {
    "wmt": Benchmark("wmt/wmt14", "de-en", "validation", "translation.de", "bleu", 5, "test", "wmt14.jsonl",
                     "wmt14_shots.jsonl"),
    "cnn_dm": Benchmark("abisee/cnn_dailymail", "3.0.0", "test", "highlights", "rouge2", 0, None,
                        "cnn_dailymail.jsonl"),
    "gsm8k": Benchmark("openai/gsm8k", "main", "test", "answer", "exact_match", 8, "train", "gsm8k.jsonl",
                       "gsm8k_shots.jsonl"),
    "mbpp": Benchmark("google-research-datasets/mbpp", "full", "test", "code", "pass_at_1", 3, "prompt", "mbpp.jsonl",
                      "mbpp_prompt.jsonl"),
    "squad_v2": Benchmark("rajpurkar/squad_v2", "squad_v2", "validation", "answers.text", "f1", 1, "train",
                          "squad_v2.jsonl", "squad_v2_shots.jsonl"),
    "web_questions": Benchmark("stanfordnlp/web_questions", None, "test", "answers", "exact_match", 1, "train",
                               "web_questions.jsonl", "web_questions_shots.jsonl"),
    "nq": Benchmark("google-research-datasets/nq_open", "nq_open", "validation", "answer", "exact_match", 1, "train",
                    "nq_open.jsonl", "nq_open_shots.jsonl"),
    "triviaqa": Benchmark("mandarjoshi/trivia_qa", "rc.nocontext", "validation", "answer.aliases", "exact_match", 1,
                          "train", "trivia_qa.jsonl", "trivia_qa_shots.jsonl"),
}

# Each benchmark's prompt for a row, written out independently of the config's template, and the answer a shot
# shows (the first accepted answer, "" when there is none; TriviaQA's answer.value).
QUERY = {
    "wmt": lambda row: f"English: {row['translation']['en']}\nGerman:",
    "cnn_dm": lambda row: f"Article: {row['article']}\n\nSummarize the article above in three sentences. Reply with "
                          "the summary only.",
    "gsm8k": lambda row: f"Question: {row['question']}\nAnswer:",
    "mbpp": lambda row: f"You are an expert Python programmer, and here is your task: {row['text']} Your code should "
                        "pass these tests:\n\n" + "\n".join(row["test_list"]),
    "squad_v2": lambda row: f"Title: {row['title']}\n\nBackground: {row['context']}\n\nQuestion: {row['question']}"
                            "\n\nAnswer:",
    "web_questions": lambda row: f"Question: {row['question']}\nAnswer:",
    "nq": lambda row: f"Question: {row['question']}?\nAnswer:",
    "triviaqa": lambda row: f"Question: {row['question']}\nAnswer:",
}
REFERENCES = {
    "wmt": lambda row: (row["translation"]["de"],),
    "cnn_dm": lambda row: (row["highlights"],),
    "gsm8k": lambda row: (row["answer"],),
    "mbpp": lambda row: (row["code"],),
    "squad_v2": lambda row: tuple(row["answers"]["text"]),
    "web_questions": lambda row: tuple(row["answers"]),
    "nq": lambda row: tuple(row["answer"]),
    "triviaqa": lambda row: tuple(row["answer"]["aliases"]),
}
SHOT_ANSWER = {**{name: lambda row, name=name: (REFERENCES[name](row) or ("",))[0] for name in REFERENCES},
               "triviaqa": lambda row: row["answer"]["value"]}


def _rows(file: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / file).read_text(encoding="utf-8").splitlines()]


def _config(name: str):
    return load_run_config(CONFIGS / f"{name}.yaml")


def _local_task(name: str):
    """The config's task reading the local files: the evaluated rows, and the shots from a file instead of a split."""
    task, bench = _config(name).task, BENCHMARKS[name]
    task = dataclasses.replace(task, dataset=str(DATA / bench.rows))
    if task.fewshot is not None:
        task = dataclasses.replace(task, fewshot=dataclasses.replace(task.fewshot, split=None,
                                                                     dataset=str(DATA / bench.shots_file)))
    return task


def test_the_llm_configs_are_the_eight_benchmarks():
    assert {path.stem for path in CONFIGS.glob("*.yaml")} == set(BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_config_and_every_variant_validate_with_their_pairs(name):
    base, *variants = load_run_configs(CONFIGS / f"{name}.yaml")
    assert (base.models.drafter, base.models.verifier) == GEMMA
    assert (base.models.dtype, base.models.device) == ("bfloat16", "cuda")
    assert base.task.chat and base.decoding.temperature == 0.0 and base.decoding.draft_length == 1
    assert base.output == f"results/llm/{name}"
    scoring = {"flexible"} if name == "gsm8k" else set()  # the same pair, scored otherwise
    assert {cfg.variant for cfg in variants} == {*VARIANT_PAIRS, "chain", *scoring}  # the chain: tests/test_chains.py
    for cfg in (cfg for cfg in variants if cfg.variant in scoring):
        assert (cfg.models, cfg.decoding, cfg.methods) == (base.models, base.decoding, base.methods)
        assert cfg.task.answer_select == "last" and cfg.task.normalize == base.task.normalize == "gsm8k"
    for cfg in (cfg for cfg in variants if cfg.variant in VARIANT_PAIRS):
        assert (cfg.models.drafter, cfg.models.verifier) == VARIANT_PAIRS[cfg.variant]
        assert (cfg.models.dtype, cfg.models.device) == (base.models.dtype, base.models.device)
        assert cfg.task == base.task and cfg.decoding == base.decoding and cfg.methods == base.methods
        assert cfg.output == f"results/llm/{name}-{cfg.variant}"


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_task_names_the_hub_dataset_its_fields_and_metric(name):
    task, bench = _config(name).task, BENCHMARKS[name]
    assert not looks_like_path(task.dataset) and task.revision is None
    assert (task.dataset, task.subset, task.split, task.target, task.metric) == \
        (bench.dataset, bench.subset, bench.split, bench.target, bench.metric)
    if bench.shots:
        assert (task.fewshot.n, task.fewshot.split, task.fewshot.dataset) == (bench.shots, bench.shot_split, None)
    else:
        assert task.fewshot is None or task.fewshot.n == 0
    assert task.stop, "every task needs stop strings"
    assert task.sample == 500 and task.system is None  # Gemma's chat template has no system turn


def test_every_benchmark_runs_the_same_methods():
    run_ids = [[run.run_id for run in _config(name).methods] for name in BENCHMARKS]
    assert all(ids == run_ids[0] for ids in run_ids)


def test_methods_sweep_every_rule_at_both_draft_lengths():
    runs = _config("gsm8k").methods
    assert len(runs) < 60
    assert {run.method for run in runs} == {name for name, spec in METHODS.items() if not spec.chain and spec.roles}
    gammas = {1, 5}
    assert {run.params["draft_length"] for run in runs if run.method == "spec_decode"} == gammas
    assert {run.params["draft_length"] for run in runs if run.method == "lossy_spec_decode"} == gammas
    for rule in PAPER_RULES:
        points = {(run.params["alpha"], run.params["draft_length"]) for run in runs
                  if run.method == "spec_cascade" and run.params["rule"] == rule}
        alphas = sorted({alpha for alpha, _ in points})
        assert len(alphas) >= 3 and points == set(itertools.product(alphas, gammas)), rule
        low, high = RULE_ALPHA_RANGE[rule]
        assert (low is None or low <= alphas[0]) and (high is None or alphas[-1] <= high), rule
    for method in ("token_cascade", "seq_cascade", "bild"):
        assert len([run for run in runs if run.method == method]) >= 3, method


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_local_rows_give_the_prompts_shots_and_references(name):
    cfg, bench, task = _config(name), BENCHMARKS[name], _local_task(name)
    validate_resources(dataclasses.replace(cfg, task=task))  # the fields the config names exist in the files
    rows = _rows(bench.rows)
    shot_rows = _rows(bench.shots_file) if bench.shots_file else []
    pool = {(QUERY[name](row), SHOT_ANSWER[name](row)) for row in shot_rows}
    examples = load_examples(task, seed=0)
    assert [ex.example_id for ex in examples] == list(range(len(rows)))
    for example, row in zip(examples, rows, strict=True):
        parts = example.parts
        assert parts.query == QUERY[name](row) and example.source.endswith(parts.query)
        assert example.references == REFERENCES[name](row)
        assert len(parts.shots) == bench.shots == len(set(parts.shots)) and set(parts.shots) <= pool
        turns = parts.messages()
        assert [turn["role"] for turn in turns] == ["user", "assistant"] * bench.shots + ["user"]
        assert turns[0]["content"].startswith(task.prefix) and turns[-1]["content"].endswith(parts.query)
        assert [turn["content"] for turn in turns[1::2]] == [answer for _, answer in parts.shots]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_stop_strings_leave_the_answers_whole(name):
    # A model that answers like a reference or a shot must not be cut short by the task's stop strings.
    bench, stop = BENCHMARKS[name], _config(name).task.stop
    answers = [ref for row in _rows(bench.rows) for ref in REFERENCES[name](row)]
    answers += [SHOT_ANSWER[name](row) for row in _rows(bench.shots_file)] if bench.shots_file else []
    assert answers and all(cut_at_stop(answer, stop) == answer for answer in answers)


def test_gsm8k_answer_pattern_reads_the_final_number():
    task = _config("gsm8k").task
    examples = load_examples(_local_task("gsm8k"), seed=0)
    assert [extract_answer(ex.reference, task.answer_pattern) for ex in examples] == ["27", "1,250", "-3"]

    def score(prediction, example):
        return example_score(task.metric, prediction, example.references, task.answer_pattern, task.normalize)

    eggs, cold = examples[1], examples[2]
    assert score("250 * 5 = 1250 eggs.\n#### 1250", eggs) == 100.0  # the reference's comma does not count
    assert score("250 * 5 = 1200 eggs.\n#### 1200", eggs) == 0.0
    assert score("The answer is 1250.", eggs) == 0.0  # no "#### <number>": no answer
    assert score("4 - 7 = -3\n#### -3", cold) == 100.0 and score("#### 3", cold) == 0.0


def test_squad_unanswerable_row_is_scored_on_abstention():
    task = _config("squad_v2").task
    answerable, unanswerable = load_examples(_local_task("squad_v2"), seed=0)
    assert unanswerable.references == () and unanswerable.reference == ""

    def score(prediction, example):
        return example_score(task.metric, prediction, example.references, task.answer_pattern, task.normalize)

    for abstention in ("unanswerable", " Unanswerable.", ""):
        assert score(abstention, unanswerable) == 100.0 and score(abstention, answerable) == 0.0
    assert score("France", unanswerable) == 0.0
    assert score("France.", answerable) == 100.0 and 0.0 < score("northern France", answerable) < 100.0


def test_triviaqa_scores_any_alias_and_shows_the_answer_value():
    task = _config("triviaqa").task
    examples = load_examples(_local_task("triviaqa"), seed=0)
    shot_values = {row["answer"]["value"] for row in _rows("trivia_qa_shots.jsonl")}
    assert {answer for ex in examples for _, answer in ex.parts.shots} <= shot_values
    beatles = examples[0]
    assert beatles.references == ("The Beatles", "Beatles", "The Fab Four", "Beatles, The")
    for prediction, expected in (("the Fab Four", 100.0), ("Beatles!", 100.0), ("The Rolling Stones", 0.0)):
        assert example_score(task.metric, prediction, beatles.references, task.answer_pattern,
                             task.normalize) == expected


def test_mbpp_shots_are_the_standard_prompt_tasks_and_code_is_extracted():
    task = _config("mbpp").task
    prompt_rows = {row["task_id"]: row for row in _rows("mbpp_prompt.jsonl")}
    examples = load_examples(_local_task("mbpp"), seed=0)
    for example, row in zip(examples, _rows("mbpp.jsonl"), strict=True):
        assert example.parts.shots == tuple((QUERY["mbpp"](prompt_rows[i]), prompt_rows[i]["code"]) for i in (2, 3, 4))
        assert example.tests == "\n".join(row["test_list"]) and example.setup == row["test_setup_code"]
    assert examples[1].setup.startswith("SCORES = ")
    code = "def is_even(n):\n  return n % 2 == 0"
    for answer in (code, f"```python\n{code}\n```", f"Here is the function:\n```python\n{code}\n```\nIt checks n.",
                   f"Here is the function:\n```python\n{code}\n"):  # the last one cut at the stop "\n```\n"
        assert extract_answer(answer, task.answer_pattern).strip() == code, answer
