"""Prompts: templates render exactly, with their shots and the chat template; shots are deterministic and
never the evaluated example; truncation drops the farthest shots first and keeps the question."""

from dataclasses import replace

import pytest
from transformers import ByT5Tokenizer

from speccascade_bench.config.run import load_run_config
from speccascade_bench.settings import ConfigError
from speccascade_bench.tasks.data import DataError
from speccascade_bench.tasks.examples import load_examples
from speccascade_bench.tasks.prompts import (
    PromptFormat,
    PromptParts,
    TemplateError,
    prompt_ids,
    render,
    template_fields,
)

from .helpers import write_jsonl

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def _rows(n, prefix="q"):
    return [{"question": f"{prefix}{i}?", "answer": f"a{i}", "meta": {"tags": [f"t{i}", "x"]}} for i in range(n)]


def _config(tmp_path, task_extra: str, rows=None, shots=None):
    data = write_jsonl(tmp_path / "test.jsonl", rows or _rows(6))
    if shots is not None:
        write_jsonl(tmp_path / "shots.jsonl", shots)
    text = f"""
name: p
task:
  dataset: {data}
  prompt: "Q: {{question}}\\nA:"
  target: answer
{task_extra}
models: {{drafter: d, verifier: v}}
methods: [{{method: verifier}}]
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_run_config(path)


def test_template_fields_and_rendering():
    assert template_fields("{question} {translation[en]} {a.b} {question}") == ("question", "translation.en", "a.b")
    row = {"question": "Why?", "translation": {"en": "hi"}, "tests": ["assert f(1)", "assert f(2)"]}
    assert render("Q: {question} ({translation[en]})\n{tests}\n{{literal}}", row) == \
        "Q: Why? (hi)\nassert f(1)\nassert f(2)\n{literal}"
    for bad in ("{}", "{0}", "{question", "{a:{b}}", "{question:>10}", "{question!r}"):
        with pytest.raises(TemplateError):
            template_fields(bad)


def test_prompt_with_shots_renders_exactly(tmp_path):
    shots = _rows(3, prefix="s")
    config = _config(tmp_path, "  prefix: \"Solve.\\n\"\n  fewshot: {n: 2, dataset: " + str(tmp_path / "shots.jsonl")
                     + ", order: first}", shots=shots)
    example = load_examples(config.task, seed=0)[1]
    assert example.source == "Solve.\nQ: s0?\nA: a0\n\nQ: s1?\nA: a1\n\nQ: q1?\nA:"
    tokenizer = ByT5Tokenizer()
    ids, kept = prompt_ids(tokenizer, example.parts, PromptFormat(1000, " ", "\n\n"), decoder_only=True)
    assert kept == 2 and tokenizer.decode(ids) == example.source  # no EOS closes a decoder-only prompt


def test_chat_template_turns(tmp_path):
    tokenizer = ByT5Tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    parts = PromptParts("Be brief. ", (("Q: s0?", "a0"),), "Q: q1?")
    ids, kept = prompt_ids(tokenizer, parts, PromptFormat(1000, chat=True, system="sys"), decoder_only=True)
    assert tokenizer.decode(ids) == ("<system>sys</system><user>Be brief. Q: s0?</user><assistant>a0</assistant>"
                                     "<user>Q: q1?</user><assistant>")


def test_shots_are_deterministic_and_never_the_evaluated_example(tmp_path):
    rows = _rows(12)
    config = _config(tmp_path, "  fewshot: {n: 3, dataset: " + str(tmp_path / "test.jsonl") + ", seed: 7}", rows=rows)
    first = load_examples(config.task, seed=0)
    again = load_examples(config.task, seed=0)
    assert [ex.parts.shots for ex in first] == [ex.parts.shots for ex in again]
    for example in first:
        assert len(example.parts.shots) == 3
        assert all(prompt != example.parts.query for prompt, _ in example.parts.shots)
    other_seed = load_examples(replace(config.task, fewshot=replace(config.task.fewshot, seed=8)), seed=0)
    assert [ex.parts.shots for ex in other_seed] != [ex.parts.shots for ex in first]
    # a shot pool (another file) that holds the evaluated question itself: that shot is skipped
    config = _config(tmp_path, "  fewshot: {n: 2, dataset: " + str(tmp_path / "shots.jsonl") + ", order: first}",
                     rows=rows, shots=[rows[0], *_rows(2, prefix="s")])
    example = load_examples(config.task, seed=0)[0]
    assert [prompt for prompt, _ in example.parts.shots] == ["Q: s0?\nA:", "Q: s1?\nA:"]


def test_shots_are_drawn_per_example_unless_one_set_is_asked_for(tmp_path):
    """`order: per_example` (the default, as lm-evaluation-harness samples): each example draws its own shots,
    the same ones in every run, never its own row (the pool here is the evaluated split itself);
    `order: random` gives every example the same set (but its own row)."""
    rows = _rows(30)
    pool = "  fewshot: {n: 2, dataset: " + str(tmp_path / "test.jsonl")
    config = _config(tmp_path, pool + ", seed: 3}", rows=rows)
    assert config.task.fewshot.order == "per_example"
    examples = load_examples(config.task, seed=0)
    sets = [frozenset(ex.parts.shots) for ex in examples]
    assert len(set(sets)) > len(examples) // 2  # different examples, different shots
    assert sets[0] != sets[1]
    assert all(ex.parts.query not in {prompt for prompt, _ in ex.parts.shots} for ex in examples)
    assert [frozenset(ex.parts.shots) for ex in load_examples(config.task, seed=0)] == sets  # deterministic
    # one example decoded alone (a resume, a Ray worker, --limit) gets the same shots as in the whole run
    alone = load_examples(replace(config.task, sample=1), seed=0)[0]
    whole = next(ex for ex in examples if ex.example_id == alone.example_id)
    assert alone.parts.shots == whole.parts.shots
    fixed = load_examples(_config(tmp_path, pool + ", seed: 3, order: random}", rows=rows).task, seed=0)
    fixed_sets = {frozenset(ex.parts.shots) for ex in fixed}
    assert len(fixed_sets) <= 3  # one set, but where an example is one of its rows


def test_too_few_shots_is_a_data_error(tmp_path):
    config = _config(tmp_path, "  fewshot: {n: 5, dataset: " + str(tmp_path / "shots.jsonl") + "}",
                     shots=_rows(3, prefix="s"))
    with pytest.raises(DataError, match="fewshot.n is 5"):
        load_examples(config.task, seed=0)


def test_truncation_drops_far_shots_first_then_cuts_from_the_left():
    tokenizer = ByT5Tokenizer()
    parts = PromptParts("", tuple((f"Q: shot{i}?", f"a{i}") for i in range(4)), "Q: the question?\nA:")
    full, kept = prompt_ids(tokenizer, parts, PromptFormat(10_000), decoder_only=True)
    assert kept == 4
    shot_length = len(tokenizer("Q: shot0? a0\n\n", add_special_tokens=False).input_ids)
    ids, kept = prompt_ids(tokenizer, parts, PromptFormat(len(full) - 1), decoder_only=True)
    assert kept == 3 and tokenizer.decode(ids).startswith("Q: shot1?") and len(ids) == len(full) - shot_length
    ids, kept = prompt_ids(tokenizer, parts, PromptFormat(8), decoder_only=True)
    assert kept == 0 and tokenizer.decode(ids) == "uestion?\nA:"[-8:]  # the last 8 bytes: the question's end
    # an encoder-decoder prompt is cut from the right, as its tokenizer truncates, keeping EOS
    ids, kept = prompt_ids(tokenizer, parts, PromptFormat(8), decoder_only=False)
    assert kept == 0 and ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == "Q: the "


def test_task_config_errors(tmp_path):
    cases = [
        ("  fewshot: {n: 2}", "task.fewshot", "either split"),
        ("  metric: exact_match\n  answer_pattern: '####'", "task.answer_pattern", "needs a group"),
        ("  metric: f1\n  answer_pattern: '(unclosed'", "task.answer_pattern", "regular expression"),
        ("  answer_pattern: '(#)'", "task.answer_pattern", "not to bleu"),
        ("  fewshot: {n: 1, split: train}", "task.fewshot.split", "one split"),
        ("  stop: ['']", "task.stop", "non-empty"),
        ("  stop: 3", "task.stop", "must be"),
        ("  system: hi", "task.system", "chat"),
        ("  metric: pass_at_1", "task.tests", "required"),
        ("  fewshot: {n: 1, split: train, sed: 3}", "task.fewshot.sed", "did you mean 'seed'"),
        ("  source: question", "task.source", "not both"),
    ]
    for extra, key, words in cases:
        with pytest.raises(ConfigError) as info:
            _config(tmp_path, extra)
        assert info.value.key == key and words in info.value.message, (extra, info.value)


def test_order_first_with_an_offset_takes_those_rows(tmp_path):
    config = _config(tmp_path, "  fewshot: {n: 2, dataset: " + str(tmp_path / "shots.jsonl") + ", order: first, "
                     "offset: 1}", shots=_rows(4, prefix="s"))
    example = load_examples(config.task, seed=0)[0]
    assert [prompt for prompt, _ in example.parts.shots] == ["Q: s1?\nA:", "Q: s2?\nA:"]
    with pytest.raises(ConfigError, match="order: first"):
        _config(tmp_path, "  fewshot: {n: 2, dataset: " + str(tmp_path / "shots.jsonl") + ", offset: 1}")
    config = _config(tmp_path, "  fewshot: {n: 2, dataset: " + str(tmp_path / "shots.jsonl") + ", order: first, "
                     "offset: 3}", shots=_rows(4, prefix="s"))
    with pytest.raises(DataError, match="1 rows to draw from"):
        load_examples(config.task, seed=0)
