"""The latent families fxvae knows, by name: one registration line each."""

from __future__ import annotations

from fxvae.errors import InputError
from fxvae.latents.configs import LatentConfig, config_of
from fxvae.latents.family import Family
from fxvae.latents.gaussian_family import GaussianFamily
from fxvae.latents.quantizer_family import FSQFamily, VQFamily

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    """Make ``family`` what ``convert(..., latent=<its config>)`` and every later step use for its latent.

    >>> register_family(FAMILIES["gaussian"])  # already known: registering again replaces it
    """
    FAMILIES[family.name] = family


def unregister_family(name: str) -> None:
    """Forget a family registered by :func:`register_family` (the built-in ones stay known by their configs).

    >>> unregister_family("no-such-family")
    """
    FAMILIES.pop(name, None)


def family_of(latent: LatentConfig | str) -> Family:
    """The family of a config (or a family's name).

    >>> family_of(fxvae.VQ()).name
    'vq'
    """
    config = config_of(latent)
    if config.family not in FAMILIES:
        raise InputError(
            f"no latent family is registered for {type(config).__name__} (family {config.family!r}); known: "
            f"{sorted(FAMILIES)}: register it with fxvae.latents.registry.register_family"
        )
    return FAMILIES[config.family]


register_family(GaussianFamily())
register_family(VQFamily())
register_family(FSQFamily())
