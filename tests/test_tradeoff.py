"""Table 2 readings on hand-made curves."""

import pytest

from speccascade_bench.analysis.tradeoff import best_quality_within, latency_to_match, leviathan_speedup

CROSSING = [(0.3, 20.0), (0.5, 24.0), (0.7, 28.0), (1.2, 30.0)]  # reaches 26 between 0.5 and 0.7
NEVER = [(0.2, 10.0), (0.6, 15.0), (0.9, 18.0)]


def test_latency_to_match_interpolates_the_crossing():
    reading = latency_to_match(CROSSING, 26.0)
    assert reading.value == pytest.approx(0.6) and reading.interpolated
    exact = latency_to_match(CROSSING, 28.0)
    assert exact.value == pytest.approx(0.7) and not exact.interpolated
    assert latency_to_match(CROSSING, 15.0).value == pytest.approx(0.3)  # the fastest point already matches
    assert latency_to_match(list(reversed(CROSSING)), 26.0).value == pytest.approx(0.6)  # order-free


def test_latency_to_match_not_reached():
    assert latency_to_match(NEVER, 26.0) is None


def test_best_quality_within_the_verifier_latency():
    reading = best_quality_within(CROSSING, 1.0)  # between (0.7, 28) and (1.2, 30): 28 + 2 * 0.3 / 0.5
    assert reading.value == pytest.approx(29.2) and reading.interpolated
    assert best_quality_within(NEVER, 1.0).value == pytest.approx(18.0)
    assert not best_quality_within(NEVER, 1.0).interpolated
    assert best_quality_within([(1.5, 30.0), (2.0, 31.0)], 1.0) is None


def test_leviathan_speedup_formula():
    from speccascade_bench.analysis.tradeoff import leviathan_speedup

    # a = 0.8, gamma = 4, c = 0.1: (1 - 0.8^5) / (0.2 * 1.4)
    assert leviathan_speedup(0.8, 4, 0.1) == pytest.approx((1 - 0.8**5) / (0.2 * 1.4))
    assert leviathan_speedup(1.0, 4, 0.0) == pytest.approx(5.0)
    assert leviathan_speedup(0.0, 4, 0.0) == pytest.approx(1.0)
    # a cascade that also asks the drafter at the bonus position pays gamma + 1 drafter calls per round
    assert leviathan_speedup(0.8, 4, 0.1, drafter_calls=5) == pytest.approx((1 - 0.8**5) / (0.2 * 1.5))
    # a machine where the verifier call over gamma + 1 positions costs r = 1.3 one-token steps
    assert leviathan_speedup(0.8, 4, 0.1, verify_cost=1.3) == pytest.approx((1 - 0.8**5) / (0.2 * 1.7))
    assert leviathan_speedup(1.0, 4, 0.0, verify_cost=2.0) == pytest.approx(2.5)


def test_rounds_to_settle_at_its_extremes_and_by_hand():
    from speccascade_bench.analysis.tradeoff import rounds_to_settle

    assert rounds_to_settle(1.0, 2, 5) == 2.0  # every round settles 3: two rounds for 5 tokens
    assert rounds_to_settle(0.0, 2, 5) == 5.0  # every round settles 1 (the replacement)
    # gamma 1, a = 0.5: a round settles 1 or 2 tokens, each with probability 0.5; R(1) = 1, R(2) = 1 + 0.5 R(1).
    assert rounds_to_settle(0.5, 1, 2) == pytest.approx(1.5)
    assert rounds_to_settle(0.5, 1, 3) == pytest.approx(1 + 0.5 * 1.5 + 0.5 * 1)


def test_chain_speedup_is_leviathans_on_a_pair_and_prices_the_middle_model():
    from speccascade_bench.analysis.tradeoff import chain_speedup

    for a, gamma, c in ((0.9, 5, 0.3), (0.6, 3, 0.1), (1.0, 4, 0.5)):
        assert chain_speedup([a], [gamma], [c, 1.0]) == pytest.approx(leviathan_speedup(a, gamma, c))
        assert chain_speedup([a], [gamma], [c, 1.0], bonus_rows=True) == \
            pytest.approx(leviathan_speedup(a, gamma, c, gamma + 1))
    # Every draft accepted, gammas (1, 3): the middle settles 2 tokens per round (cost c0 + c1), so the 3 drafts
    # of a top round take 2 middle rounds; the top round settles 4 tokens for 2 (c0 + c1) + 1.
    assert chain_speedup([1.0, 1.0], [1, 3], [0.1, 0.4, 1.0]) == pytest.approx(4 / (2 * 0.5 + 1))
    # A free middle model with perfect acceptance makes the chain the middle's own speed-up over the verifier.
    assert chain_speedup([1.0, 1.0], [4, 4], [0.0, 0.0, 1.0]) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        chain_speedup([0.9, 0.9], [3], [0.1, 1.0])


# ---- a report's readings on folders built with known values -----------------------------------------------

