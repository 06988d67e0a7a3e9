"""The graph half of :func:`fxvae.split`: cut a traced VAE at its reparameterisation (or quantiser).

```
vae:      x --[encoder]--> (mu, log_sigma) --[reparameterize]--> z --[decoder]--> output
encoder:  x --> (mu, log_sigma)
decoder:  z, *conditions --> output (the AE's own structure)
```
The decoder never reads the data input's values. Values that depend on the input only through its
shape (``x.size(0)``, ``x.shape`` feeding a reshape, ``aten.sym_size``, ``torch.zeros(x.size(0), ...)``)
are kept: the batch size comes from z and the other dimensions are the per-sample constants recorded at
conversion. Side outputs computed from the data input's values (an input statistic) cannot be decoded
from z: they are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from fxvae.analysis.graph import carries_values, tensor_shape, value_dependents
from fxvae.analysis.outputs import RECORD_META
from fxvae.errors import RewriteError
from fxvae.latents.gaussian import reparameterize_of
from fxvae.modules import owned_copy, resolve
from fxvae.recipe import Conversion

LATENT_INPUT = "z"


class _Unavailable:
    """A decoder-side value that needs the data input's values; ``source`` names the encoder node."""

    def __init__(self, source: fx.Node) -> None:
        self.source = source


def cut(vae: fx.GraphModule, recipe: Conversion) -> tuple[fx.GraphModule, fx.GraphModule]:
    """The encoder and decoder GraphModules of a traced VAE (see :func:`fxvae.split`).

    >>> encoder, decoder = cut(vae, fxvae.conversion(vae))
    >>> torch.equal(decoder(encoder(x)[0]), vae.eval()(x))
    True
    """
    graph = vae.graph
    matches = graph.find_nodes(op="call_module", target=recipe.latent_module)
    if len(matches) != 1:
        raise RewriteError(
            f"{type(vae).__name__} calls {recipe.latent_module!r} {len(matches)} times, not once; "
            "split a VAE as fxvae.convert returned it"
        )
    reparam = matches[0]
    placeholders = graph.find_nodes(op="placeholder")
    branch = reparameterize_of(vae).log_sigma_fn if recipe.reparameterize is not None else None
    encoder = _encoder(vae, placeholders, reparam, branch)
    decoder = _Decoder(vae, reparam, placeholders).build()
    return encoder, decoder


def _owned(vae: fx.GraphModule, graph: fx.Graph) -> dict[str, Any]:
    """The modules and tensors ``graph`` reads: modules copied (own train flags), tensors shared."""
    attrs: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            attrs[node.target] = owned_copy(vae.get_submodule(node.target), share_tensors=True)
        elif node.op == "get_attr":
            attrs[node.target] = resolve(vae, node.target)
    return attrs


def _finish(vae: fx.GraphModule, graph: fx.Graph, name: str) -> fx.GraphModule:
    graph.lint()
    gm = fx.GraphModule(_owned(vae, graph), graph, name)
    gm.train(vae.training)
    return gm


def _encoder(
    vae: fx.GraphModule, placeholders: list[fx.Node], reparam: fx.Node, branch: fx.GraphModule | None
) -> fx.GraphModule:
    """The nodes mu and the log-sigma head's inputs need, then the log-sigma ``branch`` inlined (without a
    branch, for a discrete latent: the latent alone)."""
    mu, features = reparam.args[0], reparam.args[1:]
    needed: set[fx.Node] = set()
    pending = [n for n in (mu, *features) if isinstance(n, fx.Node)]
    while pending:
        node = pending.pop()
        if node not in needed:
            needed.add(node)
            pending.extend(node.all_input_nodes)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in vae.graph.nodes:
        if node in needed or node in placeholders:
            env[node] = graph.node_copy(node, env.__getitem__)
    if branch is None:
        graph.output(env[mu])
    else:
        inputs = dict(zip(branch.graph.find_nodes(op="placeholder"), (env[f] for f in features), strict=True))
        graph.output((env[mu], graph.graph_copy(branch.graph, inputs)))
    return _finish(vae, graph, f"{type(vae).__name__}Encoder")


def _batch_shape(z: torch.Tensor, per_sample: tuple[int, ...]) -> torch.Size:
    """The shape a data-side tensor had, with the batch size read from the latent."""
    return torch.Size((z.shape[0], *per_sample))


_SIZE_METHODS = {"size"}
_SHAPE_ATTRS = {"shape"}


