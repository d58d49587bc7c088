"""A deferral rule is one function and its alpha range, a metric one score function: registered here, in a
fixture, with no other file edited, each is valid in a config, runs through `scb run` and `scb report`, and
does what its definition says."""

import json

import pandas as pd
import pytest

from speccascade_bench.decoding import deferral
from speccascade_bench.results.rows import read_lines
from speccascade_bench.tasks import metrics

from .test_results_folder import config, failed, pair_dir, scb  # noqa: F401 - pair_dir is a fixture


@pytest.fixture
def margin_rule():
    """Defer a position iff the verifier's top probability beats the drafter's by more than alpha, alpha in
    [0, 1]: at alpha 1 it never defers (the output is the drafter's), at alpha 0 wherever p is surer."""

    @deferral.deferral_rule("margin", alpha=(0.0, 1.0))
    def defer_margin(draft, verifier, alpha: float):
        return verifier.probs.amax(-1) - draft.probs.amax(-1) > alpha

    yield defer_margin
    del deferral.RULES["margin"]


def test_a_rule_registered_in_one_place_runs_and_reports(pair_dir, tmp_path, margin_rule):  # noqa: F811
    out = tmp_path / "margin"
    methods = [{"method": "verifier"}, {"method": "drafter"},
               {"method": "spec_cascade", "rule": "margin", "alpha": [0.0, 1.0]}]
    path = config(pair_dir, out, methods=methods)
    result = scb("run", "-c", path)
    assert result.exit_code == 0, result.output
    never = read_lines(out / "examples" / "spec_cascade-margin-a1-g2.jsonl")
    drafter = {row["example_id"]: row["prediction"] for row in read_lines(out / "examples" / "drafter.jsonl")}
    assert never and all(row["prediction"] == drafter[row["example_id"]] for row in never)  # greedy, no deferral
    assert all(row["deferred"] == 0 for row in never)
    report = scb("report", out)
    assert report.exit_code == 0 and "spec_cascade-margin-a0-g2" in report.output, report.output
    out_of_range = config(pair_dir, tmp_path / "bad", file="bad",
                          methods=[{"method": "spec_cascade", "rule": "margin", "alpha": 1.5}])
    failed(scb("run", "-c", out_of_range), "methods[0].alpha", "must be in [0, 1]", "rule 'margin'")


def test_a_rule_name_registered_twice_is_refused(margin_rule):
    with pytest.raises(ValueError, match="'margin' is registered twice"):
        deferral.deferral_rule("margin")(margin_rule)


@pytest.fixture
def contains_metric():
    """100 when the prediction contains the first reference, else 0."""

    @metrics.register_metric("contains")
    def contains(prediction, references, pattern, normalize):
        return 100.0 * (references[0] in prediction)

    yield contains
    del metrics.REGISTRY["contains"]


def test_a_metric_registered_in_one_place_scores_runs_and_reports(pair_dir, tmp_path, contains_metric):  # noqa: F811
    assert metrics.example_score("contains", "a Satz 3 b", ["Satz 3"]) == 100.0
    assert metrics.corpus_score("contains", ["Satz 3", "x"], ["Satz 3", "Satz 4"]) == 50.0
    out = tmp_path / "contains"
    result = scb("run", "-c", config(pair_dir, out, task={"metric": "contains"}))
    assert result.exit_code == 0, result.output
    rows = read_lines(out / "examples" / "verifier.jsonl")
    assert all(row["score"] == 100.0 * (row["reference"] in row["prediction"]) for row in rows)
    report = scb("report", out)
    assert report.exit_code == 0 and "contains" in report.output, report.output
    failed(scb("run", "-c", config(pair_dir, tmp_path / "bad", file="bad", task={"metric": "contain"})),
           "task.metric", "did you mean 'contains'")


PLUGIN = '''
from speccascade_bench.decoding.deferral import deferral_rule
from speccascade_bench.tasks.kinds import task_kind
from speccascade_bench.tasks.metrics import register_metric


@deferral_rule("never_or_always", alpha=(0.0, 1.0))
def never_or_always(draft, verifier, alpha):
    """Defer every position at alpha 0, none at alpha 1."""
    return (verifier.probs.amax(-1) * 0 + alpha) < 0.5


@register_metric("starts_alike")
def starts_alike(prediction, references, pattern, normalize):
    return 100.0 * (prediction[:1] == references[0][:1])


@task_kind("numbered")
def numbered(row):
    return {**row, "src": "number " + row["src"]}
'''


