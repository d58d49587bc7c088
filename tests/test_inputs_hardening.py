"""Hostile inputs on the config, resume and writing side: a resume never mixes rows made from two versions of a file
a run reads (a router of the same file name elsewhere, an edited `process` file), router files whose numbers or
logits leave float32 are refused before any model loads, `scb fit-router` names a forged row, `scb toy-data`
never overwrites a file it did not write, `--out` is never a link, and a model in two roles, an empty --methods
and too few folds are one-line errors."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from speccascade_bench.decoding.router import FEATURES, FORMAT, LIMIT, RANGES, Router, RouterError
from speccascade_bench.results.folder import MANIFEST_FILE
from speccascade_bench.results.rows import read_lines
from speccascade_bench.tasks.harness_source import lm_eval_files

from .test_results_folder import config, failed, pair_dir, scb  # noqa: F401 - pair_dir is a fixture


def router_data(root, level="sequence", **fields) -> dict:
    """A router for the tiny pair at `root`, fitted (by its record) on another dataset."""
    n = len(FEATURES[level])
    return {"format": FORMAT, "version": 1, "level": level, "features": list(FEATURES[level]), "mean": [0.0] * n,
            "scale": [1.0] * n, "coef": [0.1] * n, "intercept": 0.0,
            "fitted": {"pair": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier")},
                       "tokenizer": str(root / "verifier"), "task": {"dataset": "other.jsonl", "split": "train"},
                       "examples": []}, **fields}


def write_router(path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def learned(router: str) -> list[dict]:
    return [{"method": "verifier"}, {"method": "drafter"},
            {"method": "seq_cascade", "sequence_score": "learned", "router": router, "alpha": 0.5}]


RUN_ID = "seq_cascade-a0.5-sequence_score_learned-rfit_seq"


# ---- a resume never mixes rows of two versions of a file --------------------------------------------------------

def test_a_resume_refuses_another_router_of_the_same_file_name(pair_dir, tmp_path):  # noqa: F811
    first = write_router(tmp_path / "a" / "fit_seq.json", router_data(pair_dir))
    other = write_router(tmp_path / "alt" / "fit_seq.json", router_data(pair_dir, intercept=2.0))
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out, file="first", methods=learned(first)), "--limit", "1").exit_code == 0
    rows = (out / "examples" / f"{RUN_ID}.jsonl").read_text()
    # the same run id, another router: refused before any model loads, the rows as they were
    failed(scb("run", "-c", config(pair_dir, out, file="other", methods=learned(other))), RUN_ID, first, other)
    assert (out / "examples" / f"{RUN_ID}.jsonl").read_text() == rows
    # the same router moved elsewhere: its content is what counts
    moved = write_router(tmp_path / "moved" / "fit_seq.json", router_data(pair_dir))
    assert scb("run", "-c", config(pair_dir, out, file="moved", methods=learned(moved)), "--limit", "2").exit_code == 0
    assert json.loads((out / MANIFEST_FILE).read_text())["config"]["run_files"][RUN_ID]["router"]["path"] == first
    # a folder recorded before routers were recorded by run id resumes as before
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["config"].pop("run_files")
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert scb("run", "-c", config(pair_dir, out, file="moved", methods=learned(moved)), "--limit", "3").exit_code == 0


def test_a_router_of_a_run_without_rows_may_change(pair_dir, tmp_path):  # noqa: F811
    first = write_router(tmp_path / "a" / "fit_seq.json", router_data(pair_dir))
    other = write_router(tmp_path / "alt" / "fit_seq.json", router_data(pair_dir, intercept=2.0))
    out = tmp_path / "res"
    path = config(pair_dir, out, file="first", methods=learned(first))
    assert scb("run", "-c", path, "--limit", "1", "--methods", "verifier").exit_code == 0
    assert scb("run", "-c", config(pair_dir, out, file="other", methods=learned(other)), "--limit", "1").exit_code == 0
    assert json.loads((out / MANIFEST_FILE).read_text())["config"]["run_files"][RUN_ID]["router"]["path"] == other


def test_a_resume_refuses_an_edited_process_file(pair_dir, tmp_path):  # noqa: F811
    rows = tmp_path / "rows.py"
    rows.write_text("def shout(row):\n    return {**row, 'src': row['src'].upper()}\n")
    out = tmp_path / "res"
    path = config(pair_dir, out, file="p", task={"process": "rows.py:shout"}, methods=[{"method": "verifier"}])
    shutil.move(path, tmp_path / "p.yaml")  # beside its process file
    path = tmp_path / "p.yaml"
    assert scb("run", "-c", path, "--limit", "1").exit_code == 0
    assert scb("run", "-c", path, "--limit", "2").exit_code == 0  # unchanged: resumes
    rows.write_text("def shout(row):\n    return {**row, 'src': row['src'].lower()}\n")
    failed(scb("run", "-c", path), "process file", str(rows), "--fresh")
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 2


def test_a_resume_refuses_an_edited_module_beside_the_process_file(pair_dir, tmp_path):  # noqa: F811
    (tmp_path / "helper.py").write_text("def tweak(text):\n    return text.upper()\n")
    (tmp_path / "rows.py").write_text(  # reads the module beside it
        "import importlib.util\nfrom pathlib import Path\n\n"
        "_spec = importlib.util.spec_from_file_location('helper', Path(__file__).with_name('helper.py'))\n"
        "helper = importlib.util.module_from_spec(_spec)\n_spec.loader.exec_module(helper)\n\n\n"
        "def shout(row):\n    return {**row, 'src': helper.tweak(row['src'])}\n")
    out = tmp_path / "res"
    path = config(pair_dir, out, file="p", task={"process": "rows.py:shout"}, methods=[{"method": "verifier"}])
    shutil.move(path, tmp_path / "p.yaml")
    path = tmp_path / "p.yaml"
    assert scb("run", "-c", path, "--limit", "1").exit_code == 0
    (tmp_path / "helper.py").write_text("def tweak(text):\n    return text.lower()\n")
    failed(scb("run", "-c", path, "--limit", "2"), "module helper.py beside the process", "--fresh")
    assert len(read_lines(out / "examples" / "verifier.jsonl")) == 1


@pytest.mark.parametrize("record,value", [("run_files", [1]), ("run_files", {RUN_ID: 5}), ("task_files", "x")])
def test_damaged_file_records_refuse_the_resume_in_one_line(pair_dir, tmp_path, record, value):  # noqa: F811
    router = write_router(tmp_path / "r" / "fit_seq.json", router_data(pair_dir))
    out = tmp_path / "res"
    path = config(pair_dir, out, methods=learned(router))
    assert scb("run", "-c", path, "--limit", "1").exit_code == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["config"][record] = value
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    failed(scb("run", "-c", path), f"config.{record}", "fingerprints")


def test_the_process_file_recorded_is_the_users_and_never_the_packages(tmp_path):
    from speccascade_bench.tasks.kinds import source_file

    rows = tmp_path / "rows.py"
    rows.write_text("def keep(row):\n    return row\n")
    assert source_file(f"{rows}:keep") == rows
    assert source_file("json:loads") == Path(json.__file__)  # a module:function: the module's file
    assert source_file("multiple_choice") is None  # a built-in kind changes with the package, not the run


def test_an_lm_eval_tasks_files_are_its_config_its_includes_and_its_functions(tmp_path):
    (tmp_path / "task.yaml").write_text("include: _base_yaml\ntask: t\nprocess_results: !function utils.score\n")
    (tmp_path / "_base_yaml").write_text("doc_to_text: '{{q}}'\nfilter: !function sub.helpers.pick\n")
    (tmp_path / "utils.py").write_text("def score(doc, results): return {}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helpers.py").write_text("def pick(x): return x\n")
    (tmp_path / "unrelated.yaml").write_text("task: other\n")
    found = lm_eval_files(tmp_path / "task.yaml")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == [
        "_base_yaml", "sub/helpers.py", "task.yaml", "utils.py"]
    assert found[0] == tmp_path / "task.yaml" and lm_eval_files(None) == []


# ---- router files -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change,words", [
    ({"intercept": int("9" * 400)}, "`intercept` must be a finite number"),
    ({"coef": [1e308] * 8}, "`coef` must be a list of finite numbers"),
    ({"coef": [10**400] + [0] * 7}, "`coef` must be a list of finite numbers"),
    ({"mean": [-1e300] + [0.0] * 7}, "`mean` must be a list of finite numbers"),
    ({"scale": [1e-300] + [1.0] * 7, "coef": [0.0] * 8}, "`scale` and `mean` standardise logprob_q0"),
    ({"coef": [1e27] * 8}, "`coef` with this `mean`, `scale` and `intercept` gives logits up to"),
])
def test_routers_whose_numbers_or_logits_overflow_are_refused(change, words):
    with pytest.raises(RouterError, match=words.replace("(", r"\(")):
        Router.from_dict({**router_data_plain(), **change})


def router_data_plain(level="sequence") -> dict:
    n = len(FEATURES[level])
    return {"format": FORMAT, "version": 1, "level": level, "features": list(FEATURES[level]), "mean": [0.0] * n,
            "scale": [1.0] * n, "coef": [0.1] * n, "intercept": 0.0, "fitted": {
                "pair": {"drafter": "d", "verifier": "v"}, "tokenizer": "v", "task": {}, "examples": []}}


def test_a_router_within_the_bound_gives_finite_float32_logits_at_the_extremes():
    """The largest logits a router may have, at every corner of its token features' ranges, in the token rule's
    float32 arithmetic: finite, and its deferral weight a probability."""
    n = len(FEATURES["token"])
    coef = 0.9 * LIMIT / (n * max(high for _, high in RANGES["token"]))
    router = Router.from_dict({**router_data_plain("token"), "coef": [coef] * n, "intercept": 1.0})
    corners = torch.stack([torch.tensor([RANGES["token"][i][bit] for i, bit in enumerate(bits)], dtype=torch.float32)
                           for bits in ((0,) * n, (1,) * n, (1, 0, 1, 0, 1))])
    logits = router.logits(corners)
    assert torch.isfinite(logits).all() and logits.abs().max() > 1e28
    assert torch.isfinite(torch.sigmoid(logits)).all()
    assert math.isfinite(Router.from_dict({**router_data_plain(), "coef": [-coef / 1e5] * 8}).logit(
        [-1e4] * 7 + [32768.0]))


def test_sequence_features_of_any_log_probabilities_stay_in_their_ranges():
    """The logit bound holds for what a run computes: -inf or NaN log-probabilities (a half-precision drafter's
    overflow) count as the floor, so the sequence rule never ranks a NaN."""
    from speccascade_bench.decoding.router import sequence_features

    router = Router.from_dict({**router_data_plain(), "coef": [1.0] * 8})
    for logprobs in ([float("nan")] * 3, [float("-inf"), -1.0], [-1e9, 0.0], []):
        features = sequence_features(logprobs)
        assert all(low <= x <= high for x, (low, high) in zip(features, RANGES["sequence"], strict=True))
        assert 0.0 <= router.probability(features) <= 1.0


def test_a_router_that_overflows_stops_the_run_before_any_model_loads(pair_dir, tmp_path, monkeypatch):  # noqa: F811
    import speccascade_bench.models.loading as loading

    router = write_router(tmp_path / "r" / "huge.json", router_data(pair_dir, coef=[1e308] * 8))
    monkeypatch.setattr(loading, "_load_model", lambda *a: pytest.fail("a model was loaded"))
    path = config(pair_dir, tmp_path / "res", methods=learned(router))
    for verb in ("validate", "run"):
        failed(scb(verb, "-c", path), "methods (seq_cascade-a0.5-sequence_score_learned-rhuge).router", router,
               "`coef`")
    assert not (tmp_path / "res").exists()


# ---- fit-router on forged rows ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitting(pair_dir, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("fitting") / "res"
    path = config(pair_dir, out, file="fitting", methods=[{"method": "verifier"}, {"method": "drafter"}],
                  record=["tokens"])
    assert scb("run", "-c", path).exit_code == 0
    return out


def _forge(folder, change):
    path = folder / "examples" / "drafter.jsonl"
    rows = read_lines(path)
    change(rows[0])
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("level,change,words", [
    ("sequence", lambda row: row.update(token_logprobs=["a", "b"]), "token_logprobs"),
    ("sequence", lambda row: row.update(token_logprobs=[5.0, -1.0]), "log-probabilities (numbers <= 0)"),
    ("sequence", lambda row: row.update(score="high"), "score"),
    ("token", lambda row: row["token_stats"]["features"].__setitem__(0, [0.5, 0.5]), "token_stats.features"),
    ("token", lambda row: row["token_stats"]["features"].__setitem__(0, ["x"] * 5), "token_stats.features"),
    ("token", lambda row: row["token_stats"].update(q_ref=row["token_stats"]["q_ref"][:-1]), "token_stats.q_ref"),
    ("token", lambda row: row["token_stats"].update(p_ref=["0.5"] * len(row["token_stats"]["p_ref"])),
     "token_stats.p_ref"),
])
def test_fit_router_names_the_file_and_the_row_of_a_forged_row(fitting, tmp_path, level, change, words):
    folder = tmp_path / "forged"
    shutil.copytree(fitting, folder)
    _forge(folder, change)
    output = failed(scb("fit-router", folder, "--level", level, "--out", tmp_path / "r.json", "--folds", 2),
                    "drafter.jsonl", words)
    assert "example 0" in output or "line 1 " in output  # the row, by its example or its line
    assert "Error" not in output and not (tmp_path / "r.json").exists()


# ---- toy-data and --out -------------------------------------------------------------------------------------------

SIZES = ("--train", 3, "--validation", 2, "--test", 2)


def test_toy_data_never_overwrites_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    (out / "test.jsonl").write_text("mine\n")
    failed(scb("toy-data", "--out", out, *SIZES), str(out / "test.jsonl"), "not written by `scb toy-data`")
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl"] and (out / "test.jsonl").read_text() == "mine\n"
    (out / "test.jsonl").unlink()
    assert scb("toy-data", "--out", out, *SIZES).exit_code == 0
    assert scb("toy-data", "--out", out, "--train", 4, "--validation", 3, "--test", 5).exit_code == 0  # its own
    assert len((out / "test.jsonl").read_text().splitlines()) == 5
    with (out / "test.jsonl").open("a") as f:
        f.write('{"src": "my own", "tgt": "row"}\n')  # changed since: no longer only toy-data's
    failed(scb("toy-data", "--out", out, *SIZES), "test.jsonl", "changed since")
    assert len((out / "test.jsonl").read_text().splitlines()) == 6
    (out / ".toy-data.json").unlink()  # unmarked files that hold what toy-data would write (an older version's)
    (out / "test.jsonl").unlink()
    assert scb("toy-data", "--out", out, "--train", 4, "--validation", 3, "--test", 5).exit_code == 0
    assert scb("toy-data", "--out", out, *SIZES).exit_code == 0
    (out / ".toy-data.json").write_text("my notes")
    failed(scb("toy-data", "--out", out, *SIZES), ".toy-data.json", "not written by `scb toy-data`")


def test_an_empty_out_is_an_error_and_writes_nothing(pair_dir, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out, methods=[{"method": "verifier"}]), "--limit", "1").exit_code == 0
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for value in ("", "  "):
        for args in (("toy-data", "--out", value, *SIZES), ("report", out, "--html", "--out", value),
                     ("plot", out, "--out", value)):
            failed(scb(*args), "--out", "empty")
    assert list(here.iterdir()) == []


def test_toy_data_keeps_a_file_named_as_its_temporary_file_and_never_waits_on_a_fifo(tmp_path):
    out = tmp_path / "toy"
    out.mkdir()
    (out / ".test.jsonl.tmp").write_text("mine\n")
    assert scb("toy-data", "--out", out, *SIZES).exit_code == 0
    assert (out / ".test.jsonl.tmp").read_text() == "mine\n"
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == [".test.jsonl.tmp"]
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".toy-data.json")
    failed(scb("toy-data", "--out", fifo, *SIZES), ".toy-data.json", "not written by `scb toy-data`")


def test_out_naming_a_link_is_refused_by_toy_data_report_and_plot(pair_dir, tmp_path):  # noqa: F811
    out = tmp_path / "res"
    assert scb("run", "-c", config(pair_dir, out, methods=[{"method": "verifier"}]), "--limit", "1").exit_code == 0
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    for args in (("toy-data", "--out", link, *SIZES), ("report", out, "--html", "--out", link),
                 ("plot", out, "--out", link), ("toy-data", "--out", f"{link}/", *SIZES)):
        failed(scb(*args), f"--out {link} is a link")
    assert list(target.iterdir()) == []


# ---- usability ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("models,key,words", [
    ({"drafter": "{v}", "verifier": "{v}"}, "models.verifier", "the drafter and the verifier are the same model"),
    ({"drafter": "{v}/", "verifier": "{pair}/./verifier"}, "models.verifier", "same model"),
    ({"drafter": "{tmp}/link", "verifier": "{v}"}, "models.verifier", "same model"),
    ({"drafter": "{tmp}/copy", "verifier": "{v}"}, "models.verifier", "same model"),  # the same bytes elsewhere
    ({"drafter": "random:t5-v1_1-small", "verifier": "random:t5-v1_1-small"}, "models.verifier", "same model"),
    ({"chain": ["{d}", "{d}", "{v}"]}, "models.chain", "the drafter and the middle1 are the same model"),
    ({"drafter": "{d}", "middle": ["{v}"], "verifier": "{v}"}, "models.verifier", "the middle1 and the verifier"),
])
def test_one_model_in_two_roles_is_refused_at_config_reading(pair_dir, tmp_path, models, key, words):  # noqa: F811
    (tmp_path / "link").symlink_to(pair_dir / "verifier")
    shutil.copytree(pair_dir / "verifier", tmp_path / "copy")
    names = {"d": pair_dir / "drafter", "v": pair_dir / "verifier", "pair": pair_dir, "tmp": tmp_path}
    data = yaml.safe_load(open(config(pair_dir, tmp_path / "res")))
    data["models"] = {"device": "cpu", **{role: [n.format(**names) for n in value] if isinstance(value, list)
                                          else value.format(**names) for role, value in models.items()}}
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(data))
    failed(scb("validate", "-c", path), f"{path}: {key}:", words, "each role needs a model of its own")


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_an_empty_methods_option_is_an_error(pair_dir, tmp_path, value):  # noqa: F811
    failed(scb("run", "-c", config(pair_dir, tmp_path / "res"), "--methods", value), "--methods names no method")
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("value", ["0", "1", "-1"])
def test_too_few_folds_give_the_true_bound(tmp_path, value):
    failed(scb("fit-router", tmp_path, "--out", tmp_path / "r.json", "--folds", value),
           f"--folds must be at least 2, got {value}")


def test_a_router_file_that_is_a_fifo_or_nested_too_deeply_is_one_line_without_waiting(tmp_path):
    from speccascade_bench.decoding.router import read_router

    fifo = tmp_path / "router.json"
    os.mkfifo(fifo)
    with pytest.raises(RouterError, match="router.json is not a regular file \\(a FIFO\\)"):
        read_router(fifo)  # no writer: a blocking open would wait for ever
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RouterError, match="deep.json is nested too deeply"):
        read_router(deep)
