"""The report's AE-against-VAE section, from records made by hand (tests/report_records.py): its rows, its cells
and when one is bold, the verdict's words and numbers, and where it stands in report.md."""

from __future__ import annotations

from typing import Any

import pytest

from fxvae.measure.evaluation import Estimate, Evaluation
from fxvae.study import ledger
from fxvae.study.ae_vs_vae import Model, columns
from fxvae.study.comparison import Comparison
from fxvae.study.records import Axes, RunRecord
from tests.report_records import ae_vs_vae_records


def _comparison(seeds: int = 1, changes: dict[str, dict[str, Any]] | None = None, **kwargs: Any) -> Comparison:
    return ledger.comparison_of(ae_vs_vae_records(seeds, changes, **kwargs))


def _row(comparison: Comparison, model: str) -> dict[str, Any]:
    return next(row for row in comparison.ae_vs_vae_table() if row["model"] == model)


def _bold(comparison: Comparison, column: str) -> list[str]:
    return [row["model"] for row in comparison.ae_vs_vae_table() if row[column]["bold"]]


def _line(lines: list[str], start: str) -> str:
    return next(line for line in lines if line.startswith(start))


def _axis(comparison: Comparison, prefix: str):
    return next(a for a in columns(comparison) if a.name.startswith(prefix))


