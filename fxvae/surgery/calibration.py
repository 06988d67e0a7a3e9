"""Calibrated conversion: move the AE's codes to the prior, outputs equal to float rounding (about 1e-6 relative).

An autoencoder puts its codes wherever reconstruction wants them, far from N(0, I), so a plain conversion
starts as a poor VAE: the means alone cost most of the KL. With the latent's statistics over the user's
data (a mean m and a spread s, or a whitening matrix W), mu becomes the standardised code and the
decoder reads the inverse map:

```
a --[standardise: mu = W (a - m)]--> mu --[reparameterize]--> z --[destandardise: m + W^-1 z]--> decoder
```
In eval mode z = mu, so the decoder sees a again, up to float rounding. Where the mu head is a plain
Linear or convolution whose output is the latent, the map is folded into its weights; where the decoder
starts with a plain Linear that alone reads z, the inverse map is folded into it; elsewhere the named
``calibration`` module runs it. Its buffers hold the constants either way, so they round-trip through
save/load and re-calibration can undo a fold.

``log_sigma_init="auto"`` starts each latent dimension at the variance a Gaussian posterior has for the
linearised decoder under the prior: sigma_j^2 = 1 / (1 + F_j), F_j the decoder's Fisher-weighted
sensitivity to z_j over the calibration data (see :func:`auto_log_sigma`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from fxvae.analysis.graph import functional_arg, stored_layer_kind
from fxvae.analysis.operators import BIAS_ARG, WEIGHT_ARG
from fxvae.analysis.outputs import reconstruction
from fxvae.capture import hooks_tier as hooks
from fxvae.capture.tracing import CAPTURE_LOCK
from fxvae.errors import InputError
from fxvae.io.data import batches, check_batch, to_device
from fxvae.measure import likelihoods
from fxvae.modules import eval_mode, first_tensor, resolve
from fxvae.recipe import CalibrationInfo, Likelihood, Standardize, conversion, record, reparameterize_of, unwrap
from fxvae.surgery.split import decoder_conditions, split

CALIBRATION = "calibration"
_PROBES = 16
_SENSITIVITY_SAMPLES = 512
_GROUPS_ARG = 6
"""Position of ``groups`` in F.conv*/aten.conv* and their transposes."""
_FLOOR = 1e-6
"""Spreads below this fraction of the typical one (dead units) are floored, so the map stays finite."""

Mode = Literal["element", "channel", "whiten"]


class LatentAffine(nn.Module):
    """mu = W (a - m), and back a = m + W^-1 mu (``inverse=True``); W is diagonal or a matrix along ``axis``.

    ``mean`` and ``scale`` broadcast against one sample's latent (``scale`` is 1/W's diagonal); a full map
    keeps ``matrix`` and its inverse.

    >>> affine = fxvae.surgery.calibration.LatentAffine(torch.tensor([1.0, 2.0]), scale=torch.tensor([2.0, 4.0]))
    >>> affine(torch.tensor([[3.0, 6.0]])), affine(torch.tensor([[1.0, 1.0]]), inverse=True)
    (tensor([[1., 1.]]), tensor([[3., 6.]]))
    """

    def __init__(
        self,
        mean: torch.Tensor,
        *,
        scale: torch.Tensor | None = None,
        matrix: torch.Tensor | None = None,
        axis: int = -1,
    ) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.register_buffer("matrix", matrix)
        inverse = None if matrix is None else torch.linalg.inv(matrix.double()).to(matrix.dtype)
        self.register_buffer("inverse_matrix", inverse)

    def forward(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        if self.matrix is None:
            return torch.addcmul(self.mean, x, self.scale) if inverse else (x - self.mean) / self.scale
        if inverse:
            return self._along_axis(x, self.inverse_matrix) + self.mean
        return self._along_axis(x - self.mean, self.matrix)

    def _along_axis(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return (x.movedim(self.axis, -1) @ matrix.T).movedim(-1, self.axis)

    def undone(self) -> LatentAffine:
        """The map that undoes this one, in the same form: a = W^-1 (mu - (-W m))."""
        if self.matrix is None:
            return LatentAffine(-self.mean / self.scale, scale=1.0 / self.scale, axis=self.axis)
        shift = self._along_axis(self.mean.unsqueeze(0), self.matrix).squeeze(0)
        return LatentAffine(-shift, matrix=self.inverse_matrix, axis=self.axis)


def empty_affine(mode: Mode, latent_shape: tuple[int, ...], axis: int, like: torch.Tensor) -> LatentAffine:
    """An identity map of the right shapes, for :func:`fxvae.load` to fill from a file."""
    shape = _stat_shape(mode, latent_shape, axis)
    mean = torch.zeros(shape, dtype=like.dtype, device=like.device)
    if mode != "whiten":
        return LatentAffine(mean, scale=torch.ones_like(mean), axis=axis)
    eye = torch.eye(mean.numel(), dtype=like.dtype, device=like.device)
    return LatentAffine(mean, matrix=eye, axis=axis)


# --- the user-facing call -------------------------------------------------------------------------------------


def calibrate(
    vae: nn.Module,
    data: Any,
    *,
    standardize: Standardize = "auto",
    log_sigma_init: float | Literal["auto"] | None = None,
    likelihood: Likelihood = "gaussian",
) -> None:
    """Standardise a converted VAE's latent with ``data``, in place, keeping its eval outputs (to about 1e-6 relative).

    ``data`` is a tensor (cut into batches of 256) or an iterable of batches (a DataLoader); a batch is a
    tensor or a tuple whose first items are the VAE's inputs (a supervised loader's ``(x, label)`` gives
    ``x`` to a one-input VAE). The AE's latent is read in eval mode over all of it and its statistics are
    accumulated in float64 in one pass. ``standardize`` chooses the map (:data:`fxvae.recipe.Standardize`).
    A calibrated VAE can be calibrated again (new data, another mode): the old map is undone first.
    ``log_sigma_init`` sets the log-sigma head's bias: a number, ``"auto"`` (each dimension from the
    decoder's sensitivity under ``likelihood``, :func:`auto_log_sigma`), or None to leave it.

    >>> data = torch.randn(512, 64)
    >>> fxvae.calibrate(vae, data)
    >>> encoder, _ = fxvae.split(vae)
    >>> mu, _ = encoder(data)
    >>> bool(mu.mean(0).abs().max() < 1e-5), bool((mu.std(0, correction=0) - 1).abs().max() < 1e-4)
    (True, True)
    """
    with CAPTURE_LOCK:
        _calibrate(vae, data, standardize, log_sigma_init, likelihood)


def _calibrate(
    vae: nn.Module,
    data: Any,
    standardize: Standardize,
    log_sigma_init: float | Literal["auto"] | None,
    likelihood: Likelihood,
) -> None:
    reparameterize_of(vae, "fxvae.calibrate")
    recipe = conversion(vae)
    gm = unwrap(vae)
    count = len(gm.graph.find_nodes(op="placeholder"))
    device = first_tensor(gm).device
    inputs = [to_device(args, device) for args in batches(data, count)]
    if not inputs or all(len(args[0]) == 0 for args in inputs):
        raise InputError("the calibration data is empty: pass a batch (or a DataLoader) of the AE's data")
    for args in inputs:
        check_batch(args, recipe.input_shape, "a calibration batch")
    encoder, _ = split(gm)
    old = gm.get_submodule(recipe.calibration.module) if recipe.calibration else None
    with eval_mode(encoder), torch.no_grad():
        codes = [encoder(*args)[0] for args in inputs]
    latents = [old(mu, inverse=True) if old is not None else mu for mu in codes]
    latent_shape, axis = recipe.latent_shape, recipe.bottleneck.feature_dim
    mode = _resolve(standardize, latent_shape)
    affine, samples = fit_affine(latents, latent_shape, mode, axis, codes[0].dtype)
    info = _install(gm, affine, old, mode, samples)
    new_keys = tuple(dict.fromkeys((*recipe.new_keys, *(f"{info.module}.{k}" for k in affine.state_dict()))))
    options = recipe.options
    if log_sigma_init is not None:
        _set_log_sigma(gm, recipe, log_sigma_init, likelihood, [affine(a) for a in latents], inputs)
        options = dataclasses.replace(options, log_sigma_init=log_sigma_init, likelihood=likelihood)
    options = dataclasses.replace(options, standardize=standardize)
    record(gm, dataclasses.replace(recipe, calibration=info, new_keys=new_keys, options=options))


def _resolve(mode: Standardize, latent_shape: tuple[int, ...]) -> Mode:
    return ("element" if len(latent_shape) == 1 else "channel") if mode == "auto" else mode


# --- statistics ------------------------------------------------------------------------------------------------


def fit_affine(
    latents: Iterable[torch.Tensor], latent_shape: tuple[int, ...], mode: Mode, axis: int, dtype: torch.dtype
) -> tuple[LatentAffine, int]:
    """The map that standardises ``latents`` (batches of AE codes), and the number of samples it saw.

    One streaming pass accumulates float64 sums of the features and of their products (their squares
    for a diagonal map): per latent element (``element``), or per channel with positions as samples.
    """
    count, n, total, products = 0, 0, 0.0, 0.0
    for latent in latents:
        values = _features(latent.detach().double(), mode, axis)
        if not torch.isfinite(values).all():
            raise InputError("the autoencoder's latent is NaN or inf on the calibration data: pass finite data")
        total = total + values.sum(0)
        products = products + (values.T @ values if mode == "whiten" else (values * values).sum(0))
        count, n = count + len(latent), n + len(values)
    if count < 2:
        raise InputError(f"calibration needs at least 2 samples, got {count}: pass more data")
    mean = total / n
    shape = _stat_shape(mode, latent_shape, axis)
    if mode != "whiten":
        variance = (products / n - mean * mean).clamp_min(0.0)
        scale = variance.sqrt().clamp_min(_FLOOR * variance.mean().sqrt() + 1e-30)
        return LatentAffine(mean.reshape(shape).to(dtype), scale=scale.reshape(shape).to(dtype), axis=axis), count
    covariance = products / n - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    floor = (_FLOOR * eigenvalues.clamp_min(0.0).mean().sqrt() + 1e-30) ** 2
    # ZCA: the symmetric root keeps each whitened dimension as close as possible to its original.
    matrix = eigenvectors @ torch.diag(eigenvalues.clamp_min(floor).rsqrt()) @ eigenvectors.T
    return LatentAffine(mean.reshape(shape).to(dtype), matrix=matrix.to(dtype), axis=axis), count


def _features(latent: torch.Tensor, mode: Mode, axis: int) -> torch.Tensor:
    """(rows, features): one row per sample with every element a feature, or per sample and position."""
    if mode == "element":
        return latent.flatten(1)
    return latent.movedim(axis, -1).reshape(-1, latent.shape[axis])


def _stat_shape(mode: Mode, latent_shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """The shape of the constants, broadcasting against one sample: the latent's, or its channel axis."""
    if mode == "element":
        return latent_shape
    channel = axis - 1 if axis > 0 else len(latent_shape) + axis
    return tuple(n if d == channel else 1 for d, n in enumerate(latent_shape))