class _Decoder:
    """Builds the decoder graph by copying what the output needs, with z in place of the latent."""

    def __init__(self, vae: fx.GraphModule, reparam: fx.Node, placeholders: list[fx.Node]) -> None:
        self.vae, self.reparam = vae, reparam
        self.data, self.conditions = placeholders[0], placeholders[1:]
        self.data_side = value_dependents(vae.graph, self.data, stop=reparam)
        self.latent_side = _descendants([reparam])
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.used: list[fx.Node] = []

    def build(self) -> fx.GraphModule:
        output = self.vae.graph.output_node()
        self._collect_conditions(output)
        self.z = self.graph.placeholder(LATENT_INPUT, type_expr=torch.Tensor)
        for node in self.conditions:
            if node in self.used:
                self.env[node] = self.graph.placeholder(str(node.target), type_expr=node.type)
        self.env[self.reparam] = self.z
        self.env[self.reparam.args[0]] = self.z
        result = fx.map_arg(output.args[0], self._value_or_none)
        self.graph.output(result, type_expr=output.type)
        return _finish(self.vae, self.graph, f"{type(self.vae).__name__}Decoder")

    def _collect_conditions(self, output: fx.Node) -> None:
        seen: set[fx.Node] = {self.reparam}
        pending = list(output.all_input_nodes)
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in self.conditions:
                self.used.append(node)
            pending.extend(node.all_input_nodes)
        self.used.sort(key=self.conditions.index)

    def _value_or_none(self, node: fx.Node) -> Any:
        value = self._copy(node)
        return None if isinstance(value, _Unavailable) else value

    def _copy(self, node: fx.Node) -> Any:
        if node in self.env:
            return self.env[node]
        for arg in node.all_input_nodes:
            self._copy(arg)
        value = self._translate(node)
        self.env[node] = value
        return value

    def _translate(self, node: fx.Node) -> Any:
        if node is self.data or (node in self.data_side and node not in self.latent_side):
            shape_read = self._shape_read(node)
            if shape_read is not None:
                return shape_read
            if carries_values(node) or node.op == "placeholder":
                return _Unavailable(node)
        missing = [a for a in node.all_input_nodes if isinstance(self.env[a], _Unavailable)]
        if missing and node.meta.get(RECORD_META):
            return self.graph.node_copy(node, self._value_or_none)
        if missing:
            if node in self.latent_side:
                source = missing[0].name
                raise RewriteError(
                    f"the decoder node {node.format_node()} reads {self.env[missing[0]].source.name!r} "
                    f"(via {source!r}), which is computed from the data input {self.data.name!r}, not "
                    "from the latent: this VAE has no decoder that takes z alone; pass bottleneck=... "
                    "to fxvae.convert so that the data input reaches the output only through the latent"
                )
            return _Unavailable(self.env[missing[0]].source)
        return self.graph.node_copy(node, self.env.__getitem__)

    def _shape_read(self, node: fx.Node) -> Any:
        """A decoder-side replacement for a read of a data-side tensor's shape, or None."""
        target, args = node.target, node.args
        source = args[0] if args and isinstance(args[0], fx.Node) else None
        if source is None or tensor_shape(source) is None:
            return None
        shape = tensor_shape(source)
        dim = _dim_arg(node)
        if node.op == "call_function" and target is getattr and args[1] in _SHAPE_ATTRS:
            dim = None
        elif node.op == "call_method" and target in _SIZE_METHODS:
            pass
        elif node.op == "call_function" and target is torch.ops.aten.sym_size.int:
            return self._dim_size(shape, dim, lambda: self.graph.call_function(target, (self.z, 0)))
        elif (node.op == "call_method" and target == "dim") or (
            node.op == "call_function" and target is getattr and args[1] == "ndim"
        ):
            return len(shape)
        else:
            return None
        if dim is None:
            return self.graph.call_function(_batch_shape, (self.z, tuple(shape[1:])))
        return self._dim_size(shape, dim, lambda: self.graph.call_method("size", (self.z, 0)))

    def _dim_size(self, shape: tuple[int, ...], dim: int, batch: Callable[[], fx.Node]) -> Any:
        dim = dim % len(shape)
        return batch() if dim == 0 else shape[dim]


def _dim_arg(node: fx.Node) -> int | None:
    if len(node.args) > 1 and isinstance(node.args[1], int):
        return node.args[1]
    dim = node.kwargs.get("dim")
    return dim if isinstance(dim, int) else None


def _descendants(roots: list[fx.Node]) -> set[fx.Node]:
    """Nodes reachable from ``roots`` along any edge (roots included)."""
    seen: set[fx.Node] = set()
    pending = list(roots)
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        pending.extend(node.users)
    return seen
