"""The installed distribution's version, read from its metadata (no import of the package root)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("fxvae")
except PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0+unknown"
