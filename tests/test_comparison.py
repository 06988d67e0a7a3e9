"""The report's numbers and words, from records made by hand: what the verdict and report.md say in each case."""

from __future__ import annotations

import pytest

from fxvae.study import ledger
from tests.report_records import records


def _comparison(curves: dict[str, list[list[float]]], **kwargs):
    return ledger.comparison_of(records(curves, **kwargs))


def _line(lines: list[str], start: str) -> str:
    return next(line for line in lines if line.startswith(start))


# --- epochs to within 1 nat and the speed against scratch ----------------------------------------------


def test_epochs_to_within_one_nat_count_from_epoch_zero_per_seed() -> None:
    result = _comparison({"scratch": [[40, 30, 25, 24]], "warm": [[90, 24.8, 24.5, 24.2]]})
    assert result.epochs_to_within() == {"scratch": [2], "warm": [1]}
    assert "warm gets within 1 nat of scratch's final -ELBO after 1.0 epochs, 2.0x fewer epochs" in result.verdict()[1]


def test_epochs_to_within_count_against_scratchs_final_measurement_not_its_last_epoch() -> None:
    # The final measurement (k = 100) is 25.5; the last per-epoch one (k = 8) 24.0: the target is 26.5.
    result = _comparison({"scratch": [[40, 30, 24.0]], "warm": [[90, 26.4, 25.0]]}, finals={"scratch": [25.5]})
    assert result.epochs_to_within()["warm"] == [1]


def test_a_start_slower_than_scratch_is_said_to_take_more_epochs() -> None:
    result = _comparison({"scratch": [[26, 25, 24]], "warm": [[90, 60, 24.5]]})
    assert "2.0x more epochs than scratch's 1.0" in result.verdict()[1]


def test_a_start_that_never_gets_close_is_said_to_and_its_seeds_are_listed() -> None:
    result = _comparison({"scratch": [[40, 24], [40, 24.2]], "calibrated": [[30, 27], [30, 24.5]]})
    assert result.epochs_to_within()["calibrated"] == [None, 1]
    assert "not within 1 epochs (per seed: >1, 1)" in result.verdict()[1]


def test_a_scratch_start_that_does_not_train_is_named_as_the_reason() -> None:
    result = _comparison({"scratch": [[24.5, 24.4, 24.3]], "warm": [[30, 26, 24.2]]})
    assert "scratch itself is that close from epoch 0" in result.verdict()[1]


# --- which start to use, by a rule on the comparison's own numbers ---------------------------------------


def _choice(result) -> str:
    return next(line for line in result.verdict() if line.startswith("For this model"))


def test_the_start_that_ends_lowest_is_the_one_to_use() -> None:
    result = _comparison({"scratch": [[40, 30, 25]], "warm": [[30, 26, 26]], "calibrated": [[27, 25.5, 23]]})
    assert _choice(result).startswith("For this model, start from calibrated: it ends lowest (23.00 nats)")


def test_of_starts_that_end_alike_the_one_that_got_close_first_is_chosen() -> None:
    # calibrated ends 0.3 nats lower (alike: under 0.5), warm was within 1 nat of scratch's final an epoch sooner.
    result = _comparison({"scratch": [[40, 30, 25]], "warm": [[30, 25.5, 24.3]], "calibrated": [[30, 27, 24.0]]})
    assert _choice(result).startswith(
        "For this model, start from warm: it ends within 0.50 nats of the lowest (calibrated, 24.00) at 24.30 "
        "and gets within 1 nat of scratch's final after 1.0 epochs"
    )


def test_starts_further_apart_than_the_tolerance_are_ranked_by_their_finals() -> None:
    result = _comparison({"scratch": [[40, 30, 25]], "warm": [[30, 25.5, 24.6]], "calibrated": [[30, 27, 24.0]]})
    assert _choice(result).startswith("For this model, start from calibrated: it ends lowest")


