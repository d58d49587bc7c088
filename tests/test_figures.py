"""The trade-off figures on a results folder built from known values: each curve's points joined in the order
of its swept parameter, the Pareto frontier over every method, interval bars of the right lengths, the zoomed
panel, and one style per curve name whatever else a figure holds."""

import math

import matplotlib
import pytest

from speccascade_bench.analysis.curves import pareto_front, ratio_interval, sweep_key, zoom_window
from speccascade_bench.analysis.plot import FIGURES, Ids, draw_figure, draw_panel, panel_curves
from speccascade_bench.analysis.style import COLORS, curve_style
from speccascade_bench.analysis.summary import summarize, with_curves
from speccascade_bench.decoding.methods import METHODS

from .helpers import PAPER_RULES
from .results_builder import build_results

matplotlib.use("Agg")

N = 12
VERIFIER = [1.0 + 0.1 * (i % 3) for i in range(N)]


def scores(correct: int) -> list[int]:
    return [100] * correct + [0] * (N - correct)


def scaled(ratio: float, wobble: float = 0.0) -> list[float]:
    """Latencies at `ratio` of the verifier's on each example, off by +-wobble on alternate examples."""
    return [ratio * v * (1 + wobble * (-1) ** i) for i, v in enumerate(VERIFIER)]


def opt(alpha: float) -> dict:
    return {"rule": "opt", "alpha": alpha, "draft_length": 5, "bonus": "target"}


# (relative latency, correct of 12): the sweep of opt is not in latency order
RUNS = {
    "verifier": ("verifier", {}, VERIFIER, scores(9)),
    "drafter": ("drafter", {}, scaled(0.3), scores(5)),
    "spec_decode-g5": ("spec_decode", {"draft_length": 5}, scaled(0.6, 0.2), scores(9)),
    "lossy_spec_decode-a0.2-b1-g5": ("lossy_spec_decode", {"alpha": 0.2, "beta": 1.0, "draft_length": 5},
                                     scaled(0.55), scores(6)),
    "spec_cascade-opt-a0.5-g5": ("spec_cascade", opt(0.5), scaled(0.7), scores(10)),
    "spec_cascade-opt-a0.1-g5": ("spec_cascade", opt(0.1), scaled(0.8), scores(8)),
    "spec_cascade-opt-a0.3-g5": ("spec_cascade", opt(0.3), scaled(0.5), scores(7)),
}


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    return with_curves(summarize(build_results(tmp_path_factory.mktemp("built") / "run", RUNS)))


def latency_figure(frame):
    column, label = "relative_latency", FIGURES["quality_latency"][1]
    return draw_figure([({"name": "built", "task": {"metric": "exact_match"}, "decoding": {
        "temperature": 1.0, "draft_length": 5}}, frame)], column, label)


def test_a_sweep_is_joined_in_the_order_of_its_parameter(frame):
    curves = {curve.name: curve for curve in panel_curves(frame, "relative_latency")}
    sweep = curves["spec_cascade opt"]
    assert sweep.x == pytest.approx([0.8, 0.5, 0.7])  # alpha 0.1, 0.3, 0.5
    assert sweep.y == pytest.approx([100 * 8 / 12, 100 * 7 / 12, 100 * 10 / 12])
    fig = latency_figure(frame)
    drawn = next(c for c in fig.axes[0].containers if c.get_label() == "spec_cascade opt")
    assert list(drawn.lines[0].get_xdata()) == pytest.approx([0.8, 0.5, 0.7])
    # chain sweeps order by their per-level values, numerically
    rows = [{"method": "chain_spec_cascade", "alphas": a, "draft_lengths": "3+5"} for a in ("0.3+0.1", "0.05+0.9")]
    assert sorted(rows, key=sweep_key)[0]["alphas"] == "0.05+0.9"


def test_the_frontier_is_the_best_quality_at_each_latency(frame):
    assert pareto_front([(1.0, 75), (0.3, 40), (0.5, 58), (0.55, 50), (0.6, 75), (0.7, 83), (0.8, 66)]) == [1, 2, 4, 5]
    assert pareto_front([(0.5, 1.0), (0.5, 2.0), (0.4, 2.0), (math.nan, 9.0)]) == [2]  # ties and NaN
    assert pareto_front([]) == []
    fig = latency_figure(frame)
    front = next(line for line in fig.axes[0].get_lines() if line.get_label() == "Pareto frontier")
    # drafter, opt at alpha 0.3, spec_decode, opt at alpha 0.5: lossy (0.55, 50) and the verifier are behind them
    spec = frame.set_index("run_id").loc["spec_decode-g5", "relative_latency"]
    expected = [(0.3, 500 / 12), (0.5, 700 / 12), (spec, 900 / 12), (0.7, 1000 / 12)]
    xs, ys = front.get_xdata(), front.get_ydata()
    assert list(xs) == pytest.approx([x for x, _ in expected]) and list(ys) == pytest.approx([y for _, y in expected])


