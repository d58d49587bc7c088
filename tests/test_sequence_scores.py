"""seq_cascade's sequence scores (Gupta et al. 2024): chow_average, chow_sum and chow_quantile of the drafter's
token log-probabilities, against a worked example and numpy; the config rules for `quantile`; and a run that
defers the examples the chosen score ranks lowest."""

import json

import numpy as np
import pytest

from speccascade_bench.decoding.deferral import sequence_score
from speccascade_bench.results.rows import read_lines

from .test_results_folder import config, failed, pair_dir, scb  # noqa: F401 - pair_dir is a fixture

WORKED = [-0.1, -2.0, -0.5, -1.0]  # sorted: -2.0, -1.0, -0.5, -0.1


def test_the_scores_of_a_worked_example():
    assert sequence_score(WORKED, "chow_sum") == pytest.approx(-3.6)
    assert sequence_score(WORKED, "chow_average") == pytest.approx(-0.9)
    assert sequence_score(WORKED, "chow_quantile", 0.25) == pytest.approx(-1.25)  # 3/4 of the way from -2 to -1
    assert sequence_score(WORKED, "chow_quantile", 0.5) == pytest.approx(-0.75)
    assert sequence_score(WORKED, "chow_quantile", 0.0) == -2.0 and sequence_score(WORKED, "chow_quantile", 1.0) == -0.1
    assert sequence_score([], "chow_quantile", 0.3) == 0.0 == sequence_score([], "chow_sum")
    rng = np.random.default_rng(0)
    for _ in range(20):
        values, q = list(rng.normal(-1, 1, rng.integers(1, 30))), float(rng.random())
        assert sequence_score(values, "chow_quantile", q) == pytest.approx(float(np.quantile(values, q)))
    with pytest.raises(ValueError, match="needs a quantile"):
        sequence_score(WORKED, "chow_quantile")
    with pytest.raises(ValueError, match="unknown sequence score"):
        sequence_score(WORKED, "chow_median")


def test_length_bias_of_the_sum_and_not_of_the_quantile():
    """A long output of confident tokens sums lower than a short unsure one; its low quantile does not."""
    long_sure, short_unsure = [-0.05] * 80, [-1.5, -1.5]
    assert sequence_score(long_sure, "chow_sum") < sequence_score(short_unsure, "chow_sum")
    assert sequence_score(long_sure, "chow_quantile", 0.1) > sequence_score(short_unsure, "chow_quantile", 0.1)


@pytest.mark.parametrize("entry,words", [
    ({"sequence_score": "chow_quantile"}, "is required for seq_cascade with sequence_score: chow_quantile"),
    ({"quantile": 0.2}, "applies only with sequence_score: chow_quantile"),
    ({"sequence_score": "chow_quantile", "quantile": 1.5}, "must be in [0, 1]"),
    ({"sequence_score": "chow_mean"}, "unknown value"),
])
def test_config_rules_for_the_quantile(pair_dir, tmp_path, entry, words):  # noqa: F811
    methods = [{"method": "seq_cascade", "alpha": [0.5], **entry}]
    failed(scb("run", "-c", config(pair_dir, tmp_path / "never", file="q", methods=methods)), "methods[0]", words)
    assert not (tmp_path / "never").exists()


def test_a_run_defers_what_the_chosen_score_ranks_lowest(pair_dir, tmp_path):  # noqa: F811
    out = tmp_path / "scores"
    methods = [{"method": "seq_cascade", "alpha": [0.5], "sequence_score": "chow_quantile", "quantile": 0.1},
               {"method": "seq_cascade", "alpha": [0.5], "sequence_score": "chow_sum"},
               {"method": "seq_cascade", "alpha": [0.5]}]
    path = config(pair_dir, out, methods=methods, decoding={"temperature": 1.0, "max_new_tokens": 6})
    result = scb("run", "-c", path)
    assert result.exit_code == 0, result.output
    drafter = read_lines(out / "examples" / "drafter.jsonl")
    assert all(len(row["token_logprobs"]) == row["output_tokens"] for row in drafter)
    assert all(row["confidence"] == pytest.approx(np.mean(row["token_logprobs"])) for row in drafter)
    for run_id, score, quantile in (("seq_cascade-a0.5-sequence_score_chow_quantile-q0.1", "chow_quantile", 0.1),
                                    ("seq_cascade-a0.5-sequence_score_chow_sum", "chow_sum", None),
                                    ("seq_cascade-a0.5", "chow_average", None)):
        ranked = sorted(drafter, key=lambda row: (sequence_score(row["token_logprobs"], score, quantile),
                                                  row["example_id"]))
        lowest = {row["example_id"] for row in ranked[: round(0.5 * len(ranked))]}
        rows = read_lines(out / "examples" / f"{run_id}.jsonl")
        assert {row["example_id"] for row in rows if row["deferred"] > 0 or row["calls"]["verifier"] > 0} == lowest
    # Drafter rows recorded before token_logprobs existed: the quantile cannot be derived, the sum still can.
    path_drafter = out / "examples" / "drafter.jsonl"
    path_drafter.write_text("".join(json.dumps({k: v for k, v in row.items() if k != "token_logprobs"}) + "\n"
                                    for row in drafter))
    failed(scb("run", "-c", path), "no token_logprobs", "chow_quantile")
