"""``python -m fxvae.cli``: the command line, as under ``torchrun -m fxvae.cli``."""

from fxvae.cli.app import main

main()
