"""Save and load converted VAEs as safetensors, and convert third-party AE checkpoints in one call.

A saved VAE is its state dict plus the conversion recipe (bottleneck, log_sigma_init, tracer,
versions) as JSON in the safetensors metadata; loading re-runs :func:`fxvae.convert` on the AE's
architecture with that recipe and loads the tensors, bit for bit. safetensors is imported lazily.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.api import conversion as recipe_of
from fxvae.api import convert
from fxvae.errors import CheckpointError, FxvaeError
from fxvae.latent import KLDivergence

logger = logging.getLogger("fxvae")

RECIPE_KEY = "fxvae.recipe"
ALIASES_KEY = "fxvae.aliases"
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema", "ema_state_dict")
"""Keys under which training scripts nest the model's state dict, tried in this order."""
KEY_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that DistributedDataParallel / DataParallel and torch.compile add to every key."""

ModelSource = nn.Module | Callable[[], nn.Module]


def save(vae: fx.GraphModule, path: str | os.PathLike[str]) -> None:
    """Write the VAE's tensors and its conversion recipe to a safetensors file, atomically.

    Tensors that share storage (tied weights) are written once; the other names are recorded as
    aliases in the metadata. The file is written next to ``path`` under a temporary name, flushed
    to disk and renamed, so an interrupted save never leaves a half-written file at ``path``.

    >>> fxvae.save(vae, "vae.safetensors")
    >>> vae2, kl = fxvae.load(AE(), "vae.safetensors", torch.randn(8, 784))
    """
    from safetensors.torch import save_file

    recipe = recipe_of(vae)
    tensors, aliases = _distinct_tensors(vae.state_dict())
    metadata = {
        "format": "pt",
        RECIPE_KEY: json.dumps(
            {
                "bottleneck_node": recipe.bottleneck.node,
                "bottleneck_layer": recipe.bottleneck.layer,
                "latent_shape": list(recipe.latent_shape),
                "log_sigma_init": recipe.log_sigma_init,
                "tracer": recipe.tracer,
                "key_map": recipe.key_map,
                "new_keys": list(recipe.new_keys),
                "fxvae_version": _fxvae_version(),
                "torch_version": torch.__version__,
            }
        ),
        ALIASES_KEY: json.dumps(aliases),
    }
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def load(
    model: ModelSource, path: str | os.PathLike[str], example_inputs: Any
) -> tuple[fx.GraphModule, KLDivergence]:
    """Rebuild a VAE saved by :func:`save` from its AE's architecture; returns ``(vae, kl)`` like convert.

    ``model`` is an instance of the autoencoder (its weights do not matter and it is not changed) or
    a zero-argument factory. The recorded bottleneck and ``log_sigma_init`` are passed to
    :func:`fxvae.convert`, then the saved tensors are loaded, so the VAE equals the saved one exactly.
    An unreadable or truncated file, or one that does not fit ``model``, raises :class:`CheckpointError`.

    >>> vae, kl = fxvae.load(AE(), "vae.safetensors", torch.randn(8, 784))
    >>> vae, kl = fxvae.load(AE, "vae.safetensors", torch.randn(8, 784))  # a factory works too
    """
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:
        raise CheckpointError(
            f"cannot read {os.fspath(path)!r} as safetensors ({err}); is the file truncated? save it again "
            "with fxvae.save"
        ) from err
    if RECIPE_KEY not in metadata:
        raise CheckpointError(
            f"{os.fspath(path)!r} has no fxvae recipe in its metadata; it was not written by fxvae.save "
            "(for an autoencoder checkpoint use fxvae.convert_checkpoint)"
        )
    recipe = json.loads(metadata[RECIPE_KEY])
    for alias, source in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[source]
    ae = model if isinstance(model, nn.Module) else model()
    try:
        vae, kl = convert(
            ae, example_inputs, bottleneck=recipe["bottleneck_node"], log_sigma_init=recipe["log_sigma_init"]
        )
    except FxvaeError as err:
        # The recorded bottleneck is not in this architecture: say which AE keys differ.
        inverse = {vae_key: ae_key for ae_key, vae_key in recipe.get("key_map", {}).items()}
        new = set(recipe.get("new_keys", ()))
        saved_ae_keys = {
            inverse.get(k, k): v for k, v in tensors.items() if k not in new and k not in inverse
        }
        saved_ae_keys.update({inverse[k]: v for k, v in tensors.items() if k in inverse})
        _check_fits(saved_ae_keys, ae.state_dict(), f"{os.fspath(path)!r} vs {type(ae).__name__}")
        raise CheckpointError(
            f"{os.fspath(path)!r} was saved from another conversion of {type(ae).__name__}: {err}"
        ) from err
    latent_shape = tuple(recipe_of(vae).latent_shape)
    if latent_shape != tuple(recipe["latent_shape"]):
        raise CheckpointError(
            f"{os.fspath(path)!r} holds a VAE with latent shape {tuple(recipe['latent_shape'])}, but "
            f"converting {type(ae).__name__} gives {latent_shape}; pass the architecture that was saved"
        )
    _check_fits(tensors, vae.state_dict(), f"{os.fspath(path)!r} vs the VAE of {type(ae).__name__}")
    vae.load_state_dict(tensors, strict=True)
    return vae, kl


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a model's state dict from a ``.safetensors`` or ``.pt``/``.pth`` file, unwrapping it.

    ``.pt`` files are read with ``torch.load(weights_only=True)``. A state dict nested under a key
    (``state_dict``, ``model``, ``model_state_dict``, ``module``, ``ema``...) is taken out, and a
    prefix on every key (``module.`` from DDP, ``_orig_mod.`` from torch.compile) is stripped; each
    such step is described in the returned notes, for the caller to show.

    >>> state_dict, notes = fxvae.io.read_state_dict("ae.pt")
    >>> notes
    ["took checkpoint['state_dict']", "stripped key prefix 'module.'"]
    """
    name = os.fspath(path)
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded: Any = load_file(name)
        else:
            loaded = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {name!r}: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}; "
            "pass a .safetensors file or a .pt/.pth file saved with torch.save(model.state_dict())"
        ) from err
    notes: list[str] = []
    where = "checkpoint"
    while isinstance(loaded, Mapping) and not _all_tensors(loaded):
        key = next((k for k in NESTING_KEYS if isinstance(loaded.get(k), Mapping)), None)
        if key is None:
            others = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
            raise CheckpointError(
                f"{where} in {name!r} is not a state dict: {others[:10]} are not tensors and none of "
                f"{list(NESTING_KEYS)} holds one; save model.state_dict() or pass the nested dict"
            )
        where = f"{where}[{key!r}]"
        notes.append(f"took {where}")
        loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise CheckpointError(
            f"{name!r} holds a {type(loaded).__name__}, not a state dict; save model.state_dict() instead"
        )
    state = dict(loaded)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                notes.append(f"stripped key prefix {prefix!r}")
                stripped = True
    return state, notes


