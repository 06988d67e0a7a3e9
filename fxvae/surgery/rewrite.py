"""The AE -> VAE surgery on a traced, shape-propagated graph, as small passes.

```
before:  y --[layer f]--> a --[act]--> z --> decoder ...
after:   y --[mu_head = f]--> a --[act]--> mu --[reparameterize(mu, y)]--> z --> decoder ...
         log_sigma = log_sigma_head(y) (+ the chain's reshapes/pooling), computed inside reparameterize
```
Head kind "layer": the AE's layer itself becomes ``mu_head`` (the same parameters, never a copy: who
owns what was decided by :func:`fxvae.convert`); every read of its parameters follows it, so tied
weights stay tied. The log-sigma head is a new layer of the same kind and shapes, weight 0 and bias
``log_sigma_init``, reading the layer's input. Head kind "pointwise" (the latent is no single layer's
output: a residual sum, attention, a normalisation): mu is the latent as the AE computes it and the
log-sigma head is a zero Linear (features last) or 1x1 convolution (channels first) reading it.

The log-sigma branch is a small graph of its own that ``reparameterize`` runs in training mode or when
the posterior is asked for: an eval forward computes exactly what the AE computes.

A discrete latent (``latent="vq"`` or ``"fsq"``) gets a quantiser where ``reparameterize`` would go, and
nothing else: no layer changes its name, there is no log-sigma head, and every reader of the latent reads
``quantize(z)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Plan
from fxvae.analysis.graph import functional_arg, module_path, stored_layer_kind, stored_sources, tensor_shape
from fxvae.analysis.operators import (
    BIAS_ARG,
    CONV_ARG_NAMES,
    CONV_TRANSPOSE_ARG_NAMES,
    SHAPE_MOVES,
    WEIGHT_ARG,
    LayerKind,
)
from fxvae.errors import FxvaeError, RewriteError
from fxvae.latents.gaussian import FunctionalHead, Reparameterize
from fxvae.modules import is_buffer, place, remove, resolve

MU_HEAD, LOG_SIGMA_HEAD, REPARAMETERIZE, QUANTIZE = "mu_head", "log_sigma_head", "reparameterize", "quantize"


@dataclass(frozen=True)
class Inserted:
    """Names the rewrite gave to what it inserted, and where the AE layer's state-dict keys went."""

    mu_head: str | None
    log_sigma_head: str | None
    latent_module: str
    """The module at the latent: the reparameterisation, or the quantiser of a discrete latent."""
    key_map: dict[str, str]
    """AE state-dict key -> VAE state-dict key, for the keys that moved (the layer's, now the mu head's)."""


class DirectLookups(fx.CodeGen):
    """Generated code that reaches submodules through ``_modules`` (``self._modules['enc']._modules['0']``).

    ``nn.Module.__getattr__`` costs microseconds per lookup; an eager ``nn.Sequential`` iterates its
    children without it, so without this a small VAE's eval forward pays more than its AE's.
    """

    def _gen_python_code(self, nodes: Any, root_module: str, namespace: Any, **kwargs: Any) -> fx.graph.PythonCode:
        code = super()._gen_python_code(nodes, root_module, namespace, **kwargs)
        for node in nodes:
            if node.op == "call_module":
                slow = fx.graph._format_target(root_module, str(node.target))
                fast = root_module + "".join(f"._modules[{part!r}]" for part in str(node.target).split("."))
                code.src = code.src.replace(f"{node.name} = {slow}(", f"{node.name} = {fast}(", 1)
        return code