# --- installing and folding the map --------------------------------------------------------------------------


def _install(
    gm: fx.GraphModule, affine: LatentAffine, old: LatentAffine | None, mode: Mode, samples: int
) -> CalibrationInfo:
    """Put ``affine`` in the VAE (undoing an earlier map first): folded where the layers allow, else nodes."""
    recipe = conversion(gm)
    if recipe.calibration is not None and old is not None:
        _uninstall(gm, recipe.calibration, old)
    folded_mu = folded_decoder = None
    if recipe.tracer != "hooks":
        reparam = gm.graph.find_nodes(op="call_module", target=recipe.reparameterize)[0]
        folded_mu = _fold_mu(gm, reparam.args[0], affine)
        folded_decoder = _fold_decoder(gm, reparam, affine)
    graph_tier = recipe.tracer != "hooks"
    _place(
        gm,
        affine,
        CALIBRATION,
        standardize=graph_tier and folded_mu is None,
        destandardize=graph_tier and folded_decoder is None,
    )
    return CalibrationInfo(mode, affine.axis, samples, CALIBRATION, folded_mu, folded_decoder)


def _uninstall(gm: fx.GraphModule, info: CalibrationInfo, old: LatentAffine) -> None:
    """Undo a calibration: unfold the layers it was folded into and take out the nodes that ran it."""
    undo = old.undone()
    if info.folded_mu is not None:
        _fold_output(_layer_tensors(gm, info.folded_mu), undo, _transposed(gm, info.folded_mu))
    if info.folded_decoder is not None:
        _fold_input(_layer_tensors(gm, info.folded_decoder), undo)
    for node in gm.graph.find_nodes(op="call_module", target=info.module):
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def restore(gm: fx.GraphModule, info: CalibrationInfo) -> None:
    """Rebuild a saved VAE's calibration structure (module and nodes) for its buffers to be loaded into."""
    recipe = conversion(gm)
    affine = empty_affine(info.standardize, recipe.latent_shape, info.axis, first_tensor(gm))
    graph_tier = recipe.tracer != "hooks"
    _place(
        gm,
        affine,
        info.module,
        standardize=graph_tier and info.folded_mu is None,
        destandardize=graph_tier and info.folded_decoder is None,
    )


