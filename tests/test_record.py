"""The example row and the summary's columns are each defined once, and the docs follow: the results page's table of
the row is the record's (generated), its list of summary columns the summary's. The record's checks are the
reader's."""

import json
import math
import re
from pathlib import Path

import pytest

from speccascade_bench.analysis.summary import SUMMARY_COLUMNS
from speccascade_bench.results.record import FIELDS, SUMMED, WRITTEN, ExampleRow, markdown_table, problem

RESULTS_PAGE = (Path(__file__).resolve().parent.parent / "docs" / "results.md").read_text()


def good_row() -> dict:
    return ExampleRow(example_id=3, run_id="spec_decode-g2", method="spec_decode", params={"draft_length": 2},
                      prediction="p", reference="r", references=["r"], output_tokens=4, input_tokens=5, latency_s=0.5,
                      latency_trials_s=[0.5], calls={"drafter": 4, "verifier": 2},
                      drafted=4, accepted=3, rounds=2,
                      accepted_per_round=[2, 1], rejections=1, deferred=0.0, confidence=None, shots=0, score=50.0,
                      worker={"host": "h", "device": "cpu", "kind": "cpu"}).to_json()


def test_the_results_page_table_is_the_records():
    from .helpers import docs_hooks

    assert "<!-- scb:row-fields -->" in RESULTS_PAGE
    page = docs_hooks().render(RESULTS_PAGE)
    start = page.index("| field | kind | meaning |")
    assert page[start:].startswith(markdown_table())


def test_the_results_page_lists_the_summary_columns_in_order():
    bullet = RESULTS_PAGE[RESULTS_PAGE.index("- `summary.csv`: one row per method run:"):]
    bullet = bullet[: bullet.index("Quality is the corpus score")]
    named = [name.strip() for chunk in re.findall(r"`([^`]*)`", bullet) for name in chunk.split(",")]
    listed = [name for name in named if name in SUMMARY_COLUMNS]
    assert listed == list(SUMMARY_COLUMNS)


def test_a_written_row_has_every_field_and_passes_the_reader():
    row = good_row()
    assert tuple(row) == WRITTEN and set(FIELDS) - set(row) == {"verdict", "lm_eval"}
    assert problem({**row, "lm_eval": {"strict-match": {"exact_match": 1.0}}}) is None
    assert "lm_eval" in problem({**row, "lm_eval": [1.0]})
    assert problem(row) is None
    assert problem({**row, "verdict": "passed"}) is None
    old = {name: value for name, value in row.items() if name not in ("worker", "references", "shots", "score",
                                                                      "rejections")}
    assert problem(old) is None  # a row written before those fields existed still loads


@pytest.mark.parametrize("name,value,words", [
    ("example_id", -1, "has a negative example_id (-1)"), ("example_id", True, "has no integer example_id"),
    ("run_id", 3, "has no text run_id"), ("params", [], "has a params that is not a mapping"),
    ("latency_s", math.nan, "has no finite latency_s"), ("latency_s", "1", "has no finite latency_s"),
    ("rounds", -2, "has a negative rounds (-2)"), ("deferred", None, "has no finite deferred"),
    ("score", 101, "has a score that is not a number from 0 to 100"), ("confidence", math.inf, "no finite confidence"),
    ("references", "r", "has a references that is not a list"), ("worker", "cpu", "has a worker that is not"),
])
def test_each_kind_of_field_is_checked(name, value, words):
    assert words in problem({**good_row(), name: value})


def test_the_summed_numbers_are_demanded():
    for name in SUMMED:
        row = good_row()
        del row[name]
        assert problem(row) in (f"has no finite {name}", f"has no integer {name}")  # a count of mass or of tokens


def test_rows_written_before_calls_existed_are_read_as_calls(tmp_path):
    """A new row has `calls` and neither old field; an old row's `drafter_calls` and `verifier_calls` are read as
    `calls` (dropped where it has both), by the reader and by `ExampleRow.from_json`, and are still checked."""
    from speccascade_bench.analysis.summary import calls
    from speccascade_bench.results.record import upgraded
    from speccascade_bench.results.rows import read_lines

    row = good_row()
    assert "drafter_calls" not in row and "verifier_calls" not in row
    typed = ExampleRow.from_json(dict(row))
    assert row["calls"] == {"drafter": 4, "verifier": 2} == {role: calls(typed, role) for role in ("drafter",
                                                                                                    "verifier")}
    assert calls(ExampleRow.from_json({**row, "calls": {"third": 7}}), "third") == 7 and calls(typed, "third") == 0
    before_calls = {**{k: v for k, v in row.items() if k != "calls"}, "drafter_calls": 5, "verifier_calls": 3}
    with_both = {**row, "drafter_calls": 4, "verifier_calls": 2}
    assert problem(before_calls) is None and problem(with_both) is None
    assert upgraded(dict(before_calls)) == {**row, "calls": {"drafter": 5, "verifier": 3}}
    assert upgraded(dict(with_both)) == row
    assert ExampleRow.from_json(dict(before_calls)).to_json() == {**row, "calls": {"drafter": 5, "verifier": 3}}
    assert ExampleRow.from_json({**row, "unknown": 1}).to_json() == row
    path = tmp_path / "spec_decode-g2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (before_calls, with_both, row)))
    assert [r["calls"] for r in read_lines(path)] == [{"drafter": 5, "verifier": 3}, *[row["calls"]] * 2]
    assert all("drafter_calls" not in r for r in read_lines(path))
    # an old row's counts are checked as before; a row with neither is refused
    assert problem({**before_calls, "drafter_calls": -1}) == "has a negative drafter_calls (-1)"
    assert problem({k: v for k, v in before_calls.items() if k != "verifier_calls"}) == "has no calls"
    assert problem({k: v for k, v in row.items() if k != "calls"}) == "has no calls"
    assert problem({**row, "calls": [4, 2]}) == "has a calls that is not a mapping of roles to counts"
    assert problem({**row, "calls": {"drafter": -1}}).startswith("has a calls entry that is not a whole number")
