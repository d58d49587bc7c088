"""Chains of three models: staged speculative decoding equals the largest model at temperature 0 and follows its
distribution above 0, the chain cascade follows its composed target, a 2-model chain equals the pair methods,
counted calls match a hand count, and chain configs are checked before any model loads."""

import pytest
import torch
import yaml
from scipy.stats import chisquare
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.decoding.chain import cascade_level
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.rules import Dists
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import ModelPair
from speccascade_bench.run.plan import plan, prepare
from speccascade_bench.settings import ConfigError

from .helpers import EOS, VOCAB, perturbed, prompt, save_byte_pair, tiny_llama, tiny_t5, write_jsonl

CPU = torch.device("cpu")


def chain(family: str, seed: int = 0, noise=(0.6, 0.3)) -> ModelPair:
    build = tiny_t5 if family == "t5" else tiny_llama
    verifier = build(seed)
    middle = perturbed(verifier, noise[1], seed + 1)
    drafter = perturbed(verifier, noise[0], seed + 2)
    return ModelPair(drafter, verifier, None, CPU, torch.float32, middle=(middle,))


def pair_of(models: ModelPair) -> ModelPair:
    return ModelPair(models.drafter, models.verifier, None, CPU, torch.float32)


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("gammas", [[1, 1], [2, 3], [4, 2]])
def test_staged_greedy_equals_the_largest_model(family, gammas):
    models = chain(family)
    settings = DecodingConfig(max_new_tokens=20, temperature=0.0)
    for seed in range(4):
        verifier = decode("verifier", models, prompt(seed), settings).tokens
        staged = decode("staged_spec_decode", models, prompt(seed), settings, {"draft_lengths": gammas})
        assert staged.tokens == verifier
        assert staged.calls["verifier"] == staged.rounds == staged.levels[-1]["rounds"]
        assert staged.levels[-1]["accepted"] == staged.accepted


SAMPLED = [dict(temperature=1.0), dict(temperature=0.5), dict(temperature=1.0, top_p=0.8)]


def _verifier_two_tokens(models: ModelPair, ids, settings: DecodingConfig) -> dict[tuple, float]:
    """The exact probability of each output of two tokens (or of EOS alone) under the verifier's sampling."""
    from speccascade_bench.decoding.rules import scaled_probs

    def next_dist(tokens):
        decoder = models.decoder("verifier", ids)
        decoder.extend(tokens)
        return scaled_probs(decoder.logits()[-1], settings.temperature, settings.top_p)

    first = next_dist([])
    exact = {}
    for a in range(VOCAB):
        if first[a] <= 0:
            continue
        if a == EOS:
            exact[(a,)] = float(first[a])
            continue
        second = next_dist([a])
        for b in range(VOCAB):
            if second[b] > 0:
                exact[(a, b)] = float(first[a] * second[b])
    return exact


def _chi_square(samples: list[tuple], exact: dict[tuple, float]) -> float:
    n = len(samples)
    total = sum(exact.values())
    exact = {o: p / total for o, p in exact.items()}  # float32 sums off by ~1e-7
    outcomes = sorted(exact, key=lambda o: -exact[o])
    big = [o for o in outcomes if exact[o] * n >= 5]
    small = [o for o in outcomes if exact[o] * n < 5]
    observed = [samples.count(o) for o in big] + [sum(samples.count(o) for o in small)]
    expected = [exact[o] * n for o in big] + [sum(exact[o] for o in small) * n]
    assert sum(observed) == n, "every sample is an outcome of positive probability"
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return chisquare(observed, expected).pvalue


@pytest.mark.parametrize("sampling", SAMPLED, ids=["t1", "t0.5", "top_p"])
@pytest.mark.parametrize("family", ["t5", "llama"])
def test_staged_sampling_follows_the_largest_model(family, sampling, one_thread):
    models = chain(family, seed=3, noise=(0.8, 0.5))
    ids = prompt(5)
    settings = DecodingConfig(max_new_tokens=2, draft_length=2, **sampling)
    generator = torch.Generator().manual_seed(11)
    samples = [tuple(decode("staged_spec_decode", models, ids, settings, {"draft_lengths": [2, 2]},
                            generator).tokens) for _ in range(800)]
    assert _chi_square(samples, _verifier_two_tokens(models, ids, settings)) > 1e-3


