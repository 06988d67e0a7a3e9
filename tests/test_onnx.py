"""fxvae.export_onnx: VAE, encoder and decoder run in onnxruntime at another batch size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fxvae
from fxvae.analysis.outputs import tensors
from tests.zoo import ZOO, build

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

BY_NAME = {e.name: e for e in ZOO}


def _parts(name: str, **convert: object) -> dict[str, tuple[torch.nn.Module, object]]:
    entry = BY_NAME[name]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), **convert)
    encoder, decoder = fxvae.split(vae)

    def latent(b: int) -> tuple[object, ...]:
        return (torch.randn(b, *entry.latent_shape), *entry.inputs(b)[1:])

    return {"vae": (vae, entry.inputs), "encoder": (encoder, entry.inputs), "decoder": (decoder, latent)}


@pytest.mark.parametrize(
    ("model", "part"),
    [
        ("dataclass_output", "vae"),
        ("shape_control_flow", "vae"),
        ("shape_control_flow", "decoder"),
        ("conditional", "encoder"),
        ("conditional", "decoder"),
    ],
)
def test_onnx_model_matches_pytorch_at_another_batch_size(model: str, part: str, tmp_path: Path) -> None:
    _check_matches(*_parts(model)[part], tmp_path)


@pytest.mark.parametrize("part", ["vae", "encoder", "decoder"])
@pytest.mark.parametrize("model", ["conv_flat_linear", "conv_latent"])
def test_a_calibration_kept_unfolded_exports_and_matches_pytorch(model: str, part: str, tmp_path: Path) -> None:
    calibration = BY_NAME[model].inputs(64)[0]
    parts = _parts(model, latent=fxvae.Gaussian(fold=False), calibration=calibration)
    assert fxvae.conversion(parts["vae"][0]).calibration.folded_mu is None
    _check_matches(*parts[part], tmp_path)


def _check_matches(module: torch.nn.Module, inputs: object, tmp_path: Path) -> None:
    """Exported from training mode at batch 3, the model's ONNX file runs at batch 7 as its eval mode does."""
    module.train()
    fxvae.export_onnx(module, tmp_path / "m.onnx", inputs(3))
    assert module.training
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    args = inputs(7)
    got = session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)})
    with torch.no_grad():
        expected = tensors(module.eval()(*args))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-5, rtol=1e-5)


def test_onnx_inputs_are_named_after_the_arguments(tmp_path: Path) -> None:
    decoder = _parts("conditional")["decoder"][0]
    fxvae.export_onnx(decoder, tmp_path / "d.onnx", (torch.randn(2, 4), torch.tensor([1, 2])))
    session = ort.InferenceSession(str(tmp_path / "d.onnx"))
    assert [i.name for i in session.get_inputs()] == ["z", "label"]
    assert [o.name for o in session.get_outputs()] == ["output_0"]


def test_flatten_outputs_goes_depth_first_and_skips_none() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    out = {"first": (a, None), "second": [b]}
    assert tensors(out) == (a, b)


def test_export_prints_no_exporter_noise(tmp_path: Path) -> None:
    # A fresh process: the exporter logs its missing-operator lines only on its first use in a process.
    code = (
        "import torch, fxvae, warnings; from torch import nn; warnings.simplefilter('always');"
        "vae, _ = fxvae.convert(nn.Sequential(nn.Linear(16, 4), nn.Linear(4, 16)), torch.randn(3, 16));"
        f"fxvae.export_onnx(vae, {str(tmp_path / 'v.onnx')!r}, torch.randn(3, 16))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == "" and done.stdout == ""