def test_a_noisy_third_start_does_not_widen_what_counts_as_alike_for_the_other_two() -> None:
    # scratch's seeds end 20 nats apart; warm and calibrated, steady, are 0.8 apart: not alike.
    curves = {
        "scratch": [[40, 30, 25], [40, 30, 45]],
        "warm": [[30, 25.5, 24.8], [30, 25.5, 24.8]],
        "calibrated": [[30, 28, 24.0], [30, 28, 24.0]],
    }
    assert _choice(_comparison(curves)).startswith("For this model, start from calibrated: it ends lowest")


def test_the_seeds_spread_widens_what_counts_as_ending_alike() -> None:
    # warm's seeds end 1.0 and 2.0 nats apart: sd 0.71, twice that 1.41 > the 1.0 between the means.
    curves = {
        "scratch": [[40, 30, 25], [40, 30, 25]],
        "warm": [[30, 25.5, 24.5], [30, 25.5, 25.5]],
        "calibrated": [[30, 28, 24.0], [30, 28, 24.0]],
    }
    assert "start from warm: it ends within 1.41 nats of the lowest" in _choice(_comparison(curves))


def test_a_faster_start_that_ends_worse_is_named_for_a_short_fine_tune() -> None:
    result = _comparison({"scratch": [[40, 30, 25]], "warm": [[60, 30, 24.0]], "calibrated": [[25.5, 26, 26]]})
    lines = result.verdict()
    assert _choice(result).startswith("For this model, start from warm: it ends lowest (24.00 nats)")
    assert (
        "For a short fine-tune, calibrated is within 1 nat of scratch's final before any step, sooner, but ends "
        "2.00 nats above warm." in lines
    )


def test_one_vae_start_gets_no_choice_of_start() -> None:
    result = _comparison({"scratch": [[40, 30, 25]], "ae": [[20, 20, 20]]})
    assert not any(line.startswith("For this model") for line in result.verdict())


# --- one measurement behind every sentence ---------------------------------------------------------------


def test_the_verdict_quotes_the_tables_final_values_not_the_last_epochs() -> None:
    result = _comparison({"scratch": [[40, 24.0]], "warm": [[90, 26.0]]}, finals={"scratch": [25.5], "warm": [26.2]})
    report = result.to_markdown()
    assert "| scratch | 40.00 | 25.50 |" in report and "| warm | 90.00 | 26.20 |" in report
    assert "scratch's final held-out -ELBO (25.50 nats)" in result.verdict()[0]
    assert "At the end, warm is 0.70 nats above scratch (26.20 against 25.50)" in result.to_markdown()


def test_the_final_gap_is_judged_against_the_spread_of_the_final_measurements() -> None:
    # The last epochs (24.0, 24.2) would give sd 0.14; the final measurements (24.0, 26.0) give sd 1.41.
    curves = {"scratch": [[40, 24.0], [40, 24.2]], "warm": [[30, 25.0], [30, 25.0]]}
    result = _comparison(curves, finals={"scratch": [24.0, 26.0]})
    assert any("within twice the seeds' spread (sd 1.41)" in line for line in result.verdict())


@pytest.mark.parametrize(("gap", "word"), [(0.05, "within"), (2.0, "beyond")])
def test_the_final_gap_is_judged_against_the_seeds_spread(gap: float, word: str) -> None:
    curves = {"scratch": [[40, 24.0], [40, 24.2]], "warm": [[30, 24.1 + gap], [30, 24.1 + gap]]}
    result = _comparison(curves)
    assert any(f"{word} twice the seeds' spread" in line for line in result.verdict())


@pytest.mark.parametrize(
    ("scratch_final", "said"), [(25.0, "warm at 3.60x"), (-20.0, "warm +110.00 nats"), (0.0, "warm +90.00 nats")]
)
def test_the_step_zero_line_gives_ratios_only_against_a_positive_reference(scratch_final: float, said: str) -> None:
    result = _comparison({"scratch": [[40, scratch_final]], "warm": [[90, 30]]})
    assert said in result.verdict()[0]


