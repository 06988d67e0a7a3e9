"""The ``fxvae`` command group: its top-level help, ``--version``, and the five commands, one module each
(:mod:`fxvae.cli.inspect`, :mod:`~fxvae.cli.convert`, :mod:`~fxvae.cli.bench`, :mod:`~fxvae.cli.evaluate`,
:mod:`~fxvae.cli.compare`)."""

from __future__ import annotations

import click

import fxvae
from fxvae.cli.bench import bench
from fxvae.cli.compare import compare
from fxvae.cli.convert import convert
from fxvae.cli.evaluate import evaluate
from fxvae.cli.inspect import inspect


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fxvae.__version__, prog_name="fxvae")
def app() -> None:
    """Turn a trained PyTorch autoencoder into a VAE, and measure what that costs.

    \b
    inspect   show how an AE is traced, its width profile and the bottleneck found
    convert   convert an AE checkpoint into a VAE file (and optionally ONNX)
    bench     throughput and peak memory of the AE and its VAE
    evaluate  -ELBO, KL, IWAE NLL of VAE files and AE checkpoints on held-out data, in one table
    compare   train the AE beside its VAE and one from scratch; measure them alike; write a report

    Errors are one line with an exit code (docs/cli.md); --debug shows the traceback.
    """


app.add_command(inspect)
app.add_command(convert)
app.add_command(bench)
app.add_command(evaluate)
app.add_command(compare)


def main() -> None:
    """Entry point of the ``fxvae`` console script and of ``python -m fxvae.cli``."""
    app()
