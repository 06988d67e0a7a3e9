"""Read-only analyses of a shape-propagated fx graph: widths, data paths, separators, module boundaries.

Nothing here changes a graph. Shapes come from ``node.meta["tensor_meta"]`` as written by
:func:`fxvae.capture.tracing.propagate_shapes`.
"""

from __future__ import annotations

import math

import torch.fx as fx

from fxvae.analysis.operators import WEIGHT_ARG, LayerKind, layer_kind_by_target
from fxvae.analysis.outputs import graph_leaves, reconstruction_index
from fxvae.errors import BottleneckError

Edge = tuple[fx.Node, fx.Node]


def tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    """Full shape of a node whose value is one tensor, else None."""
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return tuple(shape) if shape is not None else None


def is_float_tensor(node: fx.Node) -> bool:
    dtype = getattr(node.meta.get("tensor_meta"), "dtype", None)
    return dtype is not None and dtype.is_floating_point


def carries_values(node: fx.Node) -> bool:
    """Whether the node's value holds tensors (a tensor or a container of them).

    Python numbers and sizes (``x.size(0)``, ``aten.sym_size``) move no per-sample values: a tensor made
    from them (``torch.zeros(x.size(0), 16)``, an LSTM's initial state) depends on the input only
    through its shape.
    """
    return "tensor_meta" in node.meta


def per_sample_shape(node: fx.Node, batch: int) -> tuple[int, ...] | None:
    """Shape without the batch dimension, or None where dim 0 is not the batch."""
    shape = tensor_shape(node)
    if shape is None or len(shape) == 0 or shape[0] != batch:
        return None
    return shape[1:]


def width(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def data_inputs(node: fx.Node) -> list[fx.Node]:
    """The node's inputs that carry tensor values, in argument order, without repeats."""
    return list(dict.fromkeys(n for n in node.all_input_nodes if carries_values(n)))


def value_dependents(graph: fx.Graph, source: fx.Node, stop: fx.Node | None = None) -> set[fx.Node]:
    """Nodes whose value depends on ``source``'s values (not just its shape), ``source`` included.

    The one rule for "carries data from the input", shared by the bottleneck search and split. The
    sweep does not go through ``stop``.
    """
    reached = {source}
    for node in graph.nodes:
        if node is not source and node is not stop and any(n in reached for n in data_inputs(node)):
            reached.add(node)
    return reached


def data_path(graph: fx.Graph, source: fx.Node, sink: fx.Node) -> list[fx.Node]:
    """Nodes on some value-carrying path from ``source`` to ``sink``, in topological order."""
    forward = value_dependents(graph, source)
    if sink not in forward:
        return []
    backward = {sink}
    for node in reversed(graph.nodes):
        if node in backward:
            backward.update(n for n in data_inputs(node) if n in forward)
    return [n for n in graph.nodes if n in forward and n in backward]


def crossing_edges(path: list[fx.Node]) -> dict[fx.Node, Edge | None]:
    """For each inner node of a path: None if every source-to-sink path passes it, else an edge around it.

    Nodes are numbered in topological order; v lies on every path iff no path edge (a -> b) has
    index(a) < index(v) < index(b). One sweep with a running maximum of the farthest user index.
    """
    index = {node: i for i, node in enumerate(path)}
    result: dict[fx.Node, Edge | None] = {}
    reach, reach_edge = -1, None
    for i, node in enumerate(path):
        if 0 < i < len(path) - 1:
            result[node] = reach_edge if reach > i else None
        for user in node.users:
            j = index.get(user, -1)
            if j > reach:
                reach, reach_edge = j, (node, user)
    return result


def reconstruction_node(graph: fx.Graph, source: fx.Node, model_name: str) -> fx.Node:
    """The graph's output leaf with the data input's shape, else its widest floating-point leaf: a node
    (:func:`fxvae.analysis.outputs.reconstruction` picks the same leaf from a model's output value)."""
    leaves = [n for n in graph_leaves(graph) if n is not source]
    shapes = [tensor_shape(n) if is_float_tensor(n) else None for n in leaves]
    if not any(s is not None for s in shapes):
        raise BottleneckError(
            f"{model_name} returns no floating-point tensor to treat as the reconstruction (it returns "
            f"{_returned(graph, source)}); convert a model whose forward returns its reconstruction"
        )
    return leaves[reconstruction_index(shapes, tensor_shape(source) or ())]


def _returned(graph: fx.Graph, source: fx.Node) -> str:
    """What a graph returns, in words, for a message."""
    leaves = graph_leaves(graph)
    if not leaves:
        value = graph.output_node().args[0]
        return "None" if value is None else f"a {type(value).__name__}"
    if leaves == [source]:
        return "its input unchanged"
    kinds = [str(getattr(n.meta.get("tensor_meta"), "dtype", "a non-tensor value")) for n in leaves if n is not source]
    return "only " + ", ".join(dict.fromkeys(kinds))


def module_stack(node: fx.Node) -> list[tuple[str, str]]:
    """``(call key, module path)`` of the modules whose forward created the node, outermost first.

    The key tells calls of one module apart where the tracer records them (torch.export); the root
    module is left out.
    """
    stack = node.meta.get("nn_module_stack") or {}
    return [(str(key), value[0]) for key, value in stack.items() if value[0]]


def module_path(node: fx.Node) -> str | None:
    """Path of the module that produced the node: the called module, or the innermost on the stack."""
    if node.op == "call_module":
        return str(node.target)
    stack = module_stack(node)
    return stack[-1][1] if stack else None


def stored_sources(node: fx.Node) -> list[fx.Node] | None:
    """The ``get_attr`` nodes a value is computed from, when it depends on nothing else, else None.

    A layer's weight is usually a stored parameter; weight norm and spectral norm compute it from
    parameters (``aten._weight_norm(v, g)`` under torch.export), which is still a layer.
    """
    sources: list[fx.Node] = []
    pending, seen = [node], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "get_attr":
            sources.append(current)
        elif current.op in ("placeholder", "call_module"):
            return None
        else:
            pending.extend(current.all_input_nodes)
    return sources


def functional_arg(node: fx.Node, index: int, name: str) -> object:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name)


def stored_layer_kind(gm: fx.GraphModule, node: fx.Node) -> LayerKind | None:
    """The kind of parametrized layer ``node`` calls whose weight is stored in ``gm``, or None.

    Unlike :func:`fxvae.analysis.operators.layer_kind_by_target`, which reads the call target alone, a
    functional call counts only when its weight is computed from stored tensors alone, so that the mu head
    can take those tensors over.

    >>> class GivenWeight(nn.Module):
    ...     def forward(self, x, w):
    ...         return F.linear(x, w)
    >>> gm = fx.symbolic_trace(GivenWeight())
    >>> call = next(n for n in gm.graph.nodes if n.op == "call_function")
    >>> stored_layer_kind(gm, call), layer_kind_by_target(gm, call).name
    (None, 'linear')
    """
    kind = layer_kind_by_target(gm, node)
    if kind is None or node.op == "call_module":
        return kind
    weight = functional_arg(node, WEIGHT_ARG, "weight")
    return kind if isinstance(weight, fx.Node) and stored_sources(weight) else None