def _built(tmp_path, n: int, slow_example: float = 1.0, warmup: int = 2):
    """A folder of n examples: the verifier (1 s each, all right), a lossless-looking spec_decode (0.6 s each, one
    wrong answer in ten; example 0 takes `slow_example` times longer) and a cascade at 0.4 s, much worse."""
    import json

    from .results_builder import build_results

    right = [100.0] * n
    one_wrong = [0.0 if i % 20 == 19 else 100.0 for i in range(n)]
    spec = [0.6 * (slow_example if i == 0 else 1.0) for i in range(n)]
    folder = build_results(tmp_path / f"n{n}-{slow_example}-{warmup}", {
        "verifier": ("verifier", {}, [1.0] * n, right),
        "drafter": ("drafter", {}, [0.3] * n, [0.0] * n),
        "spec_decode-g5": ("spec_decode", {"draft_length": 5}, spec, one_wrong),
        "spec_cascade-opt-a0.9-g5": ("spec_cascade", {"rule": "opt", "alpha": 0.9, "draft_length": 5}, [0.4] * n,
                                     [0.0 if i % 2 else 100.0 for i in range(n)]),
    })
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["timing"]["warmup"] = warmup
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_run_with_no_detected_difference_matches_the_verifier_at_its_latency(tmp_path):
    from speccascade_bench.analysis.report import tradeoff_rows
    from speccascade_bench.analysis.summary import summarize

    frame = summarize(_built(tmp_path, 40))
    spec = frame[frame["run_id"] == "spec_decode-g5"].iloc[0]
    assert spec["quality"] < 100 and spec["quality_ci_low"] < 0 <= spec["quality_ci_high"]  # 95 against 100, held 0
    target, rows = tradeoff_rows(frame)
    by_curve = {row[0]: row for row in rows}
    assert by_curve["spec_decode"][2] == "0.600 (no difference detected)" and by_curve["spec_decode"][3] == "1.67x"
    assert by_curve["spec_cascade opt"][2] == "not reached"  # 50 against 100: a difference is detected


def test_weak_numbers_are_named_and_the_median_ratio_ignores_one_slow_example(tmp_path):
    from speccascade_bench.analysis.report import build_report
    from speccascade_bench.analysis.summary import summarize

    strong = summarize(_built(tmp_path, 40)).set_index("run_id")
    assert set(strong["weak"]) == {""}
    slow = summarize(_built(tmp_path, 40, slow_example=30.0)).set_index("run_id")
    # example 0 takes 18 s of 41.4 (43%): the mean ratio moves to 1.035, the median stays at 0.6
    assert slow.loc["spec_decode-g5", "relative_latency"] == pytest.approx(41.4 / 40)
    assert slow.loc["spec_decode-g5", "relative_latency_median"] == pytest.approx(0.6)
    assert slow.loc["spec_decode-g5", "weak"] == "one example 43% of the time"
    assert slow.loc["verifier", "weak"] == ""
    few = summarize(_built(tmp_path, 5, warmup=0)).set_index("run_id")
    assert few.loc["spec_decode-g5", "weak"] == "5 examples; no warm-up"  # 20% each: no example dominates
    report = build_report(_built(tmp_path, 3, warmup=0))
    assert "3 examples; no warm-up; one example 33% of the time" in report and "weak numbers" in report


def test_the_terminal_report_shows_eight_aligned_columns_with_their_notes(tmp_path):
    from typer.testing import CliRunner

    from speccascade_bench.cli import app

    folder = _built(tmp_path, 12, slow_example=8.0)
    compact = CliRunner().invoke(app, ["report", str(folder), "--columns", "compact"])
    assert compact.exit_code == 0, compact.output
    lines = compact.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert lines[head].split("  ")[0] == "run" and set(lines[head + 1]) == {"-", " "}
    assert len(lines[head + 1].split()) == 8  # eight columns, each underlined
    spec = next(line for line in lines if line.startswith("spec_decode-g5 "))
    assert "0.950" in spec and "0.600" in spec and "one example 42% of the time" in spec
    assert "  weak numbers: fewer than 10 examples" in compact.stdout and "| curve |" in compact.stdout
    every = CliRunner().invoke(app, ["report", str(folder)])  # not a terminal: every column, in Markdown
    assert "tok/round" not in compact.stdout and "| run | n | quality |" in every.stdout
    assert (folder / "report.md").read_text().startswith("# built") and "| tok/round |" in every.stdout
    wrong = CliRunner().invoke(app, ["report", str(folder), "--columns", "wide"])
    assert wrong.exit_code == 2 and "--columns must be compact or all" in wrong.stderr


def test_summary_json_holds_the_settings_units_runs_and_tradeoff_and_is_checked(tmp_path):
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from speccascade_bench.analysis.summary_json import SCHEMA, SCHEMA_VERSION
    from speccascade_bench.cli import app

    folder = _built(tmp_path, 40)
    assert CliRunner().invoke(app, ["report", str(folder)]).exit_code == 0
    document = json.loads((folder / "summary.json").read_text())
    assert (document["schema"], document["schema_version"]) == (SCHEMA, SCHEMA_VERSION)
    assert document["settings"]["decoding"]["temperature"] == 1.0 and document["settings"]["models"]["verifier"]
    assert document["columns"]["latency_mean_s"] == "s" and document["columns"]["quality_ci_low"] == "metric points"
    table = pd.read_csv(folder / "summary.csv")
    assert [run["run_id"] for run in document["runs"]] == list(table["run_id"])
    for run, (_, row) in zip(document["runs"], table.iterrows(), strict=True):
        for column in ("quality", "quality_ci_low", "quality_ci_high", "relative_latency", "speedup", "n"):
            if pd.isna(row[column]):
                assert run[column] is None, (run["run_id"], column)
            else:
                assert run[column] == pytest.approx(row[column], rel=1e-5), (run["run_id"], column)
    rows = {row[0]: row for row in document["tradeoff"]["rows"]}
    assert rows["spec_decode"][2] == "0.600 (no difference detected)"
    assert document["tradeoff"]["verifier_quality"] == 100
    for damage, words in (("{", "not a summary this suite wrote"), ('{"schema": "other"}', "no schema"),
                          (json.dumps({"schema": SCHEMA, "schema_version": 99, "runs": []}), "schema version 99")):
        (folder / "summary.json").write_text(damage)
        result = CliRunner().invoke(app, ["report", str(folder)])
        assert result.exit_code == 2 and result.stderr.count("error:") == 1 and words in result.stderr, result.stderr
        assert (folder / "summary.json").read_text() == damage  # left as it was