@pytest.mark.parametrize("rules", [("opt", "opt"), ("chow", "token_v1"), ("token_v3", "diff")])
def test_chain_cascade_samples_its_composed_target(rules, one_thread):
    models = chain("t5", seed=4, noise=(0.9, 0.6))
    ids = prompt(2)
    settings = DecodingConfig(max_new_tokens=1, temperature=1.0)
    alphas = [0.2, 0.1]
    dists = []
    for role in models.roles:
        dists.append(Dists.from_logits(models.decoder(role, ids).logits(), 1.0))
    lower, _ = cascade_level(rules[0], alphas[0], dists[0], dists[1])
    target, _ = cascade_level(rules[1], alphas[1], lower, dists[2])
    generator = torch.Generator().manual_seed(3)
    params = {"rules": list(rules), "alphas": alphas, "draft_lengths": [2, 2]}
    samples = [tuple(decode("chain_spec_cascade", models, ids, settings, params, generator).tokens)
               for _ in range(800)]
    exact = {(v,): float(p) for v, p in enumerate(target.scaled[0]) if p > 0}
    assert _chi_square(samples, exact) > 1e-3


PAIR_RUNS = [
    ("spec_decode", {"draft_length": 3}, "staged_spec_decode", {"draft_lengths": [3]}),
    ("prompt_lookup", {"draft_length": 3}, "staged_spec_decode", {"draft_lengths": [3], "drafter": "prompt_lookup"}),
    *((f"spec_cascade-{rule}-{bonus}", {"rule": rule, "alpha": alpha, "draft_length": 3, "bonus": bonus},
       "chain_spec_cascade", {"rules": [rule], "alphas": [alpha], "draft_lengths": [3], "bonus": bonus})
      for rule, alpha in (("chow", 0.4), ("diff", 0.1), ("opt", 0.3), ("token_v1", 0.1), ("token_v2", 0.1),
                          ("token_v3", 0.3)) for bonus in ("target", "verifier")),
]


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)])
def test_a_two_model_chain_equals_the_pair_methods(family, temperature, top_p, one_thread):
    models = pair_of(chain(family, seed=1))
    settings = DecodingConfig(max_new_tokens=16, temperature=temperature, top_p=top_p)
    for seed in range(4):
        for name, params, chained, chain_params in PAIR_RUNS:
            ours = decode(chained, models, prompt(seed), settings, chain_params, torch.Generator().manual_seed(seed))
            theirs = decode(name.split("-")[0], models, prompt(seed), settings, params,
                            torch.Generator().manual_seed(seed))
            assert ours.tokens == theirs.tokens, name
            for counter in ("drafter_calls", "verifier_calls", "drafted", "accepted", "rounds", "rejections",
                            "deferred"):
                assert getattr(ours, counter) == getattr(theirs, counter), (name, counter)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_prompt_lookup_drafts_at_the_bottom_of_a_chain_exactly(family, one_thread):
    """`drafter: prompt_lookup` puts prompt lookup in the drafter model's place: greedy, the verifier's output;
    the drafter model never called; above 0, the verifier's distribution."""
    models = chain(family, seed=2)
    greedy = DecodingConfig(max_new_tokens=20, temperature=0.0)
    for seed in range(3):
        verifier = decode("verifier", models, prompt(seed), greedy).tokens
        for gammas, max_ngram in (([1, 1], 1), ([2, 3], 2), ([4, 2], 3)):
            params = {"draft_lengths": gammas, "drafter": "prompt_lookup", "max_ngram": max_ngram}
            result = decode("staged_spec_decode", models, prompt(seed), greedy, params)
            assert result.tokens == verifier, (seed, gammas)
            assert result.calls["drafter"] == 0 and result.calls["middle1"] > 0 and result.levels[0]["drafted"] > 0
    if family == "llama":
        return
    models = chain(family, seed=3, noise=(0.8, 0.5))
    ids = torch.cat([prompt(5), prompt(5)], 1)  # a prompt that repeats itself: lookup finds drafts
    settings = DecodingConfig(max_new_tokens=2, temperature=1.0)
    generator = torch.Generator().manual_seed(13)
    params = {"draft_lengths": [2, 2], "drafter": "prompt_lookup"}
    samples = [tuple(decode("staged_spec_decode", models, ids, settings, params, generator).tokens)
               for _ in range(800)]
    assert _chi_square(samples, _verifier_two_tokens(models, ids, settings)) > 1e-3