def direct_lookups(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.set_codegen(DirectLookups())
    gm.recompile()
    return gm


def rewrite(
    gm: fx.GraphModule,
    plan: Plan,
    *,
    log_sigma_init: float,
    device: torch.device,
    module: nn.Module | None = None,
    name: str = "",
) -> Inserted:
    """Turn ``gm`` (in place) into a VAE around ``plan``'s latent, or, given a ``module`` (a quantiser), into a
    model whose latent is ``module(latent)``, registered as ``name`` (or a free variant); returns what was
    inserted."""
    try:
        if module is not None:
            name = free_name(gm, name)
            insert_at_latent(gm, plan.latent, [], module, name)
            gm.graph.lint()
            direct_lookups(gm)
            return Inserted(None, None, name, {})
        mu_name = free_name(gm, MU_HEAD) if plan.layer is not None else None
        key_map = take_over_layer(gm, plan.layer, mu_name) if mu_name is not None else {}
        remove_orphans(gm)
        ls_name = free_name(gm, LOG_SIGMA_HEAD)
        head, head_args = log_sigma_head(gm, plan, log_sigma_init, device)
        gm.add_submodule(ls_name, head)
        branch, features = log_sigma_branch(gm, plan, ls_name, head_args)
        rp_name = free_name(gm, REPARAMETERIZE)
        insert_at_latent(gm, plan.latent, features, Reparameterize(branch), rp_name)
        gm.graph.lint()
        direct_lookups(gm)
    except FxvaeError:
        raise
    except Exception as err:
        layer = f" (layer {plan.layer.format_node()})" if plan.layer is not None else ""
        raise RewriteError(
            f"rewriting bottleneck {plan.latent.name!r}{layer} failed: {type(err).__name__}: {err}; "
            "pass bottleneck=<another node> (fxvae.find_bottleneck lists candidates)"
        ) from err
    remaining = gm.state_dict().keys()
    moved = {old: new for old, new in key_map.items() if old not in remaining}
    return Inserted(mu_name, ls_name, rp_name, moved)


def free_name(gm: nn.Module, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


# --- pass: the mu head takes over the layer ---------------------------------------------------------


def take_over_layer(gm: fx.GraphModule, layer: fx.Node, name: str) -> dict[str, str]:
    """Register the layer's module (or, for a functional call, its stored tensors) under ``name`` and
    point every read of them there. Returns old -> new state-dict keys."""
    if layer.op == "call_module":
        old = str(layer.target)
        module = gm.get_submodule(old)
        gm.add_submodule(name, module)
        for node in gm.graph.nodes:
            if node.op == "call_module" and node.target == old:
                node.target = name
            elif node.op == "get_attr" and node.target.startswith(old + "."):
                node.target = name + node.target[len(old) :]
        return {f"{old}.{key}": f"{name}.{key}" for key in module.state_dict()}

    weight = functional_arg(layer, WEIGHT_ARG, "weight")
    bias = functional_arg(layer, BIAS_ARG, "bias")
    sources = stored_sources(weight) or []
    if isinstance(bias, fx.Node):
        sources += stored_sources(bias) or []
    owner = module_path(layer)
    holder = FunctionalHead()
    gm.add_submodule(name, holder)
    keys = gm.state_dict().keys()
    key_map = {}
    for target in dict.fromkeys(str(s.target) for s in sources):
        if owner and target.startswith(owner + "."):
            relative = target[len(owner) + 1 :]
        elif isinstance(weight, fx.Node) and target == weight.target:
            relative = "weight"
        elif isinstance(bias, fx.Node) and target == bias.target:
            relative = "bias"
        else:
            relative = target.replace(".", "_")
        place(holder, relative, resolve(gm, target), buffer=is_buffer(gm, target))
        for node in gm.graph.find_nodes(op="get_attr", target=target):
            node.target = f"{name}.{relative}"
        if target in keys:
            key_map[target] = f"{name}.{relative}"
    return key_map


def remove_orphans(gm: fx.GraphModule) -> None:
    """Drop what nothing reads any more, such as the AE layer's old path (DDP needs every parameter used).

    Buffers stay (a batch norm's ``num_batches_tracked`` is state even where the graph does not read
    it), unless they moved. Only containers the GraphModule made are edited: modules the graph calls
    are never changed, so a VAE made with ``copy=False`` leaves the user's modules as they were.
    """
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    called = {id(m) for node in gm.graph.find_nodes(op="call_module") for m in gm.get_submodule(node.target).modules()}
    read = {str(node.target) for node in gm.graph.find_nodes(op="get_attr")}
    moved = {id(resolve(gm, target)) for target in read}
    named = [*gm.named_parameters(remove_duplicate=False)]
    named += [(p, b) for p, b in gm.named_buffers(remove_duplicate=False) if id(b) in moved]
    for path, _ in named:
        owner = resolve(gm, path.rpartition(".")[0])
        if path not in read and id(owner) not in called:
            remove(gm, path)


# --- pass: the log-sigma head and its branch -----------------------------------------------------------


def log_sigma_head(
    gm: fx.GraphModule, plan: Plan, log_sigma_init: float, device: torch.device
) -> tuple[nn.Module, tuple[Any, ...]]:
    """A new layer with weight 0 and bias ``log_sigma_init``, and the graph values it reads."""
    if plan.layer is not None:
        kind = stored_layer_kind(gm, plan.layer)
        head = _same_kind_layer(gm, plan.layer, kind)
        args = plan.layer.args[:1] if plan.layer.op == "call_function" else plan.layer.args
    else:
        meta = plan.latent.meta["tensor_meta"]
        head = pointwise_layer(tuple(meta.shape), plan.feature_dim, meta.dtype, device)
        args = (plan.latent,)
    return zero_head(head, log_sigma_init), args


def _same_kind_layer(gm: fx.GraphModule, layer: fx.Node, kind: LayerKind | None) -> nn.Module:
    """A plain torch layer with the hyperparameters of ``layer``, a module call or a functional one.

    Subclasses and parametrizations (weight norm) are not copied: the head is a plain layer whose
    output has the layer's shape.
    """
    if kind is None:
        raise RewriteError(f"{layer.format_node()} is not a layer fxvae can copy")
    if layer.op == "call_module":
        module = gm.get_submodule(layer.target)
        weight = module.weight
        factory = {"device": weight.device, "dtype": weight.dtype}
        if kind.name == "linear":
            return nn.Linear(module.in_features, module.out_features, **factory)
        options = {k: getattr(module, k) for k in ("stride", "padding", "dilation", "groups", "padding_mode")}
        if kind.transposed:
            options["output_padding"] = module.output_padding
        cls = _conv_class(kind, weight.dim())
        return cls(module.in_channels, module.out_channels, module.kernel_size, **options, **factory)
    weight_node = functional_arg(layer, WEIGHT_ARG, "weight")
    shape = tensor_shape(weight_node)
    meta = weight_node.meta["tensor_meta"]
    source = resolve(gm, str(stored_sources(weight_node)[0].target))
    factory = {"device": source.device, "dtype": meta.dtype}
    if kind.name == "linear":
        return nn.Linear(shape[1], shape[0], **factory)
    names = CONV_TRANSPOSE_ARG_NAMES if kind.transposed else CONV_ARG_NAMES
    options = {
        name: value
        for i, name in enumerate(names)
        if (value := functional_arg(layer, BIAS_ARG + 1 + i, name)) is not None
    }
    groups = options.get("groups", 1)
    if kind.transposed:
        in_channels, out_channels = shape[0], shape[1] * groups
    else:
        in_channels, out_channels = shape[1] * groups, shape[0]
    cls = _conv_class(kind, len(shape))
    return cls(in_channels, out_channels, tuple(shape[2:]), **options, **factory)


def _conv_class(kind: LayerKind, weight_dim: int) -> type[nn.Module]:
    return kind.modules[weight_dim - 3]


def pointwise_layer(shape: tuple[int, ...], feature_dim: int, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """For a latent of ``shape`` (batch first): a Linear over the last dimension, or a 1x1 ConvNd over
    dimension 1 (``feature_dim``), so that its output has the latent's shape."""
    factory = {"device": device, "dtype": dtype}
    spatial = len(shape) - 2
    if feature_dim == 1 and 1 <= spatial <= 3:
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial - 1]
        return cls(shape[1], shape[1], 1, **factory)
    return nn.Linear(shape[-1], shape[-1], **factory)


def zero_head(head: nn.Module, log_sigma_init: float) -> nn.Module:
    """Weight 0 and bias ``log_sigma_init``: log sigma starts constant, whatever the input."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(log_sigma_init)
    return head


def log_sigma_branch(
    gm: fx.GraphModule, plan: Plan, head_name: str, head_args: tuple[Any, ...]
) -> tuple[fx.GraphModule, list[fx.Node]]:
    """The graph that computes log sigma: the head, then the chain's shape moves, so that log sigma has
    exactly mu's shape. Returns it with the main graph's nodes it reads, in its argument order."""
    graph = fx.Graph()
    features: dict[fx.Node, fx.Node] = {}

    def feature(node: fx.Node) -> fx.Node:
        if node not in features:
            features[node] = graph.placeholder(node.name)
        return features[node]

    current = graph.call_module(head_name, fx.map_arg(head_args, feature))
    for previous, node in itertools.pairwise(plan.chain):
        if (gm, node) in SHAPE_MOVES:
            current = graph.node_copy(node, lambda n, p=previous, c=current: c if n is p else feature(n))
    graph.output(current)
    graph.set_codegen(DirectLookups())
    return fx.GraphModule(gm, graph, "LogSigmaBranch"), list(features)


def insert_at_latent(
    gm: fx.GraphModule, latent: fx.Node, features: list[fx.Node], module: nn.Module, name: str
) -> fx.Node:
    """z = module(latent, *features) right after the latent (the reparameterisation, or a quantiser); every
    other reader of the latent reads z."""
    gm.add_submodule(name, module)
    with gm.graph.inserting_after(latent):
        z = gm.graph.call_module(name, (latent, *features))
    latent.replace_all_uses_with(z, delete_user_cb=lambda user: user is not z)
    return z
