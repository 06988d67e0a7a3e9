"""``fxvae convert``: an AE checkpoint into a VAE file (:func:`fxvae.convert_checkpoint`), and optionally ONNX."""

from __future__ import annotations

import time
from pathlib import Path

import click

import fxvae
from fxvae.cli.data import check_source, example_input
from fxvae.cli.errors import CliError, ExitCode, data_errors, reported
from fxvae.cli.models import load_model
from fxvae.cli.options import (
    check_output,
    conversion_options,
    debug_option,
    input_shape_option,
    model_argument,
    parse_ints,
)
from fxvae.cli.output import stderr
from fxvae.io.datafiles import open_data


@click.command()
@model_argument
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The AE's weights (.safetensors, .pt, .pth).",
)
@input_shape_option
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Where to write the VAE (.safetensors).",
)
@conversion_options()
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Data to calibrate with (.pt, .npy, .npz, .safetensors; batch first): it standardises a Gaussian latent "
    "(fxvae.calibrate) and fits a vq codebook or fsq projections.",
)
@click.option(
    "--onnx", type=click.Path(path_type=Path), metavar="FILE", help="Also export the eval-mode VAE (z = mu) to ONNX."
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@debug_option
def convert(
    model: str,
    checkpoint: Path,
    input_shape: str,
    out: Path,
    options: fxvae.Options,
    calibration: Path | None,
    onnx: Path | None,
    force: bool,
    debug: bool,
) -> None:
    """Convert an AE checkpoint into a VAE checkpoint (and optionally an ONNX file)."""
    with reported(debug):
        check_output(out, force, "--out")
        check_output(onnx, force, "--onnx")
        if not checkpoint.is_file():
            raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        with stderr.status("loading the model"):
            module = load_model(model)
            x = example_input(module, parse_ints(input_shape, "--input-shape"))
        data = None
        if calibration is not None:
            with data_errors():
                data = open_data(calibration)
            check_source(module, data, f"--calibration {calibration}")
        with stderr.status(f"converting {checkpoint}"):
            start = time.perf_counter()
            vae, _ = fxvae.convert_checkpoint(module, checkpoint, x, out=out, calibration=data, options=options)
            elapsed = time.perf_counter() - start
        recipe = fxvae.conversion(vae)
        b = recipe.bottleneck
        head = f"mu head from {b.layer!r}" if b.head_kind == "layer" else "pointwise log-sigma head"
        q = recipe.quantizer
        if q is not None:
            head = (
                f"{q.family} quantiser {q.module!r}: {q.codebook_size} codes, {q.rate_bits:.4g} bits per position, "
                f"codes per sample {list(q.code_shape)}"
            )
        stderr.print(f"bottleneck {b.node} {list(b.shape)} ({head}, traced with {recipe.tracer})", markup=False)
        if q is not None and q.quantized_mse is not None:
            stderr.print(
                f"reconstruction MSE on the calibration data: {q.ae_mse:.6g} (AE), {q.quantized_mse:.6g} "
                f"(quantised, before training)",
                markup=False,
            )
        stderr.print(
            f"wrote {out} in {elapsed:.2f} s; keys moved: {recipe.key_map}, new: {list(recipe.new_keys)}", markup=False
        )
        if onnx is not None:
            with stderr.status(f"exporting {onnx}"):
                try:
                    fxvae.export_onnx(vae, onnx, x)
                except Exception as err:
                    raise CliError(ExitCode.EXPORT, f"ONNX export to {str(onnx)!r} failed: {err}") from err
            stderr.print(f"wrote {onnx}", markup=False)