@pytest.fixture
def plugin_file(tmp_path):
    """A plugin file outside the package registering a rule, a metric and a task kind; after the test, a fresh
    process's registries (nothing registered, nothing loaded)."""
    from speccascade_bench import plugins
    from speccascade_bench.tasks import kinds

    path = tmp_path / "my_plugins.py"
    path.write_text(PLUGIN)
    yield path
    deferral.RULES.pop("never_or_always", None)
    metrics.REGISTRY.pop("starts_alike", None)
    kinds.KINDS.pop("numbered", None)
    plugins._loaded.clear()


def _forget_plugins():
    """What `scb report` in a new process knows: none of the plugin's names."""
    from speccascade_bench import plugins
    from speccascade_bench.tasks import kinds

    deferral.RULES.pop("never_or_always")
    metrics.REGISTRY.pop("starts_alike")
    kinds.KINDS.pop("numbered")
    plugins._loaded.clear()


def test_a_plugin_file_registers_a_rule_a_metric_and_a_task_kind_for_run_and_report(pair_dir, tmp_path,  # noqa: F811
                                                                                    plugin_file):
    out = tmp_path / "plugged"
    methods = [{"method": "verifier"}, {"method": "drafter"},
               {"method": "spec_cascade", "rule": "never_or_always", "alpha": [0.0, 1.0]}]
    path = config(pair_dir, out, methods=methods, plugins=[str(plugin_file)],
                  task={"metric": "starts_alike", "process": "numbered"})
    result = scb("run", "-c", path)
    assert result.exit_code == 0, result.output
    verifier = {row["example_id"]: row for row in read_lines(out / "examples" / "verifier.jsonl")}
    drafter = {row["example_id"]: row for row in read_lines(out / "examples" / "drafter.jsonl")}
    always = read_lines(out / "examples" / "spec_cascade-never_or_always-a0-g2.jsonl")
    never = read_lines(out / "examples" / "spec_cascade-never_or_always-a1-g2.jsonl")
    assert all(row["prediction"] == verifier[row["example_id"]]["prediction"] for row in always)  # greedy
    assert all(row["prediction"] == drafter[row["example_id"]]["prediction"] for row in never)
    assert all(row["score"] == 100.0 * (row["prediction"][:1] == row["reference"][:1]) for row in always)
    assert all(row["input_tokens"] > len("sentence 0") for row in always)  # prompted through the kind ("number ...")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["plugins"] == [str(plugin_file)]
    assert f"plugin {plugin_file}" in manifest["config"]["task_files"]
    _forget_plugins()  # a report in a fresh process: the metric is read from the rows' scores
    report = scb("report", out)
    assert report.exit_code == 0, report.output
    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    assert summary.loc["verifier", "quality"] == pytest.approx(
        sum(row["score"] for row in verifier.values()) / len(verifier))
    assert "spec_cascade-never_or_always-a1-g2" in report.output


def test_an_edited_plugin_is_refused_on_resume(pair_dir, tmp_path, plugin_file):  # noqa: F811
    out = tmp_path / "resumed"
    path = config(pair_dir, out, plugins=[str(plugin_file)], task={"metric": "starts_alike"})
    assert scb("run", "-c", path, "--limit", "2").exit_code == 0
    plugin_file.write_text(PLUGIN + "\n# edited\n")
    failed(scb("run", "-c", path), f"plugin {plugin_file}", "changed")


