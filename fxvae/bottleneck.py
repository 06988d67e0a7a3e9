"""Find an autoencoder's bottleneck: the narrowest node on every path from the data to the reconstruction."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
from torch import nn

from fxvae.errors import BottleneckError
from fxvae.graph import (
    SUPPORTED_LAYERS,
    WEIGHT_ARG,
    attr_owner_path,
    crossing_edges,
    data_inputs,
    data_path,
    functional_arg,
    is_dropout,
    is_float_tensor,
    layer_kind,
    module_path,
    per_sample_shape,
    reconstruction,
    tensor_shape,
    width,
)
from fxvae.tracing import TracerName, as_args, trace

_SHOWN_CANDIDATES = 8


@dataclass(frozen=True)
class Candidate:
    """A node that could have been the bottleneck, and why it was or was not chosen.

    >>> [(c.node, c.width, c.reason) for c in fxvae.find_bottleneck(model, x).candidates]
    """

    node: str
    shape: tuple[int, ...]
    width: int
    separates: bool
    reason: str


@dataclass(frozen=True)
class Bottleneck:
    """Where an autoencoder compresses, as found by :func:`find_bottleneck`.

    >>> b = fxvae.find_bottleneck(model, torch.randn(8, 784))
    >>> b.node, b.layer, b.shape, b.width
    ('sigmoid', 'enc.2', (32,), 32)
    """

    node: str
    """fx node name of the latent z (the bottleneck's output)."""
    layer: str | None
    """Module path of the layer that seeds the mu head (for a functional layer: its weight's owner)."""
    shape: tuple[int, ...]
    """Per-sample shape of the latent (batch dimension dropped)."""
    width: int
    """Per-sample element count of the latent."""
    candidates: tuple[Candidate, ...]
    """The narrowest nodes considered, ranked by width, each with the reason it won or lost."""
    tracer: TracerName
    """"fx" (torch.fx.symbolic_trace) or "export" (torch.export fallback)."""
    input_width: int
    """Per-sample element count of the data input."""
    layer_node: str | None
    """fx node name of the seeding layer."""
    chain: tuple[str, ...]
    """fx node names from the seeding layer to the latent (activations, reshapes, pooling)."""

    def __str__(self) -> str:
        lines = [
            f"bottleneck {self.node!r} {list(self.shape)} (width {self.width} of input {self.input_width}),"
            f" mu head seeded by {self.layer!r}, traced with {self.tracer}"
        ]
        lines += [f"  {c.node:<24} {c.width:>8}  {c.reason}" for c in self.candidates]
        return "\n".join(lines)


def find_bottleneck(model: nn.Module, example_inputs: Any, *, bottleneck: str | None = None) -> Bottleneck:
    """Locate the bottleneck of ``model`` without rewriting anything.

    ``example_inputs`` is a tensor or a tuple of positional arguments; its first argument is the data
    and dim 0 is the batch. ``bottleneck`` forces a choice by fx node name or module path.

    >>> b = fxvae.find_bottleneck(model, torch.randn(8, 1, 28, 28))
    >>> print(b)  # the choice and the ranked candidates with reasons
    """
    args = as_args(example_inputs)
    traced = trace(model, args)
    return locate(traced.graph_module, args, traced.tracer, bottleneck)


@dataclass(frozen=True)
class ProfileNode:
    """One node on the data path from the input to the reconstruction."""

    name: str
    op: str
    target: str
    shape: tuple[int, ...] | None
    """Per-sample shape (batch dimension dropped); None where the node is not a batched tensor."""
    width: int | None
    separator: bool
    """Every path from the input to the reconstruction passes this node (it dominates the output)."""
    bypass: str | None
    """An edge ``a -> b`` that carries data around the node, where it is no separator."""


@dataclass(frozen=True)
class WidthProfile:
    """The hourglass of an autoencoder: per-sample width of every node along its data path."""

    tracer: TracerName
    node_count: int
    input_width: int
    nodes: tuple[ProfileNode, ...]
    bottleneck: Bottleneck


def width_profile(model: nn.Module, example_inputs: Any, *, bottleneck: str | None = None) -> WidthProfile:
    """Trace ``model`` once, find its bottleneck, and list the width of each node on the data path.

    >>> p = width_profile(ae, torch.randn(1, 3, 64, 64))
    >>> [(n.name, n.width, n.separator) for n in p.nodes]
    """
    args = as_args(example_inputs)
    traced = trace(model, args)
    gm = traced.graph_module
    found = locate(gm, args, traced.tracer, bottleneck)
    source = next(n for n in gm.graph.nodes if n.op == "placeholder")
    batch = tensor_shape(source)[0]
    path = data_path(gm.graph, source, reconstruction(gm.graph, source))
    crossing = crossing_edges(path)
    nodes = []
    for node in path:
        shape = per_sample_shape(node, batch)
        edge = crossing.get(node)
        nodes.append(
            ProfileNode(
                name=node.name,
                op=node.op,
                target=_describe_target(gm, node),
                shape=shape,
                width=width(shape) if shape is not None else None,
                separator=edge is None,
                bypass=f"{edge[0].name} -> {edge[1].name}" if edge is not None else None,
            )
        )
    return WidthProfile(traced.tracer, len(gm.graph.nodes), found.input_width, tuple(nodes), found)


def _describe_target(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} {node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def locate(gm: fx.GraphModule, args: tuple[Any, ...], tracer: TracerName, forced: str | None) -> Bottleneck:
    """The bottleneck of a shape-propagated graph (see :func:`find_bottleneck`)."""
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if not placeholders or tensor_shape(placeholders[0]) is None:
        raise BottleneckError(f"the first input of {type(gm).__name__} is not a tensor; pass the data first")
    source = placeholders[0]
    batch = tensor_shape(source)[0]
    input_width = width(per_sample_shape(source, batch) or ())
    recon = reconstruction(graph, source)
    path = data_path(graph, source, recon)
    crossing = crossing_edges(path)
    index = {n: i for i, n in enumerate(path)}
    shapes = {n: per_sample_shape(n, batch) for n in crossing}
    pool = [n for n in crossing if is_float_tensor(n) and shapes[n] is not None]
    if not pool:
        raise BottleneckError(
            f"no floating-point tensor lies between input {source.name!r} and output {recon.name!r}; "
            "check that the first example input is the data the model reconstructs"
        )

    if forced is not None:
        chosen = _resolve(graph, forced, pool, tracer, shapes)
        edge = crossing[chosen]
        if edge is not None:
            warnings.warn(
                f"bottleneck {forced!r} ({chosen.name}) is bypassed by {edge[0].name} -> {edge[1].name}: "
                "information reaches the output around the latent",
                stacklevel=3,
            )
    else:
        chosen = _choose(gm, pool, crossing, shapes, index, input_width, source, recon)

    chain = _seed_chain(gm, chosen, set(path))
    layer_node = chain[0] if chain else None
    return Bottleneck(
        node=chosen.name,
        layer=_layer_path(layer_node, tracer) if layer_node is not None else None,
        shape=shapes[chosen],
        width=width(shapes[chosen]),
        candidates=_rank(pool, crossing, shapes, index, chosen, input_width),
        tracer=tracer,
        input_width=input_width,
        layer_node=layer_node.name if layer_node is not None else None,
        chain=tuple(n.name for n in chain) if chain else (chosen.name,),
    )


def _choose(
    gm: fx.GraphModule,
    pool: list[fx.Node],
    crossing: dict[fx.Node, Any],
    shapes: dict[fx.Node, Any],
    index: dict[fx.Node, int],
    input_width: int,
    source: fx.Node,
    recon: fx.Node,
) -> fx.Node:
    separators = [n for n in pool if crossing[n] is None and width(shapes[n]) < input_width]
    if not separators:
        narrowest = min(pool, key=lambda n: (width(shapes[n]), index[n]))
        edge = crossing[narrowest]
        how = (
            f"{edge[0].name!r} -> {edge[1].name!r} bypasses it"
            if edge
            else "it is no narrower than the input"
        )
        raise BottleneckError(
            f"no node narrower than the input ({input_width}) lies on every path from {source.name!r} to "
            f"{recon.name!r}: the narrowest, {narrowest.name!r} {list(shapes[narrowest])}, is not a "
            f"bottleneck because {how} (a skip connection, as in a U-Net, carries the data around it). "
            f"Pass bottleneck='<node or module>' to force one; candidates: {_names(pool, shapes, index)}"
        )
    chosen = min(separators, key=lambda n: (width(shapes[n]), index[n]))
    seen_layer = layer_kind(gm, chosen) is not None
    # z = f(y): move past the seeding layer (if the run starts before it) and its elementwise tail.
    for node in separators[separators.index(chosen) + 1 :]:
        is_layer = layer_kind(gm, node) is not None
        if data_inputs(node) != [chosen] or width(shapes[node]) != width(shapes[chosen]):
            break
        if is_layer and seen_layer:
            break
        if not is_layer and (shapes[node] != shapes[chosen] or is_dropout(gm, node)):
            break
        chosen, seen_layer = node, seen_layer or is_layer
    return chosen


def _seed_chain(gm: fx.GraphModule, latent: fx.Node, on_path: set[fx.Node]) -> list[fx.Node] | None:
    """Nodes from the nearest parametrized layer feeding ``latent`` up to it, each with one data input."""
    chain = [latent]
    node = latent
    while layer_kind(gm, node) is None:
        inputs = [n for n in data_inputs(node) if n in on_path]
        if len(inputs) != 1 or inputs[0].op == "placeholder":
            return None
        node = inputs[0]
        chain.append(node)
    return chain[::-1]


def _layer_path(node: fx.Node, tracer: TracerName) -> str:
    if node.op == "call_module":
        return str(node.target)
    return attr_owner_path(functional_arg(node, WEIGHT_ARG, "weight").target)


def _resolve(
    graph: fx.Graph, name: str, pool: list[fx.Node], tracer: TracerName, shapes: dict[fx.Node, Any]
) -> fx.Node:
    """The node a user means by ``bottleneck=``: an fx node name, or the output of a module path."""
    by_name = {n.name: n for n in pool}
    if name in by_name:
        return by_name[name]
    strip = "model." if tracer == "export" else ""
    inside = [
        n
        for n in pool
        if (path := module_path(n, strip)) is not None and (path == name or path.startswith(name + "."))
    ]
    if inside:
        return inside[-1]
    known = {n.name for n in graph.nodes}
    why = "is not a floating-point tensor between input and output" if name in known else "names no node"
    raise BottleneckError(
        f"bottleneck={name!r} {why} or module on the data path; candidates (node names): "
        f"{_names(pool, shapes, {n: i for i, n in enumerate(pool)})}. "
        "fxvae.find_bottleneck(model, example_inputs) lists them with widths"
    )


def _rank(
    pool: list[fx.Node],
    crossing: dict[fx.Node, Any],
    shapes: dict[fx.Node, Any],
    index: dict[fx.Node, int],
    chosen: fx.Node,
    input_width: int,
) -> tuple[Candidate, ...]:
    narrow = [n for n in pool if width(shapes[n]) < input_width or n is chosen]
    ranked = sorted(narrow, key=lambda n: (n is not chosen, width(shapes[n]), index[n]))[:_SHOWN_CANDIDATES]
    best = width(shapes[chosen])
    result = []
    for n in ranked:
        w, edge = width(shapes[n]), crossing[n]
        if n is chosen:
            reason = "chosen: narrowest node on every path from input to reconstruction"
        elif edge is not None:
            reason = f"bypassed by {edge[0].name} -> {edge[1].name}"
        elif w > best:
            reason = f"wider than {chosen.name} ({w} > {best})"
        elif index[n] < index[chosen]:
            reason = f"same width; {chosen.name} follows its layer and elementwise activations"
        else:
            reason = f"same width, after {chosen.name} (decoder side)"
        result.append(Candidate(n.name, shapes[n], w, edge is None, reason))
    return tuple(result)


def _names(pool: list[fx.Node], shapes: dict[fx.Node, Any], index: dict[fx.Node, int]) -> str:
    ranked = sorted(pool, key=lambda n: (width(shapes[n]), index[n]))[:_SHOWN_CANDIDATES]
    return ", ".join(f"{n.name} {list(shapes[n])}" for n in ranked)


def describe_missing_layer(b: Bottleneck) -> str:
    return (
        f"no parametrized layer feeds bottleneck {b.node!r} through single-input operations, so there is "
        f"nothing to seed the mu and log-sigma heads from (supported: {SUPPORTED_LAYERS}); pass "
        "bottleneck='<node>' naming the output of such a layer"
    )