def test_a_cascade_level_over_prompt_lookup_defers_where_its_rule_disfavours_the_draft(one_thread):
    """With prompt lookup at the bottom, q is one-hot at the draft x, and a token rule's mixture is q where it keeps x
    and p where it defers (`deferral.ONE_HOT_RULES`): token_v3 at alpha 1 never defers, so the output is the draft;
    at alpha 0 it defers wherever x is not p's most likely token, so the output follows p (a chi-square test)."""
    models = pair_of(chain("llama", seed=4))
    ids = torch.tensor([[5, 6, 7, 5, 6]])  # the last bigram occurred at the start: lookup drafts 7
    with torch.no_grad():
        p = torch.softmax(models.verifier(input_ids=ids).logits[0, -1].float(), -1)
    assert int(p.argmax()) != 7  # so that alpha 0 defers at the draft
    settings = DecodingConfig(max_new_tokens=1, temperature=1.0)
    generator = torch.Generator().manual_seed(21)

    def first_tokens(alpha: float, n: int) -> list[int]:
        params = {"rules": ["token_v3"], "alphas": [alpha], "draft_lengths": [1], "drafter": "prompt_lookup",
                  "bonus": "verifier"}
        results = [decode("chain_spec_cascade", models, ids, settings, params, generator) for _ in range(n)]
        assert all(result.calls["drafter"] == 0 and result.levels[0]["drafted"] == 1 for result in results)
        return [result.tokens[0] for result in results]

    assert set(first_tokens(1.0, 50)) == {7}
    samples = [(token,) for token in first_tokens(0.0, 1500)]
    assert _chi_square(samples, {(v,): float(p[v]) for v in range(VOCAB) if p[v] > 0}) > 1e-3


def test_counted_calls_match_a_hand_count():
    """Three copies of one model (every draft accepted), draft lengths 1 (drafter->middle) and 3 (middle->verifier),
    three tokens. The middle settles its 3 drafts in two rounds of one drafter token each: round 1 (drafter call 1,
    middle call 1) settles d1 and its bonus m2; round 2 (drafter call 2 catches up on m2 and drafts d3; middle call
    2) settles d3 and a bonus, one more than asked. The verifier scores d1 m2 d3 in one call (its bonus is cut at
    the limit)."""
    model = tiny_t5(0)
    models = ModelPair(model, model, None, CPU, torch.float32, middle=(model,))
    settings = DecodingConfig(max_new_tokens=3, temperature=0.0)
    ids = next(prompt(s) for s in range(50) if EOS not in decode("verifier", models, prompt(s),
                                                                 DecodingConfig(max_new_tokens=5)).tokens)
    result = decode("staged_spec_decode", models, ids, settings, {"draft_lengths": [1, 3]})
    assert len(result.tokens) == 3
    assert result.calls == {"drafter": 2, "middle1": 2, "verifier": 1}
    assert result.levels[0] == {"drafted": 2, "accepted": 2, "rounds": 2, "rejections": 0, "deferred": 0.0}
    assert result.levels[1] == {"drafted": 3, "accepted": 3, "rounds": 1, "rejections": 0, "deferred": 0.0}


