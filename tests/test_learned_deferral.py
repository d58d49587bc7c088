"""Learned deferral: the router's fit recovers a known deferral function, the learned token rule's output follows
its target (chi-square, as every rule's does) with the right extremes, routers fitted on other pairs, tokenizers,
features or on the evaluated examples are refused, and `scb fit-router` round-trips through `scb run`."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from speccascade_bench.analysis.router_fit import fit
from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.decoding import rules
from speccascade_bench.decoding.router import (
    FEATURES,
    FORMAT,
    Router,
    RouterError,
    read_router,
    sequence_features,
    tilted_deferral,
)
from speccascade_bench.models.fingerprint import weights_fingerprint
from speccascade_bench.results.derived import sequence_confidence
from speccascade_bench.results.record import ExampleRow
from speccascade_bench.run.plan import prepare
from speccascade_bench.settings import ConfigError

from .test_rule_distributions import (
    DRAFT_LOGITS,
    VERIFIER_LOGITS,
    _assert_not_sampled_from,
    _assert_sampled_from,
    _emitted_counts,
    _model_dists,
    _sampling_dist,
    _softmax,
)

# ---- recovery ----------------------------------------------------------------------------------------------


def test_the_fit_recovers_a_known_deferral_function():
    """Features whose true log-odds of "deferring pays" is linear in them: the fitted router ranks fresh examples
    as well as the truth does (AUC within 0.01 of the optimum) and points the same way."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    truth = np.array([1.5, -1.0, 0.0, 0.5, 0.0, 0.0, 0.8, -0.3])
    scale = np.array([2.0, 0.5, 1.0, 3.0, 1.0, 1.0, 0.2, 10.0])  # unstandardised features
    offset = np.array([-3.0, -1.0, 0.0, 2.0, 0.0, 0.0, -1.5, 20.0])

    def draw(n):
        z = rng.standard_normal((n, 8))
        y = rng.random(n) < 1 / (1 + np.exp(-(z @ truth - 0.2)))
        return z * scale + offset, y, z @ truth

    x, y, _ = draw(4000)
    router, scores = fit(x, y, np.ones(len(y)), "sequence")
    test_x, test_y, test_logit = draw(20000)
    fitted = np.array([router.logit(row) for row in test_x])
    best = roc_auc_score(test_y, test_logit)
    assert roc_auc_score(test_y, fitted) > best - 0.01
    assert 0.5 < scores["cv_auc"] < best + 0.02
    direction = np.array(router.coef) / np.linalg.norm(router.coef)
    assert direction @ (truth / np.linalg.norm(truth)) > 0.99
    # an uninformative feature set ranks at chance
    noise_x, noise_y = rng.standard_normal((2000, 8)), rng.random(2000) < 0.5
    _, noise = fit(noise_x, noise_y, np.ones(2000), "sequence")
    assert abs(noise["cv_auc"] - 0.5) < 0.05


def test_too_few_examples_of_one_kind_are_refused():
    from speccascade_bench.files import ResultsError

    x = np.zeros((20, 8))
    y = np.array([True] * 17 + [False] * 3)
    with pytest.raises(ResultsError, match="too few"):
        fit(x, y, np.ones(20), "sequence")
    x = np.random.default_rng(0).standard_normal((40, 8))
    x[3, 2] = np.nan
    with pytest.raises(ResultsError, match="not a finite number"):
        fit(x, np.arange(40) % 2 == 0, np.ones(40), "sequence")