def test_interval_bars_have_the_lengths_of_the_summary_intervals(frame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    drawn = draw_panel(ax, panel_curves(frame, "relative_latency"))
    by_run = frame.set_index("run_id")
    for curve, run_id in (("spec_decode", "spec_decode-g5"), ("spec_cascade opt", "spec_cascade-opt-a0.5-g5"),
                          ("drafter", "drafter")):
        row = by_run.loc[run_id]
        container = drawn[curve]
        horizontal, vertical = container.lines[2]
        x, y = row["relative_latency"], row["quality"]
        index = [i for i, seg in enumerate(vertical.get_segments()) if seg[0][0] == pytest.approx(x)][0]
        (x0, y0), (x1, y1) = vertical.get_segments()[index]
        verifier = by_run.loc["verifier", "quality"]
        assert (y0, y1) == pytest.approx((verifier + row["quality_ci_low"], verifier + row["quality_ci_high"]))
        assert y0 <= y <= y1
        (a, _), (b, _) = horizontal.get_segments()[index]
        assert (a, b) == pytest.approx((row["relative_latency_low"], row["relative_latency_high"]))
    # a run whose latency is the verifier's times the same ratio on every example has no latency spread
    assert by_run.loc["drafter", "relative_latency_low"] == pytest.approx(0.3)
    assert by_run.loc["drafter", "relative_latency_high"] == pytest.approx(0.3)
    spec = by_run.loc["spec_decode-g5"]
    assert spec["relative_latency_low"] < spec["relative_latency"] < spec["relative_latency_high"]
    assert math.isnan(by_run.loc["verifier", "relative_latency_low"])
    vertical_of_verifier = drawn["verifier"].lines[2][1].get_segments()[0]
    assert vertical_of_verifier[0][1] == pytest.approx(vertical_of_verifier[1][1])  # no interval against itself
    plt.close(fig)


def test_the_latency_interval_is_the_bootstrap_of_the_ratio_of_means():
    # two examples: the resampled means of ours are 1, 2 or 3 (1/4, 1/2, 1/4) against theirs always 2
    low, high = ratio_interval([1.0, 3.0], [2.0, 2.0], resamples=4000, seed=1)
    assert (low, high) == (0.5, 1.5)
    low, high = ratio_interval([1.0, 3.0], [2.0, 2.0], resamples=4000, seed=1, confidence=0.4)
    assert (low, high) == (1.0, 1.0)
    assert all(math.isnan(v) for v in ratio_interval([1.0], [2.0]))
    with pytest.raises(ValueError):
        ratio_interval([1.0, 2.0], [1.0])


def test_the_zoomed_panel_holds_the_runs_near_the_verifiers_quality(frame):
    window = zoom_window([(0.3, 40.0), (0.6, 74.0), (0.7, 83.0), (1.0, 75.0)], 75.0)
    (x0, x1), (y0, y1) = window
    assert y0 < 75 - 3.75 <= 74 and y1 > 83 and y0 > 40  # 5% of the verifier's quality below it
    assert x0 < 0.6 and x1 > 1.0 and x0 > 0.3
    assert zoom_window([(0.3, 40.0), (1.0, 75.0)], 75.0) is None
    fig = latency_figure(frame)
    full, zoom = fig.axes[0], fig.axes[1]
    assert zoom.get_ylim()[1] - zoom.get_ylim()[0] < 0.5 * (full.get_ylim()[1] - full.get_ylim()[0])
    assert "near the verifier" in zoom.get_title()


def test_each_curve_keeps_its_style_in_every_figure(frame):
    import matplotlib.pyplot as plt

    every = panel_curves(frame, "relative_latency")
    fig, (a, b) = plt.subplots(1, 2)
    first = draw_panel(a, every)
    second = draw_panel(b, [curve for curve in every if curve.name in ("drafter", "spec_cascade opt")])
    for name in ("drafter", "spec_cascade opt"):
        assert first[name].lines[0].get_color() == second[name].lines[0].get_color()
        assert first[name].lines[0].get_marker() == second[name].lines[0].get_marker()
    plt.close(fig)
    # a paper sweep of 17 curves: each told apart by its colour, marker or line style
    names = ["verifier", "drafter", "spec_decode", "seq_cascade", "token_cascade", "lossy_spec_decode beta=1",
             "lossy_spec_decode beta=0.5", "bild beta=2", "bild beta=3",
             *(f"spec_cascade {rule}" for rule in PAPER_RULES),
             "spec_cascade opt bonus=verifier", "spec_cascade token_v3 bonus=verifier"]
    styles = [curve_style(name) for name in names]
    assert len({(s.color, s.marker, s.linestyle) for s in styles}) == len(names)
    assert len({COLORS[name] for name in COLORS}) == len(COLORS)  # one colour per method and rule
    built_in = ("verifier", "drafter", "middle", "seq_cascade", "token_cascade", "spec_decode", "lossy_spec_decode",
                "bild", "staged_spec_decode", "chain_spec_cascade", "chain_seq_cascade")
    assert set(built_in) <= set(COLORS) and {f"spec_cascade {rule}" for rule in PAPER_RULES} <= set(COLORS)
    assert curve_style("spec_decode").marker == METHODS["spec_decode"].marker


def test_a_dollar_in_a_name_is_text(frame):
    import matplotlib.pyplot as plt

    fig = draw_figure([({"name": "$\\foo$ run", "task": {"metric": "exact_match"}, "decoding": {
        "temperature": 1.0, "draft_length": 5}}, frame)], "relative_latency", "latency")
    fig.canvas.draw()  # mathtext would raise on \foo here
    assert fig.axes[0].get_title().startswith("$\\foo$ run")
    plt.close(fig)


def test_svg_groups_name_each_curve_for_the_page(frame):
    from speccascade_bench.analysis.plot import svg

    numbers = {curve: k for k, curve in enumerate(dict.fromkeys(frame["curve"]))}
    text = svg(latency_figure_with_ids(frame, Ids(numbers)))
    k = numbers["spec_cascade opt"]
    assert f'id="scb-curve-{k}-' in text
    assert text.count(f'id="scb-curve-{k}-') >= 2 * 3  # its line, caps and bars, in both panels
    import re

    ids = re.findall(r'id="(scb-curve-[^"]+)"', text)
    assert len(ids) == len(set(ids))  # every name once


def latency_figure_with_ids(frame, ids):
    return draw_figure([({"name": "built", "task": {"metric": "exact_match"}, "decoding": {
        "temperature": 1.0, "draft_length": 5}}, frame)], "relative_latency", "latency", ids)
