"""Cut a converted VAE at its reparameterisation into an encoder and a decoder, and sample from it.

```
vae:      x --[encoder]--> (mu, log_sigma) --[reparameterize]--> z --[decoder]--> output
encoder:  x --> (mu, log_sigma)
decoder:  z, *conditions --> output (the AE's own structure)
```
The decoder never reads the data input's values. Values that depend on the input only through its
shape (``x.size(0)``, ``x.shape`` feeding a reshape, ``aten.sym_size``, ``torch.zeros(x.size(0), ...)``)
are kept: the batch size comes from z and the other dimensions are the per-sample constants recorded at
conversion. Side outputs computed from the data input's values (an input statistic) cannot be decoded
from z: they are ``None``. A discrete model is cut at its quantiser the same way: the encoder returns the
latent before quantisation, the decoder reads a quantised one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.graph import carries_values, tensor_shape, value_dependents
from fxvae.analysis.outputs import RECORD_META
from fxvae.capture import hooks_tier as hooks
from fxvae.errors import InputError, RewriteError
from fxvae.latents.gaussian import reparameterize_of
from fxvae.modules import eval_mode, first_tensor, input_names, owned_copy, resolve
from fxvae.recipe import META_KEY, Conversion, conversion, unwrap

if TYPE_CHECKING:
    from fxvae.measure.density import Density

LATENT_INPUT = "z"


class _Unavailable:
    """A decoder-side value that needs the data input's values; ``source`` names the encoder node."""

    def __init__(self, source: fx.Node) -> None:
        self.source = source