def test_sequence_features_and_the_learned_confidence():
    logprobs = [-0.1, -2.0, -0.5, -0.05, -1.0]
    features = sequence_features(logprobs)
    ordered = sorted(logprobs)
    # quantiles 0, 0.1, 0.25, 0.5, 0.75, 1 interpolated between sorted values (position q * (n - 1))
    assert features[:6] == pytest.approx([ordered[0], ordered[0] + 0.4 * (ordered[1] - ordered[0]), ordered[1],
                                          ordered[2], ordered[3], ordered[4]])
    assert features[6] == pytest.approx(np.mean(logprobs)) and features[7] == 5
    assert sequence_features([]) == [0.0] * 7 + [0.0]
    router = Router("sequence", FEATURES["sequence"], (0.0,) * 8, (1.0,) * 8, (0, 0, 0, 0, 0, 0, -2.0, 0), 0.5)
    confidence = -1 / (1 + math.exp(-(0.5 - 2.0 * np.mean(logprobs))))
    assert router.probability(features) == pytest.approx(-confidence)


# ---- the learned token rule ------------------------------------------------------------------------------

ROUTER = Router("token", FEATURES["token"], (0.5, 0.5, 0.3, 1.0, 1.0), (0.2, 0.2, 0.2, 0.5, 0.5),
                (-1.2, 0.6, 0.9, 0.4, -0.3), 0.1)


def reference_delta(alpha, draft_logits, verifier_logits):
    """delta per position from the unscaled distributions, written from docs/ALGORITHMS.md."""
    q, p = _softmax(np.asarray(draft_logits, float)), _softmax(np.asarray(verifier_logits, float))
    entropy = lambda d: -(d * np.log(d)).sum(-1)  # noqa: E731
    x = np.stack([q.max(-1), p.max(-1), 0.5 * np.abs(q - p).sum(-1), entropy(q), entropy(p)], -1)
    z = ((x - np.array(ROUTER.mean)) / np.array(ROUTER.scale)) @ np.array(ROUTER.coef) + ROUTER.intercept
    return 1 / (1 + np.exp(-(z + math.log(alpha / (1 - alpha)))))


@pytest.mark.parametrize(("temperature", "top_p", "alpha"), [(1.0, 1.0, 0.5), (0.5, 1.0, 0.3), (1.7, 0.8, 0.6)])
def test_the_learned_rules_output_follows_its_target(temperature, top_p, alpha):
    delta = reference_delta(alpha, DRAFT_LOGITS, VERIFIER_LOGITS)
    assert ((delta > 0.05) & (delta < 0.97)).all() and np.ptp(delta) > 0.1, "it should mix differently per position"
    q_mix = _sampling_dist(np.array(DRAFT_LOGITS), temperature, top_p)
    p_mix = _sampling_dist(np.array(VERIFIER_LOGITS), temperature, top_p)
    pi = (1 - delta[:, None]) * q_mix + delta[:, None] * p_mix
    draft, verifier = _model_dists(temperature, top_p)
    k = len(DRAFT_LOGITS) - 1
    target = rules.cascade_rule_target("learned", alpha, router=ROUTER)(draft, verifier)
    assert target.deferral.numpy() == pytest.approx(delta, rel=1e-5)
    counts = _emitted_counts(target, draft.scaled[:k], seed=23)
    _assert_sampled_from(counts, pi, "learned")
    untilted = reference_delta(0.5, DRAFT_LOGITS, VERIFIER_LOGITS)
    for wrong, label in (((1 - untilted[:, None]) * q_mix + untilted[:, None] * p_mix, "alpha ignored"),
                         ((1 - delta[:, None]) * _softmax(np.array(DRAFT_LOGITS))
                          + delta[:, None] * _softmax(np.array(VERIFIER_LOGITS)), "unscaled mixture")):
        if alpha != 0.5 or label != "alpha ignored":
            if temperature != 1.0 or top_p != 1.0 or label != "unscaled mixture":
                _assert_not_sampled_from(counts, wrong, label)


