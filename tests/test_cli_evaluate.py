"""``fxvae evaluate``: a VAE file and an AE checkpoint measured on held-out data, from every kind of data source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import fxvae
from fxvae.cli import ExitCode, app
from tests import cli_models

MODELS = str(Path(__file__).with_name("cli_models.py"))
MLP = f"{MODELS}:mlp_ae"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


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
    assert "VAE; n=40, k=20, likelihood gaussian(sigma=" in out
    for name in ("recon", "kl", "neg_elbo", "nll", "mutual_info", "bits/dim", "active units:"):
        assert name in out


def test_evaluate_json_is_the_evaluation_record(files: dict) -> None:
    args = ("--data", str(files["data"]), "--likelihood", "bernoulli", "--k", "5", "--seed", "3", "--json")
    code, out, _ = run("evaluate", str(files["vae"]), "--model", MLP, *args)
    assert code == 0
    record = json.loads(out)
    result = fxvae.Evaluation.from_dict({k: v for k, v in record.items() if k not in ("checkpoint", "model")})
    vae, _ = fxvae.load(cli_models.mlp_ae(), files["vae"], torch.rand(2, 16))
    expected = fxvae.evaluate(vae, torch.load(files["data"]), likelihood="bernoulli", k=5, seed=3)
    assert result == expected


def test_an_autoencoder_checkpoint_gets_its_reconstruction_term(files: dict) -> None:
    code, out, _ = run("evaluate", str(files["ae"]), "--model", MLP, "--data", str(files["data"]), "--sigma", "0.5")
    assert code == 0
    assert "autoencoder (reconstruction term only)" in out
    assert "recon" in out and "neg_elbo" not in out


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
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_vq_file_is_measured_by_its_distortion_rate_and_code_use(tmp_path: Path) -> None:
    ae = cli_models.mlp_ae()
    data = torch.rand(300, 16, generator=torch.Generator().manual_seed(0))
    vq, _ = fxvae.convert(ae, data[:2], latent="vq", codebook_size=16, calibration=data)
    fxvae.save(vq, tmp_path / "vq.safetensors")
    torch.save(data, tmp_path / "held.pt")
    code, out, err = run(
        "evaluate", str(tmp_path / "vq.safetensors"), "--model", MLP, "--data", str(tmp_path / "held.pt")
    )
    assert code == 0, err
    assert "VQ model" in out and "rate: 4 bits per sample" in out and "codebook perplexity" in out