def test_bad_plugins_are_one_line_naming_the_entry(pair_dir, tmp_path, plugin_file):  # noqa: F811
    out = tmp_path / "never"
    cases = [
        ("a.py", "plugins", "must be list, got str"),
        ([3], "plugins", "must be a list"),
        ([str(tmp_path / "missing.py")], "plugins[0]", "is not a file"),
        (["not a module"], "plugins[0]", "neither a .py file nor a module name"),
        ([str(plugin_file), "no_such_module_anywhere"], "plugins[1]", "ModuleNotFoundError"),
    ]
    for value, key, words in cases:
        failed(scb("run", "-c", config(pair_dir, out, plugins=value)), key, words)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('plugin says no')\n")
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(broken)])), "plugins[0]",
           "RuntimeError: plugin says no")
    leaving = tmp_path / "leaving.py"
    leaving.write_text("import sys\nsys.exit(3)\n")
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(leaving)])), "plugins[0]", "SystemExit: 3")
    twice = tmp_path / "twice.py"
    twice.write_text(PLUGIN.replace('"never_or_always"', '"margin2"').replace('"starts_alike"', '"sa2"')
                     .replace('"numbered"', '"n2"') + "\n" + PLUGIN.replace('"starts_alike"', '"sa3"')
                     .replace('"numbered"', '"n3"').replace('"never_or_always"', '"margin2"'))
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(twice)])), "plugins[0]", "registered twice")
    assert not out.exists()
    deferral.RULES.pop("margin2", None)
    metrics.REGISTRY.pop("sa2", None)
    from speccascade_bench.tasks import kinds

    kinds.KINDS.pop("n2", None)


METHOD_PLUGIN = '''
import torch

from speccascade_bench.decoding import rules
from speccascade_bench.decoding.drafters import register_drafter
from speccascade_bench.decoding.methods import DRAFT_LENGTH, MethodSpec, register_method
from speccascade_bench.decoding.rules import Dists
from speccascade_bench.decoding.speculative import draft_length_of, speculative_sample


class RepeatDrafter:
    """Drafts the last token again: a drafter with no model, whose q is one-hot at its drafts."""

    calls = 0

    def __init__(self, pair, input_ids):
        self.width = pair.verifier.get_output_embeddings().out_features
        self.last = self.first = pair.start_token_id if pair.is_encoder_decoder else int(input_ids[0, -1])
        self.device = input_ids.device

    def follow(self, output):  # in a chain: draft after any prefix
        self.last = output[-1] if output else self.first

    def propose(self, settings, wanted, with_next, generator):
        drafts = torch.full((wanted,), self.last, dtype=torch.long, device=self.device)
        one_hot = torch.zeros(wanted, self.width, device=self.device).scatter_(1, drafts[:, None], 1.0)
        return drafts, Dists(one_hot, one_hot)

    def advance(self, kept, accepted, next_t, next_token):
        self.last = next_token if next_t is not None else (accepted[-1] if accepted else self.last)


def decode_repeat(pair, input_ids, settings, params, generator):
    return speculative_sample(pair, input_ids, settings, draft_length_of(settings, params), rules.lossless_target,
                              False, generator, RepeatDrafter(pair, input_ids))


def top1_target(draft, verifier):
    """The verifier's most likely token at every position, whatever the temperature."""
    top = torch.zeros_like(verifier.scaled).scatter_(-1, verifier.probs.argmax(-1, keepdim=True), 1.0)
    return rules.lossless_target(draft, Dists(top, top))


def decode_top1(pair, input_ids, settings, params, generator):
    return speculative_sample(pair, input_ids, settings, draft_length_of(settings, params), top1_target, False,
                              generator)


register_method(MethodSpec("repeat_spec", "lossless speculative decoding, drafting the last token again",
                           (DRAFT_LENGTH,), roles=("verifier",), decoder=decode_repeat))
register_drafter("repeat")(lambda pair, input_ids, params: RepeatDrafter(pair, input_ids))
register_method(MethodSpec("top1_spec", "speculative decoding towards the verifier's most likely token",
                           (DRAFT_LENGTH,), decoder=decode_top1))
'''


@pytest.fixture
def method_plugin(tmp_path):
    """A plugin file outside the package registering a drafter (as a method, and for a chain's bottom) and a
    speculative variant."""
    from speccascade_bench import plugins
    from speccascade_bench.decoding.drafters import DRAFTERS
    from speccascade_bench.decoding.methods import METHODS

    path = tmp_path / "my_methods.py"
    path.write_text(METHOD_PLUGIN)
    yield path
    for name in ("repeat_spec", "top1_spec"):
        METHODS.pop(name, None)
    DRAFTERS.pop("repeat", None)
    plugins._loaded.clear()


