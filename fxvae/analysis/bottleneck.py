"""Find an autoencoder's bottleneck in its graph: the narrowest node on every path from data to reconstruction.

Among separating nodes (every input-to-reconstruction path passes them) narrower than the input, the
narrowest wins. An equal-width run (a last conv, a residual block, attention that keep the latent's
width) is settled by the module hierarchy: the latent is the output of the outermost module that
contains the run's start and ends inside it (the encoder's output), plus the elementwise activations
applied to it outside any new module (z = f(y)). Graphs without module structure fall back to "the
first node of the run and its activations".

The search returns a :class:`Plan` holding the graph's own nodes for the rewrite, and a
:class:`Bottleneck`, the public, display-only report.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch.fx as fx

from fxvae.analysis.graph import (
    WEIGHT_ARG,
    crossing_edges,
    data_inputs,
    data_path,
    functional_arg,
    is_float_tensor,
    module_path,
    module_stack,
    per_sample_shape,
    reconstruction_node,
    stored_layer_kind,
    stored_sources,
    tensor_shape,
    width,
)
from fxvae.analysis.operators import ACTIVATIONS, ELEMENTWISE, SHAPE_MOVES, feature_layout
from fxvae.errors import BottleneckError

HeadKind = Literal["layer", "pointwise"]
"""How the log-sigma head is made: ``"layer"``, a zero copy of the bottleneck layer reading the layer's
input; ``"pointwise"``, a zero Linear (features last) or 1x1 convolution (channels first) on the latent."""

SHOWN_CANDIDATES = 8


@dataclass(frozen=True)
class Candidate:
    """A node that could have been the bottleneck, and why it was or was not chosen.

    >>> b = fxvae.find_bottleneck(ae, x)
    >>> [(c.node, c.width, c.reason) for c in b.candidates][0]
    ('_3', 8, "chosen: narrowest node on every path from input to reconstruction, the output of '2'")
    """

    node: str
    shape: tuple[int, ...]
    width: int
    separates: bool
    reason: str
    module: str | None = None
    """Path of the module that produced the node (the innermost; for a module call, that module)."""


@dataclass(frozen=True)
class Bottleneck:
    """Where an autoencoder compresses, as found by :func:`fxvae.find_bottleneck`.

    >>> b = fxvae.find_bottleneck(ae, x)
    >>> b.node, b.layer, b.shape, b.width, b.head_kind
    ('_3', '2', (8,), 8, 'layer')
    """

    node: str
    """fx node name of the latent z (the bottleneck's output); the module path in the hooks tier."""
    layer: str | None
    """Module path of the layer that seeds the mu head (for a functional layer: its weight's owner)."""
    shape: tuple[int, ...]
    """Per-sample shape of the latent (batch dimension dropped)."""
    width: int
    """Per-sample element count of the latent."""
    candidates: tuple[Candidate, ...]
    """The narrowest nodes considered, ranked by width, each with the reason it won or lost."""
    tracer: str
    """"fx" (symbolic_trace), "export" (torch.export), "hooks" (forward hooks, no graph), or a registered tier's."""
    input_width: int
    """Per-sample element count of the data input."""
    layer_node: str | None
    """fx node name of the seeding layer."""
    chain: tuple[str, ...]
    """fx node names from the seeding layer to the latent (activations, reshapes, pooling)."""
    head_kind: HeadKind = "layer"
    """How the log-sigma head is made (see :data:`HeadKind`)."""
    module: str | None = None
    """Path of the module whose output is the latent, or whose output the latent's activations are
    applied to (the encoder, where the model has one)."""
    layer_type: str | None = None
    """The seeding layer, e.g. ``Linear(32 -> 8)``."""
    forced: bool = False
    """Whether ``bottleneck=`` chose it."""
    feature_dim: int = -1
    """The latent dimension holding features (-1: last, linear and attention latents; 1: channels first)."""

    def pointwise(self) -> Bottleneck:
        """The same latent with a pointwise head: mu is the latent itself (``Gaussian(head_kind="pointwise")``)."""
        return dataclasses.replace(
            self, layer=None, layer_node=None, layer_type=None, chain=(self.node,), head_kind="pointwise"
        )

    def __str__(self) -> str:
        where = f" = output of {self.module!r}" if self.module else ""
        if self.head_kind == "layer":
            head = f"mu head: {self.layer} {self.layer_type or ''}".rstrip()
        else:
            head = "mu: the latent itself; log-sigma head: pointwise layer on it"
        lines = [
            f"bottleneck {self.node!r}{where}: shape {list(self.shape)}, width {self.width} of input "
            f"{self.input_width} ({self.input_width / self.width:.1f}x compression)",
            f"{head}; traced with {self.tracer}",
            f"  {'node':<24} {'module':<20} {'width':>8}  why",
        ]
        lines += [f"  {c.node:<24} {c.module or '-':<20} {c.width:>8}  {c.reason}" for c in self.candidates]
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """What the rewrite needs, as nodes of the traced graph; :attr:`report` is what users see."""

    report: Bottleneck
    latent: fx.Node
    layer: fx.Node | None
    """The layer whose weights the mu head takes over (head kind "layer")."""
    chain: tuple[fx.Node, ...]
    """From ``layer`` to ``latent``: elementwise maps and shape moves."""
    feature_dim: int
    """The latent dimension a pointwise log-sigma head mixes (-1 features last, 1 channels first)."""


def locate(gm: fx.GraphModule, tracer: str, forced: str | None, model_name: str | None = None) -> Plan:
    """The bottleneck of a shape-propagated graph (see :func:`fxvae.find_bottleneck`)."""
    name = model_name or type(gm).__name__
    graph = gm.graph
    placeholders = graph.find_nodes(op="placeholder")
    source_shape = tensor_shape(placeholders[0]) if placeholders else None
    if source_shape is None:
        raise BottleneckError(
            f"the first input of {name} is not a tensor; pass the data the model reconstructs first "
            "(other inputs, such as a label, after it)"
        )
    source = placeholders[0]
    if len(source_shape) < 2:
        raise BottleneckError(
            f"the data input {source.name!r} has shape {list(source_shape)}: the example needs a batch "
            f"dimension first, e.g. x.unsqueeze(0) of shape {[1, *source_shape]}"
        )
    batch = source_shape[0]
    input_width = width(source_shape[1:])
    recon = reconstruction_node(graph, source, name)
    path = data_path(graph, source, recon)
    crossing = crossing_edges(path)
    index = {n: i for i, n in enumerate(path)}
    shapes = {n: per_sample_shape(n, batch) for n in crossing}
    pool = [n for n in crossing if is_float_tensor(n) and shapes[n] is not None]
    if not pool:
        raise BottleneckError(
            f"no floating-point tensor with batch size {batch} lies between input {source.name!r} "
            f"{list(source_shape)} and output {recon.name!r}; dim 0 of the example must be the batch "
            "(is the batch dimension missing?) and the first input the data the model reconstructs"
        )
    search = _Search(gm, path, crossing, shapes, index, input_width)
    if forced is not None:
        latent = search.resolve(forced)
        why = "forced"
        edge = crossing[latent]
        if edge is not None:
            why += f"; bypassed by {edge[0].name} -> {edge[1].name}"
            warnings.warn(
                f"bottleneck {forced!r} ({latent.name}) is bypassed by {edge[0].name} -> {edge[1].name}: "
                "information reaches the output around the latent",
                stacklevel=4,
            )
        boundary = None
    else:
        latent, boundary = search.choose(source, recon)
        why = "chosen: narrowest node on every path from input to reconstruction"
        if boundary is not None:
            why += f", the output of {boundary!r}"
    chain = _seed_chain(gm, latent, set(path))
    layer = chain[0] if chain else None
    report = Bottleneck(
        node=latent.name,
        layer=_layer_path(gm, layer) if layer is not None else None,
        shape=shapes[latent],
        width=width(shapes[latent]),
        candidates=search.rank(latent, why, boundary),
        tracer=tracer,
        input_width=input_width,
        layer_node=layer.name if layer is not None else None,
        chain=tuple(n.name for n in chain) if chain else (latent.name,),
        head_kind="layer" if layer is not None else "pointwise",
        module=boundary or _outermost_ending_at(path, latent),
        layer_type=_describe_layer(gm, layer) if layer is not None else None,
        forced=forced is not None,
        feature_dim=_feature_dim(gm, latent, set(path)),
    )
    return Plan(report, latent, layer, tuple(chain or ()), report.feature_dim)


class _Search:
    """The separating nodes of one graph and the rules that pick, rank and resolve among them."""

    def __init__(
        self,
        gm: fx.GraphModule,
        path: list[fx.Node],
        crossing: dict[fx.Node, Any],
        shapes: dict[fx.Node, Any],
        index: dict[fx.Node, int],
        input_width: int,
    ) -> None:
        self.gm, self.path, self.crossing, self.shapes = gm, path, crossing, shapes
        self.index, self.input_width = index, input_width
        self.pool = [n for n in crossing if is_float_tensor(n) and shapes[n] is not None]
        self.on_path = set(path)
        self.end_of: dict[str, fx.Node] = {}
        """Per module call: its last node on the data path."""
        for node in path:
            for key, _ in module_stack(node):
                self.end_of[key] = node

    def width(self, node: fx.Node) -> int:
        return width(self.shapes[node])

    def choose(self, source: fx.Node, recon: fx.Node) -> tuple[fx.Node, str | None]:
        """The latent, and the module whose output it is where the module rule decided."""
        separators = [n for n in self.pool if self.crossing[n] is None and self.width(n) < self.input_width]
        if not separators:
            raise self._no_bottleneck(source, recon)
        narrowest = min(self.width(n) for n in separators)
        start = next(i for i, n in enumerate(separators) if self.width(n) == narrowest)
        run: list[fx.Node] = []
        for node in separators[start:]:
            if self.width(node) != narrowest:
                break
            run.append(node)
        by_module = self._module_boundary(run)
        if by_module is None:
            return self._first_and_tail(run), None
        latent, boundary = by_module
        return self._elementwise_tail(run, latent), boundary

    def _module_boundary(self, run: list[fx.Node]) -> tuple[fx.Node, str] | None:
        """The output of the outermost module that contains the run's start and ends inside the run."""
        members = set(run)
        for key, path in module_stack(run[0]):
            if self.end_of.get(key) in members:
                return self.end_of[key], path
        return None

    def _follows(self, node: fx.Node, previous: fx.Node) -> bool:
        """``node`` reads only ``previous`` on the data path and keeps its shape."""
        inputs = [n for n in data_inputs(node) if n in self.on_path]
        return inputs == [previous] and self.shapes[node] == self.shapes[previous]

    def _is_activation(self, node: fx.Node) -> bool:
        return (self.gm, node) in ACTIVATIONS

    def _elementwise_tail(self, run: list[fx.Node], latent: fx.Node) -> fx.Node:
        """Extend the latent over the activations applied to it, as long as they enter no module that
        goes on past them (the decoder's own first activation stays in the decoder)."""
        inside = {key for key, _ in module_stack(latent)}
        for node in run[run.index(latent) + 1 :]:
            entered = {key for key, _ in module_stack(node)} - inside
            if any(self.end_of.get(key) is not node for key in entered):
                break
            if not (self._follows(node, latent) and self._is_activation(node)):
                break
            latent = node
        return latent

    def _first_and_tail(self, run: list[fx.Node]) -> fx.Node:
        """Without modules around it: the run's first node and the activations applied to it."""
        latent = run[0]
        for node in run[1:]:
            if not (self._follows(node, latent) and self._is_activation(node)):
                break
            latent = node
        return latent

    def _no_bottleneck(self, source: fx.Node, recon: fx.Node) -> BottleneckError:
        narrowest = min(self.pool, key=lambda n: (self.width(n), self.index[n]))
        edge = self.crossing[narrowest]
        how = f"{edge[0].name!r} -> {edge[1].name!r} bypasses it" if edge else "it is no narrower than the input"
        return BottleneckError(
            f"no node narrower than the input ({self.input_width}) lies on every path from {source.name!r} "
            f"to {recon.name!r}: the narrowest, {narrowest.name!r} {list(self.shapes[narrowest])}, is not a "
            f"bottleneck because {how} (a skip connection, as in a U-Net, carries the data around it). "
            f"Force one with bottleneck=<node or module>; candidates: {self.names()}"
        )

    def resolve(self, name: str) -> fx.Node:
        """The node a user means by ``bottleneck=``: an fx node name, or the output of a module path."""
        by_name = {n.name: n for n in self.pool}
        if name in by_name:
            return by_name[name]
        inside = [
            n
            for n in self.pool
            if (path := module_path(n)) is not None and (path == name or path.startswith(name + "."))
        ]
        if inside:
            return inside[-1]
        known = {n.name: n for n in self.gm.graph.nodes}
        if name in known and known[name] in self.on_path:
            why = "is not a floating-point tensor with the batch first"
        elif name in known:
            why = "is not on a path from the data input to the reconstruction (a side branch, an input or a constant)"
        else:
            why = "names no node or module on the data path"
        raise BottleneckError(
            f"bottleneck={name!r} {why}; candidates (node names): {self.names()}. "
            "fxvae.find_bottleneck(model, example_inputs) lists them with widths"
        )

    def rank(self, chosen: fx.Node, why: str, boundary: str | None) -> tuple[Candidate, ...]:
        narrow = [n for n in self.pool if self.width(n) < self.input_width or n is chosen]
        ranked = sorted(narrow, key=lambda n: (n is not chosen, self.width(n), self.index[n]))
        best = self.width(chosen)
        result = []
        for n in ranked[:SHOWN_CANDIDATES]:
            w, edge = self.width(n), self.crossing[n]
            if n is chosen:
                reason = why
            elif edge is not None:
                reason = f"bypassed by {edge[0].name} -> {edge[1].name}"
            elif w > best:
                reason = f"wider than {chosen.name} ({w} > {best})"
            elif self.index[n] < self.index[chosen] and boundary is not None:
                reason = f"same width, inside {boundary!r}: the latent is that module's output"
            elif self.index[n] < self.index[chosen]:
                reason = f"same width; {chosen.name} is the first of the run plus its activations"
            else:
                reason = f"same width, after {chosen.name} (decoder side)"
            result.append(Candidate(n.name, self.shapes[n], w, edge is None, reason, module_path(n)))
        return tuple(result)

    def names(self) -> str:
        ranked = sorted(self.pool, key=lambda n: (self.width(n), self.index[n]))[:SHOWN_CANDIDATES]
        return ", ".join(f"{n.name} {list(self.shapes[n])}" for n in ranked)


def _seed_chain(gm: fx.GraphModule, latent: fx.Node, on_path: set[fx.Node]) -> list[fx.Node] | None:
    """The layer feeding ``latent`` through elementwise maps and shape moves, up to the latent; else None."""
    chain = [latent]
    node = latent
    while stored_layer_kind(gm, node) is None:
        elementwise = (gm, node) in ELEMENTWISE
        if not (elementwise or (gm, node) in SHAPE_MOVES):
            return None
        inputs = [n for n in data_inputs(node) if n in on_path]
        if len(inputs) != 1 or inputs[0].op == "placeholder":
            return None
        if elementwise and tensor_shape(node) != tensor_shape(inputs[0]):
            return None
        node = inputs[0]
        chain.append(node)
    return chain[::-1]


def _feature_dim(gm: fx.GraphModule, latent: fx.Node, on_path: set[fx.Node]) -> int:
    """Features last or channels first: as the nearest operation upstream of the latent that says."""
    if len(tensor_shape(latent) or ()) <= 2:
        return -1
    node: fx.Node | None = latent
    while node is not None:
        layout = feature_layout(gm, node)
        if layout is not None:
            return layout
        node = next((n for n in data_inputs(node) if n in on_path), None)
    return 1


def _outermost_ending_at(path: list[fx.Node], latent: fx.Node) -> str | None:
    """The outermost module whose last node on the data path is ``latent``."""
    last: dict[str, fx.Node] = {}
    for node in path:
        for key, _ in module_stack(node):
            last[key] = node
    for key, module in module_stack(latent):
        if last.get(key) is latent:
            return module
    return str(latent.target) if latent.op == "call_module" else None


def _layer_path(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    owner = module_path(node)
    if owner is not None:
        return owner
    weights = stored_sources(functional_arg(node, WEIGHT_ARG, "weight"))
    target = str(weights[0].target) if weights else node.name
    holder, _, attr = target.rpartition(".")
    return holder if attr == "weight" and holder else target


def _describe_layer(gm: fx.GraphModule, node: fx.Node) -> str:
    """``Linear(32 -> 8)``: the layer's class (or function) and its input and output widths."""
    if node.op == "call_module":
        label = type(gm.get_submodule(node.target)).__name__
    else:
        label = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    kind = stored_layer_kind(gm, node)
    sizes = ""
    inputs = data_inputs(node)
    in_shape = tensor_shape(inputs[0]) if inputs else None
    out_shape = tensor_shape(node)
    if kind is not None and in_shape and out_shape:
        dim = kind.channel_dim
        sizes = f"{in_shape[dim]} -> {out_shape[dim]}"
    return f"{label}({sizes})"
