"""`load_run_config` and `scb validate` reject bad configs with messages naming the file and the key."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.finetune.config import load_finetune_config
from speccascade_bench.run.plan import validate_resources
from speccascade_bench.settings import ConfigError


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"src": f"s{i}", "tgt": f"t{i}", "nested": {"en": "x"}}) + "\n"
                            for i in range(5)))
    return path


def base_config(data_file: Path) -> dict:
    return {
        "name": "t",
        "task": {"dataset": str(data_file), "source": "src", "target": "tgt", "metric": "bleu"},
        "models": {"drafter": "google/t5-v1_1-small", "verifier": "google/t5-v1_1-large"},
        "decoding": {"max_new_tokens": 8, "temperature": 1.0, "draft_length": 5},
        "methods": [{"method": "verifier"}, {"method": "spec_cascade", "rule": "opt", "alpha": [0.1, 0.3]}],
    }


def write(tmp_path, config) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_valid_config_loads_and_expands_sweeps(tmp_path, data_file):
    cfg = load_run_config(write(tmp_path, base_config(data_file)))
    assert [r.run_id for r in cfg.methods] == ["verifier", "spec_cascade-opt-a0.1-g5", "spec_cascade-opt-a0.3-g5"]
    assert cfg.methods[1].params == {"rule": "opt", "alpha": 0.1, "draft_length": 5, "bonus": "target"}
    assert cfg.output == "results/t"
    validate_resources(cfg)


def _set(config, dotted, value):
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

BAD = [
    ("unknown top-level key", "colour", "red", "colour", "unknown key"),
    ("unknown nested key with suggestion", "decoding.temprature", 0.5, "decoding.temprature",
     "did you mean 'temperature'"),
    ("wrong type", "decoding.max_new_tokens", "many", "decoding.max_new_tokens", "must be int"),
    ("negative temperature", "decoding.temperature", -1, "decoding.temperature", "must be in"),
    ("top_p out of range", "decoding.top_p", 1.5, "decoding.top_p", "must be in"),
    ("unknown metric", "task.metric", "bleu4", "task.metric", "did you mean 'bleu'"),
    ("unknown method", "methods.1.method", "spec_cascades", "methods[1].method", "did you mean 'spec_cascade'"),
    ("unknown rule", "methods.1.rule", "optimal", "methods[1].rule", "unknown value 'optimal'"),
    ("alpha outside the rule's range", "methods.1", {"method": "spec_cascade", "rule": "chow", "alpha": 1.5},
     "methods[1].alpha", "for rule 'chow'"),
    ("missing required alpha", "methods.1", {"method": "token_cascade"}, "methods[1].alpha", "is required"),
    ("lossy alpha of 1", "methods.1", {"method": "lossy_spec_decode", "alpha": 1.0}, "methods[1].alpha",
     "[0, 1)"),
    ("missing dataset", "task.dataset", _DELETE, "task.dataset", "is required"),
    ("bad dtype", "models.dtype", "float8", "models.dtype", "unknown value"),
    ("empty methods", "methods", [], "methods", "non-empty list"),
    ("unknown method parameter", "methods.1", {"method": "spec_decode", "gamma": 3}, "methods[1].gamma",
     "unknown key"),
    ("duplicate method run", "methods.1", {"method": "verifier"}, "methods[1]", "duplicates"),
    ("bad device", "models.device", "tpu", "models.device", "unknown value"),
    ("draft length zero", "decoding.draft_length", 0, "decoding.draft_length", "must be in"),
    ("unknown cache kind", "models.cache", "paged", "models.cache", "choose from dynamic, static"),
    ("compile without a static cache", "models.compile", "reduce-overhead", "models.compile", "needs cache: static"),
    ("unknown compile mode", "models.compile", "fast", "models.compile", "unknown value 'fast'"),
    ("NaN temperature", "decoding.temperature", float("nan"), "decoding.temperature", "finite number"),
    ("infinite temperature", "decoding.temperature", float("inf"), "decoding.temperature", "finite number"),
    ("denormal temperature", "decoding.temperature", 1e-320, "decoding.temperature", "must be 0 (greedy) or"),
    ("NaN top_p", "decoding.top_p", float("nan"), "decoding.top_p", "finite number"),
    ("overflowing seed", "decoding.seed", 2**70, "decoding.seed", "must be in [0, 4.29497e+09]"),
    ("negative seed", "decoding.seed", -1, "decoding.seed", "must be in"),
    ("huge max_new_tokens", "decoding.max_new_tokens", 10**9, "decoding.max_new_tokens", "must be in [1, 32768]"),
    ("huge max_source_tokens", "task.max_source_tokens", 10**9, "task.max_source_tokens", "must be in"),
    ("huge trials", "timing", {"trials": 10**6}, "timing.trials", "must be in [1, 100]"),
    ("NaN alpha", "methods.1.alpha", float("nan"), "methods[1].alpha", "finite number"),
    ("empty dataset", "task.dataset", "", "task.dataset", "must not be empty"),
    ("huge sweep", "methods.1.alpha", [0.1] * 2000, "methods[1].alpha", "at most 1000"),
]


@pytest.mark.parametrize(("case", "key", "value", "where", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_rejected_naming_file_and_key(tmp_path, data_file, case, key, value, where, message):
    config = base_config(data_file)
    _set(config, key, value)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert info.value.key == where
    assert message in info.value.message
    assert str(path) in str(info.value)
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2
    assert where in result.output and str(path) in result.output


@pytest.mark.parametrize(("key", "value", "where", "message"), [
    ("task.dataset", "missing/file.jsonl", "task.dataset", "not found"),
    ("task.source", "text", "task.source", "field 'text' not found"),
    ("task.target", "nested.de", "task.target", "field 'nested.de' not found"),
    ("models.drafter", "./no/such/model", "models.drafter", "local model path not found"),
])
def test_resource_errors_name_the_key(tmp_path, data_file, key, value, where, message):
    config = base_config(data_file)
    _set(config, key, value)
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        validate_resources(load_run_config(path))
    assert info.value.key == where and message in info.value.message
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2 and where in result.output


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "none.yaml")


def test_dotted_fields_are_accepted_and_read(tmp_path, data_file):
    from speccascade_bench.tasks.examples import load_examples

    config = base_config(data_file)
    config["task"]["target"] = "nested.en"
    loaded = load_run_config(write(tmp_path, config))
    assert loaded.task.target == "nested.en"
    validate_resources(loaded)
    examples = load_examples(loaded.task, seed=0)
    assert len(examples) == 5 and all(example.references == ("x",) for example in examples)  # the nested value
    config["task"]["target"] = "nested.de"
    with pytest.raises(ConfigError, match="task.target"):
        validate_resources(load_run_config(write(tmp_path, config)))


def test_shipped_configs_validate():
    root = Path(__file__).parent.parent / "configs"
    for path in sorted(root.glob("*.yaml")):
        load_run_config(path)
    for path in sorted((root / "toy").glob("*.yaml")):
        load_finetune_config(path)


def test_shape_presets_validate_and_unknown_ones_are_refused(tmp_path, data_file):
    config = base_config(data_file)
    config["models"] = {"drafter": "random:t5-v1_1-small", "verifier": "random:t5-v1_1-large"}
    validate_resources(load_run_config(write(tmp_path, config)))
    config["models"]["verifier"] = "random:t5-v1_1-larg"
    with pytest.raises(ConfigError) as info:
        validate_resources(load_run_config(write(tmp_path, config)))
    assert info.value.key == "models.verifier" and "did you mean 't5-v1_1-large'" in info.value.message


def test_variant_merges_over_the_base_and_names_its_own_output(tmp_path, data_file):
    config = base_config(data_file)
    config["output"] = "runs/t"
    config["variants"] = {"greedy": {"decoding": {"temperature": 0.0}},
                          "pair": {"models": {"verifier": "google/t5-v1_1-xl"}, "name": "custom", "output": "o"}}
    path = write(tmp_path, config)
    base = load_run_config(path)
    assert base.variant is None and base.variants == ("greedy", "pair") and base.output == "runs/t"
    greedy = load_run_config(path, "greedy")
    assert (greedy.name, greedy.output, greedy.variant) == ("t-greedy", "runs/t-greedy", "greedy")
    assert greedy.decoding.temperature == 0.0
    assert greedy.decoding.draft_length == 5 and greedy.decoding.max_new_tokens == 8  # merged, not replaced
    assert greedy.models == base.models and greedy.methods == base.methods
    pair = load_run_config(path, "pair")
    assert (pair.name, pair.output, pair.models.verifier, pair.models.drafter) == \
        ("custom", "o", "google/t5-v1_1-xl", "google/t5-v1_1-small")


def test_variant_errors_name_the_variant_key(tmp_path, data_file):
    config = base_config(data_file)
    config["variants"] = {"hot": {"decoding": {"temperature": -1.0}}, "nested": {"variants": {}}}
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match="nested.variants: variants do not nest"):
        load_run_config(path)
    config["variants"] = {"hot": {"decoding": {"temperature": -1.0}}}
    path = write(tmp_path, config)
    load_run_config(path)  # the base itself is fine
    with pytest.raises(ConfigError) as err:
        load_run_config(path, "hot")
    assert err.value.key == "variants.hot.decoding.temperature" and "[0, 100]" in err.value.message
    with pytest.raises(ConfigError, match=r"unknown variant 'hott' \(did you mean 'hot'\?\)"):
        load_run_config(path, "hott")
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2 and "variants.hot.decoding.temperature" in result.output
    config["variants"] = ["greedy"]
    with pytest.raises(ConfigError, match="variants: must be a mapping"):
        load_run_config(write(tmp_path, config))


def test_validate_lists_the_base_and_every_variant(tmp_path, data_file):
    config = base_config(data_file)
    config["variants"] = {"g3": {"decoding": {"draft_length": 3}}}
    result = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config))])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    heads = [line for line in lines if not line.startswith(" ")]  # one per config, its run ids indented below
    assert len(heads) == 2 and "[g3]: ok, t-g3 -> results/t-g3" in heads[1]
    assert "spec_cascade-opt-a0.1-g3" in result.output.split(heads[1])[1]
    assert max(len(line) for line in lines if line.startswith(" ")) <= 100  # run ids wrapped, not one long line


def test_variant_error_in_a_replaced_method_list_is_located_in_the_variant(tmp_path, data_file):
    config = base_config(data_file)
    config["variants"] = {"bad": {"methods": [{"method": "verifier"}, {"method": "token_cascade", "alpha": 2.0}]},
                          "bad_name.x": {}}
    with pytest.raises(ConfigError, match="variant name 'bad_name.x'"):
        load_run_config(write(tmp_path, config))
    del config["variants"]["bad_name.x"]
    with pytest.raises(ConfigError) as err:
        load_run_config(write(tmp_path, config), "bad")
    assert err.value.key == "variants.bad.methods[1].alpha"


def _yaml_error(tmp_path, text: str) -> ConfigError:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert len(str(info.value)) < 600  # short, whatever the value
    result = CliRunner().invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output and len(result.output) < 700
    return info.value


def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, data_file):
    text = yaml.safe_dump(base_config(data_file), sort_keys=False)
    text = text.replace("  temperature: 1.0\n", "  temperature: 1.0\n  temperature: 0.0\n")
    error = _yaml_error(tmp_path, text)
    assert "duplicate key 'temperature' (line" in error.message


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, data_file):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
               f"*a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\nname: *a8\n"
    assert len(bomb) < 900
    error = _yaml_error(tmp_path, bomb)
    assert "aliases are expanded" in error.message


def test_a_huge_value_gives_a_short_message(tmp_path, data_file):
    config = base_config(data_file)
    config["decoding"]["max_new_tokens"] = "x" * 1_000_000
    error = _yaml_error(tmp_path, yaml.safe_dump(config))
    assert error.key == "decoding.max_new_tokens" and "must be int" in error.message
    config = base_config(data_file)
    config["x" * 100_000] = 1
    assert "unknown key" in _yaml_error(tmp_path, yaml.safe_dump(config)).message


def test_finetune_architecture_fields_are_checked_against_t5config(tmp_path, data_file):
    config = {"name": "ft", "task": {"dataset": str(data_file), "source": "src", "target": "tgt"},
              "model": {"architecture": {"d_modle": 64, "num_layers": 1}, "tokenizer": "byt5"},
              "output": str(tmp_path / "out")}
    path = write(tmp_path, config)
    with pytest.raises(ConfigError) as info:
        load_finetune_config(path)
    assert info.value.key == "model.architecture.d_modle" and "did you mean 'd_model'" in info.value.message
    config["model"]["architecture"] = {"d_model": float("nan")}
    with pytest.raises(ConfigError, match="finite number"):
        load_finetune_config(write(tmp_path, config))
    config["model"]["architecture"] = {"d_model": 64, "num_layers": 1}
    assert load_finetune_config(write(tmp_path, config)).architecture == {"d_model": 64, "num_layers": 1}


@pytest.mark.parametrize(("rows", "words"), [
    ([{"src": "a", "tgt": "b"}, {"src": "c", "tgt": None}], ("row 1", "'tgt'", "task.target", "is null")),
    ([{"src": "a", "tgt": "b"}, {"tgt": "d"}], ("row 1", "'src'", "task.source", "is null")),  # datasets: null
    ([{"src": "a", "tgt": "b"}, {"src": ["c"], "tgt": "d"}], ("row 1", "'src'", "must be text")),
])
def test_bad_rows_are_named_before_any_model_loads(tmp_path, rows, words, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = base_config(data)
    config["models"] = {"drafter": "no-such-org/drafter", "verifier": "no-such-org/verifier"}
    config["output"] = str(tmp_path / "out")
    result = CliRunner().invoke(app, ["run", "--config", str(write(tmp_path, config))])
    assert result.exit_code == 2 and "Traceback" not in result.output
    for word in (str(data), *words):
        assert word in result.output, (word, result.output)
    assert "no-such-org" not in result.output and not (tmp_path / "out").exists()


def test_a_non_utf8_row_deep_in_a_file_is_named_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "rows.jsonl"
    good = "".join(json.dumps({"src": f"s{i}", "tgt": f"t{i}"}) + "\n" for i in range(5000))
    data.write_bytes(good.encode() + b'{"src": "\xff\xfe", "tgt": "x"}\n')
    config = base_config(data)
    config["models"] = {"drafter": "no-such-org/drafter", "verifier": "no-such-org/verifier"}
    result = CliRunner().invoke(app, ["run", "--config", str(write(tmp_path, config))])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(data) in result.output and "line 5001: not UTF-8 text" in result.output


def test_check_env_names_each_problem_of_the_machine_in_one_line(tmp_path, data_file, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never asked here
    config = base_config(data_file)
    config["models"]["device"] = "cpu"
    config["output"] = str(tmp_path / "out")
    plain = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config))])
    assert plain.exit_code == 0 and "env ok" not in plain.output  # no machine checks without the flag
    checked = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config)), "--check-env"])
    assert checked.exit_code == 2
    errors = checked.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith(f"error: {tmp_path / 'config.yaml'}: models.") for line in errors)
    assert "'google/t5-v1_1-small' cannot be checked: HF_HUB_OFFLINE is set" in errors[0]
    assert "models.verifier: 'google/t5-v1_1-large'" in errors[1]
    assert "env ok: models.device: cpu" in checked.stdout and "GiB free on the disk" in checked.stdout
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    config["models"] = {"drafter": str(tmp_path / "small"), "verifier": str(tmp_path / "large"), "device": "cuda"}
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    local = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config)), "--check-env"])
    errors = local.stderr.strip().splitlines()
    assert local.exit_code == 2 and any("output: 0.0 GiB free" in line and "free some room" in line for line in errors)
    cuda = [line for line in errors if "models.device: cuda" in line]
    assert len(cuda) == (0 if torch.cuda.is_available() else 1) and len(errors) == 1 + len(cuda)
    assert "does not check the machine" in CliRunner().invoke(app, ["validate", "--help"]).output


def test_sample_draws_at_random_first_takes_the_first_and_limit_is_refused_with_a_pointer(tmp_path, data_file):
    from speccascade_bench.tasks.examples import load_examples

    def ids(task_keys, seed=0, limit=None):
        config = base_config(data_file)
        config["task"].update(task_keys)
        return [e.example_id for e in load_examples(load_run_config(write(tmp_path, config)).task, seed, limit)]

    assert ids({"first": 3}) == [0, 1, 2]
    drawn = {tuple(ids({"sample": 3}, seed)) for seed in range(8)}
    assert len(drawn) > 1 and all(len(d) == 3 and list(d) == sorted(d) for d in drawn)  # random, in the data's order
    assert ids({"sample": 3}, 5) == ids({"sample": 3}, 5)  # the same seed, the same examples
    assert ids({"sample": 3}, 5, limit=2) == ids({"sample": 3}, 5)[:2]  # --limit: the first of those selected
    assert ids({}) == [0, 1, 2, 3, 4]
    for keys, where, words in (({"limit": 3}, "task.limit", "task.sample: N for N examples drawn at random"),
                               ({"sample": 2, "first": 2}, "task.sample", "not both")):
        config = base_config(data_file)
        config["task"].update(keys)
        result = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config))])
        assert result.exit_code == 2 and f"{where}:" in result.stderr and words in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    harness = base_config(data_file)
    harness["task"] = {"lm_eval": "gsm8k", "sample": 5}
    with pytest.raises(ConfigError, match="task.sample: an lm-eval task's documents are taken in order"):
        load_run_config(write(tmp_path, harness))


def test_a_folder_recorded_with_task_limit_reads_it_with_its_meaning_then(tmp_path, data_file):
    from speccascade_bench.results.folder import recorded_section

    own = {"dataset": str(data_file), "source": "src", "target": "tgt", "limit": 4}
    assert recorded_section("m.json", "task", own)["sample"] == 4
    harness = {"lm_eval": "gsm8k", "limit": 7}
    task = recorded_section("m.json", "task", harness)
    assert task["first"] == 7 and task["sample"] is None and "limit" not in task


def test_every_config_error_is_reported_in_one_pass_a_line_each(tmp_path, data_file):
    config = base_config(data_file)
    config["task"]["metric"] = "blue"
    config["models"]["dtype"] = "float8"
    config["decoding"]["temperature"] = 300
    config["timing"] = {"trials": 0}
    config["methods"][1]["beta"] = 2
    result = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, config))])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 5, result.stderr
    for key in ("task.metric", "models.dtype", "decoding.temperature", "timing.trials", "methods[1].beta"):
        assert sum(f": {key}: " in line for line in lines) == 1, key
    assert all(line.startswith("error: ") for line in lines)
    run = CliRunner().invoke(app, ["run", "--config", str(write(tmp_path, config))])  # the same before anything runs
    assert run.exit_code == 2 and run.stderr == result.stderr
    many = base_config(data_file)
    many.update({f"unknown_{i:02d}": i for i in range(25)})
    result = CliRunner().invoke(app, ["validate", "--config", str(write(tmp_path, many))])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 21 and "5 more error(s)" in lines[-1], result.stderr
