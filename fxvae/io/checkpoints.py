"""Save and load converted VAEs as safetensors, and bring autoencoder checkpoints into VAEs.

A saved VAE is its state dict plus its :class:`~fxvae.Conversion` recipe (JSON in the safetensors
metadata); loading re-runs :func:`fxvae.convert` on the AE's architecture with the recipe's options and
loads the tensors, bit for bit. safetensors is imported when a file is read or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.tiers import known_tracers
from fxvae.convert import convert, rebuild
from fxvae.errors import CheckpointError, FxvaeError, first_line, strip_ansi
from fxvae.latents.configs import FSQ, VQ, Gaussian, LatentConfig, Standardize
from fxvae.latents.gaussian import KLDivergence
from fxvae.latents.quantize import QuantizerLoss
from fxvae.latents.registry import family_of
from fxvae.modules import owned_copy, resolve
from fxvae.recipe import CalibrationInfo, Conversion, Likelihood, Options, conversion, record, unwrap
from fxvae.surgery.rewrite import zero_head
from fxvae.version import VERSION

logger = logging.getLogger("fxvae")

RECIPE_KEY = "fxvae.recipe"
DIGEST_KEY = "fxvae.recipe.sha256"
"""The SHA-256 of the recipe's text: a recipe that still parses but was changed (a flipped optional field
would rebuild another model) is refused. Files written before it was added have none, and load as they are."""
ALIASES_KEY = "fxvae.aliases"
FORMAT_KEY = "fxvae.format"
VERSION_KEY = "fxvae.version"
TORCH_KEY = "torch.version"
FORMAT = 3
"""Version of the file layout: 1 was the first release's (no format key, a flat recipe); 2 (release 0.1.0) wrote
every latent family's options; 3 writes the latent's own family's only (:meth:`fxvae.Options.to_record`), and
the recipe's ``latent_module``. Every earlier format loads (``tests/fixtures/release-*``)."""
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "ema", "ema_state_dict")
"""Keys under which training scripts nest the model's state dict, tried in this order."""
KEY_PREFIXES = ("module.", "_orig_mod.")
"""Prefixes that DistributedDataParallel / DataParallel and torch.compile add to every key."""

ModelSource = nn.Module | Callable[[], nn.Module]