# --- configs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def byte_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    save_byte_pair(root)
    from transformers import ByT5Tokenizer

    middle = perturbed(tiny_t5(0, vocab=len(ByT5Tokenizer())), 0.1, 5)
    middle.config.eos_token_id, middle.config.decoder_start_token_id = 1, 0
    middle.save_pretrained(root / "middle")
    ByT5Tokenizer().save_pretrained(root / "middle")
    other = tiny_t5(0, vocab=300)
    other.save_pretrained(root / "other_vocab")
    write_jsonl(root / "task.jsonl", [{"src": f"word {i}", "tgt": f"Wort {i}"} for i in range(6)])
    return root


def _config(root, models, methods, name="chain", **extra):
    config = {"name": name, "task": {"dataset": str(root / "task.jsonl"), "source": "src", "target": "tgt",
                                     "metric": "bleu", "sample": 4},
              "models": {**models, "device": "cpu"},
              "decoding": {"max_new_tokens": 6, "temperature": 0.0, "draft_length": 2},
              "methods": methods, "timing": {"warmup": 0, "trials": 1}, "output": str(root / "out" / name), **extra}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _chain(root, *names):
    return {"chain": [str(root / name) for name in names]}


def test_a_chain_plans_every_model_alone_and_names_per_level_runs(byte_chain):
    path = _config(byte_chain, _chain(byte_chain, "drafter", "middle", "verifier"), [
        {"method": "staged_spec_decode", "draft_lengths": [[1, 2], [2, 3]]},
        {"method": "chain_spec_cascade", "rules": ["opt", "token_v1"], "alphas": [0.3, 0.1]},
        {"method": "chain_seq_cascade", "alphas": [[0.5, 0.5]]},
        {"method": "spec_decode"},
    ])
    config = load_run_config(path)
    assert config.models.roles == ("drafter", "middle1", "verifier")
    assert [run.run_id for run in config.methods] == [
        "staged_spec_decode-g1+2", "staged_spec_decode-g2+3", "chain_spec_cascade-opt+token_v1-a0.3+0.1-g2+2",
        "chain_seq_cascade-a0.5+0.5", "spec_decode-g2"]
    decoded, derived = plan(config)
    assert [run.run_id for run in decoded[:3]] == ["drafter", "middle-l1", "verifier"]
    assert [run.run_id for run in derived] == ["chain_seq_cascade-a0.5+0.5"]


@pytest.mark.parametrize("models,methods,key,message", [
    ({"chain": ["a"]}, [{"method": "verifier"}], "models.chain", "a chain needs at least two"),
    ({"chain": ["a", "b"], "drafter": "a"}, [{"method": "verifier"}], "models.drafter", "not both"),
    (None, [{"method": "staged_spec_decode", "draft_lengths": [1, 2, 3]}], "methods[0].draft_lengths",
     "has 3 values, but the chain has 2 levels (drafter->middle1, middle1->verifier)"),
    (None, [{"method": "chain_spec_cascade", "rules": ["opt"], "alphas": 0.1}], "methods[0].rules",
     "needs one name per level"),
    (None, [{"method": "chain_spec_cascade", "rules": "chow", "alphas": [0.1, 1.5]}], "methods[0].alphas",
     "at level 2 (middle1->verifier, rule 'chow')"),
    (None, [{"method": "staged_spec_decode", "draft_lengths": [1, [2, 3]]}], "methods[0].draft_lengths",
     "mixes values and lists"),
    (None, [{"method": "middle", "level": 2}], "methods[0].level", "the models have 1 middle model (levels 1 to 1)"),
    (None, [{"method": "chain_seq_cascade", "alphas": [0.2, 0.2], "thresholds": [-1, -1]}], "methods[0].thresholds",
     "not both"),
    (None, [{"method": "staged_spec_decode", "max_ngram": 3}], "methods[0].max_ngram",
     "applies only with drafter: prompt_lookup"),
    (None, [{"method": "staged_spec_decode", "drafter": "lookup"}], "methods[0].drafter",
     "did you mean 'prompt_lookup'"),
    (None, [{"method": "chain_spec_cascade", "rules": "opt", "alphas": 0.1, "drafter": "prompt_lookup"}],
     "methods[0].rules", "'opt' (level 1) reads the drafts' q, which prompt_lookup makes one-hot"),
    (None, [{"method": "chain_spec_cascade", "rules": ["token_v3", "chow"], "alphas": 0.1, "drafter": "prompt_lookup",
             "bonus": "verifier"}], "methods[0].rules", "'chow' (level 2)"),
    (None, [{"method": "chain_spec_cascade", "rules": ["token_v3", "token_v2"], "alphas": 0.1,
             "drafter": "prompt_lookup"}], "methods[0].bonus", "prompt_lookup has none: set bonus: verifier"),
])
def test_bad_chain_configs_name_the_key(byte_chain, models, methods, key, message):
    models = models or _chain(byte_chain, "drafter", "middle", "verifier")
    with pytest.raises(ConfigError) as error:
        load_run_config(_config(byte_chain, models, methods, name="bad"))
    assert error.value.key == key and message in error.value.message