def _place(gm: fx.GraphModule, affine: LatentAffine, name: str, *, standardize: bool, destandardize: bool) -> None:
    """Register the map under ``name`` and add the nodes that run it: before the reparameterisation
    (standardise mu) and after it (destandardise z for the decoder). The hooks tier's latent hook runs it."""
    gm.add_submodule(name, affine)
    recipe = conversion(gm)
    if recipe.tracer == "hooks":
        hooks.latent_hook(gm, recipe.bottleneck.node).calibration = affine
        return
    reparam = gm.graph.find_nodes(op="call_module", target=recipe.reparameterize)[0]
    if standardize:
        with gm.graph.inserting_before(reparam):
            reparam.update_arg(0, gm.graph.call_module(name, (reparam.args[0],)))
    if destandardize:
        with gm.graph.inserting_after(reparam):
            inverse = gm.graph.call_module(name, (reparam,), {"inverse": True})
        reparam.replace_all_uses_with(inverse, delete_user_cb=lambda user: user is not inverse)
    gm.graph.lint()
    gm.recompile()


def _fold_mu(gm: fx.GraphModule, mu: fx.Node, affine: LatentAffine) -> str | None:
    """Fold the map into the mu head when mu is a plain layer's output and the map runs along its channels."""
    kind = stored_layer_kind(gm, mu)
    tensors = _plain_tensors(gm, mu) if kind is not None else None
    if kind is None or tensors is None or not _along_channels(affine, kind.channel_dim):
        return None
    name = _layer_name(mu)
    _fold_output(tensors, affine, kind.transposed)
    return name


