"""A deferral rule is one function and its alpha range, a metric one score function: registered here, in a
fixture, with no other file edited, each is valid in a config, runs through `scb run` and `scb report`, and
does what its definition says."""

import pytest

from speccascade_bench.decoding import deferral
from speccascade_bench.run.rows import read_lines
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
