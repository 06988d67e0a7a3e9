"""Where a calibration map goes in a traced VAE: into layer weights where they allow, else nodes that run it.

```
a --[standardise: mu = W (a - m)]--> mu --[reparameterize]--> z --[destandardise: m + W^-1 z]--> decoder
```
Where the mu head is a plain Linear or convolution whose output is the latent, the map is folded into its
weights; where the decoder starts with a plain Linear that alone reads z, the inverse map is folded into it;
elsewhere the map's module runs as a node before or after the reparameterisation. With
``fxvae.Gaussian(fold=False)`` nothing is folded and both nodes run (:func:`fxvae.calibrate`). The module holds
the constants either way, so they round-trip through save/load and re-calibration can undo a fold.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from fxvae.analysis.graph import functional_arg, stored_layer_kind
from fxvae.analysis.operators import BIAS_ARG, WEIGHT_ARG
from fxvae.modules import resolve
from fxvae.recipe import CalibrationInfo, Conversion
from fxvae.surgery.standardize import LatentAffine

_GROUPS_ARG = 6
"""Position of ``groups`` in F.conv*/aten.conv* and their transposes."""


def fold(gm: fx.GraphModule, recipe: Conversion, affine: LatentAffine) -> tuple[str | None, str | None]:
    """Fold ``affine`` into the mu head and its inverse into the decoder's first layer where each is plain:
    returns the layers folded into (None where a node must run the map instead).

    >>> from fxvae.surgery.standardize import LatentAffine
    >>> affine = LatentAffine(torch.zeros(8), scale=torch.full((8,), 2.0))
    >>> fold(vae, fxvae.conversion(vae), affine)  # mu is a sigmoid's output, z is read by Linear '4'
    (None, '4')
    """
    reparam = gm.graph.find_nodes(op="call_module", target=recipe.reparameterize)[0]
    return _fold_mu(gm, reparam.args[0], affine), _fold_decoder(gm, reparam, affine)


def unfold(gm: fx.GraphModule, info: CalibrationInfo, old: LatentAffine) -> None:
    """Undo a calibration: unfold the layers it was folded into and take out the nodes that ran it."""
    undo = old.undone()
    if info.folded_mu is not None:
        _fold_output(_layer_tensors(gm, info.folded_mu), undo, _transposed(gm, info.folded_mu))
    if info.folded_decoder is not None:
        _fold_input(_layer_tensors(gm, info.folded_decoder), undo)
    for node in gm.graph.find_nodes(op="call_module", target=info.module):
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


def place(
    gm: fx.GraphModule,
    recipe: Conversion,
    affine: LatentAffine,
    name: str,
    *,
    standardize: bool,
    destandardize: bool,
) -> None:
    """Register the map under ``name`` and add the nodes that run it where it was not folded: before the
    reparameterisation (standardise mu) and after it (destandardise z for the decoder)."""
    gm.add_submodule(name, affine)
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
