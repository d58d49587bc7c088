"""CLI round trips on tiny random models saved to disk and a tiny JSONL task: run -> results files ->
report -> plot; resume after an interruption; clear errors for unreachable models and data."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from speccascade_bench.analysis.summary import SUMMARY_COLUMNS
from speccascade_bench.analysis.tradeoff import leviathan_speedup
from speccascade_bench.cli import app
from speccascade_bench.config.run import load_run_config
from speccascade_bench.results.record import WRITTEN
from speccascade_bench.results.rows import read_lines
from speccascade_bench.run import local, settings

from .helpers import save_byte_pair, write_jsonl

N_EXAMPLES = 6


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    save_byte_pair(root)
    write_jsonl(root / "task.jsonl", [{"translation": {"en": f"sentence number {i}", "de": f"Satz Nummer {i}"}}
                                       for i in range(N_EXAMPLES + 2)])
    return root


def make_config(root, output, temperature=1.0, **overrides):
    config = {
        "name": "tiny",
        "task": {"dataset": str(root / "task.jsonl"), "source": "translation.en", "target": "translation.de",
                 "prefix": "translate: ", "metric": "bleu", "sample": N_EXAMPLES},
        "models": {"drafter": str(root / "drafter"), "verifier": str(root / "verifier"), "device": "cpu"},
        "decoding": {"max_new_tokens": 6, "temperature": temperature, "draft_length": 3, "seed": 0},
        "methods": [
            {"method": "verifier"}, {"method": "drafter"}, {"method": "spec_decode"},
            {"method": "lossy_spec_decode", "alpha": [0.2, 0.5]},
            {"method": "token_cascade", "alpha": [0.3]},
            {"method": "seq_cascade", "alpha": [0.5]},
            {"method": "spec_cascade", "rule": "opt", "alpha": [0.0, 0.5]},
            {"method": "spec_cascade", "rule": "token_v2", "alpha": [0.1]},
        ],
        "timing": {"warmup": 1, "trials": 2},
        "output": str(output),
    }
    config.update(overrides)
    path = root / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_report_plot_round_trip(workspace):
    out = workspace / "results"
    config = make_config(workspace, out)
    cli = CliRunner()
    result = cli.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["task"]["source"] == "translation.en"
    assert {"torch", "transformers"} <= set(manifest["versions"]) and manifest["dtype"] == "float32"
    assert "started_at" in manifest and "hardware" in manifest
    run_ids = {r.run_id for r in load_run_config(config).methods}
    assert {p.stem for p in (out / "examples").glob("*.jsonl")} == run_ids
    for run_id in run_ids:
        rows = read_lines(out / "examples" / f"{run_id}.jsonl")
        assert len(rows) == N_EXAMPLES
        assert len({r["example_id"] for r in rows}) == N_EXAMPLES
        for row in rows:
            assert set(WRITTEN) <= set(row)
            assert 1 <= row["output_tokens"] <= 6 and row["latency_s"] > 0
    spec = read_lines(out / "examples" / "spec_decode-g3.jsonl")
    assert all(len(r["latency_trials_s"]) == 2 for r in spec)
    assert all(r["calls"]["verifier"] == r["rounds"] and r["accepted"] <= r["drafted"] for r in spec)
    seq = read_lines(out / "examples" / "seq_cascade-a0.5.jsonl")
    assert sum(r["calls"]["verifier"] > 0 for r in seq) == N_EXAMPLES // 2

    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert list(SUMMARY_COLUMNS) == header
    # the run ends with the summary in aligned columns, then the folder and its page (written, as `report --html`)
    lines = result.stdout.strip().splitlines()
    assert lines[-2:] == [f"results: {out}", f"page: {out / 'report.html'}"] and (out / "report.html").is_file()
    table = lines[lines.index(next(line for line in lines if line.startswith("run "))):-2]
    assert table[0].split() == ["run", "n", "quality", "vs", "verifier", "(95%", "CI)", "rel.", "latency", "median",
                                "speed-up", "weak", "numbers"]
    assert len(table) == 2 + len(run_ids) and len({line.index(" 6 ") for line in table[2:]}) == 1  # aligned n
    assert any(line.startswith("spec_cascade-opt-a0.5-g3 ") and "6 examples" in line for line in table)

    report = cli.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "| verifier | 6 |" in report.output and "spec_cascade-opt-a0.5-g3" in report.output
    assert "spread of repeated timings" in report.output  # two trials per example
    summary = (out / "summary.csv").read_text().splitlines()
    verifier_row = dict(zip(header, next(line for line in summary if line.startswith("verifier,")).split(","),
                            strict=True))
    assert 0 <= float(verifier_row["trial_cv"]) < 1
    # r, the cost of a verifier call over gamma + 1 positions in one-token steps, prices a second prediction
    costs = json.loads((out / "call_costs.json").read_text())["verify_call_cost"]
    assert set(costs) == {"3"} and costs["3"] > 0
    spec_row = dict(zip(header, next(line for line in summary if line.startswith("spec_decode-g3,")).split(","),
                        strict=True))
    assert float(spec_row["verify_cost"]) == pytest.approx(costs["3"], rel=1e-5)
    expected = leviathan_speedup(float(spec_row["acceptance_prob"]), 3, float(spec_row["cost_ratio"]),
                                 verify_cost=float(spec_row["verify_cost"]))
    assert float(spec_row["predicted_speedup_at_r"]) == pytest.approx(expected, rel=1e-4)
    assert verifier_row["verify_cost"] == "" and verifier_row["predicted_speedup_at_r"] == ""
    assert "of pred. at r" in report.output
    assert "Trade-off against the verifier" in report.output and "| spec_cascade opt | 2 |" in report.output
    assert (out / "report.md").read_text().strip() == report.output.strip()

    figures = workspace / "figures"
    plotted = cli.invoke(app, ["plot", str(out), "--out", str(figures)])
    assert plotted.exit_code == 0, plotted.output
    png, pdf = figures / "quality_latency.png", figures / "quality_latency.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    assert (figures / "quality_cost.png").stat().st_size > 10_000 and (figures / "quality_cost.pdf").exists()
    assert sorted(plotted.output.split()) == sorted(str(figures / f"{stem}.{ext}") for stem in
                                                    ("quality_latency", "quality_cost") for ext in ("png", "pdf"))


def test_plot_of_several_folders_adds_a_combined_figure_with_a_panel_each(workspace):
    from matplotlib.image import imread

    folders = []
    for name, temperature in (("task_a", 1.0), ("task_b", 0.0)):
        out = workspace / name
        config = make_config(workspace, out, temperature=temperature, name=name)
        result = CliRunner().invoke(app, ["run", "-c", str(config), "--limit", "2", "--methods",
                                          "verifier,drafter,spec_decode,spec_cascade"])
        assert result.exit_code == 0, result.output
        folders.append(out)
    figures = workspace / "combined"
    plotted = CliRunner().invoke(app, ["plot", *map(str, folders), "--out", str(figures)])
    assert plotted.exit_code == 0, plotted.output
    for name in ("task_a", "task_b"):
        assert (figures / name / "quality_latency.png").exists() and (figures / name / "quality_cost.pdf").exists()
    single = imread(figures / "task_a" / "quality_latency.png")
    combined = imread(figures / "combined_quality_latency.png")
    # a column per folder, each the full panel over the zoomed one; the single figure has them side by side
    assert combined.shape[0] > 1.5 * single.shape[0] and combined.shape[1] < 1.2 * single.shape[1]
    assert (figures / "combined_quality_cost.pdf").read_bytes()[:5] == b"%PDF-"
    missing = CliRunner().invoke(app, ["plot", str(folders[0]), str(workspace / "nowhere")])
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_greedy_run_spec_decode_matches_verifier_outputs(workspace):
    out = workspace / "greedy"
    config = make_config(workspace, out, temperature=0.0)
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--methods", "verifier,spec_decode"])
    assert result.exit_code == 0, result.output
    verifier = {r["example_id"]: r["prediction"] for r in read_lines(out / "examples" / "verifier.jsonl")}
    spec = {r["example_id"]: r["prediction"] for r in read_lines(out / "examples" / "spec_decode-g3.jsonl")}
    assert verifier == spec and len(spec) == N_EXAMPLES
    assert not (out / "examples" / "drafter.jsonl").exists()


def test_interrupted_run_resumes_every_example_exactly_once(workspace):
    out = workspace / "resume"
    cfg = load_run_config(make_config(workspace, out))
    calls = []

    def stop_after_k(run_id, done, total):
        calls.append(done)
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        local.run(cfg, settings.RunOptions(), stop_after_k)
    finished = sum(len(read_lines(p)) for p in (out / "examples").glob("*.jsonl"))
    assert finished == 7
    # a torn line, as left by a kill in the middle of a write, is dropped and redone
    with (out / "examples" / "verifier.jsonl").open("a") as f:
        f.write('{"example_id": 99, "trunc')
    result = CliRunner().invoke(app, ["run", "--config", str(out.parent / "resume.yaml")])
    assert result.exit_code == 0, result.output
    for path in (out / "examples").glob("*.jsonl"):
        ids = [r["example_id"] for r in read_lines(path)]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == N_EXAMPLES, path.name
        assert path.read_text().endswith("\n")
    # a re-run with nothing left to do decodes nothing and changes nothing
    before = {p.name: p.read_text() for p in (out / "examples").glob("*.jsonl")}
    assert CliRunner().invoke(app, ["run", "--config", str(out.parent / "resume.yaml")]).exit_code == 0
    assert before == {p.name: p.read_text() for p in (out / "examples").glob("*.jsonl")}
    fresh = CliRunner().invoke(app, ["run", "--config", str(out.parent / "resume.yaml"), "--fresh",
                                     "--methods", "verifier", "--limit", "2"])
    assert fresh.exit_code == 0
    assert [p.stem for p in (out / "examples").glob("*.jsonl")] == ["verifier"]


def test_changed_settings_refuse_to_mix_results(workspace):
    out = workspace / "mixed"
    assert CliRunner().invoke(app, ["run", "-c", str(make_config(workspace, out)), "--methods", "verifier",
                                    "--limit", "1"]).exit_code == 0
    changed = make_config(workspace, out, temperature=0.0)
    result = CliRunner().invoke(app, ["run", "-c", str(changed), "--methods", "verifier"])
    assert result.exit_code == 2 and "--fresh" in result.output


def test_variant_runs_into_its_own_folder_with_its_settings(workspace):
    out = workspace / "base"
    path = make_config(workspace, out, variants={"greedy": {"decoding": {"temperature": 0.0}}})
    result = CliRunner().invoke(app, ["run", "-c", str(path), "--variant", "greedy", "--methods",
                                      "verifier,spec_decode", "--limit", "2"])
    assert result.exit_code == 0, result.output
    variant_out = workspace / "base-greedy"
    assert not out.exists() and (variant_out / "manifest.json").exists()
    manifest = json.loads((variant_out / "manifest.json").read_text())
    assert manifest["config"]["variant"] == "greedy" and manifest["config"]["name"] == "tiny-greedy"
    assert manifest["config"]["decoding"]["temperature"] == 0.0
    rows = {run: read_lines(variant_out / "examples" / f"{run}.jsonl") for run in ("verifier", "spec_decode-g3")}
    assert [r["prediction"] for r in rows["verifier"]] == [r["prediction"] for r in rows["spec_decode-g3"]]
    result = CliRunner().invoke(app, ["run", "-c", str(path), "--variant", "gredy"])
    assert result.exit_code == 2 and "did you mean 'greedy'" in result.output


def test_static_and_compiled_runs_reproduce_the_dynamic_cache_run(workspace):
    """Through the CLI, on one draft length: every step shape of a longer one is compiled and checked by
    tests/test_static_cache.py, and each shape costs seconds of compilation on a CPU."""
    outputs = {}
    for cache, compile_mode in (("dynamic", "none"), ("static", "none"), ("static", "default")):
        out = workspace / f"cache_{cache}_{compile_mode}"
        models = {"drafter": str(workspace / "drafter"), "verifier": str(workspace / "verifier"), "device": "cpu",
                  "cache": cache, "compile": compile_mode}
        path = make_config(workspace, out, temperature=0.0, models=models)
        raw = yaml.safe_load(path.read_text())
        raw["decoding"]["draft_length"] = 1
        path.write_text(yaml.safe_dump(raw))
        result = CliRunner().invoke(app, ["run", "-c", str(path), "--methods", "verifier,spec_decode,spec_cascade"])
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert (manifest["config"]["models"]["cache"], manifest["config"]["models"]["compile"]) == (cache, compile_mode)
        outputs[cache, compile_mode] = {
            p.stem: [(r["prediction"], r["output_tokens"], r["drafted"], r["accepted"], r["rounds"])
                     for r in read_lines(p)] for p in sorted((out / "examples").glob("*.jsonl"))}
    assert len(outputs["dynamic", "none"]) == 5
    assert outputs["static", "none"] == outputs["dynamic", "none"] == outputs["static", "default"]


def test_unreachable_hub_model_and_dataset_fail_with_a_message(workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = workspace / "hub"
    config = make_config(workspace, out)
    raw = yaml.safe_load(config.read_text())
    raw["models"]["verifier"] = "no-such-org/no-such-model"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2
    assert "could not load the verifier 'no-such-org/no-such-model'" in result.output
    raw["task"] = {"dataset": "no-such-org/no-such-dataset", "source": "a", "target": "b"}
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", "-c", str(config)])
    assert result.exit_code == 2 and "could not load dataset 'no-such-org/no-such-dataset'" in result.output
    assert not out.exists()


def test_unknown_methods_option_is_rejected(workspace):
    result = CliRunner().invoke(app, ["run", "-c", str(make_config(workspace, workspace / "x")),
                                      "--methods", "verifier,spec_decod"])
    assert result.exit_code == 2 and "spec_decod" in result.output
    assert "did you mean 'spec_decode'" in result.output
    assert result.output.startswith("error:") and "━" not in result.output  # before any progress bar
    assert not (workspace / "x").exists()


def test_a_missing_toy_split_names_the_command_that_makes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone: no data/ folder
    root = Path(__file__).resolve().parents[1]
    for config, command in (("toy_t0.yaml", "scb toy-data --out data/toy"),
                            ("toy_llm_t0.yaml", "scb toy-data --task arithmetic --out data/toy_llm")):
        result = CliRunner().invoke(app, ["validate", "-c", str(root / "configs" / config)])
        assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
        assert "local data file not found" in result.output and command in result.output, result.output


@pytest.mark.parametrize("value", ["nan", "2.5", "abc", "", "0", "-3"])
def test_a_count_option_that_is_not_a_whole_number_above_0_is_one_line(workspace, value):
    out = workspace / "never"
    result = CliRunner().invoke(app, ["run", "-c", str(make_config(workspace, out)), "--limit", value])
    assert result.exit_code == 2 and "Usage" not in result.output and "Traceback" not in result.output
    assert result.stderr.count("error:") == 1 and result.stderr.startswith("error: --limit must be")
    assert not out.exists()
    folds = CliRunner().invoke(app, ["fit-router", str(out), "--out", str(out / "r.json"), "--folds", value])
    assert folds.exit_code == 2 and folds.stderr.startswith("error: --folds must be"), folds.output


def test_a_count_beyond_its_bound_is_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "toy"
    huge = CliRunner().invoke(app, ["toy-data", "--train", "1" + "0" * 130, "--out", str(out)])
    assert huge.exit_code == 2 and huge.stderr.startswith("error: --train must be at most 10000000, got 1000")
    assert len(huge.stderr) < 300 and not out.exists()


def test_methods_lists_every_method_and_rule_range():
    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0
    for name in ("drafter", "verifier", "seq_cascade", "token_cascade", "spec_decode", "lossy_spec_decode",
                 "spec_cascade", "token_v3 [0.0, 1.0]", "diff [-1.0, 1.0]"):
        assert name in result.output


def test_set_overrides_are_checked_recorded_and_a_resume_with_other_values_is_refused(workspace):
    out = workspace / "overridden"
    cli = CliRunner()
    run = ["run", "-c", str(make_config(workspace, out)), "--methods", "verifier,spec_decode", "--limit", "2"]
    result = cli.invoke(app, [*run, "--set", "decoding.temperature=0", "--set", "decoding.draft_length=2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["config"]["decoding"]["temperature"], manifest["config"]["decoding"]["draft_length"]) == (0.0, 2)
    assert manifest["config"]["overrides"] == ["decoding.temperature=0", "decoding.draft_length=2"]
    assert (out / "examples" / "spec_decode-g2.jsonl").is_file()  # the run ids follow the overridden values
    again = cli.invoke(app, [*run, "--set", "decoding.temperature=0", "--set", "decoding.draft_length=2"])
    assert again.exit_code == 0, again.output  # the same overrides resume (nothing left to decode)
    manifest = json.loads((out / "manifest.json").read_text())
    other = cli.invoke(app, [*run, "--set", "decoding.temperature=0.5", "--set", "decoding.draft_length=2"])
    assert other.exit_code == 2 and "holds results of another decoding configuration" in other.stderr
    for override, message in (("decoding.temperature=hot", "decoding.temperature: must be float, got str 'hot' "
                                                          "(given by --set 'decoding.temperature=hot')"),
                              ("decoding.temprature=0.5", "decoding.temprature: unknown key (did you mean "
                                                          "'temperature'?)"),
                              ("decoding.temperature=-1", "decoding.temperature: must be in"),
                              ("decoding", "--set: 'decoding' is not key.path=value"),
                              ("name.x=1", "name: is not a mapping")):
        refused = cli.invoke(app, [*run, "--set", override])
        assert refused.exit_code == 2 and refused.stderr.count("error:") == 1, (override, refused.output)
        assert message in refused.stderr and "Traceback" not in refused.output, (override, refused.stderr)
    assert json.loads((out / "manifest.json").read_text()) == manifest  # nothing refused touched the folder