def test_a_chain_of_other_vocabularies_is_refused_before_any_model_loads(byte_chain, monkeypatch):
    import speccascade_bench.models.loading as loading

    monkeypatch.setattr(loading, "_load_model", lambda *a: pytest.fail("a model was loaded"))
    config = load_run_config(_config(byte_chain, _chain(byte_chain, "drafter", "other_vocab", "verifier"),
                                     [{"method": "staged_spec_decode"}], name="vocab"))
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert error.value.key == "models.chain"
    assert "the middle1 and the verifier do not share a vocabulary: vocab_size 300 != 384" in error.value.message


def test_a_chain_run_records_calls_and_levels_and_reports_them(byte_chain):
    path = _config(byte_chain, _chain(byte_chain, "drafter", "middle", "verifier"), [
        {"method": "staged_spec_decode", "draft_lengths": [1, 2]},
        {"method": "staged_spec_decode", "draft_lengths": [1, 2], "drafter": "prompt_lookup", "max_ngram": 3},
        {"method": "chain_spec_cascade", "rules": "opt", "alphas": [[0.0, 0.0], [0.5, 0.5]]},
        {"method": "chain_spec_cascade", "rules": "token_v3", "alphas": [0.0, 0.0], "drafter": "prompt_lookup",
         "bonus": "verifier"},
        {"method": "chain_seq_cascade", "alphas": [0.5, 0.5]},
        {"method": "spec_decode"},
    ], name="round_trip")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 0, result.output
    out = byte_chain / "out" / "round_trip"
    import json

    staged = [json.loads(line) for line in (out / "examples" / "staged_spec_decode-g1+2.jsonl").open()]
    verifier = [json.loads(line) for line in (out / "examples" / "verifier.jsonl").open()]
    assert [row["prediction"] for row in staged] == [row["prediction"] for row in verifier]
    assert set(staged[0]["calls"]) == {"drafter", "middle1", "verifier"} and len(staged[0]["levels"]) == 2
    looked = [json.loads(line) for line in (out / "examples" /
                                            "staged_spec_decode-g1+2-drafter_prompt_lookup-n3.jsonl").open()]
    assert [row["prediction"] for row in looked] == [row["prediction"] for row in verifier]
    assert all(row["calls"]["drafter"] == 0 and row["calls"]["middle1"] > 0 for row in looked)
    # token_v3 at alpha 0 defers wherever the draft is not the level's greedy token: at temperature 0, the verifier's
    cascade, = (out / "examples").glob("chain_spec_cascade-*drafter_prompt_lookup*.jsonl")
    cascaded = [json.loads(line) for line in cascade.open()]
    assert [row["prediction"] for row in cascaded] == [row["prediction"] for row in verifier]
    assert all(row["calls"]["drafter"] == 0 and len(row["levels"]) == 2 for row in cascaded)
    derived = [json.loads(line) for line in (out / "examples" / "chain_seq_cascade-a0.5+0.5.jsonl").open()]
    assert {row["latency_trials_s"] for row in derived} == {None} and len(derived) == 4
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    row = summary[summary["run_id"] == "staged_spec_decode-g1+2"].iloc[0]
    assert row["draft_lengths"] == "1+2" and len(row["acceptance_by_level"].split("+")) == 2
    verifier_row = summary[summary["run_id"] == "verifier"].iloc[0]
    assert row["predicted_speedup"] > 0 and row["quality"] == verifier_row["quality"]
    assert "middle-l1" in set(summary["run_id"])
    assert "staged_spec_decode drafter=prompt_lookup" in report.output