def test_the_learned_rules_extremes_are_the_two_models():
    draft, verifier = _model_dists(1.0, 1.0)
    for alpha, model in ((0.0, draft), (1.0, verifier)):
        pi, deferral = rules.cascade_mixture("learned", alpha, draft, verifier, ROUTER)
        assert torch.equal(pi, model.scaled) and set(deferral.tolist()) == {alpha}
    with pytest.raises(ValueError, match="needs a router"):
        rules.cascade_mixture("learned", 0.5, draft, verifier)
    weights = tilted_deferral(ROUTER, draft.probs, verifier.probs, 0.999999)
    assert (weights > 0.99).all()


# ---- refusals and the round trip -----------------------------------------------------------------------

N = 40  # examples per split


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The shipped toy pair (whose drafter and verifier differ in quality) on a small toy task of its own."""
    import shutil

    root = tmp_path_factory.mktemp("learned")
    for role in ("drafter", "verifier"):
        shutil.copytree(f"speccascade_bench/toy/pair/{role}", root / role)
    result = CliRunner().invoke(app, ["toy-data", "--out", str(root / "data"), "--train", "1",
                                      "--validation", str(N), "--test", str(N)])
    assert result.exit_code == 0, result.output
    (root / "fit.jsonl").write_bytes((root / "data" / "validation.jsonl").read_bytes())
    (root / "eval.jsonl").write_bytes((root / "data" / "test.jsonl").read_bytes())
    return root


def config(root, name, dataset, methods, **extra):
    data = {"name": name, "task": {"dataset": str(root / dataset), "source": "src", "target": "tgt",
                                   "metric": "bleu"},
            "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
            "decoding": {"max_new_tokens": 48, "temperature": 1.0, "draft_length": 3, "seed": 0},
            "methods": methods, "timing": {"warmup": 0, "trials": 1}, "output": str(root / name), **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def routers(workspace):
    fitting = config(workspace, "fitting", "fit.jsonl", [{"method": "verifier"}, {"method": "drafter"}],
                     record=["tokens"])
    result = CliRunner().invoke(app, ["run", "-c", str(fitting)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (workspace / "fitting" / "examples" / "drafter.jsonl").open()]
    stats = rows[0]["token_stats"]
    assert len(stats["features"]) == len(stats["q_ref"]) == len(stats["p_ref"]) <= 48
    assert all(len(f) == 5 for f in stats["features"]) and all(0 <= v <= 1 for v in stats["q_ref"])
    paths = {}
    for level in ("sequence", "token"):
        paths[level] = workspace / f"{level}.json"
        result = CliRunner().invoke(app, ["fit-router", str(workspace / "fitting"), "--level", level,
                                          "--out", str(paths[level]), "--folds", "2"])
        assert result.exit_code == 0, result.output
        assert "cross-validated weighted AUC" in result.output
    return paths


def test_fit_and_evaluate_round_trip(workspace, routers):
    router = read_router(routers["token"])
    fitted = router.fitted
    assert fitted["pair"] == {"drafter": str(workspace / "drafter"), "verifier": str(workspace / "verifier")}
    assert fitted["task"]["dataset"] == str(workspace / "fit.jsonl") and fitted["examples"] == list(range(N))
    assert json.loads(routers["token"].read_text())["format"] == FORMAT  # JSON, never pickle
    assert fitted["weights"] == {role: weights_fingerprint(str(workspace / role)) for role in ("drafter", "verifier")}
    evaluation = config(workspace, "evaluation", "eval.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "spec_cascade", "rule": "learned", "router": str(routers["token"]), "alpha": [0.0, 0.5, 1.0]},
        {"method": "seq_cascade", "sequence_score": "learned", "router": str(routers["sequence"]),
         "alpha": [0.0, 0.5, 1.0]}])
    result = CliRunner().invoke(app, ["run", "-c", str(evaluation), "--limit", "12"])
    assert result.exit_code == 0, result.output
    examples = workspace / "evaluation" / "examples"

    def rows(run_id):
        return {row["example_id"]: row for row in map(json.loads, (examples / f"{run_id}.jsonl").open())}

    drafter, verifier = rows("drafter"), rows("verifier")
    never = rows("spec_cascade-learned-a0-g3-rtoken")
    always = rows("spec_cascade-learned-a1-g3-rtoken")
    assert all(row["deferred"] == 0 and row["accepted"] == row["drafted"] for row in never.values())
    assert all(row["deferred"] > 0 for row in always.values())
    half = rows("seq_cascade-a0.5-sequence_score_learned-rsequence")
    deferred = [e for e, row in half.items() if row["calls"]["verifier"] > 0]
    assert len(deferred) == 6
    params = {"sequence_score": "learned", "router": str(routers["sequence"])}
    kept = [e for e in half if e not in deferred]
    typed = {e: ExampleRow.from_json(row) for e, row in drafter.items()}
    assert max(sequence_confidence(typed[e], params) for e in deferred) <= \
        min(sequence_confidence(typed[e], params) for e in kept)
    assert all(half[e]["prediction"] == verifier[e]["prediction"] for e in deferred)
    report = CliRunner().invoke(app, ["report", str(workspace / "evaluation")])
    assert "spec_cascade learned router=token" in report.output
    assert "seq_cascade sequence_score=learned router=sequence" in report.output


def refused(path, *words):
    with pytest.raises(ConfigError) as info:
        prepare(load_run_config(path))
    message = str(info.value)
    assert "router" in message and all(word in message for word in words), message
    return message


def test_routers_that_do_not_fit_the_run_are_refused(workspace, routers, tmp_path):
    token = json.loads(routers["token"].read_text())
    cases = {
        "other_pair": ({**token, "fitted": {**token["fitted"], "pair": {**token["fitted"]["pair"],
                                                                      "drafter": "google/t5-v1_1-small"}}},
                       ("drafter", "t5-v1_1-small")),
        "other_tokenizer": ({**token, "fitted": {**token["fitted"], "tokenizer": "google/byt5-small"}},
                            ("tokenizer", "byt5-small")),
        "other_features": ({**token, "features": ["max_q", "max_p", "tv", "entropy_q", "margin"]},
                           ("features", "fit the router again")),
        "pickled": (None, ("not JSON",)),
        "other_weights": ({**token, "fitted": {**token["fitted"], "weights": {
            **token["fitted"]["weights"], "verifier": {"bytes": 1, "sampled_sha256": "0" * 64}}}},
            ("other weights of the verifier", "fit a router")),
    }
    for name, (data, words) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(b"\x80\x04pickle" if data is None else json.dumps(data).encode())
        evaluation = config(workspace, f"refused_{name}", "eval.jsonl", [
            {"method": "verifier"}, {"method": "drafter"},
            {"method": "spec_cascade", "rule": "learned", "router": str(path), "alpha": 0.5}])
        refused(evaluation, *words)
    # the other level's router, and a missing one
    wrong = config(workspace, "wrong_level", "eval.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "spec_cascade", "rule": "learned", "router": str(routers["sequence"]), "alpha": 0.5}])
    refused(wrong, "sequence-level", "--level token")
    missing = config(workspace, "missing", "eval.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "spec_cascade", "rule": "learned", "router": str(tmp_path / "nowhere.json"), "alpha": 0.5}])
    refused(missing, "cannot be read", "fit-router")
    result = CliRunner().invoke(app, ["run", "-c", str(missing)])
    assert result.exit_code == 2 and "nowhere.json" in result.output and "Traceback" not in result.output


def test_no_leakage_the_evaluated_examples_are_never_the_fitted_ones(workspace, routers):
    fitted_ids = set(read_router(routers["token"]).fitted["examples"])
    # the same file and split as the fit: refused, naming the overlap
    same = config(workspace, "same_split", "fit.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "spec_cascade", "rule": "learned", "router": str(routers["token"]), "alpha": 0.5}])
    message = refused(same, "evaluates", "another split")
    assert f"{len(fitted_ids)} examples" in message
    # the evaluation split: disjoint examples, accepted
    other = config(workspace, "other_split", "eval.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "seq_cascade", "sequence_score": "learned", "router": str(routers["sequence"]), "alpha": 0.5}])
    job = prepare(load_run_config(other))
    evaluated = {(str(workspace / "eval.jsonl"), e.example_id) for e in job.examples}
    fitted = {(read_router(routers["sequence"]).fitted["task"]["dataset"], e) for e in fitted_ids}
    assert evaluated and not evaluated & fitted


def test_the_shipped_toy_routers_were_fitted_on_another_split_and_the_shipped_weights():
    for pair, data in (("toy", "toy"), ("toy_llm", "toy_llm")):
        for level in ("seq", "token"):
            fitted = read_router(f"results/toy/routers/{pair}_{level}_t1.json").fitted
            assert fitted["task"]["dataset"] == f"data/{data}/validation.jsonl"
            assert fitted["task"]["split"] == "validation"
            # fitted on the models as shipped: a pair trained again needs its routers fitted again
            assert fitted["weights"] == {role: weights_fingerprint(fitted["pair"][role])
                                         for role in ("drafter", "verifier")}
    for name, data in (("toy_learned_t1", "toy"), ("toy_llm_learned_t1", "toy_llm"), ("toy_global_t1", "toy"),
                       ("toy_llm_global_t1", "toy_llm")):
        assert load_run_config(f"configs/{name}.yaml").task.dataset == f"data/{data}/test.jsonl"


def test_fitting_refuses_folders_without_both_models(workspace, routers, tmp_path):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(workspace / "fitting", folder)
    (folder / "examples" / "verifier.jsonl").unlink()
    result = CliRunner().invoke(app, ["fit-router", str(folder), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "no verifier outputs" in result.output and "Traceback" not in result.output
    shutil.copytree(workspace / "evaluation", tmp_path / "no_tokens") if (workspace / "evaluation").exists() else None
    other = config(workspace, "fitting_plain", "fit.jsonl", [{"method": "verifier"}, {"method": "drafter"}])
    assert CliRunner().invoke(app, ["run", "-c", str(other), "--limit", "6"]).exit_code == 0
    result = CliRunner().invoke(app, ["fit-router", str(workspace / "fitting_plain"), "--level", "token",
                                      "--out", str(tmp_path / "t.json")])
    assert result.exit_code == 2 and "record: [tokens]" in result.output
    not_ours = tmp_path / "notes.json"
    not_ours.write_text("{}")
    result = CliRunner().invoke(app, ["fit-router", str(workspace / "fitting"), "--out", str(not_ours)])
    assert result.exit_code == 2 and "not a router file" in result.output and not_ours.read_text() == "{}"
    with pytest.raises(RouterError, match="level"):
        Router.from_dict({"format": FORMAT, "version": 1, "level": "word"})
    token = json.loads(routers["token"].read_text())
    for field, value, words in (("examples", [[1]], "example ids"), ("pair", {"drafter": 5}, "drafter"),
                                ("tokenizer", None, "tokenizer"), ("task", "x", "task")):
        with pytest.raises(RouterError, match=words):
            Router.from_dict({**token, "fitted": {**token["fitted"], field: value}})


def test_a_resume_refuses_a_router_fitted_again(workspace, routers, tmp_path):
    path = tmp_path / "router.json"
    path.write_text(routers["token"].read_text())
    evaluation = config(workspace, "refit", "eval.jsonl", [
        {"method": "verifier"}, {"method": "drafter"},
        {"method": "spec_cascade", "rule": "learned", "router": str(path), "alpha": 0.5}])
    assert CliRunner().invoke(app, ["run", "-c", str(evaluation), "--limit", "2"]).exit_code == 0
    data = json.loads(path.read_text())
    data["intercept"] += 1.0
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["run", "-c", str(evaluation), "--limit", "3"])
    assert result.exit_code == 2 and "another version of the router" in result.output