def test_a_plugin_file_registers_a_drafter_and_a_speculative_variant_for_run_and_report(pair_dir, tmp_path,  # noqa: F811
                                                                                        method_plugin):
    from speccascade_bench.decoding.methods import METHODS

    out = tmp_path / "methods"
    methods = [{"method": "verifier"}, {"method": "drafter"}, {"method": "repeat_spec", "draft_length": [1, 3]},
               {"method": "top1_spec", "draft_length": 2},
               {"method": "staged_spec_decode", "draft_lengths": [3], "drafter": "repeat"}]
    path = config(pair_dir, out, methods=methods, plugins=[str(method_plugin)], decoding={"temperature": 1.0})
    result = scb("run", "-c", path)
    assert result.exit_code == 0, result.output
    greedy = config(pair_dir, tmp_path / "greedy", file="greedy", methods=[{"method": "verifier"}],
                    decoding={"temperature": 0.0})
    assert scb("run", "-c", greedy).exit_code == 0
    verifier = {row["example_id"]: row["prediction"] for row in read_lines(tmp_path / "greedy" / "examples" /
                                                                           "verifier.jsonl")}
    top1 = read_lines(out / "examples" / "top1_spec-g2.jsonl")
    assert len(top1) == 3 and all(row["prediction"] == verifier[row["example_id"]] for row in top1)  # T = 1
    for run_id in ("repeat_spec-g1", "repeat_spec-g3", "staged_spec_decode-g3-drafter_repeat"):
        rows = read_lines(out / "examples" / f"{run_id}.jsonl")
        assert len(rows) == 3 and all(row["calls"]["drafter"] == 0 and row["rounds"] > 0 for row in rows)
    # the registered drafter at the bottom of a (two-model) chain is the drafter's own method, token for token
    staged = read_lines(out / "examples" / "staged_spec_decode-g3-drafter_repeat.jsonl")
    repeat = read_lines(out / "examples" / "repeat_spec-g3.jsonl")
    assert [(r["prediction"], r["rounds"], r["accepted"]) for r in staged] == \
        [(r["prediction"], r["rounds"], r["accepted"]) for r in repeat]
    from speccascade_bench.decoding.drafters import DRAFTERS

    METHODS.pop("repeat_spec")  # a report in a fresh process: the methods are read from the rows
    METHODS.pop("top1_spec")
    DRAFTERS.pop("repeat")
    report = scb("report", out)
    assert report.exit_code == 0, report.output
    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    assert {"repeat_spec-g1", "repeat_spec-g3", "top1_spec-g2"} <= set(summary.index)
    assert summary.loc["repeat_spec-g3", "drafter_calls_mean"] == 0 < summary.loc["top1_spec-g2", "drafter_calls_mean"]
    assert summary.loc["repeat_spec-g1", "tokens_per_round"] >= 1
    assert "top1_spec-g2" in report.output and "repeat_spec-g3" in report.output
    assert list(summary.index[:2]) == ["drafter", "verifier"]  # the package's methods first, as `scb run` lists them


def test_a_method_is_registered_once_and_decoded_by_a_function(method_plugin):
    from speccascade_bench.decoding.methods import DRAFT_LENGTH, METHODS, MethodSpec, register_method

    with pytest.raises(ValueError, match="'spec_decode' is registered twice"):
        register_method(METHODS["spec_decode"])
    with pytest.raises(ValueError, match="decoder is a function"):
        register_method(MethodSpec("by_name", "a decoder named, not given", (DRAFT_LENGTH,), decoder="loops:x"))
    with pytest.raises(ValueError, match="not derived, a baseline"):
        register_method(MethodSpec("alone", "a baseline", baseline=True, decoder=print))
    for name in ("my-spec", "a b", "../x", "Upper", ""):
        with pytest.raises(ValueError, match="lower-case letters"):
            register_method(MethodSpec(name, "a name no run id can hold", (DRAFT_LENGTH,), decoder=print))
    assert "by_name" not in METHODS and "alone" not in METHODS and "my-spec" not in METHODS
    from speccascade_bench.decoding.drafters import DRAFTERS, register_drafter

    with pytest.raises(ValueError, match="'prompt_lookup' is registered twice"):
        register_drafter("prompt_lookup")(print)
    with pytest.raises(ValueError, match="lower-case letters"):
        register_drafter("my-drafter")(print)
    assert set(DRAFTERS) == {"model", "prompt_lookup"}