def split(vae: fx.GraphModule) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Cut a VAE made by :func:`fxvae.convert` into ``encoder`` and ``decoder`` at the latent.

    ``encoder(*inputs) -> (mu, log_sigma)`` takes the VAE's inputs; ``decoder(z, *conditions)``
    returns the VAE's output structure, where ``conditions`` are the VAE's other inputs that the
    decoder reads (a conditional AE's label, under its own name). ``decoder(mu)`` equals the VAE's
    eval-mode output. Outputs that are the latent return z; outputs computed from the data input's
    values (not from z) are ``None``. Both modules share the VAE's parameters and buffers (no copy:
    training either trains the VAE) and have their own train/eval flags, starting in the VAE's mode.
    For the graph tiers both are GraphModules; for the hooks tier they run the VAE's model (the decoder
    on a zero input, with the latent replaced by z).

    A discrete model (``latent="vq"`` or ``"fsq"``) is cut at its quantiser: ``encoder(*inputs)`` returns
    the continuous latent before quantisation and ``decoder(z_q, *conditions)`` reads a quantised one, so
    that ``decoder(quantizer(encoder(x)))`` is the eval-mode output (:func:`fxvae.split_tokens` cuts it at
    the integer codes).

    >>> encoder, decoder = fxvae.split(vae)
    >>> mu, log_sigma = encoder(x)
    >>> torch.equal(decoder(mu), vae.eval()(x))
    True
    """
    recipe = conversion(vae)
    if recipe.tracer == "hooks":
        module = recipe.bottleneck.node
        return hooks.HookedEncoder(vae, module), hooks.HookedDecoder(vae, module, recipe.input_shape)
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


def sample(
    vae: torch.nn.Module,
    n: int,
    *conditions: Any,
    generator: torch.Generator | None = None,
    density: Density | None = None,
) -> Any:
    """Decode ``n`` draws z ~ N(0, I) of the latent shape, in eval mode and without gradients.

    ``conditions`` are the decoder's extra inputs (a conditional AE's label), batch size ``n``. The
    draws are made on the VAE's device and in its dtype; ``generator`` makes them reproducible.
    The VAE's train/eval mode is left as it was.

    ``density`` (a :class:`fxvae.Density` from :func:`fxvae.fit_density`) draws z from it instead of
    N(0, I); the model may then also be the autoencoder itself, whose decoder is read at the bottleneck
    fxvae finds (:func:`fxvae.measure.density.coder`). An autoencoder has no prior of its own: without a density
    it is refused.

    >>> images = fxvae.sample(vae, 4, generator=torch.Generator().manual_seed(0))
    >>> images.shape
    torch.Size([4, 64])
    >>> density = fxvae.fit_density(ae, torch.randn(256, 64))
    >>> fxvae.sample(ae, 4, density=density).shape
    torch.Size([4, 64])
    """
    if density is not None:
        return _sample_density(vae, n, conditions, generator, density)
    if _is_autoencoder(vae):
        raise InputError(
            f"{type(vae).__name__} is an autoencoder: it has no prior to sample from; pass "
            "density=fxvae.fit_density(ae, train), a density fitted to its codes"
        )
    recipe = conversion(vae)
    reference = next(reparameterize_of(vae, "fxvae.sample").log_sigma_fn.parameters())
    z = torch.randn((n, *recipe.latent_shape), generator=generator, dtype=reference.dtype)
    _, decoder = split(vae)
    with eval_mode(decoder), torch.no_grad():
        return decoder(z.to(reference.device), *conditions)


def _is_autoencoder(model: nn.Module) -> bool:
    inner = unwrap(model)
    return not (isinstance(inner, fx.GraphModule) and isinstance(inner.meta.get(META_KEY), Conversion))


def _sample_density(
    model: nn.Module, n: int, conditions: tuple[Any, ...], generator: torch.Generator | None, density: Density
) -> Any:
    """Decode ``n`` draws of ``density`` with the model's decoder (an AE's is captured on a standard normal batch
    of the data's shape, with the conditions given)."""
    from fxvae.measure.density import Density, coder

    if not isinstance(density, Density):
        raise InputError(
            f"density= takes a fxvae.Density, got a {type(density).__name__}: pass fxvae.fit_density(model, train)"
        )
    reference = first_tensor(unwrap(model))
    dtype = reference.dtype if reference is not None else torch.float32
    device = reference.device if reference is not None else torch.device("cpu")
    if _is_autoencoder(model) and density.input_shape is None:
        raise InputError(
            "the density does not say what data shape it was fitted on (input_shape), which capturing the "
            "autoencoder's decoder needs: fit it with fxvae.fit_density(ae, train)"
        )
    with torch.no_grad():
        if _is_autoencoder(model):
            # The hooks tier finds the latent by perturbing a batch, which a constant batch would not show.
            noise = torch.Generator().manual_seed(0)
            example = torch.randn((max(n, 1), *density.input_shape), generator=noise, dtype=dtype).to(device)
            encoder, decoder = coder(model, (example, *conditions))
            with eval_mode(encoder):
                latent_shape = tuple(encoder(example, *conditions).shape[1:])
        else:
            _, decoder = coder(model, ())
            latent_shape = conversion(model).latent_shape
        if latent_shape != density.latent_shape:
            raise InputError(
                f"{type(model).__name__}'s latent has shape {list(latent_shape)}, but the density is on latents of "
                f"shape {list(density.latent_shape)}: fit the density to this model (fxvae.fit_density(model, train))"
            )
        z = density.sample(n, generator=generator, dtype=dtype, device=device)
        with eval_mode(decoder):
            return decoder(z, *conditions)


def decoder_conditions(vae: nn.Module, decoder: nn.Module, count: int) -> list[int]:
    """Positions, among the VAE's ``count`` inputs, of the conditions the decoder of :func:`fxvae.split` takes.

    >>> from fxvae.surgery.split import decoder_conditions
    >>> decoder_conditions(vae, fxvae.split(vae)[1], 1)
    []
    """
    if not isinstance(decoder, fx.GraphModule):
        return list(range(1, count))
    names = input_names(vae, count)
    taken = [str(node.target) for node in decoder.graph.find_nodes(op="placeholder")][1:]
    return [names.index(name) for name in taken]


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