def test_an_epoch_zero_value_at_or_below_zero_is_a_difference_not_a_ratio() -> None:
    result = _comparison({"scratch": [[40, 5.0]], "warm": [[-3.0, 4.0]]})
    line = result.verdict()[0]
    assert "warm -8.00 nats (at -3.00)" in line
    assert "x (" not in line.split("warm")[1]


def test_a_ratio_also_gives_the_difference_in_nats() -> None:
    result = _comparison({"scratch": [[40, 25.0]], "warm": [[90, 30]]})
    assert "warm at 3.60x (90.00 nats, +65.00)" in result.verdict()[0]


def test_runs_without_a_final_measurement_get_no_verdict_on_final_values() -> None:
    result = _comparison({"scratch": [[40, 24.0]], "warm": [[90, 26.0]]}, final=False)
    assert result.verdict()[0].startswith("No run has a final measurement")
    assert not any("scratch's final" in line or "At the end" in line for line in result.verdict())
    assert result.epochs_to_within() == {}


def test_per_epoch_values_far_from_the_final_ones_are_said_to_be_noisy() -> None:
    result = _comparison({"scratch": [[40, 24.0]], "warm": [[90, 26.0]]}, finals={"warm": [23.0]})
    assert any(
        "per-epoch measurements (k = 8) lie up to 3.00 nats from the final ones (k = 100)" in line
        and "(warm seed 0)" in line
        for line in result.verdict()
    )


def test_per_epoch_values_close_to_the_final_ones_say_nothing_of_noise() -> None:
    result = _comparison({"scratch": [[40, 24.0]], "warm": [[90, 26.0]]}, finals={"warm": [26.3]})
    assert not any("per-epoch measurements" in line for line in result.verdict())


# --- the price of a latent ---------------------------------------------------------------------------------

_MSE = {
    ("ae", 0): {"mse": {"eval": 0.00255, "sampled": None}},
    ("scratch", 0): {"mse": {"eval": 0.01, "sampled": 0.02}},
    ("warm", 0): {"mse": {"eval": 0.003, "sampled": 0.005}},
    ("calibrated", 0): {"mse": {"eval": 0.00272, "sampled": 0.004}},
}
_FOUR = {"ae": [[1.0, 0.9]], "scratch": [[40, 30]], "warm": [[30, 25]], "calibrated": [[26, 24]]}


def test_the_price_of_a_latent_compares_eval_mode_mse_of_each_start_with_the_aes() -> None:
    line = _line(_comparison(_FOUR, fields=_MSE).verdict(), "Held-out MSE per element")
    assert "in eval mode" in line and "the AE 0.00255;" in line
    assert "calibrated 0.00272 (1.07x) (with z sampled as in training: 0.004)" in line
    assert "warm 0.003 (1.18x)" in line and "scratch 0.01 (3.92x)" in line
    assert line.endswith("the price of a latent that can be sampled.")


def test_the_table_holds_each_starts_eval_mode_mse() -> None:
    report = _comparison(_FOUR, fields=_MSE).to_markdown()
    assert "| recon | MSE (eval) |" in report
    assert "| ae | 1.00 | 0.90 | - | 0.90 | 0.00255 |" in report
    assert "| calibrated | 26.00 | 24.00 | - | 24.00 | 0.00272 |" in report


def test_without_mse_the_price_compares_reconstruction_terms_per_start_not_averaged() -> None:
    line = _line(_comparison(_FOUR).verdict(), "The AE's held-out reconstruction term is 0.90 nats")
    assert "scratch 30.00, warm 25.00, calibrated 24.00" in line
    assert "on average" not in line and "26.33" not in line


def test_without_an_ae_start_nothing_is_said_of_the_aes_reconstruction() -> None:
    curves = {k: v for k, v in _FOUR.items() if k != "ae"}
    verdict = _comparison(curves, fields=_MSE).verdict()
    assert not any("the AE" in line or "The AE" in line or "price of" in line for line in verdict)


# --- warnings and the held-out split ---------------------------------------------------------------------