SOURCE_PLUGIN = '''
from dataclasses import replace

from speccascade_bench.tasks.data import Example
from speccascade_bench.tasks.metrics import register_metric
from speccascade_bench.tasks.prompts import PromptParts
from speccascade_bench.tasks.sources import RowSource, SourceError, TaskSource, register_source


@register_source("counting")
class Counting(RowSource):
    """`counting:N`: N rows of a made-up translation task, another N for the split `shots`."""

    def check(self, task):
        if not self.argument(task).isdigit():
            raise SourceError("dataset", f"counting takes a number of rows, not {self.argument(task)!r}")
        return task

    def rows(self, task):
        start = 100 if task.split == "shots" else 0
        return [{"src": f"sentence {i}", "tgt": f"Satz {i}"} for i in range(start, start + int(self.argument(task)))]


register_metric("graded")(None)  # scored by the source itself


@register_source("graded")
class Graded(TaskSource):
    """`graded:WORD`: three prompts, each scored by how many letters of WORD the prediction holds."""

    def check(self, task):
        return replace(task, metric="graded")

    def examples(self, task, limit, tokenizer=None):
        word = task.dataset.split(":", 1)[1]
        texts = [f"sentence {i}" for i in range(3)][:limit]
        return [Example(i, text, word, (word,), PromptParts("", (), text)) for i, text in enumerate(texts)]

    def score(self, task, example, prediction):
        held = sum(letter in prediction for letter in example.reference)
        return 100.0 * held / len(example.reference), {"graded": {"letters": held}}


@register_source("refusing")
class Refusing(RowSource):
    def rows(self, task):
        raise SourceError("dataset", "refusing has no rows today")


@register_source("mapping")
class Mapping(RowSource):
    def rows(self, task):
        return {"src": ["a"], "tgt": ["b"]}


@register_source("crashing")
class Crashing(Graded):
    def examples(self, task, limit, tokenizer=None):
        raise RuntimeError("the examples server is down")


@register_source("bare")
class Bare(Graded):
    def score(self, task, example, prediction):
        return 50.0


@register_source("nothing")
class Nothing(RowSource):
    def check(self, task):
        return None
'''


@pytest.fixture
def source_plugin(tmp_path):
    """A plugin file outside the package registering a source of rows and a source that scores its own examples."""
    from speccascade_bench import plugins
    from speccascade_bench.tasks.sources import SOURCES

    path = tmp_path / "my_sources.py"
    path.write_text(SOURCE_PLUGIN)
    yield path
    for name in ("counting", "graded", "refusing", "mapping", "crashing", "bare", "nothing"):
        SOURCES.pop(name, None)
    metrics.REGISTRY.pop("graded", None)
    plugins._loaded.clear()


