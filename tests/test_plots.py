"""The report's pictures, read back from their figures (matplotlib's Agg backend), from records made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxvae.study import ledger, plots
from tests.report_records import records

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots._pyplot().close("all")


def _comparison(curves: dict[str, list[list[float]]], **kwargs):
    return ledger.comparison_of(records(curves, **kwargs))


# --- the y-range of the curves -----------------------------------------------------------------------------


def test_an_outlier_is_cut_from_the_y_range_and_counted() -> None:
    limits = plots.robust_range([[990.0, 27.0, 25.0, 24.0], [26.0, 25.0, 24.5, 24.2]])
    assert limits.high < 30 and limits.low < 24.0
    assert (limits.above, limits.below, limits.log) == (1, 0, False)
    assert limits.note() == "y-axis cut: 1 point above 27.15 drawn ▲ on the edge"


def test_an_outlier_below_is_cut_too() -> None:
    limits = plots.robust_range([[-990.0, -27.0, -25.0, -24.0], [-26.0, -25.0, -24.5, -24.2]])
    assert (limits.above, limits.below) == (0, 1) and limits.low > -30
    assert "1 point below -27.15 drawn ▼" in limits.note()


def test_a_gentle_descent_is_shown_whole() -> None:
    limits = plots.robust_range([[27.5, 26.0, 25.0, 24.0], [26.5, 25.0, 24.5, 24.2]])
    assert limits.low < 24.0 and limits.high > 27.5
    assert limits.note() == ""


def test_the_kept_values_are_inside_the_y_range() -> None:
    limits = plots.robust_range([[990.0, 24.0, 24.0]], keep=[26.0])
    assert limits.low < 24.0 < 26.0 < limits.high


def test_levels_ten_times_apart_get_a_log_scale_that_says_so() -> None:
    limits = plots.robust_range([[130.0, 120.0, 116.0], [3.9, 3.8, 3.7]])
    assert limits.log and limits.low < 3.7 and limits.high > 130.0
    assert limits.note() == "log scale"


def test_values_at_or_below_zero_stay_on_a_linear_scale() -> None:
    assert not plots.robust_range([[130.0, 120.0, 116.0], [-3.9, -3.8, -3.7]]).log


# --- curves.png --------------------------------------------------------------------------------------------


def test_the_elbo_panel_cuts_scratchs_epoch_zero_and_says_so() -> None:
    curves = {"scratch": [[990.0, 27.0, 25.0, 24.0]], "warm": [[26.0, 25.0, 24.5, 24.2]]}
    left, _ = plots.curves_figure(_comparison(curves)).axes
    assert left.get_ylim()[1] < 30
    assert "y-axis cut: 1 point above" in left.get_title()


def test_a_panel_without_outliers_says_nothing_is_cut() -> None:
    curves = {"scratch": [[27.5, 26.0, 25.0, 24.0]], "warm": [[26.5, 25.0, 24.5, 24.2]]}
    left, _ = plots.curves_figure(_comparison(curves)).axes
    assert left.get_title() == "held-out -ELBO (nats per sample)"


def test_a_cut_point_is_drawn_on_the_edge() -> None:
    curves = {"scratch": [[990.0, 27.0, 25.0, 24.0]], "warm": [[26.0, 25.0, 24.5, 24.2]]}
    left, _ = plots.curves_figure(_comparison(curves)).axes
    markers = [line for line in left.get_lines() if line.get_marker() == "^"]
    assert len(markers) == 1 and list(markers[0].get_ydata()) == [left.get_ylim()[1]]


def test_epoch_ticks_are_whole_numbers() -> None:
    fig = plots.curves_figure(_comparison({"scratch": [[40.0, 24.0]], "warm": [[30.0, 25.0]]}))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [0, 1]


def test_the_target_line_is_scratchs_final_measurement_plus_one_nat() -> None:
    comparison = _comparison({"scratch": [[40.0, 24.0]], "warm": [[30.0, 25.0]]}, finals={"scratch": [25.5]})
    left, _ = plots.curves_figure(comparison).axes
    target = next(line for line in left.get_lines() if line.get_label().startswith("scratch final"))
    assert list(target.get_ydata()) == [26.5, 26.5]


def test_a_discrete_perplexity_panel_is_not_called_codes_in_use() -> None:
    _, right = plots.curves_figure(_comparison({"scratch": [[40.0, 24.0]]}, latent="vq")).axes
    assert "perplexity" in right.get_title() and "exp of the codes' entropy" in right.get_title()
    assert "in use" not in right.get_title()


# --- samples.png and reconstructions.png ---------------------------------------------------------------------


def _with_samples(latent: str):
    curves = {"ae": [[1.0, 0.9]], "scratch": [[40.0, 24.0]]}
    fields = {(s, 0): {"samples": [[0.1, 0.2, 0.3, 0.4]] * 2} for s in curves}
    return _comparison(curves, fields=fields, latent=latent)


def test_a_gaussian_prior_samples_grid_says_its_prior() -> None:
    title = plots.grid_figure(_with_samples("gaussian"), "samples")._suptitle.get_text()
    assert "z ~ N(0, I)" in title and "codebook" not in title


def test_a_discrete_prior_samples_grid_says_its_codes_are_drawn_uniformly() -> None:
    title = plots.grid_figure(_with_samples("fsq"), "samples")._suptitle.get_text()
    assert "codes drawn uniformly from the codebook" in title
    assert "the AE row: its decoder on z ~ N(0, I)" in title


# --- kl_per_dim.png ----------------------------------------------------------------------------------------


def _with_kl(kl: dict[str, list[float]]):
    curves = {start: [[30.0, 24.0]] for start in kl}
    return _comparison(curves, fields={(s, 0): {"kl_per_dim": values} for s, values in kl.items()})


def test_every_start_draws_a_dimension_at_the_same_place_ordered_by_the_first_converted_start() -> None:
    comparison = _with_kl({"scratch": [0.4, 0.2, 0.0], "warm": [0.1, 0.5, 0.3], "calibrated": [0.2, 0.6, 0.7]})
    assert plots.kl_order(comparison) == ("warm", [1, 2, 0])
    ax = plots.kl_figure(comparison).axes[0]
    heights = {bars.get_label().split(":")[0]: [b.get_height() for b in bars] for bars in ax.containers}
    assert heights == {"scratch": [0.2, 0.0, 0.4], "warm": [0.5, 0.3, 0.1], "calibrated": [0.6, 0.7, 0.2]}
    assert "ordered by warm's KL" in ax.get_xlabel()


def test_the_kl_picture_names_each_dimension_at_a_whole_tick() -> None:
    ax = plots.kl_figure(_with_kl({"warm": [0.1, 0.5, 0.3, 0.2]})).axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2, 3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "0"]
    assert ax.get_xlim() == (-0.5, 3.5)


def test_scratch_orders_the_kl_picture_only_when_it_is_alone() -> None:
    assert plots.kl_order(_with_kl({"scratch": [0.4, 0.2, 0.6]})) == ("scratch", [2, 0, 1])


def test_many_dimensions_show_the_largest_and_name_a_readable_number_of_them() -> None:
    ax = plots.kl_figure(_with_kl({"warm": [float(d) for d in range(100)]})).axes[0]
    assert len(ax.containers[0]) == 64 and "the 64 largest of 100" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["99", "97", "95"]


def test_plot_all_writes_every_picture_the_records_allow(tmp_path: Path) -> None:
    comparison = _with_kl({"scratch": [0.4, 0.2], "warm": [0.1, 0.5]})
    written = plots.plot_all(comparison, tmp_path)
    assert [p.name for p in written] == ["curves.png", "kl_per_dim.png"]
    assert all(p.stat().st_size > 0 for p in written)


def test_a_diverged_point_is_cut_and_a_missing_one_ignored() -> None:
    limits = plots.robust_range([[26.0, float("nan"), 25.0, float("inf")], [26.0, 25.0, 24.5, 24.2]])
    assert (limits.above, limits.below) == (1, 0)
    assert 23 < limits.low < 24.2 < 26.0 < limits.high < 27


def test_no_values_give_a_unit_range() -> None:
    assert plots.robust_range([]) == plots.YRange(0.0, 1.0)
