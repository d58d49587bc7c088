"""Table 2 readings on hand-made curves."""

import pytest

from speccascade_bench.analysis.tradeoff import best_quality_within, latency_to_match

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