def test_a_plugin_file_registers_task_sources_for_run_and_report(pair_dir, tmp_path, source_plugin):  # noqa: F811
    from speccascade_bench.tasks.sources import SOURCES

    out = tmp_path / "counted"
    task = {"dataset": "counting:4", "fewshot": {"n": 1, "split": "shots", "order": "first"}, "metric": "chrf"}
    result = scb("run", "-c", config(pair_dir, out, plugins=[str(source_plugin)], task=task))
    assert result.exit_code == 0, result.output
    rows = read_lines(out / "examples" / "verifier.jsonl")
    assert [(row["example_id"], row["reference"]) for row in rows] == [(i, f"Satz {i}") for i in range(4)]
    alone = config(pair_dir, tmp_path / "alone", file="alone", plugins=[str(source_plugin)],
                   task={"dataset": "counting:4"})
    assert scb("run", "-c", alone).exit_code == 0
    checked = scb("validate", "-c", alone, "--check-env")  # the hub is not asked for a plugin source's dataset
    assert checked.exit_code == 0 and "task.dataset" not in checked.output, checked.output
    unshot = read_lines(tmp_path / "alone" / "examples" / "verifier.jsonl")
    assert all(a["input_tokens"] > b["input_tokens"] for a, b in zip(rows, unshot, strict=True))  # the shot, in bytes
    graded = tmp_path / "graded"
    result = scb("run", "-c", config(pair_dir, graded, plugins=[str(source_plugin)], task={"dataset": "graded:Satz"},
                                     decoding={"max_new_tokens": 6}))
    assert result.exit_code == 0, result.output
    scored = read_lines(graded / "examples" / "spec_decode-g2.jsonl")
    assert len(scored) == 3
    for row in scored:
        held = sum(letter in row["prediction"] for letter in "Satz")
        assert row["score"] == 25.0 * held and row["lm_eval"] == {"graded": {"letters": held}}
    for name in ("counting", "graded", "refusing", "mapping", "crashing", "bare", "nothing"):
        SOURCES.pop(name)  # a report in a fresh process: the sources are not needed to read the rows
    metrics.REGISTRY.pop("graded")
    for folder in (out, graded):
        report = scb("report", folder)
        assert report.exit_code == 0, report.output
    summary = pd.read_csv(graded / "summary.csv").set_index("run_id")
    assert summary.loc["spec_decode-g2", "quality"] == pytest.approx(sum(row["score"] for row in scored) / 3)


def test_task_sources_are_refused_in_one_line_before_any_model_loads(pair_dir, tmp_path, source_plugin):  # noqa: F811
    out = tmp_path / "never"
    failed(scb("run", "-c", config(pair_dir, out, task={"dataset": "countin:4"})), "task.dataset",
           "names the task source 'countin'", "no plugin registers")
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(source_plugin)], task={"dataset": "countin:4"})),
           "task.dataset", "did you mean 'counting'")
    failed(scb("run", "-c", config(pair_dir, out, task={"dataset": "lm_eval:gsm8k"})), "task.dataset",
           "give the task as task.lm_eval: NAME")
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(source_plugin)], task={"dataset": "counting:x"})),
           "task.dataset", "counting takes a number of rows, not 'x'")
    failed(scb("run", "-c", config(pair_dir, out, plugins=[str(source_plugin)], task={"dataset": "counting:2",
                                                                                      "target": "missing"})),
           "task.target", "'missing'")
    plugged = {"plugins": [str(source_plugin)]}
    for dataset, key, words in (("refusing:1", "task.dataset", "refusing has no rows today"),
                                ("mapping:1", "task.dataset", "gave dict for 'mapping:1', not a list of rows"),
                                ("crashing:1", "task.dataset", "failed in examples() for 'crashing:1': RuntimeError: "
                                 "the examples server is down"),
                                ("nothing:1", "task.dataset", "check() gave NoneType, not the task")):
        failed(scb("run", "-c", config(pair_dir, out, task={"dataset": dataset}, **plugged)), key, words)
    failed(scb("run", "-c", config(pair_dir, out, task={"dataset": "graded:x", "sample": 2}, **plugged)),
           "task.sample", "gives its examples in its own order")
    assert not out.exists()
    failed(scb("run", "-c", config(pair_dir, out, task={"dataset": "bare:x"}, **plugged)),
           "scored example 0 with '50.0', not (a number from 0 to 100, per-sample metrics or None)")
    from speccascade_bench.tasks.settings import TaskConfig, looks_like_path

    (tmp_path / "run:1").mkdir()  # a local model folder whose name holds ':' is still a path
    assert looks_like_path(str(tmp_path / "run:1")) and not TaskConfig(dataset="counting:data/a/b.jsonl").is_local
    from speccascade_bench.tasks.sources import RowSource, register_source

    with pytest.raises(ValueError, match="'counting' is registered twice"):
        register_source("counting")(RowSource)
    with pytest.raises(ValueError, match="lower-case letters"):
        register_source("my-source")
    with pytest.raises(TypeError, match="must be a TaskSource"):
        register_source("not_a_source")(dict)