PAPER = ["configs/wmt.yaml", "configs/cnn_dm.yaml", "configs/xsum.yaml"]
LLM = ["cnn_dm", "gsm8k", "mbpp", "nq", "squad_v2", "triviaqa", "web_questions", "wmt"]


@pytest.mark.parametrize("path", PAPER + [f"configs/llm/{name}.yaml" for name in LLM])
def test_the_paper_configs_have_a_chain_variant(path):
    from pathlib import Path

    config = load_run_config(Path(__file__).parent.parent / path, "chain")
    if "llm" in path:
        assert config.models.chain == ("google/gemma-2-2b-it", "google/gemma-2-9b-it", "google/gemma-2-27b-it")
    else:
        task = Path(path).stem
        assert config.models.chain == tuple(f"./checkpoints/t5-v1_1-{size}-{task}" for size in ("small", "base",
                                                                                                 "large"))
    methods = {run.method for run in config.methods}
    assert {"staged_spec_decode", "chain_spec_cascade", "chain_seq_cascade", "spec_decode", "spec_cascade"} <= methods


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_horizontal_staged_decoding_is_exact(family, one_thread):
    models = chain(family, seed=2)
    greedy = DecodingConfig(max_new_tokens=20, temperature=0.0)
    for seed in range(3):
        verifier = decode("verifier", models, prompt(seed), greedy).tokens
        for horizontal in (1, 2):
            params = {"draft_lengths": [2, 4], "horizontal": horizontal}
            assert decode("staged_spec_decode", models, prompt(seed), greedy, params).tokens == verifier
    if family == "llama":
        return
    models = chain(family, seed=3, noise=(0.8, 0.5))
    ids = prompt(5)
    settings = DecodingConfig(max_new_tokens=2, temperature=1.0)
    generator = torch.Generator().manual_seed(12)
    params = {"draft_lengths": [2, 3], "horizontal": 1}
    samples = [tuple(decode("staged_spec_decode", models, ids, settings, params, generator).tokens)
               for _ in range(800)]
    assert _chi_square(samples, _verifier_two_tokens(models, ids, settings)) > 1e-3


def test_horizontal_counted_calls_match_a_hand_count():
    """Three copies of one model, draft lengths (1, 3), horizontal 1, three tokens: the verifier's first draft comes
    from the middle (drafter call 1, middle call 1, which settles two tokens and keeps one), the other two from the
    drafter directly (calls 2 and 3); one verifier call accepts all three."""
    model = tiny_t5(0)
    models = ModelPair(model, model, None, CPU, torch.float32, middle=(model,))
    ids = next(prompt(s) for s in range(50) if EOS not in decode("verifier", models, prompt(s),
                                                                 DecodingConfig(max_new_tokens=5)).tokens)
    result = decode("staged_spec_decode", models, ids, DecodingConfig(max_new_tokens=3, temperature=0.0),
                    {"draft_lengths": [1, 3], "horizontal": 1})
    assert result.calls == {"drafter": 3, "middle1": 1, "verifier": 1}
    assert result.levels[0]["drafted"] == 1 and result.levels[1]["drafted"] == 3 == result.levels[1]["accepted"]


