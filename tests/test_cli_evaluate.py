"""``fxvae evaluate``: VAE files and AE checkpoints measured on held-out data in one table under one likelihood,
from every kind of data source, and each mistake one line with its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import fxvae
from fxvae.cli.app import app
from fxvae.cli.errors import ExitCode
from tests import cli_models

MODELS = str(Path(__file__).with_name("cli_models.py"))
MLP = f"{MODELS}:mlp_ae"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(err: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "\x1b" not in err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """An AE checkpoint, its VAE file and held-out data in [0, 1]."""
    ae = cli_models.mlp_ae()
    save_file(ae.state_dict(), str(tmp_path / "ae.safetensors"))
    vae, _ = fxvae.convert(ae, torch.rand(2, 16))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    torch.save(torch.rand(40, 16, generator=torch.Generator().manual_seed(0)), tmp_path / "held.pt")
    return {"ae": tmp_path / "ae.safetensors", "vae": tmp_path / "vae.safetensors", "data": tmp_path / "held.pt"}


def test_evaluate_prints_a_table_of_every_measured_value_with_what_it_was_computed_with(files: dict) -> None:
    code, out, err = run("evaluate", str(files["vae"]), "--model", MLP, "--data", str(files["data"]), "--k", "20")
    assert code == 0, err
    assert f"{files['data']}: n=40, k=20, likelihood gaussian(sigma=" in out
    for name in ("recon", "kl", "neg_elbo", "nll", "bits/dim", "active units", "mutual information"):
        assert name in out


def test_evaluate_json_is_the_evaluation_record(files: dict) -> None:
    args = ("--data", str(files["data"]), "--likelihood", "bernoulli", "--k", "5", "--seed", "3", "--json")
    code, out, _ = run("evaluate", str(files["vae"]), "--model", MLP, *args)
    assert code == 0
    [record] = json.loads(out)
    assert record["likelihood_fitted_to"] is None  # bernoulli has no scale to fit
    extra = ("checkpoint", "model", "likelihood_fitted_to")
    result = fxvae.Evaluation.from_dict({k: v for k, v in record.items() if k not in extra})
    vae, _ = fxvae.load(cli_models.mlp_ae(), files["vae"], torch.rand(2, 16))
    expected = fxvae.evaluate(vae, torch.load(files["data"]), likelihood="bernoulli", k=5, seed=3)
    assert result == expected


def test_an_autoencoder_checkpoint_gets_its_reconstruction_term(files: dict) -> None:
    code, out, _ = run("evaluate", str(files["ae"]), "--model", MLP, "--data", str(files["data"]), "--sigma", "0.5")
    assert code == 0
    row = next(line for line in out.splitlines() if str(files["ae"]) in line)
    assert "AE (recon only)" in row and row.count(" - ") >= 3  # no kl, neg_elbo, nll


def test_data_from_a_factory_returning_a_dataloader(files: dict, tmp_path: Path) -> None:
    (tmp_path / "loaders.py").write_text(
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "def held_out():\n    return DataLoader(TensorDataset(torch.rand(12, 16)), batch_size=5)\n"
    )
    code, out, err = run("evaluate", str(files["vae"]), "--model", MLP, "--data", f"{tmp_path / 'loaders.py'}:held_out")
    assert code == 0, err
    assert "n=12" in out


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        (("--likelihood", "bernoulli-probs"), ExitCode.DATA, "needs probabilities"),
        (("--sigma", "wide"), ExitCode.USAGE, "--sigma 'wide' must be a positive number"),
        (("--data", "missing.npy"), ExitCode.DATA, "does not exist"),
    ],
)
def test_evaluate_errors_are_one_line_with_their_exit_code(
    files: dict, options: tuple[str, ...], code: int, message: str
) -> None:
    data = ("--data", str(files["data"])) if "--data" not in options else ()
    got, _, err = run("evaluate", str(files["vae"]), "--model", MLP, *data, *options)
    assert got == code
    assert message in err
    assert_one_line_error(err)


def test_a_vq_file_is_measured_by_its_distortion_rate_and_code_use(tmp_path: Path) -> None:
    ae = cli_models.mlp_ae()
    data = torch.rand(300, 16, generator=torch.Generator().manual_seed(0))
    vq, _ = fxvae.convert(ae, data[:2], latent=fxvae.VQ(codebook_size=16), calibration=data)
    fxvae.save(vq, tmp_path / "vq.safetensors")
    torch.save(data, tmp_path / "held.pt")
    code, out, err = run(
        "evaluate", str(tmp_path / "vq.safetensors"), "--model", MLP, "--data", str(tmp_path / "held.pt")
    )
    assert code == 0, err
    assert "VQ model" in out and "rate 4 bits per sample" in out and "codebook perplexity" in out


# --- several files, one likelihood ------------------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path: Path) -> dict[str, Path]:
    """An AE fitted a little to its data (so that its error differs from a VAE's), its VAE file, a calibrated
    VAE file, and held-out data."""
    torch.manual_seed(0)
    ae = cli_models.mlp_ae()
    data = torch.rand(200, 16, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(ae.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.mse_loss(ae(data), data).backward()
        opt.step()
    save_file(ae.state_dict(), str(tmp_path / "ae.safetensors"))
    fxvae.save(fxvae.convert(ae, data[:2])[0], tmp_path / "warm.safetensors")
    fxvae.save(fxvae.convert(ae, data[:2], calibration=data)[0], tmp_path / "calibrated.safetensors")
    torch.save(data[:60], tmp_path / "held.pt")
    return {
        name: tmp_path / f"{name}.{'pt' if name == 'held' else 'safetensors'}"
        for name in ("ae", "warm", "calibrated", "held")
    }


def _rows(*args: str) -> list[dict]:
    code, out, err = run("evaluate", *args, "--model", MLP, "--json")
    assert code == 0, err
    return json.loads(out)


def test_several_files_are_one_table_with_a_row_each_in_the_order_given(trained: dict) -> None:
    files = [str(trained[n]) for n in ("warm", "ae", "calibrated")]
    code, out, err = run("evaluate", *files, "--model", MLP, "--data", str(trained["held"]), "--k", "4")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [next(f for f in files if f in line) for line in rows] == files
    assert ["VAE" in rows[0], "AE (recon only)" in rows[1], "VAE" in rows[2]] == [True, True, True]
    assert out.count("┏") == 1  # one table


def test_an_optimal_sigma_is_fitted_once_to_the_autoencoder_and_shared_by_every_row(trained: dict) -> None:
    held = str(trained["held"])
    records = _rows(str(trained["warm"]), str(trained["ae"]), str(trained["calibrated"]), "--data", held)
    ae_alone = fxvae.evaluate(_ae(trained["ae"]), torch.load(trained["held"]))
    assert [r["scale"] for r in records] == [ae_alone.scale] * 3
    assert {r["likelihood"] for r in records} == {f"gaussian(sigma={ae_alone.scale:.4g}, optimal)"}
    assert all(r["likelihood_fitted_to"] == {"file": str(trained["ae"]), "data": held} for r in records)
    # Fitted to each file alone, the VAEs would get other sigmas: the table would mix scales.
    warm_alone = _rows(str(trained["warm"]), "--data", held)[0]
    assert warm_alone["scale"] != pytest.approx(ae_alone.scale, rel=1e-3)


def test_the_output_says_what_sigma_was_fitted_to(trained: dict) -> None:
    code, out, err = run(
        "evaluate", str(trained["warm"]), str(trained["ae"]), "--model", MLP, "--data", str(trained["held"])
    )
    assert code == 0, err
    scale = fxvae.evaluate(_ae(trained["ae"]), torch.load(trained["held"])).scale
    assert f"sigma = {scale:.4g} (optimal: fitted to {trained['ae']} on {trained['held']}; shared by every row)" in out


def test_without_an_autoencoder_sigma_is_fitted_to_the_first_file(trained: dict) -> None:
    held = str(trained["held"])
    records = _rows(str(trained["calibrated"]), str(trained["warm"]), "--data", held)
    assert records[0]["likelihood_fitted_to"]["file"] == str(trained["calibrated"])
    alone = _rows(str(trained["calibrated"]), "--data", held)[0]
    assert records[0]["scale"] == records[1]["scale"] == alone["scale"]


def test_a_sigma_given_is_every_rows_and_nothing_is_fitted(trained: dict) -> None:
    records = _rows(str(trained["warm"]), str(trained["ae"]), "--data", str(trained["held"]), "--sigma", "0.25")
    assert [r["scale"] for r in records] == [0.25, 0.25]
    assert [r["likelihood_fitted_to"] for r in records] == [None, None]


def _ae(path: Path) -> torch.nn.Module:
    ae = cli_models.mlp_ae()
    ae.load_state_dict(load_file(path))
    return ae


def test_a_fitted_likelihood_object_is_shared_by_evaluate_calls(trained: dict) -> None:
    data = torch.load(trained["held"])
    vae, _ = fxvae.load(cli_models.mlp_ae(), trained["warm"], data[:2])
    reference = fxvae.evaluate(_ae(trained["ae"]), data)  # fits sigma to the AE
    shared = fxvae.likelihoods.Gaussian(sigma=reference.scale, fitted=True)
    measured = fxvae.evaluate(vae, data, likelihood=shared, k=2)
    assert measured.scale == reference.scale and measured.likelihood == reference.likelihood
    fixed = fxvae.evaluate(vae, data, likelihood="gaussian", sigma=reference.scale, k=2)
    assert measured.neg_elbo == fixed.neg_elbo  # the object is used as given, not fitted again


# --- what does not fit ------------------------------------------------------------------------------------------


def test_data_of_the_wrong_shape_is_a_data_error_naming_the_file_and_both_shapes(files: dict, tmp_path: Path) -> None:
    torch.save(torch.rand(10, 12), tmp_path / "wide.pt")
    for checkpoint in (files["ae"], files["vae"]):
        code, _, err = run("evaluate", str(checkpoint), "--model", MLP, "--data", str(tmp_path / "wide.pt"))
        assert code == ExitCode.DATA
        assert_one_line_error(err)
        assert f"--data {tmp_path / 'wide.pt'} has shape [10, 12], but Sequential takes ['batch', 16]" in err


def test_a_checkpoint_of_another_architecture_is_one_line_of_summarised_keys(files: dict, tmp_path: Path) -> None:
    save_file(cli_models.conv_ae().state_dict(), str(tmp_path / "conv.safetensors"))
    code, _, err = run("evaluate", str(tmp_path / "conv.safetensors"), "--model", MLP, "--data", str(files["data"]))
    assert code == ExitCode.CHECKPOINT
    assert_one_line_error(err)
    assert (
        "does not fit Sequential: missing keys ['0.weight', '0.bias', '2.weight', '2.bias', '4.weight'] and 1 more"
        in err
    )
    assert "Error(s) in loading state_dict" not in err


def test_a_pickled_whole_model_is_one_line_without_escape_codes(files: dict, tmp_path: Path) -> None:
    torch.save(cli_models.mlp_ae(), tmp_path / "whole.pt")
    code, _, err = run("evaluate", str(tmp_path / "whole.pt"), "--model", MLP, "--data", str(files["data"]))
    assert code == ExitCode.CHECKPOINT
    assert_one_line_error(err)
    assert "holds a pickled torch.nn.modules.container.Sequential" in err and "state_dict()" in err
