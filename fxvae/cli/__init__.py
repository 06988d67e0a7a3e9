"""The ``fxvae`` command line: inspect an autoencoder's bottleneck, convert a checkpoint, benchmark AE vs VAE,
evaluate models on held-out data, compare a converted VAE with one trained from scratch.

MODEL is ``package.module:factory`` or ``path/to/file.py:factory``, a callable returning the nn.Module::

    fxvae inspect tests/cli_models.py:conv_ae --input-shape 1,3,8,8 --plot widths.png
    fxvae convert tests/cli_models.py:mlp_ae --checkpoint ae.safetensors --input-shape 2,16 --out vae.safetensors
    fxvae bench benchmarks/models.py:conv_ae --input-shape 1,3,32,32 --batch-sizes 1,32
    fxvae evaluate ae.safetensors vae.safetensors --model tests/cli_models.py:mlp_ae --data held.pt

One module per command: ``inspect.py``, ``convert.py``, ``bench.py``, ``evaluate.py``, ``compare.py``; ``app.py``
holds the command group and its help. What they share: ``errors.py`` (one-line errors, :class:`ExitCode`),
``output.py`` (stdout, stderr, tables), ``options.py`` (shared options, options from fxvae's dataclasses),
``models.py`` (MODEL and checkpoints), ``data.py`` (DATA and the check that a model takes it).

Errors are one line on stderr and a documented exit code (:class:`fxvae.cli.errors.ExitCode`, docs/cli.md);
``--debug`` adds the traceback. The conversion options are :class:`fxvae.Options`'s fields, declared once there.
Only this package imports click and rich, and ``import fxvae`` does not import it; matplotlib only for ``--plot``.
"""

from __future__ import annotations

from fxvae.cli.app import main

__all__ = ["main"]