def _without_per_sample(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for record in records:
        if record.get("axes"):
            record["axes"]["paired"] = {}
    return records


# --- where it stands --------------------------------------------------------------------------------------------


def test_the_report_opens_with_the_ae_against_its_vaes_then_which_start() -> None:
    report = _comparison().to_markdown()
    assert report.startswith("# AE: the AE against its VAEs\n\n## AE vs VAE\n")
    assert report.index("## AE vs VAE") < report.index("## What was run") < report.index("## Which VAE start")
    assert "### Verdict: AE vs VAE" in report and "### Verdict: which start" in report


def test_the_ae_vs_vae_pictures_are_shown_in_its_section_and_the_others_at_the_end() -> None:
    report = _comparison().to_markdown(["curves.png", "ae_vs_vae_samples.png", "ae_vs_vae_interpolation.png"])
    section = report[report.index("## AE vs VAE") : report.index("## What was run")]
    assert "![ae_vs_vae_samples.png](ae_vs_vae_samples.png)" in section
    assert "![ae_vs_vae_interpolation.png](ae_vs_vae_interpolation.png)" in section
    assert report.index("![curves.png]") > report.index("## Pictures")


def test_the_start_verdict_leaves_the_price_of_a_latent_to_the_ae_vs_vae_section() -> None:
    verdict = _comparison().verdict()
    assert not any("Held-out MSE per element" in line or "the AE step's rate" in line for line in verdict)


# --- rows and cells ---------------------------------------------------------------------------------------------


def test_a_row_per_model_the_ae_with_each_density_then_each_vae_start() -> None:
    assert [m.name for m in _comparison().models()] == ["ae + gaussian", "ae + gmm", "scratch", "warm", "calibrated"]


def test_an_ae_measured_without_a_density_keeps_one_row() -> None:
    change = {"nll": {}, "samples": {}, "latent": {}}
    assert [m.name for m in _comparison(changes={"ae": change}).models()] == ["ae", "scratch", "warm", "calibrated"]


def test_a_cell_is_the_mean_and_sd_over_the_seeds() -> None:
    report = _comparison(2).to_markdown()
    # warm's NLL: 25.8 under seed 0, 25.8 x 1.01 under seed 1.
    assert "| warm | 0.0121 ± 8.5e-05 | 0.016 ± 0 | 25.93 ± 0.18 |" in report


def test_each_models_nll_is_read_at_its_own_source() -> None:
    comparison = _comparison()
    nll = _axis(comparison, "NLL").name
    assert _row(comparison, "ae + gaussian")[nll]["values"] == [pytest.approx(30.0)]
    assert _row(comparison, "ae + gmm")[nll]["values"] == [pytest.approx(26.0)]
    assert _row(comparison, "calibrated")[nll]["values"] == [pytest.approx(24.5)]


def test_a_column_no_row_measured_is_left_out() -> None:
    header = _comparison().to_markdown().split("| model |")[1].splitlines()[0]
    assert "PSNR" not in header and "probe" not in header and "AUROC" not in header


def test_image_labels_and_anomaly_labels_add_their_columns() -> None:
    extra = {"psnr": {"eval": 20.0, "sampled": None}, "ssim": {"eval": 0.8, "sampled": None}}
    extra |= {"probe": {"value": 0.9, "stderr": 0.01}, "auroc": 0.7, "auroc_score": "nll"}
    header = _comparison(changes={s: extra for s in ("ae", "warm")}).to_markdown().split("| model |")[1]
    for column in ("PSNR (dB)", "SSIM", "probe accuracy", "anomaly AUROC"):
        assert f" {column} |" in header.splitlines()[0]


# --- bold: better beyond twice the standard error---------------------------------------------------------------


def test_a_cell_within_twice_the_standard_error_of_the_next_is_not_bold() -> None:
    # warm 0.030 and calibrated 0.031, each with a standard error of 0.002.
    assert _bold(_comparison(), "interpolation") == []


def test_a_cell_less_than_twice_the_standard_error_ahead_is_not_bold() -> None:
    # warm 0.030 against scratch's 0.035, each with a standard error of 0.002: 1.8 standard errors apart.
    comparison = _comparison(changes={"calibrated": {"interpolation": 0.040}})
    assert _bold(comparison, "interpolation") == []


def test_a_cell_beyond_twice_the_standard_error_of_every_other_is_bold() -> None:
    comparison = _comparison(changes={"calibrated": {"interpolation": 0.040}, "scratch": {"interpolation": 0.040}})
    assert _bold(comparison, "interpolation") == ["warm"]
    assert "| **0.03** |" in comparison.to_markdown()


def test_rows_that_share_a_measurement_are_not_compared_with_each_other() -> None:
    # Both AE rows hold the AE's one MSE: they tie, and both beat every VAE.
    assert _bold(_comparison(), "MSE (eval)") == ["ae + gaussian", "ae + gmm"]


def test_the_ae_rows_with_different_densities_are_compared_with_each_other() -> None:
    comparison = _comparison(changes={"ae": {"latent": {"gaussian": 0.0051, "gmm": 0.005}}})
    assert "ae + gmm" not in _bold(comparison, "latent to prior")


def test_per_sample_values_pair_the_difference() -> None:
    comparison = _comparison()
    d = comparison.difference(Model("ae", "gmm"), Model("warm"), _axis(comparison, "NLL"))
    assert d.paired and d.value == pytest.approx(0.2) and d.stderr < 0.02 and d.beyond


def test_without_per_sample_values_the_standard_errors_combine_unpaired() -> None:
    comparison = ledger.comparison_of(_without_per_sample(ae_vs_vae_records()))
    d = comparison.difference(Model("ae", "gmm"), Model("warm"), _axis(comparison, "NLL"))
    assert not d.paired and d.stderr > 0.3 and not d.beyond


def _runs(start: str, values: list[float], stderr: float = 0.01) -> list[RunRecord]:
    final = Evaluation("vae", 40, 1, "gaussian", 0, 4, recon=Estimate(1.0, 0.1))
    return [
        RunRecord(start, seed, final=final, axes=Axes(nll={"prior": Estimate(v, stderr)}))
        for seed, v in enumerate(values)
    ]


def test_over_seeds_a_difference_is_judged_by_the_seeds_spread() -> None:
    # Per seed the difference is -1 and +2: each measured to 0.014, but the seeds disagree.
    comparison = Comparison({}, _runs("warm", [10.0, 12.0]) + _runs("calibrated", [11.0, 10.0]))
    d = comparison.difference(Model("warm"), Model("calibrated"), _axis(comparison, "NLL"))
    assert d.value == pytest.approx(0.5) and d.stderr == pytest.approx(1.5) and not d.beyond


def test_one_seed_of_a_value_without_a_standard_error_is_never_bold() -> None:
    # Steps per second: 100 against 90, one seed, nothing to judge the gap by.
    assert _bold(_comparison(), "steps/s") == []


# --- the verdict ----------------------------------------------------------------------------------------------


def test_the_verdict_opens_with_what_the_vae_gains_and_what_it_costs() -> None:
    assert _comparison().ae_vs_vae_verdict()[0] == (
        "What the VAE gains on this model and data: a better likelihood, a smoother latent; what it costs: "
        "reconstruction "
        "in the data's units, step rate."
    )


def test_an_ae_with_a_gmm_that_samples_as_well_as_the_best_vae_is_said_to() -> None:
    line = _line(_comparison().ae_vs_vae_verdict(), "ae + gmm samples")
    assert line.startswith("ae + gmm samples as well as calibrated (-0.001 ± 0.0028, within twice its standard error)")
    assert "Ghosh et al. (2020)" in line


def test_prior_samples_closer_than_every_ae_density_are_a_gain_of_the_vae() -> None:
    verdict = _comparison(changes={"ae": {"samples": {"gaussian": 0.05, "gmm": 0.04}}}).ae_vs_vae_verdict()
    assert verdict[0].startswith(
        "What the VAE gains on this model and data: samples closer to the data, a better likelihood"
    )
    assert any(line.startswith("the VAE gains sampling: calibrated samples closer than ae + gmm") for line in verdict)


def test_the_nll_differences_are_the_ae_minus_each_vae_paired_with_standard_errors() -> None:
    line = _line(_comparison().ae_vs_vae_verdict(), "NLL of ae + gmm")
    assert "paired per held-out sample (the same samples and posterior noise)" in line
    assert line.endswith("scratch -1.00 ± 0.01, warm +0.20 ± 0.01, calibrated +1.50 ± 0.01.")


def test_over_seeds_the_nll_differences_say_they_are_a_mean_of_the_seeds() -> None:
    line = _line(_comparison(3).ae_vs_vae_verdict(), "NLL of ae + gmm")
    assert "the mean of 3 seeds' differences" in line


def test_a_vae_that_samples_closer_from_its_ex_post_density_is_said_to_miss_its_prior() -> None:
    verdict = _comparison().ae_vs_vae_verdict()
    line = _line(verdict, "warm samples closer from an ex-post gmm")
    assert "(0.012 against 0.021)" in line and "Dai & Wipf (2019)" in line
    # calibrated: 0.018 against 0.019, within the standard error.
    assert not any(line.startswith("calibrated samples closer") for line in verdict)


def test_the_price_in_reconstruction_is_in_the_datas_units_against_the_ae_with_paired_errors() -> None:
    line = _line(_comparison().ae_vs_vae_verdict(), "Reconstruction in the data's units")
    assert "the AE 0.01;" in line and "warm 0.012 (1.20x, +0.002 ± 0.00011)" in line


def test_images_add_the_psnr_of_each_model_to_the_reconstruction_sentence() -> None:
    psnr = {"ae": 20.0, "scratch": 17.0, "warm": 19.0, "calibrated": 19.5}
    changes = {s: {"psnr": {"eval": v, "sampled": None}} for s, v in psnr.items()}
    line = _line(_comparison(changes=changes).ae_vs_vae_verdict(), "Reconstruction in the data's units")
    assert line.endswith("PSNR in dB: the AE 20.00, scratch 17.00, warm 19.00, calibrated 19.50.")


def test_a_slower_vae_step_is_a_cost_with_its_rate() -> None:
    verdict = _comparison().ae_vs_vae_verdict()
    assert "A VAE training step runs at 0.90x the AE's rate (90.0 against 100.0 steps/s)." in verdict
    assert verdict[0].endswith("step rate.")


def test_an_ae_without_a_density_leaves_the_vae_a_likelihood() -> None:
    verdict = _comparison(changes={"ae": {"nll": {}}}).ae_vs_vae_verdict()
    assert "a likelihood (the AE has none without a density)" in verdict[0]


def test_labels_add_the_probe_and_anomaly_sentences() -> None:
    extra = {"probe": {"value": 0.9, "stderr": 0.01}, "auroc": 0.7}
    verdict = _comparison(changes={s: extra for s in ("ae", "warm")}).ae_vs_vae_verdict()
    assert "Linear-probe accuracy on held-out codes (logistic regression on the training codes): ae 0.900, " \
        "warm 0.900." in verdict  # fmt: skip
    assert any(line.startswith("Anomaly AUROC") and line.endswith("ae 0.700, warm 0.700.") for line in verdict)


def test_without_an_ae_start_the_verdict_asks_for_one_instead_of_judging() -> None:
    comparison = ledger.comparison_of([r for r in ae_vs_vae_records() if r.get("start") != "ae"])
    assert [m.name for m in comparison.models()] == ["scratch", "warm", "calibrated"]
    assert comparison.ae_vs_vae_verdict() == [
        "The comparison ran no ae start: add ae to the starts to compare the AE against its VAEs on these axes "
        "(the table compares the VAE starts alone)."
    ]


def test_the_columns_are_defined_under_the_table_naming_the_features_used() -> None:
    report = _comparison().to_markdown()
    table_end = report.index("| calibrated |")
    definitions = report[table_end : report.index("### Verdict: AE vs VAE")]
    assert "- **samples**: the kernel MMD² (Gretton et al. 2012) of decoded draws against held-out data (features: " \
        "the data, flattened)" in definitions  # fmt: skip
    assert "- **active units**: latent elements whose posterior mean varies over the data (of 8)." in definitions