@pytest.mark.parametrize("models,horizontal,message", [
    (("drafter", "verifier"), 1, "needs a chain of three or more models"),
    (("drafter", "middle", "verifier"), 3, "must be below the verifier's draft length (3"),
])
def test_bad_horizontal_is_refused(byte_chain, models, horizontal, message):
    path = _config(byte_chain, _chain(byte_chain, *models), [
        {"method": "staged_spec_decode", "draft_lengths": [2] * (len(models) - 2) + [3], "horizontal": horizontal}],
        name="horizontal")
    with pytest.raises(ConfigError) as error:
        load_run_config(path)
    assert error.value.key == "methods[0].horizontal" and message in error.value.message


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_a_chain_on_static_caches_matches_dynamic_caches(family, one_thread):
    from speccascade_bench.models.cached import StaticShapes

    dynamic, static = chain(family), chain(family)
    static.use_static_caches(StaticShapes(max_new_tokens=16, max_source_tokens=8, max_step_tokens=6,
                                          first_step_tokens=(1, 6)))
    runs = [("middle", {"level": 1}), ("staged_spec_decode", {"draft_lengths": [2, 4]}),
            ("staged_spec_decode", {"draft_lengths": [1, 5], "horizontal": 2}),
            ("chain_spec_cascade", {"rules": ["opt", "token_v2"], "alphas": [0.2, 0.1], "draft_lengths": [2, 4]}),
            ("chain_seq_cascade", {"thresholds": [-0.5, -0.5]})]
    for seed in range(3):
        for temperature in (0.0, 1.0):
            settings = DecodingConfig(max_new_tokens=16, temperature=temperature)
            for method, params in runs:
                ours, theirs = (decode(method, models, prompt(seed), settings, params,
                                       torch.Generator().manual_seed(seed)) for models in (static, dynamic))
                assert (ours.tokens, ours.calls) == (theirs.tokens, theirs.calls), (method, seed, temperature)
                for mine, other in zip(ours.levels or [], theirs.levels or [], strict=True):
                    # the deferred mass of a token rule is a float sum whose last bits follow the cache layout
                    assert mine == {**other, "deferred": pytest.approx(other["deferred"], rel=1e-5, abs=1e-6)}


def test_a_chain_whose_model_folder_holds_another_tokenizer_is_refused(byte_chain, tmp_path, monkeypatch):
    import shutil

    from transformers import ByT5Tokenizer

    import speccascade_bench.models.loading as loading

    shutil.copytree(byte_chain / "middle", tmp_path / "middle")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (tmp_path / "middle" / name).unlink(missing_ok=True)
    ByT5Tokenizer(extra_ids=10).save_pretrained(tmp_path / "middle")  # the same model, 10 sentinels, not 125
    monkeypatch.setattr(loading, "_load_model", lambda *a: pytest.fail("a model was loaded"))
    models = {"chain": [str(byte_chain / "drafter"), str(tmp_path / "middle"), str(byte_chain / "verifier")]}
    config = load_run_config(_config(byte_chain, models, [{"method": "staged_spec_decode"}], name="tokenizers"))
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert error.value.key == "models.chain" and "has another tokenizer than the run's" in error.value.message


def test_embedding_tables_of_different_sizes_pass_the_check_when_the_tokenizer_fits(byte_chain):
    """Qwen2.5 pads its models' tables to different sizes for one tokenizer: the check before loading accepts a
    chain whose run tokenizer fits the smallest table."""
    wide = tiny_t5(0, vocab=400)
    wide.config.eos_token_id, wide.config.decoder_start_token_id = 1, 0
    wide.save_pretrained(byte_chain / "wide")
    config = load_run_config(_config(byte_chain, _chain(byte_chain, "drafter", "wide", "verifier"),
                                     [{"method": "staged_spec_decode"}], name="wide"))
    assert prepare(config).config.models.middle == (str(byte_chain / "wide"),)
