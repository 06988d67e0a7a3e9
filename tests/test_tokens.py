"""fxvae.tokenize / fxvae.detokenize / fxvae.split_tokens, and the two halves in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fxvae
from fxvae.analysis.outputs import tensors
from tests.discrete_zoo import BY_NAME, CODE_SHAPES, ENTRIES, assert_same_outputs, convert

LATENTS = ["vq", "fsq"]


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_detokenize_of_tokenize_is_the_eval_output(entry, latent: str) -> None:
    model, _ = convert(entry, latent)
    model.train()
    args = entry.inputs(6)
    codes = fxvae.tokenize(model, args)
    got = fxvae.detokenize(model, codes, *args[1:])
    assert model.training  # both calls run in eval mode and leave the model's mode as it was
    with torch.no_grad():
        expected = model.eval()(*args)
    assert_same_outputs(got, expected)


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_codes_are_int64_with_the_latents_shape_without_its_features(entry, latent: str) -> None:
    model, _ = convert(entry, latent)
    codes = fxvae.tokenize(model, entry.inputs(3))
    info = fxvae.conversion(model).quantizer
    assert codes.dtype == torch.int64 and codes.shape == (3, *CODE_SHAPES[entry.name]) == (3, *info.code_shape)
    assert codes.min() >= 0 and codes.max() < info.codebook_size


def test_the_codes_are_those_the_forward_recorded() -> None:
    entry = BY_NAME["conv_latent"]
    model, _ = convert(entry, "vq")
    x = entry.inputs(4)[0]
    model.eval()(x)
    assert torch.equal(fxvae.quantized(model).codes, fxvae.tokenize(model, x))


def test_split_tokens_names_the_inputs_and_shares_the_tensors() -> None:
    entry = BY_NAME["conditional"]
    model, _ = convert(entry, "vq")
    to_codes, from_codes = fxvae.split_tokens(model)
    assert [n.target for n in to_codes.graph.find_nodes(op="placeholder")] == ["x", "label"]
    assert [n.target for n in from_codes.graph.find_nodes(op="placeholder")] == ["codes", "label"]
    codebook = model.get_buffer("quantize.codebook")
    assert from_codes.get_buffer("lookup.quantizer.codebook") is codebook
    assert to_codes.get_buffer("codes.quantizer.codebook") is codebook


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (torch.zeros(4, 2), r"the codes have shape \[4, 2\] and dtype torch.float32.*shape \['batch'\]"),
        (torch.tensor([0, 3, 16]), r"the codes range over \[0, 16\], and there are 16 codes, 0 to 15"),
        (torch.tensor([-1, 3]), r"the codes range over \[-1, 3\]"),
    ],
    ids=["float", "too-large", "negative"],
)
def test_detokenize_refuses_codes_the_model_cannot_decode(codes: torch.Tensor, match: str) -> None:
    model, _ = convert(BY_NAME["mlp_sigmoid"], "vq")
    with pytest.raises(fxvae.InputError, match=match):
        fxvae.detokenize(model, codes)


def test_tokenize_on_a_gaussian_vae_says_what_to_use_instead() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(entry.build(), entry.inputs(4))
    with pytest.raises(fxvae.FxvaeError, match=r"fxvae.split_tokens needs a discrete latent"):
        fxvae.tokenize(vae, entry.inputs(4))


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize(
    "entry",
    [BY_NAME[name] for name in ("conv_latent", "token_attention", "shape_control_flow", "conditional")],
    ids=lambda e: e.name,
)
def test_both_token_halves_run_in_onnxruntime_at_another_batch_size(entry, latent: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, _ = convert(entry, latent)
    to_codes, from_codes = fxvae.split_tokens(model)
    example = entry.inputs(3)
    fxvae.export_onnx(to_codes, tmp_path / "encoder.onnx", example)
    fxvae.export_onnx(from_codes, tmp_path / "decoder.onnx", (to_codes(*example), *example[1:]))
    args = entry.inputs(5)
    encoder = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    (codes,) = encoder.run(None, {i.name: a.numpy() for i, a in zip(encoder.get_inputs(), args, strict=True)})
    expected_codes = fxvae.tokenize(model, args)
    assert torch.equal(torch.from_numpy(codes), expected_codes)
    decoder = ort.InferenceSession(str(tmp_path / "decoder.onnx"))
    decoder_args = (expected_codes, *args[1:])
    got = decoder.run(None, {i.name: a.numpy() for i, a in zip(decoder.get_inputs(), decoder_args, strict=True)})
    expected = tensors(fxvae.detokenize(model, *decoder_args))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(g), e, atol=1e-5, rtol=1e-5)