def save(vae: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the VAE's tensors and its conversion recipe to a safetensors file, atomically.

    Tensors that share storage (tied weights) are written once; the other names are recorded as
    aliases in the metadata. The file is written next to ``path`` under a temporary name, flushed
    to disk and renamed, so an interrupted save never leaves a half-written file at ``path``.

    >>> fxvae.save(vae, tmp / "vae.safetensors")
    >>> vae2, kl2 = fxvae.load(ae, tmp / "vae.safetensors", x)
    """
    from safetensors.torch import save_file

    recipe = conversion(vae)
    target = Path(path)
    if target.is_dir():
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: it is a directory; pass a file path in it, such as "
            f"{os.fspath(target / 'vae.safetensors')!r}"
        )
    if not target.parent.is_dir():
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: the directory {os.fspath(target.parent)!r} does not exist; "
            "create it first"
        )
    tensors, aliases = _distinct_tensors(unwrap(vae).state_dict())
    text = recipe.to_json()
    metadata = {
        "format": "pt",
        FORMAT_KEY: str(FORMAT),
        RECIPE_KEY: text,
        DIGEST_KEY: _digest(text),
        ALIASES_KEY: json.dumps(aliases),
        VERSION_KEY: VERSION,
        TORCH_KEY: torch.__version__,
    }
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        # mkstemp makes the file private (0600); a saved model gets the mode an open() would give it: the
        # file's own if it exists, else 0666 less the umask, as torch.save's files have.
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def load(model: ModelSource, path: str | os.PathLike[str], example_inputs: Any) -> tuple[fx.GraphModule, nn.Module]:
    """Rebuild a VAE saved by :func:`save` from its AE's architecture; returns ``(vae, kl)`` like convert.

    The second value is the latent family's training term, as :func:`fxvae.convert` returns it.
    ``model`` is an instance of the autoencoder (its weights do not matter and it is not changed) or
    a zero-argument factory. The recipe's options are passed to :func:`fxvae.convert`, then the saved
    tensors are loaded, so the VAE equals the saved one exactly. An unreadable or truncated file, one
    written by a newer fxvae, or one that does not fit ``model`` raises :class:`CheckpointError`.

    >>> fxvae.save(vae, tmp / "vae.safetensors")
    >>> vae2, kl2 = fxvae.load(ae, tmp / "vae.safetensors", x)
    >>> torch.equal(vae2.eval()(x), vae.eval()(x))
    True
    """
    name = os.fspath(path)
    tensors, metadata = _read_safetensors(name)
    if RECIPE_KEY not in metadata:
        raise CheckpointError(
            f"{name!r} has no fxvae recipe in its metadata; it was not written by fxvae.save "
            "(for an autoencoder checkpoint use fxvae.convert_checkpoint)"
        )
    file_format = int(metadata.get(FORMAT_KEY, "1"))
    if file_format > FORMAT:
        raise CheckpointError(
            f"{name!r} was written by fxvae {metadata.get(VERSION_KEY, '?')} (file format {file_format}); "
            f"this fxvae {VERSION} reads formats up to {FORMAT}: upgrade fxvae (pip install -U fxvae)"
        )
    saved = _read_recipe(metadata[RECIPE_KEY], file_format, name)
    if DIGEST_KEY in metadata and metadata[DIGEST_KEY] != _digest(metadata[RECIPE_KEY]):
        raise CheckpointError(
            f"the fxvae recipe in {name!r} does not match its checksum: the file was damaged or edited after "
            "fxvae.save wrote it; save the VAE again from its model"
        )
    for alias, source in json.loads(metadata.get(ALIASES_KEY, "{}")).items():
        tensors[alias] = tensors[source]
    ae = model if isinstance(model, nn.Module) else model()
    # The weights come from the file: the replay needs the structure, not the data-driven starts.
    try:
        vae, kl = rebuild(ae, example_inputs, saved.options)
    except FxvaeError as err:
        # The recorded bottleneck is not in this architecture: first say which AE keys differ.
        inverse = {vae_key: ae_key for ae_key, vae_key in saved.key_map.items()}
        ae_part = {inverse.get(k, k): v for k, v in tensors.items() if k not in saved.new_keys}
        expected = {k: v for k, v in ae.state_dict().items() if k not in saved.dropped_keys}
        check_fits(ae_part, expected, f"{name!r} vs {type(ae).__name__}")
        raise CheckpointError(f"{name!r} was saved from another conversion of {type(ae).__name__}: {err}") from err
    got_shape = conversion(vae).latent_shape
    if got_shape != saved.latent_shape:
        raise CheckpointError(
            f"{name!r} holds a VAE with latent shape {saved.latent_shape}, but converting {type(ae).__name__} "
            f"gives {got_shape}; pass the architecture that was saved"
        )
    if saved.recipe is not None:
        if saved.recipe.calibration is not None:
            _check_calibration(saved.recipe.calibration, vae, name)
        family_of(saved.options.latent).restore(vae, saved.recipe)
    record(vae, dataclasses.replace(conversion(vae), options=saved.options))
    what = f"{name!r} vs the VAE of {type(ae).__name__}"
    check_fits(tensors, vae.state_dict(), what)
    load_into(vae, tensors, what)
    return vae, kl


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_calibration(info: CalibrationInfo, vae: fx.GraphModule, name: str) -> None:
    """Refuse a recorded calibration that cannot be the one saved: its module path is no free attribute path,
    or it names a fold target the rebuilt VAE does not have."""
    path = info.module.split(".")
    if not all(part.isidentifier() for part in path) or hasattr(vae, path[0]):
        raise CheckpointError(
            f"the fxvae recipe in {name!r} records the calibration module {info.module!r}, which cannot be a new "
            "module of the VAE; the file is damaged: save the VAE again from its model"
        )
    for folded in (info.folded_mu, info.folded_decoder):
        if folded is not None and not _has_module(vae, folded):
            raise CheckpointError(
                f"the fxvae recipe in {name!r} says the calibration is folded into {folded!r}, which the VAE does "
                "not have; the file is damaged: save the VAE again from its model"
            )


def _has_module(model: nn.Module, path: str) -> bool:
    if not path:  # get_submodule("") is the model itself
        return False
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _read_safetensors(name: str, what: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file; ``what`` ("checkpoint") names an AE's file."""
    from safetensors import safe_open

    label = f"{what} {name!r}" if what else repr(name)
    if not Path(name).is_file():
        raise CheckpointError(f"{label} does not exist")
    try:
        with safe_open(name, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:
        fix = (
            "pass a .safetensors file, or a .pt/.pth file saved with torch.save(model.state_dict())"
            if what
            else "save it again with fxvae.save"
        )
        raise CheckpointError(
            f"cannot read {label} as safetensors ({type(err).__name__}: {first_line(err)}); is the file "
            f"truncated or not a safetensors file? {fix}"
        ) from err
    return tensors, metadata


_PICKLED_CLASS = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _unreadable_pickle(name: str, err: BaseException) -> str:
    """Why torch.load(weights_only=True) refused ``name``: a pickled object (a whole model) is named as such."""
    found = _PICKLED_CLASS.search(strip_ansi(str(err)))
    if found is not None:
        return (
            f"checkpoint {name!r} holds a pickled {found.group(1)}, not only tensors (a whole model saved with "
            "torch.save(model)?); fxvae does not unpickle objects, as that can run any code: save the weights "
            "with torch.save(model.state_dict(), path) and pass that file"
        )
    return (
        f"cannot read checkpoint {name!r} ({type(err).__name__}: {first_line(err)}); pass a .safetensors file, "
        "or a .pt/.pth file saved with torch.save(model.state_dict())"
    )


class _Saved(NamedTuple):
    """What a file's recipe says, in any file format: options to replay and the key bookkeeping."""

    options: Options
    """As recorded; the replay forces ``options.bottleneck`` to the node that was found."""
    latent_shape: tuple[int, ...]
    key_map: dict[str, str]
    new_keys: tuple[str, ...]
    dropped_keys: tuple[str, ...]
    recipe: Conversion | None
    """The whole recipe (None in the first format's files): what the latent family rebuilds from its data-driven
    parts (a calibration map; a quantiser's step-0 report) is read from it."""


def _read_recipe(text: str, file_format: int, name: str) -> _Saved:
    """What loading needs from the recipe text of file ``name``, written in file format ``file_format``."""
    try:
        if file_format == 1:
            old = json.loads(text)
            options = Options(bottleneck=old["bottleneck_node"], latent=Gaussian(log_sigma_init=old["log_sigma_init"]))
            return _Saved(options, tuple(old["latent_shape"]), old["key_map"], tuple(old["new_keys"]), (), None)
        recipe = Conversion.from_json(text)
    except (KeyError, TypeError, ValueError, CheckpointError) as err:
        raise CheckpointError(
            f"the fxvae recipe in {name!r} is damaged ({err}); save the VAE again from its model"
        ) from err
    if recipe.tracer not in known_tracers():
        raise CheckpointError(
            f"{name!r} was made by the capture tier {recipe.tracer!r}, which no registered tier owns (known "
            f"tracers: {', '.join(known_tracers())}); register that tier (fxvae.capture.tiers.register_tier) first"
        )
    options = dataclasses.replace(recipe.options, bottleneck=recipe.bottleneck.node)
    return _Saved(
        options,
        recipe.latent_shape,
        recipe.key_map,
        recipe.new_keys,
        recipe.dropped_keys,
        recipe,
    )


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read a model's state dict from a ``.safetensors`` or ``.pt``/``.pth`` file, unwrapping it.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: a pickled object (a whole model) is refused,
    and so is a VAE file that :func:`save` wrote (:func:`load` reads those). A state dict nested under a key
    (``state_dict``, ``model``, ``model_state_dict``, ``module``, ``ema``...) is taken out, and a
    prefix on every key (``module.`` from DDP, ``_orig_mod.`` from torch.compile) is stripped; each
    such step is described in the returned notes, for the caller to show.

    >>> torch.save({"state_dict": {f"module.{k}": v for k, v in ae.state_dict().items()}}, tmp / "ae.pt")
    >>> state_dict, notes = fxvae.io.checkpoints.read_state_dict(tmp / "ae.pt")
    >>> notes
    ["took checkpoint['state_dict']", "stripped key prefix 'module.'"]
    """
    name = os.fspath(path)
    if not Path(name).is_file():
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    loaded: Any
    if name.endswith(".safetensors"):
        loaded, metadata = _read_safetensors(name, what="checkpoint")
        if RECIPE_KEY in metadata:
            raise CheckpointError(
                f"{name!r} is a VAE that fxvae.save wrote, not an autoencoder checkpoint: read it with "
                f"fxvae.load(model, {name!r}, example) or `fxvae evaluate {name} --model MODEL --data DATA`; "
                "pass the AE's own weights (its state_dict) here"
            )
    else:
        try:
            loaded = torch.load(name, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(_unreadable_pickle(name, err)) from err
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


@overload
def convert_checkpoint(
    model: ModelSource,
    checkpoint: str | os.PathLike[str],
    example_inputs: Any,
    *,
    out: str | os.PathLike[str] | None = ...,
    bottleneck: str | None = ...,
    latent: Gaussian | Literal["gaussian"] = ...,
    likelihood: Likelihood = ...,
    calibration: Any = ...,
    log_sigma_init: float | Literal["auto"] | None = ...,
    standardize: Standardize | None = ...,
) -> tuple[fx.GraphModule, KLDivergence]: ...


@overload
def convert_checkpoint(
    model: ModelSource,
    checkpoint: str | os.PathLike[str],
    example_inputs: Any,
    *,
    out: str | os.PathLike[str] | None = ...,
    bottleneck: str | None = ...,
    latent: VQ | FSQ | Literal["vq", "fsq"],
    likelihood: Likelihood = ...,
    calibration: Any = ...,
) -> tuple[fx.GraphModule, QuantizerLoss]: ...


@overload
def convert_checkpoint(
    model: ModelSource,
    checkpoint: str | os.PathLike[str],
    example_inputs: Any,
    *,
    out: str | os.PathLike[str] | None = ...,
    bottleneck: str | None = ...,
    latent: LatentConfig | str = ...,
    likelihood: Likelihood = ...,
    calibration: Any = ...,
    log_sigma_init: float | Literal["auto"] | None = ...,
    standardize: Standardize | None = ...,
    options: Options | None = ...,
) -> tuple[fx.GraphModule, nn.Module]: ...


def convert_checkpoint(
    model: ModelSource,
    checkpoint: str | os.PathLike[str],
    example_inputs: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    bottleneck: str | None = None,
    latent: LatentConfig | str = "gaussian",
    likelihood: Likelihood = "gaussian",
    calibration: Any = None,
    log_sigma_init: float | Literal["auto"] | None = None,
    standardize: Standardize | None = None,
    options: Options | None = None,
) -> tuple[fx.GraphModule, nn.Module]:
    """Load an autoencoder checkpoint into ``model``'s architecture, convert it, and optionally save.

    ``model`` is an instance (copied, never changed) or a zero-argument factory; ``checkpoint`` a
    ``.safetensors`` or ``.pt``/``.pth`` file, read by :func:`read_state_dict` (what it unwrapped is
    logged on the ``fxvae`` logger at INFO level). Missing or unexpected keys and shape mismatches
    raise :class:`CheckpointError` naming them. The keyword arguments are :func:`fxvae.convert`'s, with the same
    types (``latent=fxvae.VQ(...)`` returns a :class:`fxvae.QuantizerLoss`). With ``out``, the VAE is
    written by :func:`save`. ``model`` may be built on ``torch.device("meta")``: its tensors are then the
    checkpoint's (see :func:`load_into`), and ``example_inputs`` must be real.

    >>> torch.save(ae.state_dict(), tmp / "ae.pt")
    >>> vae, kl = fxvae.convert_checkpoint(ae, tmp / "ae.pt", x, out=tmp / "vae.safetensors")
    """
    if out is not None and not Path(out).parent.is_dir():
        raise CheckpointError(f"cannot save to {os.fspath(out)!r}: its directory does not exist; create it first")
    state, notes = read_state_dict(checkpoint)
    for note in notes:
        logger.info("%s: %s", os.fspath(checkpoint), note)
    ae = owned_copy(model) if isinstance(model, nn.Module) else model()
    what = f"{os.fspath(checkpoint)!r} vs {type(ae).__name__}"
    check_fits(state, ae.state_dict(), what)
    load_into(ae, state, what)
    vae, kl = convert(
        ae,
        example_inputs,
        copy=False,
        bottleneck=bottleneck,
        latent=latent,
        likelihood=likelihood,
        calibration=calibration,
        log_sigma_init=log_sigma_init,
        standardize=standardize,
        options=options,
    )
    if out is not None:
        save(vae, out)
    return vae, kl


def load_ae_state_dict(vae: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load an autoencoder's state dict (e.g. a newer checkpoint of the same architecture) into its VAE.

    Keys map one to one, except the bottleneck layer's, which move to the mu head
    (``Conversion.key_map``, e.g. ``enc.2.weight -> mu_head.weight``). The log-sigma head keeps its
    initialisation, and a discrete model's quantiser its codebook. Missing or unexpected keys raise a
    :class:`CheckpointError` naming them, and the VAE is left as it was.

    A VAE converted from a model built on ``torch.device("meta")`` (no memory, no initialisation) gets
    the state dict's tensors themselves, and its log-sigma head is made on their device and dtype:
    weight 0, bias ``log_sigma_init``. It is then the VAE that converting the real model gives.

    >>> fxvae.load_ae_state_dict(vae, ae.state_dict())
    """
    recipe = conversion(vae)
    inner = unwrap(vae)
    mapped = {recipe.key_map.get(k, k): v for k, v in state_dict.items() if k not in recipe.dropped_keys}
    expected = {k: v for k, v in inner.state_dict().items() if k not in recipe.new_keys}
    what = f"the state dict vs {type(inner).__name__}"
    check_fits(mapped, expected, what)
    head = inner.get_submodule(recipe.log_sigma_head) if recipe.log_sigma_head is not None else None
    if head is not None and any(t.is_meta for t in head.state_dict().values()):
        head_keys = {f"{recipe.log_sigma_head}.{k}" for k in head.state_dict()}
        _refuse_meta_left(inner, set(mapped) | head_keys, what)
        start = recipe.log_sigma_init if recipe.log_sigma_init != "auto" else 0.0
        _materialise_head(head, _reference_tensor(mapped, recipe), start)
    load_into(inner, mapped, what)


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state, strict=False)``, also where ``module`` lives on the meta device.

    Keys must already have been checked (:func:`check_fits`). Tensors on ``torch.device("meta")`` hold
    no data, so copying into them does nothing: those are replaced by the state dict's tensors
    (``assign=True``, so they take its device and dtype), and tied tensors stay tied. A meta tensor
    the state dict does not fill (a non-persistent buffer) is refused before anything is loaded.
    """
    targets = module.state_dict(keep_vars=True)
    on_meta = {k for k, t in targets.items() if t.is_meta}
    if not on_meta:
        module.load_state_dict(state, strict=False)
        return
    _refuse_meta_left(module, set(state), what)
    ties = [names for names in _tied_names(module) if resolve(module, names[0]).is_meta]
    module.load_state_dict({k: v for k, v in state.items() if k in on_meta}, strict=False, assign=True)
    module.load_state_dict({k: v for k, v in state.items() if k not in on_meta}, strict=False)
    # assign=True gives each name its own new tensor: point every name of a tied group at one of them.
    for names in ties:
        shared = resolve(module, next((n for n in names if n in state), names[0]))
        for name in names:
            owner_path, _, attr = name.rpartition(".")
            owner = resolve(module, owner_path)
            if attr in owner._buffers:
                owner._buffers[attr] = shared
            else:
                setattr(owner, attr, shared)


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]


def _tied_names(module: nn.Module) -> list[list[str]]:
    """Names that reach one tensor object (tied weights), one list per tensor held under several names."""
    by_id: dict[int, list[str]] = {}
    for name, tensor in _named_tensors(module):
        by_id.setdefault(id(tensor), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def _refuse_meta_left(module: nn.Module, filled: set[str], what: str) -> None:
    """Raise before loading if a meta tensor would stay on meta: nothing could compute with it."""
    filled_ids = {id(t) for name, t in _named_tensors(module) if name in filled}
    left = [name for name, t in _named_tensors(module) if t.is_meta and id(t) not in filled_ids]
    if left:
        raise CheckpointError(
            f"{what}: {left[:10]} are on the meta device and the state dict does not fill them (non-persistent "
            "buffers are not saved in state dicts); build these tensors on a real device before converting"
        )


def _reference_tensor(state: Mapping[str, torch.Tensor], recipe: Conversion) -> torch.Tensor:
    """The tensor whose device and dtype the log-sigma head takes: the mu head's weight, else the first
    floating-point tensor."""
    weight = state.get(f"{recipe.mu_head}.weight") if recipe.mu_head is not None else None
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        return weight
    found = next((t for t in state.values() if t.is_floating_point()), None)
    if found is None:
        raise CheckpointError("the state dict holds no floating-point tensor; pass the autoencoder's state dict")
    return found


def _materialise_head(head: nn.Module, reference: torch.Tensor, log_sigma_init: float) -> None:
    """Give a log-sigma head built on the meta device real tensors: weight 0, bias ``log_sigma_init``."""
    head.to_empty(device=reference.device).to(reference.dtype)
    zero_head(head, log_sigma_init)


def check_fits(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a CheckpointError naming missing and unexpected keys, or mismatched shapes."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: missing keys {_first_few(missing)}, unexpected keys {_first_few(unexpected)}; "
            "is this checkpoint for this architecture?"
        )
    mismatched = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k, v in got.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(f"{what}: shape mismatch for {_first_few(mismatched)}; is this another model size?")


def _first_few(names: list[str], shown: int = 5) -> str:
    """``names`` as a list, cut after ``shown`` with a count of the rest: one line, however many keys.

    >>> fxvae.io.checkpoints._first_few([f"k{i}" for i in range(8)])
    "['k0', 'k1', 'k2', 'k3', 'k4'] and 3 more"
    """
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{names[:shown]}{more}"


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


def _umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
