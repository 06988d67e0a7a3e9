"""The report's pictures, read back from their figures (matplotlib's Agg backend), from records made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxvae.study import ledger, plots
from tests.report_records import ae_vs_vae_records, records

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


# --- the reconstruction panel whatever the spread ------------------------------------------------------------


def test_the_reconstruction_panel_cuts_an_epoch_zero_outlier_among_values_near_minus_15() -> None:
    # The case: scratch's reconstruction term starts near 990 nats; the others end near -15.
    curves = {
        "ae": [[-14.5, -15.0, -15.02, -15.03]],
        "scratch": [[990.0, -10.0, -12.5, -12.9]],
        "warm": [[-13.0, -14.2, -14.4, -14.5]],
        "calibrated": [[-14.0, -14.6, -14.7, -14.8]],
    }
    _, right = plots.curves_figure(_comparison(curves)).axes
    low, high = right.get_ylim()
    assert -15.5 < low < -15.03 and -12.9 < high < -9.0
    assert "y-axis cut: 1 point above" in right.get_title()


def _pixel(ax, value: float) -> float:
    return ax.transData.transform((0.0, value))[1]


def test_curves_ending_close_together_below_a_slow_descent_stay_apart_on_a_log_scale_above_a_floor() -> None:
    epochs = range(40)
    curves = {
        "ae": [[-15.03 + 2 * 0.8**e for e in epochs]],
        "scratch": [[-12.9 + 1003 * 0.93**e for e in epochs]],
        "warm": [[-14.5 + 0.8**e for e in epochs]],
        "calibrated": [[-14.8 + 0.5 * 0.8**e for e in epochs]],
    }
    fig = plots.curves_figure(_comparison(curves))
    fig.canvas.draw()
    _, right = fig.axes
    assert "log scale of the height above" in right.get_title()
    height = _pixel(right, right.get_ylim()[1]) - _pixel(right, right.get_ylim()[0])
    # The three ends near -15, 0.23 and 0.3 nats apart, at least 5% of the axis apart; scratch's start drawn.
    assert _pixel(right, -14.8) - _pixel(right, -15.03) > 0.05 * height
    assert _pixel(right, -14.5) - _pixel(right, -14.8) > 0.05 * height
    assert right.get_ylim()[1] > 990.0


def test_a_log_scale_above_a_floor_is_ticked_at_round_values_inside_the_axis() -> None:
    limits = plots.robust_range([[990.0, 500.0, 200.0, 80.0], [-15.0, -15.0, -15.0, -15.03], [-14.8] * 4])
    ticks = limits.ticks()
    assert limits.floor is not None and limits.floor < -15.03
    assert all(limits.low <= t <= limits.high for t in ticks)
    assert {-15.0, 0.0, 100.0} <= set(ticks) and len(ticks) <= 9


def test_curves_ending_apart_keep_a_linear_axis() -> None:
    assert plots.robust_range([[990.0, 27.0, 25.0, 24.0], [26.0, 25.0, 24.5, 24.2]]).floor is None


# --- the AE against its VAEs: samples per source and interpolation strips ---------------------------------------


def _ae_vs_vae(**kwargs):
    return ledger.comparison_of(ae_vs_vae_records(**kwargs))


def _cells(fig) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label()}


def test_each_models_samples_from_its_prior_and_its_ex_post_density_are_side_by_side() -> None:
    cells = _cells(plots.sources_figure(_ae_vs_vae()))
    prior, gmm = cells["warm|prior"].get_subplotspec(), cells["warm|gmm"].get_subplotspec()
    assert prior.rowspan == gmm.rowspan and prior.colspan.start < gmm.colspan.start
    assert set(cells) == {f"{s}|{source}" for s in ("scratch", "warm", "calibrated") for source in ("prior", "gmm")} | {
        "ae|gaussian",
        "ae|gmm",
    }


def test_every_recorded_sample_of_a_source_is_drawn() -> None:
    # Three signals of 16 steps each, one line each.
    assert len(_cells(plots.sources_figure(_ae_vs_vae()))["warm|gmm"].get_lines()) == 3 + 2  # and 2 separators


def test_the_samples_picture_titles_each_source() -> None:
    fig = plots.sources_figure(_ae_vs_vae())
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "from its prior N(0, I)",
        "from an ex-post gaussian fitted to its codes",
        "from an ex-post gmm fitted to its codes",
    ]


def test_the_ae_row_says_it_has_no_prior_instead_of_drawing_one() -> None:
    fig = plots.sources_figure(_ae_vs_vae())
    first = fig.axes[0]
    assert first.get_label() != "ae|prior" and first.get_ylabel() == "ae"
    assert [t.get_text() for t in first.texts] == ["an AE has no prior"]


def test_interpolation_strips_show_each_models_lines_from_t_0_to_1() -> None:
    fig = plots.interpolation_figure(_ae_vs_vae())
    assert [ax.get_label() for ax in fig.axes[:3]] == ["ae|0", "ae|1", "scratch|0"] and len(fig.axes) == 4 * 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["t = 0", "0.25", "0.5", "0.75", "1"]
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["ae", "ae (2)"]


def test_an_interpolation_tick_stands_under_the_middle_of_its_image() -> None:
    options = {"starts": ["ae", "scratch", "warm", "calibrated"], "image_shape": [4, 4]}
    ax = plots.interpolation_figure(_ae_vs_vae(config={"options": options})).axes[0]
    # Images 4 wide with a blank column between them: the middles at 1.5, 6.5, 11.5, ...
    assert list(ax.get_xticks()) == [1.5, 6.5, 11.5, 16.5, 21.5]


def test_images_of_one_picture_share_one_grey_scale() -> None:
    options = {"starts": ["ae", "scratch", "warm", "calibrated"], "image_shape": [4, 4]}
    fig = plots.interpolation_figure(_ae_vs_vae(config={"options": options}))
    assert {ax.images[0].get_clim() for ax in fig.axes} == {(0.0, 1.0)}


def test_plot_all_writes_the_ae_vs_vae_pictures_where_the_records_hold_them(tmp_path: Path) -> None:
    written = [p.name for p in plots.plot_all(_ae_vs_vae(), tmp_path)]
    assert written == ["curves.png", "ae_vs_vae_samples.png", "ae_vs_vae_interpolation.png"]
    assert [p.name for p in plots.plot_all(_ae_vs_vae(pictures=False), tmp_path / "none")] == ["curves.png"]