def _fold_decoder(gm: fx.GraphModule, z: fx.Node, affine: LatentAffine) -> str | None:
    """Fold the inverse map into the decoder's first layer when that is a plain Linear reading z alone."""
    users = list(z.users)
    reader = users[0] if len(users) == 1 else None
    kind = stored_layer_kind(gm, reader) if reader is not None else None
    if kind is None or kind.name != "linear" or reader.args[0] is not z:
        return None
    tensors = _plain_tensors(gm, reader)
    if tensors is None or not _along_channels(affine, -1):
        return None
    _fold_input(tensors, affine)
    return _layer_name(reader)


def _along_channels(affine: LatentAffine, channel_dim: int) -> bool:
    """Whether the map's constants vary only along the layer's channel dimension of the (batched) latent."""
    rank = affine.mean.dim() + 1
    channel = channel_dim % rank
    per_sample = affine.mean.shape
    return all(n == 1 for d, n in enumerate(per_sample, start=1) if d != channel) and (
        affine.matrix is None or affine.axis % rank == channel
    )


def _plain_tensors(gm: fx.GraphModule, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(weight, bias) of a layer whose parameters nothing else reads and nothing recomputes, else None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        plain = not (
            parametrize.is_parametrized(module)
            or module._forward_hooks
            or module._forward_pre_hooks
            or getattr(module, "bias", None) is None
            or getattr(module, "groups", 1) != 1
            or len(gm.graph.find_nodes(op="call_module", target=node.target)) != 1
            or any(n.target.startswith(f"{node.target}.") for n in gm.graph.find_nodes(op="get_attr"))
        )
        return (module.weight, module.bias) if plain else None
    weight, bias = functional_arg(node, WEIGHT_ARG, "weight"), functional_arg(node, BIAS_ARG, "bias")
    stored = [n for n in (weight, bias) if isinstance(n, fx.Node) and n.op == "get_attr" and len(n.users) == 1]
    owner = str(weight.target).rpartition(".")[0] if len(stored) == 2 else ""
    named = owner and (weight.target, bias.target) == (f"{owner}.weight", f"{owner}.bias")
    if not named or (functional_arg(node, _GROUPS_ARG, "groups") or 1) != 1:
        return None
    return resolve(gm, weight.target), resolve(gm, bias.target)


def _layer_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    return str(functional_arg(node, WEIGHT_ARG, "weight").target).rpartition(".")[0]


def _layer_tensors(gm: fx.GraphModule, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    holder = gm.get_submodule(name)
    return holder.weight, holder.bias


def _transposed(gm: fx.GraphModule, name: str) -> bool:
    return isinstance(gm.get_submodule(name), nn.modules.conv._ConvTransposeNd)


def _fold_output(layer: tuple[torch.Tensor, torch.Tensor], affine: LatentAffine, transposed: bool) -> None:
    """The layer's output y becomes W (y - m): weight and bias absorb the map along the output channels."""
    weight, bias = layer
    out_dim = 1 if transposed else 0
    mean = affine.mean.reshape(-1)
    with torch.no_grad():
        if affine.matrix is None:
            scale = affine.scale.reshape(-1)
            weight.div_(scale.reshape([-1 if d == out_dim else 1 for d in range(weight.dim())]))
            bias.sub_(mean).div_(scale)
        else:
            weight.copy_(torch.tensordot(affine.matrix, weight.movedim(out_dim, 0), dims=1).movedim(0, out_dim))
            bias.copy_(affine.matrix @ (bias - mean))


def _fold_input(layer: tuple[torch.Tensor, torch.Tensor], affine: LatentAffine) -> None:
    """A Linear layer reading a = m + W^-1 z: weight and bias absorb the inverse map along the inputs."""
    weight, bias = layer
    with torch.no_grad():
        bias.add_(weight @ affine.mean.reshape(-1))
        if affine.matrix is None:
            weight.mul_(affine.scale.reshape(1, -1))
        else:
            weight.copy_(weight @ affine.inverse_matrix)


# --- log sigma from the data ---------------------------------------------------------------------------------


def _set_log_sigma(
    gm: fx.GraphModule,
    recipe: Any,
    log_sigma_init: float | Literal["auto"],
    likelihood: Likelihood,
    codes: list[torch.Tensor],
    inputs: list[tuple[Any, ...]],
) -> None:
    head = gm.get_submodule(recipe.log_sigma_head)
    if log_sigma_init == "auto":
        _, decoder = split(gm)
        taken = decoder_conditions(gm, decoder, len(inputs[0]))
        decoded = [(args[0], *(args[i] for i in taken)) for args in inputs]
        with eval_mode(decoder):
            target = auto_log_sigma(decoder, codes, decoded, likelihood)
        value = head_bias(target, tuple(head.bias.shape), recipe.bottleneck.feature_dim)
    else:
        value = torch.full_like(head.bias, float(log_sigma_init))
    with torch.no_grad():
        head.bias.copy_(value)
    reparameterize_of(gm).latest = None


def auto_log_sigma(
    decoder: nn.Module,
    codes: list[torch.Tensor],
    inputs: list[tuple[Any, ...]],
    likelihood: Likelihood | likelihoods.Likelihood,
    prior_precision: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per latent element: 1/2 log(1 / (1 + F_j)), F_j = E[sum_i w_i (d recon_i / d z_j)^2] over the data.

    ``inputs`` are the data and the conditions the decoder takes, ``codes`` the latents of the same batches.

    That is the variance of the Gaussian posterior of the linearised decoder under the N(0, 1) prior; with
    ``prior_precision`` (1 / the prior's variance per latent element, broadcasting against one code) it is
    1/2 log(1 / (F_j + precision_j)), the width :func:`fxvae.evaluate` gives an autoencoder's proposal under a
    fitted density.
    w is the likelihood's Fisher weight on the reconstruction (:meth:`fxvae.likelihoods.Likelihood.fisher`):
    1 / (the AE's mean squared error) for a Gaussian, whose sigma is fitted to the AE's own error over the
    data; 1 / b^2 for a Laplace; p (1 - p) for Bernoulli logits, 1 / (p (1 - p)) for probabilities. The
    diagonal of J^T W J is estimated with probes u ~ N(0, W) in output space, E[(J^T u)_j^2] = (J^T W J)_jj,
    on up to 512 samples.
    """
    lik = likelihoods.get(likelihood)
    if lik.needs_fit:
        with torch.no_grad():
            decoded = (
                (reconstruction(decoder(mu, *args[1:]), args[0]), args[0])
                for mu, args in zip(codes, inputs, strict=True)
            )
            lik = likelihoods.fit(lik, decoded)
    generator = torch.Generator().manual_seed(0)
    total, seen = 0.0, 0
    for mu, args in zip(codes, inputs, strict=True):
        if seen >= _SENSITIVITY_SAMPLES:
            break
        z = mu.detach().clone().requires_grad_(True)
        recon = reconstruction(decoder(z, *args[1:]), args[0])
        lik.check_output(recon.detach())
        weight = lik.fisher(recon.detach())
        for _ in range(_PROBES):
            probe = torch.randn(recon.shape, generator=generator).to(recon) * weight.sqrt()
            (grad,) = torch.autograd.grad(recon, z, probe, retain_graph=True)
            total = total + grad.double().pow(2).sum(0) / _PROBES
        seen += len(z)
    fisher = total / seen
    if prior_precision is None:
        return (-0.5 * torch.log1p(fisher)).to(codes[0].dtype)
    return (-0.5 * torch.log(fisher + prior_precision.to(fisher))).to(codes[0].dtype)


def head_bias(target: torch.Tensor, bias_shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Per-element targets fitted to a head's bias: per element, averaged per channel, or one value."""
    per_sample = target.shape
    if target.numel() == torch.Size(bias_shape).numel():
        return target.reshape(bias_shape)
    channel = axis - 1 if axis > 0 else len(per_sample) + axis
    if 0 <= channel < len(per_sample) and per_sample[channel] == torch.Size(bias_shape).numel():
        others = [d for d in range(len(per_sample)) if d != channel]
        return target.mean(others).reshape(bias_shape)
    return target.mean().expand(bias_shape).clone()
