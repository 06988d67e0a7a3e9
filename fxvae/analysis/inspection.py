"""Looking inside a conversion without doing it: the width of every node along the data path.

Used by ``fxvae inspect`` (table and hourglass plot); not needed to convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck
from fxvae.analysis.graph import crossing_edges, data_path, per_sample_shape, reconstruction_node, tensor_shape, width
from fxvae.capture.tiers import capture
from fxvae.capture.tracing import CAPTURE_LOCK, as_args


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

    tracer: str
    node_count: int
    input_width: int
    nodes: tuple[ProfileNode, ...]
    bottleneck: Bottleneck


def width_profile(model: nn.Module, example_inputs: Any, *, bottleneck: str | None = None) -> WidthProfile:
    """Capture ``model`` once, find its bottleneck, and list the width of each node on the data path.

    In the hooks tier (no graph) the nodes are the candidate modules, in the order they finish.

    >>> p = width_profile(ae, x)
    >>> [(n.name, n.width, n.separator) for n in p.nodes][:3]
    [('input_1', 64, True), ('_0', 32, True), ('_1', 32, True)]
    """
    with CAPTURE_LOCK:
        captured, site = capture(model, as_args(example_inputs), bottleneck, copy=True)
    found = site.report
    gm = captured.graph_module
    if gm is None:
        nodes = tuple(
            ProfileNode(
                c.node,
                "call_module",
                c.node,
                c.shape,
                c.width,
                c.separates,
                None if c.separates else c.reason,
            )
            for c in found.candidates
        )
        return WidthProfile(captured.tracer, len(nodes), found.input_width, nodes, found)
    source = gm.graph.find_nodes(op="placeholder")[0]
    batch = tensor_shape(source)[0]
    path = data_path(gm.graph, source, reconstruction_node(gm.graph, source, type(model).__name__))
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
    return WidthProfile(captured.tracer, len(gm.graph.nodes), found.input_width, tuple(nodes), found)


def _describe_target(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} {node.target}"
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)