def convert_checkpoint(
    model: ModelSource,
    checkpoint: str | os.PathLike[str],
    example_inputs: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    bottleneck: str | None = None,
    log_sigma_init: float = 0.0,
) -> tuple[fx.GraphModule, KLDivergence]:
    """Load an autoencoder checkpoint into ``model``'s architecture, convert it, and optionally save.

    ``model`` is an instance (copied, never changed) or a zero-argument factory; ``checkpoint`` a
    ``.safetensors`` or ``.pt``/``.pth`` file, read by :func:`read_state_dict` (what it unwrapped is
    logged on the ``fxvae`` logger at INFO level). Missing or unexpected keys and shape mismatches
    raise :class:`CheckpointError` naming them. With ``out``, the VAE is written by :func:`save`.

    >>> vae, kl = fxvae.convert_checkpoint(AE(), "ae.pt", torch.randn(8, 784), out="vae.safetensors")
    """
    state, notes = read_state_dict(checkpoint)
    for note in notes:
        logger.info("%s: %s", os.fspath(checkpoint), note)
    ae = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
    _check_fits(state, ae.state_dict(), f"{os.fspath(checkpoint)!r} vs {type(ae).__name__}")
    ae.load_state_dict(state, strict=True)
    vae, kl = convert(ae, example_inputs, bottleneck=bottleneck, log_sigma_init=log_sigma_init, copy=False)
    if out is not None:
        save(vae, out)
    return vae, kl


def _check_fits(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}; "
            "is this checkpoint for this architecture?"
        )
    mismatched = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k, v in got.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(f"{what}: shape mismatch for {mismatched[:10]}; is this another model size?")


def _all_tensors(mapping: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in mapping.values())


def _distinct_tensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Each distinct tensor once, contiguous and owning its storage; the other names as aliases.

    Two names are aliases when they view the same storage with the same offset, shape and strides
    (tied weights); partial views of a shared storage are written as separate copies.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for key, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and view in first:
            aliases[key] = first[view]
            continue
        first[view] = key
        shared = storage in storages or not tensor.is_contiguous() or tensor.numel() != _storage_numel(tensor)
        tensors[key] = tensor.detach().clone().contiguous() if shared else tensor.detach()
        storages.add(storage)
    return tensors, aliases


def _storage_numel(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open a directory, which only costs durability."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fxvae_version() -> str:
    from fxvae import __version__

    return __version__
