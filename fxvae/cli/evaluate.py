"""``fxvae evaluate``: VAE files and AE checkpoints measured on held-out data (:func:`fxvae.evaluate`), one row
each, under one shared likelihood."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any

import click
import torch
from rich.table import Table
from torch import nn

import fxvae
from fxvae.cli.data import check_data, first_batch, read_data_source
from fxvae.cli.errors import CliError, ExitCode, data_errors, reported
from fxvae.cli.models import is_vae_file, load_checkpoint_into, load_model
from fxvae.cli.options import debug_option, json_option, threads_option
from fxvae.cli.output import print_table, stderr, stdout
from fxvae.io.datafiles import ImageFolder
from fxvae.measure import likelihoods
from fxvae.measure.likelihoods import LikelihoodName
from fxvae.modules import input_count

_LIKELIHOODS = click.Choice(list(typing.get_args(LikelihoodName)))


def _sigma(value: str | None) -> float | str | None:
    if value is None or value == "optimal":
        return value
    try:
        return float(value)
    except ValueError as err:
        raise CliError(ExitCode.USAGE, f"--sigma {value!r} must be a positive number or 'optimal'") from err


@click.command()
@click.argument("checkpoints", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, metavar="MODEL", help="The AE's factory, as for convert.")
@click.option("--data", required=True, metavar="DATA", help="Held-out data: a file, a folder of images, or a factory.")
@click.option("--resize", metavar="H,W", help="Scale a folder of images to this size.")
@click.option("--likelihood", type=_LIKELIHOODS, default="gaussian", show_default=True, help="What the output is.")
@click.option(
    "--sigma",
    metavar="FLOAT|optimal",
    help="The Gaussian sigma or Laplace b (default: optimal, fitted once and shared by every row).",
)
@click.option("--k", "k", type=click.IntRange(min=1), default=1, show_default=True, help="Posterior draws per sample.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Samples per batch of a data file (default 256).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior draws.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@threads_option
@json_option
@debug_option
def evaluate(
    checkpoints: tuple[Path, ...],
    model: str,
    data: str,
    resize: str | None,
    likelihood: str,
    sigma: str | None,
    k: int,
    batch_size: int | None,
    seed: int,
    device: str,
    threads: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Measure VAE files (from fxvae convert) and AE checkpoints on held-out data, one row each: -ELBO, KL,
    importance-weighted NLL, active units, mutual information. An autoencoder checkpoint (.pt, or safetensors
    without a recipe) gets its reconstruction term under the same likelihood.

    Every row shares one likelihood: an optimal sigma is fitted once, to the first AE checkpoint given (else
    to the first file) on --data, and the output says so."""
    with reported(debug):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        torch.set_num_threads(threads)
        for checkpoint in checkpoints:
            if not checkpoint.is_file():
                raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        scale = _sigma(sigma)
        source = read_data_source(data, resize)
        architecture = load_model(model)
        example = first_batch(source, input_count(architecture))
        check_data(architecture, example, f"--data {data}")
        measured = {checkpoint: _measured(checkpoint, model, example).to(device) for checkpoint in checkpoints}
        if not as_json:
            stdout.print(f"torch threads: {torch.get_num_threads()}", markup=False)
        # A fitted scale is fitted once, to the AE where one is given: the reference the VAEs are read against.
        order = sorted(checkpoints, key=is_vae_file)
        shared: Any = likelihood
        fitted_to: Path | None = None
        results: dict[Path, fxvae.Evaluation] = {}
        for checkpoint in order:
            with data_errors():
                results[checkpoint] = fxvae.evaluate(
                    measured[checkpoint],
                    source,
                    likelihood=shared,
                    sigma=scale if isinstance(shared, str) else None,
                    k=k,
                    batch_size=batch_size if isinstance(source, (torch.Tensor, ImageFolder)) else None,
                    seed=seed,
                    progress=not as_json,
                )
            if isinstance(shared, str) and likelihood in ("gaussian", "laplace") and scale in (None, "optimal"):
                shared, fitted_to = _fitted_likelihood(likelihood, results[checkpoint]), checkpoint
        rows = [(checkpoint, results[checkpoint]) for checkpoint in checkpoints]
        if as_json:
            records = [
                {
                    "checkpoint": str(checkpoint),
                    "model": model,
                    "likelihood_fitted_to": None if fitted_to is None else {"file": str(fitted_to), "data": data},
                    **result.to_dict(),
                }
                for checkpoint, result in rows
            ]
            click.echo(json.dumps(records, indent=2))
            return
        _print_evaluations(rows, data, k, fitted_to)


