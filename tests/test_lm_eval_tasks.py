"""Tasks from lm-evaluation-harness's registry (`task.lm_eval`): the suite's verifier and lm-eval's own `hf` backend
give the same prompts, outputs and per-sample scores; shots are lm-eval's, drawn per document; what cannot be
decoded or scored is refused in one line before any model loads. Offline: the toy decoder-only pair on GSM8K-schema
files the test writes."""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.settings import ConfigError
from speccascade_bench.toy import arithmetic

from .helpers import write_jsonl

pytest.importorskip("lm_eval")

PAIR = Path(__file__).resolve().parents[1] / "speccascade_bench" / "toy" / "llm_pair"
N_TEST, N_SHOTS = 8, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A test split and a train split (the shots) in GSM8K's schema."""
    out = tmp_path_factory.mktemp("gsm8k")
    paths = arithmetic.write_splits(out, seed=11, sizes={"train_rows": N_SHOTS, "test": N_TEST})
    return {"test": str(paths["test"]), "train": str(paths["train_rows"])}


def _config(tmp_path: Path, data: dict, task: dict | None = None, **top) -> Path:
    config = {
        "name": "lm_eval_gsm8k",
        "task": task if task is not None else {"lm_eval": "gsm8k", "num_fewshot": 3, "data_files": data},
        "models": {"drafter": str(PAIR / "drafter"), "verifier": str(PAIR / "verifier"), "device": "cpu"},
        "decoding": {"max_new_tokens": 256, "temperature": 0.0, "seed": 0},
        "methods": [{"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode", "draft_length": 4}],
        "timing": {"warmup": 0, "trials": 1},
        "output": str(tmp_path / "out"),
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _error(tmp_path: Path, data: dict, task: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load_run_config(_config(tmp_path, data, task))
    return str(caught.value)


def test_the_task_is_filled_in_from_lm_evals_registry(tmp_path, data):
    task = load_run_config(_config(tmp_path, data)).task
    assert (task.lm_eval, task.dataset, task.split, task.filter, task.score, task.metric) == \
        ("gsm8k", data["test"], "test", "strict-match", "exact_match", "lm_eval")
    assert task.stop[0] == "Question:" and task.fewshot_seed == 1234
    flexible = load_run_config(_config(tmp_path, data, {"lm_eval": "gsm8k", "filter": "flexible-extract",
                                                         "data_files": data})).task
    assert flexible.filter == "flexible-extract"


@pytest.mark.parametrize("task, key, words", [
    ({"lm_eval": "gsm8kk"}, "task.lm_eval", "no task 'gsm8kk' (did you mean 'gsm8k'"),
    ({"lm_eval": "webqs"}, "task.lm_eval", "is a multiple_choice task, scored by the log-likelihood"),
    ({"lm_eval": "mbpp"}, "task.lm_eval", "running model-written code outside any sandbox"),
    ({"lm_eval": "wmt14"}, "task.lm_eval", "of lm-eval tasks; name one of its tasks"),
    ({"lm_eval": "gsm8k", "prompt": "Q: {question}"}, "task.prompt", "comes from lm-eval's task 'gsm8k'"),
    ({"lm_eval": "gsm8k", "metric": "bleu"}, "task.metric", "comes from lm-eval's task"),
    ({"lm_eval": "gsm8k", "filter": "strict"}, "task.filter", "its filters: strict-match, flexible-extract"),
    ({"lm_eval": "gsm8k", "score": "f1"}, "task.score", "has no metric 'f1'; its metrics: exact_match"),
    ({"lm_eval": "wmt16-de-en", "score": "ter"}, "task.score", "error rate"),
    ({"lm_eval": "gsm8k", "num_fewshot": -1}, "task.num_fewshot", "must be in [0, 1000]"),
    ({"lm_eval": "gsm8k", "data_files": {"validation": "x.jsonl"}}, "task.data_files", "not 'validation'"),
    ({"lm_eval": "gsm8k", "data_files": {"test": "missing.jsonl"}}, "task.data_files", "is not a file"),
    ({"lm_eval": "squad_completion", "data_files": {"validation": "x.jsonl"}}, "task.data_files",
     "task class of its own"),
    ({"dataset": "a.jsonl", "prompt": "{q}", "target": "a", "num_fewshot": 2}, "task.num_fewshot",
     "applies to lm-eval tasks only"),
    ({"lm_eval": "gsm8k", "system": "Be brief."}, "task.system", "--system_instruction): it needs chat: true"),
    ({"lm_eval": "gsm8k", "fewshot_as_multiturn": False}, "task.fewshot_as_multiturn", "it needs chat: true"),
    ({"dataset": "a.jsonl", "prompt": "{q}", "target": "a", "chat": True, "fewshot_as_multiturn": False},
     "task.fewshot_as_multiturn", "applies to lm-eval tasks only"),
])
def test_bad_lm_eval_tasks_are_refused_in_one_line(tmp_path, data, task, key, words):
    message = _error(tmp_path, data, task)
    assert f": {key}: " in message and words in message and "\n" not in message


def test_data_files_must_hold_the_evaluated_split_and_the_shots(tmp_path, data):
    assert "has no file for 'train', the split lm-eval draws the shots from" in \
        _error(tmp_path, data, {"lm_eval": "gsm8k", "data_files": {"test": data["test"]}})
    zero_shot = {"lm_eval": "gsm8k", "num_fewshot": 0, "data_files": {"test": data["test"]}}
    assert load_run_config(_config(tmp_path, data, zero_shot)).task.num_fewshot == 0
    assert "the split lm-eval evaluates" in _error(tmp_path, data, {"lm_eval": "gsm8k",
                                                                    "data_files": {"train": data["train"]}})


def test_a_zero_shot_task_given_only_its_evaluated_split_builds_its_prompts(tmp_path, data):
    """lm-eval reads a task's training split for its sampler even at zero shots: a split without a file is no split
    of the task, so the examples build; the manifest records the task's lm-eval files, which a resume compares."""
    from speccascade_bench.results.manifest import manifest_config
    from speccascade_bench.tasks.harness import HarnessTask

    config = load_run_config(_config(tmp_path, data, {"lm_eval": "gsm8k", "num_fewshot": 0,
                                                      "data_files": {"test": data["test"]}}))
    examples = HarnessTask(config.task).examples()
    assert len(examples) == N_TEST and all(ex.fewshot == 0 and ex.source.startswith("Question: ") for ex in examples)
    files = manifest_config(config)["task_files"]
    assert "lm_eval gsm8k.yaml" in files and files["lm_eval gsm8k.yaml"]["bytes"] > 0


def test_a_fine_tuning_config_takes_no_lm_eval_task(tmp_path):
    from speccascade_bench.finetune.config import load_finetune_config

    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({"name": "ft", "task": {"lm_eval": "gsm8k"}, "model": "x", "output": "o"}))
    with pytest.raises(ConfigError, match="task.lm_eval: fine-tuning reads a task defined here"):
        load_finetune_config(path)


def test_shots_are_lm_evals_drawn_per_document_and_never_the_document(tmp_path, data):
    from speccascade_bench.tasks.harness import HarnessTask

    task = load_run_config(_config(tmp_path, data)).task
    first, again = HarnessTask(task).examples(), HarnessTask(task).examples()
    assert [ex.source for ex in first] == [ex.source for ex in again]  # seeded: the same in every run
    rows = [json.loads(line) for line in Path(data["test"]).read_text().splitlines()]
    shot_sets = []
    for example, row in zip(first, rows, strict=True):
        question = f"Question: {row['question']}\nAnswer:"
        assert example.source.endswith(question) and example.source.count(question) == 1
        shots = example.source.split("\n\n")[:-1]
        assert len(shots) == 3 and example.fewshot == 3
        shot_sets.append(frozenset(shots))
    assert len(set(shot_sets)) > 1  # two documents with different shots
    seeded = HarnessTask(load_run_config(_config(tmp_path, data, {"lm_eval": "gsm8k", "num_fewshot": 3,
                                                                  "fewshot_seed": 7, "data_files": data})).task)
    assert [ex.source for ex in seeded.examples()] != [ex.source for ex in first]
    # lm-eval leaves a document out of its own shots only when both come from one split: one file given as both
    # splits would put documents in their own prompts.
    same = {"lm_eval": "gsm8k", "data_files": {"test": data["test"], "train": data["test"]}}
    assert "the same file as the evaluated split" in _error(tmp_path, data, same)


def test_a_dataset_lm_eval_cannot_load_is_one_line_before_any_model(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')  # no answer field: lm-eval's target template fails
    config = _config(tmp_path, data, {"lm_eval": "gsm8k", "num_fewshot": 0, "data_files": {"test": str(bad)}})
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "task.lm_eval" in result.output and "gsm8k" in result.output
    assert not (tmp_path / "out" / "examples").exists()


def test_the_suite_and_lm_evals_hf_backend_agree(tmp_path, data):
    """At temperature 0: the same prompts, the same outputs and the same per-sample scores per filter as
    `lm_eval.simple_evaluate` with its `hf` model on the same local model and files; the summary's quality is
    lm-eval's aggregate."""
    from speccascade_bench.tasks.harness import harness_task

    config = _config(tmp_path, data)
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    run = load_run_config(config)
    examples = harness_task(run.task).examples()
    scores = []
    for name, model in (("verifier", "verifier"), ("spec_decode-g4", "verifier"), ("drafter", "drafter")):
        samples = _lm_eval_samples(PAIR / model, run.task)
        assert sorted(samples) == list(range(N_TEST)) == [ex.example_id for ex in examples]
        rows = {row["example_id"]: row for row in map(json.loads, (out / "examples" / f"{name}.jsonl").open())}
        assert sorted(rows) == list(range(N_TEST))
        for example in examples:
            row, theirs_by_filter = rows[example.example_id], samples[example.example_id]
            strict = theirs_by_filter["strict-match"]
            assert strict["arguments"][0][0] == example.source  # the prompt, shots included
            assert strict["resps"][0][0] == row["prediction"]  # the output, cut at the stop sequences
            for filter_name, sample in theirs_by_filter.items():
                assert row["lm_eval"][filter_name]["exact_match"] == sample["exact_match"]
            assert row["score"] == 100 * strict["exact_match"] and row["shots"] == 3
            scores.append(row["score"])
    assert 0 in scores and 100 in scores  # right and wrong answers both compared
    summary = {row["run_id"]: row for row in csv.DictReader((out / "summary.csv").open())}
    for name, model in (("verifier", "verifier"), ("drafter", "drafter")):
        expected = 100 * _lm_eval_results(PAIR / model, run.task)["results"]["gsm8k"]["exact_match,strict-match"]
        assert float(summary[name]["quality"]) == pytest.approx(expected)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["lm_eval"] == metadata.version("lm_eval")


_RESULTS: dict = {}


def _lm_eval_results(model: Path, task) -> dict:
    """`lm_eval.simple_evaluate` with its `hf` model on the task's local files (once per model)."""
    import lm_eval

    from speccascade_bench.tasks.harness import _local_config, _manager

    if model not in _RESULTS:
        # The toy pair's byte tokenizer closes an input with EOS, as T5's does; the suite's prompts continue
        # instead (tasks.prompts), and lm-eval's hf model encodes without special tokens with add_bos_token=False.
        # Tokenizers that open with BOS (Llama, Gemma) are encoded alike by both with the defaults.
        _RESULTS[model] = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(model), "dtype": "float32", "device": "cpu",
                                    "add_bos_token": False},
            tasks=[_local_config(task)], task_manager=_manager(), num_fewshot=3, fewshot_random_seed=1234,
            log_samples=True, batch_size=1, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    return _RESULTS[model]


def _lm_eval_samples(model: Path, task) -> dict[int, dict[str, dict]]:
    """lm-eval's logged samples by document and filter."""
    samples: dict[int, dict[str, dict]] = {}
    for sample in _lm_eval_results(model, task)["samples"]["gsm8k"]:
        samples.setdefault(sample["doc_id"], {})[sample["filter"]] = sample
    return samples


def test_corpus_bleu_is_lm_evals_aggregate():
    """lm-eval's translation tasks aggregate BLEU and chrF over the corpus: the suite's corpus scores of the rows
    equal lm-eval's aggregation of its per-sample items."""
    from lm_eval.api.metrics import bleu, chrf

    from speccascade_bench.tasks.metrics import corpus_score

    references = [" the cat sat on the mat", " a dog barked", " it rained all day long", " she reads books"]
    predictions = ["the cat sat on a mat", "the dog barked loudly", "it rained all day", ""]
    items = list(zip(references, predictions, strict=True))
    assert corpus_score("bleu", predictions, references) == pytest.approx(bleu(items))
    assert corpus_score("chrf", predictions, references) == pytest.approx(chrf(items))


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs" / "llm" / "lm_eval").glob("*.yaml"))


def test_the_shipped_lm_eval_configs_cover_the_benchmarks_lm_eval_can_decode():
    from speccascade_bench.config.run import load_run_configs
    from speccascade_bench.tasks.harness import registered
    from speccascade_bench.tasks.harness_source import LM_EVAL_MAX_GEN_TOKS

    seen = set()
    for path in SHIPPED:
        for config in load_run_configs(path):
            task = config.task
            seen.add(task.lm_eval)
            budget = (registered(task.lm_eval).config.get("generation_kwargs") or {}).get("max_gen_toks")
            assert config.decoding.max_new_tokens == (budget or LM_EVAL_MAX_GEN_TOKS), path
            assert task.score and task.filter and task.dataset and not task.dataset.startswith("lm-eval:"), path
            assert config.output.startswith("results/llm/lm_eval/"), path
    assert seen == {"gsm8k", "gsm8k_cot", "triviaqa", "nq_open", "squad_completion", "cnn_dailymail_abisee",
                    "wmt16-en-de", "wmt14-en-fr"}


# A chat template in the style of instruction-tuned models; the second refuses a system turn, as Gemma 2's does.
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{% endfor %}" + CHAT)


def _chat_verifier(folder: Path, template: str) -> Path:
    """The toy verifier with a chat template on its tokenizer (the run's tokenizer: the verifier's)."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(PAIR / "verifier", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("template, extra", [
    (CHAT, {}),
    (CHAT, {"fewshot_as_multiturn": False, "system": "Answer with a number."}),
    (NO_SYSTEM, {"system": "Answer with a number."}),  # lm-eval leaves the refused system turn out; so does the suite
])
def test_chat_prompts_outputs_and_scores_are_lm_evals_with_apply_chat_template(tmp_path, data, template, extra):
    """`chat: true` on an lm-eval task is lm-eval's --apply_chat_template (shots as turns unless
    fewshot_as_multiturn is false; `system` its --system_instruction): the same prompts, outputs and scores as
    `lm_eval.simple_evaluate` with its `hf` model and those options."""
    import lm_eval

    from speccascade_bench.tasks.harness import _local_config, _manager

    verifier = _chat_verifier(tmp_path / "chat_verifier", template)
    limit = 3
    task = {"lm_eval": "gsm8k", "num_fewshot": 2, "data_files": data, "first": limit, "chat": True, **extra}
    config = _config(tmp_path, data, task, methods=[{"method": "verifier"}, {"method": "spec_decode",
                                                                             "draft_length": 4}])
    raw = yaml.safe_load(config.read_text())
    raw["models"]["verifier"] = str(verifier)
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    theirs = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(verifier), "dtype": "float32", "device": "cpu", "add_bos_token": False},
        tasks=[_local_config(load_run_config(config).task)], task_manager=_manager(), num_fewshot=2,
        fewshot_random_seed=1234, limit=limit, log_samples=True, batch_size=1, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, apply_chat_template=True, fewshot_as_multiturn=extra.get("fewshot_as_multiturn", True),
        system_instruction=extra.get("system"))
    samples = {s["doc_id"]: s for s in theirs["samples"]["gsm8k"] if s["filter"] == "strict-match"}
    assert sorted(samples) == list(range(limit))
    out = tmp_path / "out" / "examples"
    for name in ("verifier", "spec_decode-g4"):
        rows = {row["example_id"]: row for row in map(json.loads, (out / f"{name}.jsonl").open())}
        assert sorted(rows) == list(range(limit))
        assert any(row["prediction"].strip() for row in rows.values())  # outputs compared, not only empty ones
        for doc_id, sample in samples.items():
            assert rows[doc_id]["prediction"] == sample["resps"][0][0]
            assert rows[doc_id]["score"] == 100 * sample["exact_match"]
    prompts = [sample["arguments"][0][0] for _, sample in sorted(samples.items())]
    assert all(prompt.startswith("<|") and prompt.endswith("<|assistant|>") for prompt in prompts)
    turns = prompts[0].count("<|user|>")
    assert turns == (3 if extra.get("fewshot_as_multiturn", True) else 1)  # 2 shots and the question, or one turn
    assert ("<|system|>" in prompts[0]) == (template == CHAT and "system" in extra)
    from transformers import AutoTokenizer

    from speccascade_bench.tasks.examples import load_examples
    from speccascade_bench.tasks.prompts import PromptFormat, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(verifier)
    examples = load_examples(load_run_config(config).task, 0, tokenizer=tokenizer)
    assert [example.source for example in examples] == prompts
    ids, _ = prompt_ids(tokenizer, examples[0].parts, PromptFormat(4096), decoder_only=True)
    assert ids == tokenizer(prompts[0], add_special_tokens=False).input_ids


def test_a_chat_lm_eval_task_without_a_chat_template_is_one_line_before_any_model(tmp_path, data):
    config = _config(tmp_path, data, {"lm_eval": "gsm8k", "num_fewshot": 2, "data_files": data, "chat": True})
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "task.chat" in result.output and "has no chat template" in result.output
    assert not (tmp_path / "out" / "examples").exists()


def test_a_chat_template_that_refuses_the_turns_is_one_line_naming_task_chat(tmp_path, data):
    verifier = _chat_verifier(tmp_path / "refusing", "{{ raise_exception('this template takes no turns') }}")
    config = _config(tmp_path, data, {"lm_eval": "gsm8k", "num_fewshot": 2, "data_files": data, "chat": True,
                                      "system": "Be brief."})
    raw = yaml.safe_load(config.read_text())
    raw["models"]["verifier"] = str(verifier)
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "Traceback" not in result.output
    assert "task.chat" in result.output and "this template takes no turns" in result.output
    assert not (tmp_path / "out" / "examples").exists()


def test_a_document_lm_eval_cannot_score_is_refused_before_any_model_loads(tmp_path):
    """TriviaQA with an empty alias list: lm-eval's exact match would fail on it after decoding; the suite names
    the document in one line before any model loads."""
    docs = [{"question": "Which planet is red", "answer": {"aliases": ["Mars"], "value": "Mars"}},
            {"question": "Which planet has no name", "answer": {"aliases": [], "value": ""}}]
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    config = _config(tmp_path, {}, task={"lm_eval": "triviaqa", "num_fewshot": 0,
                                         "data_files": {"validation": str(path)}})
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1 and "document 1 of 'triviaqa'" in result.output, result.output
    assert "empty list of answers" in result.output and "task.lm_eval" in result.output
    assert not (tmp_path / "out").exists()


def test_an_lm_eval_task_keeps_the_context_lm_evals_hf_model_keeps(tmp_path, data):
    """No task.max_source_tokens: lm-eval's hf model keeps its max_length (the toy verifier's 1024 positions)
    minus the generation budget (256); a value the config gives is kept."""
    from speccascade_bench.run.plan import prepare

    job = prepare(load_run_config(_config(tmp_path, data)))
    assert job.config.task.max_source_tokens == 1024 - 256
    assert job.resolved["task"]["max_source_tokens"] == 768
    given = _config(tmp_path, data, task={"lm_eval": "gsm8k", "num_fewshot": 3, "data_files": data,
                                          "max_source_tokens": 300})
    assert prepare(load_run_config(given)).config.task.max_source_tokens == 300


LONG_CASES = {
    # a QA task and a summarisation task, each with documents longer than the toy pair's 1024 positions allow
    "gsm8k": ({"question": "Tom has {n} apples. " * 1 + "He counts them again: " + "one more, " * 120 + "and then "
               "how many apples does he have?", "answer": "He has {n} apples.\n#### {n}"}, 256, "test", "train"),
    "cnn_dailymail_abisee": ({"article": "The council met on Monday to discuss the new bridge. " * 30 + "It opened in "
                              "{n}.", "highlights": "The new bridge opened in {n}."}, 128, "test", None),
}


@pytest.mark.parametrize("name", list(LONG_CASES))
def test_contexts_longer_than_the_model_are_cut_as_lm_evals_hf_model_cuts_them(tmp_path, name):
    """Documents whose prompts exceed the toy model's positions minus the budget: the suite keeps the tokens lm-eval's
    hf model keeps (no task.max_source_tokens), and the outputs and per-sample metrics equal `simple_evaluate`'s."""
    import lm_eval

    from speccascade_bench.tasks.harness import _local_config, _manager

    template, budget, split, shots_split = LONG_CASES[name]
    docs = [{key: value.replace("{n}", str(n)) for key, value in template.items()} for n in (3, 17, 2024)]
    filler = ("one more, " * 120, "The council met on Monday to discuss the new bridge. " * 30)
    docs[0] = {key: value.replace(filler[0], "").replace(filler[1], "") for key, value in docs[0].items()}  # short
    files = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", docs))}
    if shots_split:
        files[shots_split] = files[split]
    task = {"lm_eval": name, "num_fewshot": 0, "data_files": files}
    config = _config(tmp_path, {}, task=task, decoding={"max_new_tokens": budget, "temperature": 0.0, "seed": 0},
                     methods=[{"method": "verifier"}])
    result = CliRunner().invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["task"]["max_source_tokens"] == 1024 - budget
    assert manifest["config"]["prompts_cut"]["examples"] == 2  # the two long documents
    lines = (tmp_path / "out" / "examples" / "verifier.jsonl").open()
    rows = {row["example_id"]: row for row in map(json.loads, lines)}
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(PAIR / "verifier"), "dtype": "float32", "device": "cpu",
                                "add_bos_token": False},
        tasks=[_local_config(load_run_config(config).task)], task_manager=_manager(), num_fewshot=0,
        log_samples=True, batch_size=1, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    samples: dict[int, dict[str, dict]] = {}
    for sample in theirs["samples"][name]:
        samples.setdefault(sample["doc_id"], {})[sample["filter"]] = sample
    assert sorted(samples) == sorted(rows) == [0, 1, 2]
    for doc_id, by_filter in samples.items():
        row = rows[doc_id]
        context = next(iter(by_filter.values()))["arguments"][0][0]
        assert row["input_tokens"] == min(len(context.encode()), 1024 - budget)  # a token per byte, cut on the left
        for filter_name, sample in by_filter.items():
            assert sample["resps"][0][0] == row["prediction"], (doc_id, filter_name)
            for metric, value in row["lm_eval"][filter_name].items():
                assert value == pytest.approx(sample[metric]), (doc_id, filter_name, metric)
    assert [rows[i]["input_tokens"] for i in (1, 2)] == [1024 - budget] * 2
