"""The AE -> VAE surgery on a traced, shape-propagated graph.

```
before:  y --[layer f]--> a --[act]--> z --> decoder ...
after:   y --[mu_head = f]--> a' --[act]--> mu ------------------------\
         y --[log_sigma_head: weight 0, bias c]--[reshape/pool]--> log_sigma --[reparameterize]--> z --> ...
```
The mu head is the bottleneck layer (a copy, or the same parameters where the model ties them
elsewhere), so mu equals the AE's latent; the log-sigma branch replays only the operations between
layer and latent that change the shape (activations and normalisations are skipped), so log_sigma
has exactly mu's shape. Everything downstream of the latent is left as it was.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from fxvae.bottleneck import Bottleneck, describe_missing_layer
from fxvae.errors import RewriteError
from fxvae.graph import BIAS_ARG, WEIGHT_ARG, LayerKind, functional_arg, layer_kind, tensor_shape, tensor_uses
from fxvae.latent import FunctionalHead, Reparameterize

MU_HEAD, LOG_SIGMA_HEAD, REPARAMETERIZE = "mu_head", "log_sigma_head", "reparameterize"


@dataclass(frozen=True)
class Rewritten:
    """Names the rewrite gave to what it inserted, and where the AE's layer parameters went."""

    mu_head: str
    log_sigma_head: str
    reparameterize: str
    key_map: dict[str, str]
    """AE state-dict key -> VAE state-dict key, for the keys that moved (the layer's, now the mu head's)."""


def rewrite(gm: fx.GraphModule, b: Bottleneck, *, log_sigma_init: float, copy_weights: bool) -> Rewritten:
    """Turn ``gm`` (in place) into a VAE around bottleneck ``b``; returns what was inserted."""
    if b.layer_node is None:
        raise RewriteError(describe_missing_layer(b))
    nodes = {n.name: n for n in gm.graph.nodes}
    chain = [nodes[name] for name in b.chain]
    layer, latent = chain[0], chain[-1]
    kind = layer_kind(gm, layer)
    if kind is None:
        raise RewriteError(f"node {layer.name!r} is not a parametrized layer; {describe_missing_layer(b)}")
    names = [_free_name(gm, base) for base in (MU_HEAD, LOG_SIGMA_HEAD, REPARAMETERIZE)]
    mu_name, ls_name, rp_name = names
    uses = tensor_uses(gm, gm.graph.nodes)

    try:
        if layer.op == "call_module":
            key_map, log_sigma = _module_heads(gm, layer, kind, uses, names, log_sigma_init, copy_weights)
        else:
            key_map, log_sigma = _functional_heads(gm, layer, kind, uses, names, log_sigma_init, copy_weights)
        head = log_sigma
        log_sigma = _replay_shape_ops(gm.graph, chain, head)
        gm.add_submodule(rp_name, Reparameterize())
        # The head sits right after the layer; replayed reshapes (if any) sit after the latent.
        anchor = latent if log_sigma is head and latent is not layer else log_sigma
        with gm.graph.inserting_after(anchor):
            z = gm.graph.call_module(rp_name, (latent, log_sigma))
        latent.replace_all_uses_with(z, delete_user_cb=lambda user: user is not z)
        _remove_orphans(gm)
        remaining = gm.state_dict().keys()
        key_map = {old: new for old, new in key_map.items() if old not in remaining}
        gm.graph.lint()
        gm.recompile()
    except RewriteError:
        raise
    except Exception as err:
        raise RewriteError(
            f"rewriting bottleneck {latent.name!r} (layer {layer.format_node()}) failed: {err}; "
            "pass bottleneck='<another node>' (fxvae.find_bottleneck lists candidates)"
        ) from err
    return Rewritten(mu_name, ls_name, rp_name, key_map)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


def _bias_shape(layer: fx.Node, kind: LayerKind) -> tuple[int]:
    shape = tensor_shape(layer)
    if shape is None:
        raise RewriteError(f"no shape recorded for layer {layer.name!r}")
    return (shape[kind.channel_dim],)


def _shared_copy(module: nn.Module, uses: dict[int, int], copy_weights: bool) -> nn.Module:
    """A copy of ``module`` that keeps the parameters read elsewhere in the graph (tied weights) shared."""
    if not copy_weights:
        return module
    keep = {id(p): p for p in module.parameters() if uses.get(id(p), 0) > 1}
    return copy.deepcopy(module, memo=keep)


def _fresh_head(module: nn.Module, bias_shape: tuple[int], log_sigma_init: float) -> nn.Module:
    """A layer of ``module``'s kind and shapes with weight zero and bias ``log_sigma_init``.

    A copy keeps what a subclass does in forward (dynamic padding, weight standardisation), so the head's
    output has the layer's shape. Hooks (old-style weight norm) are not copied: the head is a plain layer.
    """
    weight = module.weight
    if parametrize.is_parametrized(module):
        head = _plain_layer(module)
    else:
        # The memo keeps the parameters uncopied: they are replaced below.
        head = copy.deepcopy(module, memo={id(p): p for p in module.parameters()})
        head._forward_pre_hooks.clear()
        head._forward_hooks.clear()
        for name in [n for n in head._parameters if n not in ("weight", "bias")]:
            del head._parameters[name]
    head.weight = nn.Parameter(torch.zeros_like(weight))
    head.bias = nn.Parameter(torch.full(bias_shape, log_sigma_init, dtype=weight.dtype, device=weight.device))
    return head


def _plain_layer(module: nn.Module) -> nn.Module:
    """A new torch layer with ``module``'s hyperparameters.

    For parametrized layers (weight_norm, spectral_norm): removing a parametrization from a copy would
    change the class the copy shares with the user's module.
    """
    weight = module.weight
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, module.out_features, **factory)
    base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn.modules.conv"))
    options = {
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
        "groups": module.groups,
        "padding_mode": module.padding_mode,
    }
    if module.transposed:
        options["output_padding"] = module.output_padding
    return base(module.in_channels, module.out_channels, module.kernel_size, **options, **factory)