def test_the_configs_warnings_come_first_under_their_own_heading() -> None:
    warning = "the held-out split was drawn from --data: the AE checkpoint may have been trained on it"
    report = _comparison({"scratch": [[40, 24]]}, config={"warnings": [warning]}).to_markdown()
    assert f"## Warnings\n\n- {warning}\n" in report
    assert report.index("## Warnings") < report.index("## What was run")


@pytest.mark.parametrize("config", [{}, {"warnings": []}])
def test_a_report_without_warnings_has_no_warnings_heading(config: dict) -> None:
    assert "## Warnings" not in _comparison({"scratch": [[40, 24]]}, config=config).to_markdown()


def test_a_split_drawn_from_the_data_is_never_called_never_trained_on() -> None:
    split = "held out: a seeded 0.1 of the data (split seed 0), never trained on"
    report = _comparison({"scratch": [[40, 24]]}, config={"data": {"split": split}}).to_markdown()
    assert "never trained on" not in report
    assert "held out: a seeded 0.1 of the data (split seed 0); the comparison's runs do not train on it, but the AE " \
        "checkpoint may have been trained on it" in report  # fmt: skip


# --- discrete latents --------------------------------------------------------------------------------------


def test_a_discrete_report_speaks_of_no_posterior_draws() -> None:
    report = _comparison({"scratch": [[40, 24]], "warm": [[30, 25]]}, latent="vq").to_markdown()
    assert "posterior draws" not in report and "k = 8" not in report
    assert "codes are deterministic" in report


def test_a_discrete_report_defines_perplexity_apart_from_codes_used() -> None:
    report = _comparison({"scratch": [[40, 24]]}, latent="fsq").to_markdown()
    assert "perplexity (the exponential of the codes' entropy)" in report
    assert "codes used (the share of the codebook that occurs)" in report


# --- the best model file -------------------------------------------------------------------------------------


def test_the_best_run_by_final_value_is_named_with_its_file_and_how_to_load_it() -> None:
    curves = {"ae": [[1, 0.5], [1, 0.5]], "scratch": [[40, 24.5], [40, 24.4]], "warm": [[30, 24.9], [30, 23.0]]}
    fields = {(s, seed): {"model_file": f"models/{s}-seed{seed}.safetensors"} for s in curves for seed in (0, 1)}
    # The finals, not the last epochs, decide: warm seed 1 ends at 24.3 after its last epoch's 23.0.
    result = _comparison(curves, fields=fields, finals={"warm": [24.9, 24.3]})
    line = _line(result.verdict(), "The best run")
    assert "by final held-out -ELBO is warm seed 1 (24.30 nats)" in line
    assert 'fxvae.load(ae, "models/warm-seed1.safetensors", x)' in line and "an instance of AE" in line


def test_a_discrete_comparisons_best_run_is_the_lowest_distortion() -> None:
    curves = {"warm": [[30, 5.0]], "scratch": [[40, 4.0]]}
    fields = {(s, 0): {"model_file": f"models/{s}-seed0.safetensors"} for s in curves}
    line = _line(_comparison(curves, fields=fields, latent="vq").verdict(), "The best run")
    assert "by final held-out distortion is scratch seed 0 (4.00 nats)" in line


def test_records_without_model_files_name_no_file() -> None:
    verdict = _comparison({"scratch": [[40, 24]], "warm": [[30, 23]]}).verdict()
    assert not any("fxvae.load" in line for line in verdict)


# --- records older than the AE-against-VAE measurements -------------------------------------------------------


def test_records_without_axes_report_as_before_without_an_ae_vs_vae_section() -> None:
    result = _comparison(_FOUR, fields=_MSE)
    report = result.to_markdown(["curves.png"])
    assert not result.has_axes and result.models() == []
    assert report.startswith("# AE: the AE's VAE against one trained from scratch\n")
    assert "## AE vs VAE" not in report and "## Results" in report and "\n## Verdict\n" in report
    assert any(line.startswith("Held-out MSE per element") for line in result.verdict())
