"""The ``fxvae`` command line."""

from __future__ import annotations

from fxvae.cli.main import main

__all__ = ["main"]