def _module_heads(
    gm: fx.GraphModule,
    layer: fx.Node,
    kind: LayerKind,
    uses: dict[int, int],
    names: list[str],
    log_sigma_init: float,
    copy_weights: bool,
) -> tuple[dict[str, str], fx.Node]:
    mu_name, ls_name, _ = names
    original = gm.get_submodule(layer.target)
    called_elsewhere = len(gm.graph.find_nodes(op="call_module", target=layer.target)) > 1
    mu_head = _shared_copy(original, uses, copy_weights and not called_elsewhere)
    gm.add_submodule(mu_name, mu_head)
    gm.add_submodule(ls_name, _fresh_head(original, _bias_shape(layer, kind), log_sigma_init))
    old_target = str(layer.target)
    layer.target = mu_name
    with gm.graph.inserting_after(layer):
        log_sigma = gm.graph.call_module(ls_name, layer.args, layer.kwargs)
    return {f"{old_target}.{key}": f"{mu_name}.{key}" for key in original.state_dict()}, log_sigma


def _functional_heads(
    gm: fx.GraphModule,
    layer: fx.Node,
    kind: LayerKind,
    uses: dict[int, int],
    names: list[str],
    log_sigma_init: float,
    copy_weights: bool,
) -> tuple[dict[str, str], fx.Node]:
    mu_name, ls_name, _ = names
    weight_node = functional_arg(layer, WEIGHT_ARG, "weight")
    bias_node = functional_arg(layer, BIAS_ARG, "bias")
    weight = gm.get_parameter(weight_node.target) if _is_param(gm, weight_node) else None
    if weight is None:
        raise RewriteError(f"the weight of layer {layer.name!r} ({weight_node.target}) is not a parameter")
    stored_bias = isinstance(bias_node, fx.Node) and bias_node.op == "get_attr"
    bias = gm.get_parameter(bias_node.target) if stored_bias else None

    def take(p: torch.Tensor, node: fx.Node) -> nn.Parameter:
        if not copy_weights or uses.get(id(p), 0) > 1 or len(node.users) > 1:
            return p
        return nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)

    gm.add_submodule(
        mu_name,
        FunctionalHead(take(weight, weight_node), take(bias, bias_node) if bias is not None else None),
    )
    ls_bias = torch.full(_bias_shape(layer, kind), log_sigma_init, dtype=weight.dtype, device=weight.device)
    gm.add_submodule(ls_name, FunctionalHead(torch.zeros_like(weight), ls_bias))

    graph = gm.graph
    with graph.inserting_before(layer):
        mu_weight = graph.get_attr(f"{mu_name}.weight")
        mu_bias = graph.get_attr(f"{mu_name}.bias") if stored_bias else bias_node
        ls_weight = graph.get_attr(f"{ls_name}.weight")
        ls_bias_node = graph.get_attr(f"{ls_name}.bias")
    _set_arg(layer, WEIGHT_ARG, "weight", mu_weight)
    _set_arg(layer, BIAS_ARG, "bias", mu_bias)
    with graph.inserting_after(layer):
        log_sigma = graph.call_function(layer.target, layer.args, dict(layer.kwargs))
    _set_arg(log_sigma, WEIGHT_ARG, "weight", ls_weight)
    _set_arg(log_sigma, BIAS_ARG, "bias", ls_bias_node)
    key_map = {str(weight_node.target): f"{mu_name}.weight"}
    if stored_bias:
        key_map[str(bias_node.target)] = f"{mu_name}.bias"
    return key_map, log_sigma


def _is_param(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(_get(gm, node.target), nn.Parameter)


def _get(gm: fx.GraphModule, target: str) -> object:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


def _set_arg(node: fx.Node, index: int, name: str, value: fx.Node | None) -> None:
    if name in node.kwargs:
        node.update_kwarg(name, value)
    elif len(node.args) > index:
        node.update_arg(index, value)
    elif len(node.args) == index:
        node.args = (*node.args, value)
    else:
        node.update_kwarg(name, value)


def _replay_shape_ops(graph: fx.Graph, chain: list[fx.Node], log_sigma: fx.Node) -> fx.Node:
    """Apply to log_sigma the chain's shape-changing operations (reshape, pooling), after the latent.

    Returns the final log_sigma node; it comes after the latent in the graph.
    """
    current, cursor = log_sigma, chain[-1]
    for prev, node in itertools.pairwise(chain):
        in_shape, out_shape = tensor_shape(prev), tensor_shape(node)
        if in_shape is not None and in_shape == out_shape:
            continue  # an activation or normalisation: log sigma is the head's raw output
        with graph.inserting_after(cursor):
            current = graph.node_copy(node, lambda n, prev=prev, cur=current: cur if n is prev else n)
        cursor = current
    return current


def _remove_orphans(gm: fx.GraphModule) -> None:
    """Drop parameters and modules that nothing reads any more, such as the AE's layer (DDP needs that).

    A layer whose weight the decoder also reads stays as the holder of that weight, without its bias.
    """
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    live = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            live.update(id(p) for p in gm.get_submodule(node.target).parameters())
        elif node.op == "get_attr":
            live.add(id(_get(gm, node.target)))
    for name, p in list(gm.named_parameters(remove_duplicate=False)):
        if id(p) not in live:
            owner_path, _, attr = name.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            # A layer kept as the holder of a tied weight must still answer `.bias` (torch.export reads it).
            owner.register_parameter(attr, None)
    gm.delete_all_unused_submodules()