def _measured(checkpoint: Path, model: str, example: tuple[Any, ...]) -> nn.Module:
    """The model in ``checkpoint``: a VAE file rebuilt with fxvae.load, or MODEL with an AE checkpoint's weights."""
    module = load_model(model)
    if is_vae_file(checkpoint):
        with stderr.status(f"loading {checkpoint}"):
            return fxvae.load(module, checkpoint, example)[0]
    load_checkpoint_into(module, checkpoint)
    return module


def _fitted_likelihood(name: str, result: fxvae.Evaluation) -> likelihoods.Likelihood:
    """The likelihood ``result`` was measured with, its fitted scale fixed, for the other rows to share."""
    cls = likelihoods.Gaussian if name == "gaussian" else likelihoods.Laplace
    return cls(result.scale, fitted=True)


_KINDS = {"vae": "VAE", "vq": "VQ model", "fsq": "FSQ model", "ae": "AE (recon only)"}


def _estimate(value: fxvae.Estimate | None) -> str:
    return "-" if value is None else f"{value.value:.4f} ± {value.stderr:.2g}"


def _print_evaluations(rows: list[tuple[Path, fxvae.Evaluation]], data: str, k: int, fitted_to: Path | None) -> None:
    first = rows[0][1]
    stdout.print(
        f"{data}: n={first.n}, k={k}, likelihood {first.likelihood}, seed {first.seed}; nats per sample "
        "(± standard error over the data)",
        markup=False,
        soft_wrap=True,
    )
    if fitted_to is not None:
        name = "sigma" if first.likelihood.startswith("gaussian") else "b"
        stdout.print(
            f"{name} = {first.scale:.4g} (optimal: fitted to {fitted_to} on {data}; shared by every row)",
            markup=False,
            soft_wrap=True,
        )
    table = Table(title_justify="left")
    for col in ("file", "model", "recon", "kl", "neg_elbo", "nll", "bits/dim"):
        table.add_column(col, justify="left" if col in ("file", "model") else "right", no_wrap=True)
    for checkpoint, result in rows:
        bound = "nll" if result.nll is not None else "neg_elbo" if result.neg_elbo is not None else None
        bits = f"{result.bits_per_dim(bound).value:.5f} ({bound})" if bound is not None else "-"
        table.add_row(
            str(checkpoint),
            _KINDS[result.kind],
            _estimate(result.recon),
            _estimate(result.kl),
            _estimate(result.neg_elbo),
            _estimate(result.nll),
            bits,
        )
    print_table(table)
    for checkpoint, result in rows:
        if result.active_units is not None:
            stdout.print(
                f"{checkpoint}: active units {result.active_units} of {result.latent_dims} (Var_x E_q[z] > "
                f"{result.active_threshold}); mutual information {_estimate(result.mutual_info)} nats from "
                f"{result.mixture} posteriors (at most log {result.mixture} = {math.log(result.mixture):.2f})",
                markup=False,
                soft_wrap=True,
            )
        if result.rate_bits is not None:
            stdout.print(
                f"{checkpoint}: rate {result.rate_bits:.4g} bits per sample; codebook perplexity "
                f"{result.perplexity:.4g}, {100 * (result.codes_used or 0):.1f}% of the codes used; kl is positions "
                "x log K (a uniform prior)",
                markup=False,
                soft_wrap=True,
            )
