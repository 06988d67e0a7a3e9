"""Random autoencoders whose bottleneck is known by construction: a hypothesis strategy.

Each example is the *source code* of a small autoencoder (``build()`` and ``inputs(batch)`` plus
the classes they use), so that a failing example prints as a standalone script
(:meth:`AECase.script`). Why the ground truth holds, rule by rule:

* The latent is the output of one named submodule, ``encoder`` (or ``to_latent``, after a wide
  ``body``), and the top-level forward hands it to ``decoder`` with no operation in between.
  A label (conditional AE) is embedded and mixed in *inside* the decoder.
* Widths are drawn after the latent's: every layer output, normalisation, pooling, upsampling,
  concatenation and residual sum on the way from the input to the reconstruction is strictly
  wider (per-sample element count) than the latent, and the latent is strictly narrower than the
  input. The only exceptions are the latent module's own tail (activations, norms, dropout, a
  square layer, a flatten, a residual block, all of the latent's width) and a label *added* to the
  latent at the decoder's entry; fxvae's tie rule takes the latent module's output for both.
* Residual blocks and skips start and end on the same side of the latent (the encoder's input or
  hidden stages; the decoder's input or hidden stages), so nothing bypasses it. Nodes inside a
  residual block may be narrower than the latent: they are bypassed.
* The reconstruction is the only output with the input's shape; side outputs are the latent
  itself and a per-sample statistic of the input.

``autoencoders(bypass=True)`` draws the same models with a skip around the latent that carries the
input (or a same-shape copy of it) to the output: no node narrower than the input then separates
input and reconstruction, and fxvae must raise ``BottleneckError``.

tests/test_properties.py holds the properties; ``test_generated_*`` there check the generator itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

KINDS = ("mlp", "conv1d", "conv2d", "conv3d")
ACTIVATIONS = ("identity", "relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu")
BYPASSES = ("residual", "concat", "stem")
MAX_WIDTH = 64
"""Largest MLP hidden width."""
MAX_CHANNELS = 16
"""Largest conv channel count (spatial sizes go up to 16, so a 2-d feature map stays <= 4096 wide)."""
MAX_LATENT = 8

_ACT_MODULE = {
    "identity": "nn.Identity()",
    "relu": "nn.ReLU()",
    "gelu": "nn.GELU()",
    "tanh": "nn.Tanh()",
    "sigmoid": "nn.Sigmoid()",
    "silu": "nn.SiLU()",
    "leaky_relu": "nn.LeakyReLU(0.1)",
}
_ACT_CALL = {
    "identity": "{h}",
    "relu": "F.relu({h})",
    "gelu": "F.gelu({h})",
    "tanh": "torch.tanh({h})",
    "sigmoid": "torch.sigmoid({h})",
    "silu": "F.silu({h})",
    "leaky_relu": "F.leaky_relu({h}, 0.1)",
}

_HELPERS = {
    "Residual": '''
class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
''',
    "FunctionalLinear": '''
class FunctionalLinear(nn.Module):
    """F.linear on raw parameters."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)
''',
    "FunctionalConv": '''
class FunctionalConv(nn.Module):
    """F.conv{1,2,3}d or F.conv_transpose{1,2,3}d on raw parameters."""

    def __init__(
        self, dims: int, n_in: int, n_out: int, kernel: int, stride: int = 1, padding: int = 0,
        transposed: bool = False, bias: bool = True,
    ) -> None:
        super().__init__()
        shape = (n_in, n_out) if transposed else (n_out, n_in)
        fan_in = n_in * kernel**dims
        self.weight = nn.Parameter(torch.randn(*shape, *[kernel] * dims) / fan_in**0.5)
        self.bias = nn.Parameter(0.1 * torch.randn(n_out)) if bias else None
        functions = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d) if transposed else (
            F.conv1d, F.conv2d, F.conv3d
        )
        self.fn = functions[dims - 1]
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
''',
}


# --- operations and how they are written -----------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One step of a generated forward, acting on the running tensor ``h``.

    ``module`` writes the step as an ``nn.Module`` (in an ``nn.Sequential``, or as an attribute of a
    hand-written class). ``call`` writes it as an expression: ``{h}`` is the running tensor, ``{m}``
    an attribute holding ``attr``, ``{w}``/``{b}`` raw parameters from ``params``. Hand-written classes
    use ``call`` when ``functional`` is set, and always for steps without a module (skips, conditions).
    ``save`` names a variable that keeps ``h`` for a later skip.
    """

    prefix: str
    module: str = ""
    call: str = ""
    functional: bool = False
    attr: str = ""
    params: tuple[tuple[str, str], ...] = ()
    save: str = ""


def _render_class(name: str, inputs: tuple[str, ...], ops: list[Op]) -> str:
    init: list[str] = []
    body = [f"h = {inputs[0]}"]
    for i, op in enumerate(ops):
        if op.save:
            body.append(f"{op.save} = h")
            continue
        if op.module and not (op.functional and op.call):
            init.append(f"self.{op.prefix}{i} = {op.module}")
            body.append(f"h = self.{op.prefix}{i}(h)")
            continue
        names = {"h": "h"}
        if op.attr:
            init.append(f"self.{op.prefix}{i} = {op.attr}")
            names["m"] = f"self.{op.prefix}{i}"
        for key, expr in op.params:
            init.append(f"self.{key}{i} = {expr}")
            names[key] = f"self.{key}{i}"
        expr = op.call.format(**names)
        if expr != "h":
            body.append(f"h = {expr}")
    body.append("return h")
    signature = ", ".join(f"{arg}: torch.Tensor" for arg in inputs)
    lines = [
        f"class {name}(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *(f"        {line}" for line in init),
        "",
        f"    def forward(self, {signature}) -> torch.Tensor:",
        *(f"        {line}" for line in body),
    ]
    return "\n".join(lines) + "\n"


def _render_sequential(ops: list[Op], indent: str) -> str:
    items = "".join(f"{indent}    {op.module},\n" for op in ops)
    return f"nn.Sequential(\n{items}{indent})"


@dataclass
class _Part:
    """A submodule of the generated model: its ops, and whether it is a hand-written class."""

    cls: str
    inputs: tuple[str, ...]
    ops: list[Op]
    hand_written: bool

    def expression(self, indent: str) -> str:
        return f"{self.cls}()" if self.hand_written else _render_sequential(self.ops, indent)

    def definition(self) -> str:
        return _render_class(self.cls, self.inputs, self.ops) if self.hand_written else ""


# --- the case a test receives ------------------------------------------------------------------------


@dataclass(frozen=True)
class AECase:
    """One generated autoencoder and what its bottleneck must be.

    ``latent_module`` is the submodule whose output is the latent (``encoder`` or ``to_latent``);
    ``latent_shape`` its per-sample shape. ``build`` and ``inputs`` are deterministic in their seeds.
    """

    source: str
    seed: int
    batch: int
    latent_module: str
    latent_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    conditional: bool
    bypass: str
    summary: str

    def __repr__(self) -> str:
        return f"AECase({self.summary}, seed={self.seed}, batch={self.batch})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints dataclasses field by field; one line is enough (the tests note the script)."""
        printer.text(repr(self))

    @property
    def latent_width(self) -> int:
        return math.prod(self.latent_shape)

    @property
    def input_width(self) -> int:
        return math.prod(self.input_shape)

    def build(self, seed: int | None = None) -> nn.Module:
        """The model with weights drawn from ``seed`` (default: the case's), in training mode."""
        torch.manual_seed(self.seed if seed is None else seed)
        return _namespace(self.source)["build"]()

    def inputs(self, batch: int | None = None, seed: int | None = None) -> tuple[torch.Tensor, ...]:
        """Positional arguments: the data, then the label of a conditional AE."""
        torch.manual_seed(self.seed + 1 if seed is None else seed)
        return _namespace(self.source)["inputs"](self.batch if batch is None else batch)

    def latent(self, model: nn.Module, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The latent module's output during ``model(*args)``, without gradients."""
        seen: list[torch.Tensor] = []
        hook = model.get_submodule(self.latent_module).register_forward_hook(lambda _m, _a, out: seen.append(out))
        try:
            with torch.no_grad():
                model(*args)
        finally:
            hook.remove()
        (latent,) = seen
        return latent

    def script(self) -> str:
        """The case as a standalone script that converts it with fxvae."""
        return (
            f"{self.source}\n\nimport fxvae\n\n"
            f"torch.manual_seed({self.seed})\nmodel = build().eval()\n"
            f"torch.manual_seed({self.seed + 1})\nargs = inputs({self.batch})\n"
            f"vae, kl = fxvae.convert(model, args)  # latent: model.{self.latent_module} "
            f"{list(self.latent_shape)}\n"
        )


@functools.lru_cache(maxsize=512)
def _namespace(source: str) -> dict[str, Any]:
    """Execute a generated source once.

    Every source compiles under one file name: hypothesis tells bugs apart by the file and line that
    raised, and a name per source would make each failing model a bug of its own.
    """
    namespace: dict[str, Any] = {"__name__": "random_ae"}
    exec(compile(source, "<random_ae>", "exec"), namespace)
    return namespace


def leaves(out: Any, path: str = "") -> list[tuple[str, torch.Tensor]]:
    """Tensors of a (nested) output with their paths, in order: ``[('[0]', t), ("['z']", t)]``."""
    if isinstance(out, torch.Tensor):
        return [(path, out)]
    if isinstance(out, dict):
        return [leaf for k, v in out.items() for leaf in leaves(v, f"{path}[{k!r}]")]
    if isinstance(out, (tuple, list)):
        return [leaf for i, v in enumerate(out) for leaf in leaves(v, f"{path}[{i}]")]
    return []


def reconstruction(out: Any, data: torch.Tensor) -> torch.Tensor:
    """The output leaf with the data's shape: by construction exactly one leaf has it."""
    (recon,) = [t for _, t in leaves(out) if t.shape == data.shape]
    return recon


# --- the generator --------------------------------------------------------------------------------------

Shape = tuple[int, ...]
Saved = list[tuple[str, Shape]]


def _fmt(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class _Plan:
    """The choices made before any layer: the input, the latent, and the model's outline."""

    kind: str
    dims: int
    """0 for an MLP, else the convolutions' dimensionality."""
    depth: int
    n_hidden: int
    """Encoder layers before the latent layer."""
    n_dec: int
    in_shape: Shape
    downs: tuple[str, ...]
    """Per hidden conv stage: "" (same size), "stride" or "pool" (halves the spatial size)."""
    latent_kind: str
    """"linear" (flatten, Linear) or "conv" (a convolution, maybe pooled)."""
    latent_down: str
    latent_channels: int
    latent_width: int
    conditional: bool
    n_classes: int
    mix: str
    """How the label enters the decoder: "cat" or "add" at its input, "add_after" its first layer."""
    output: str
    order: tuple[str, ...]
    """Output entries in order, among "recon", "z" (the latent) and "stat" (a statistic of x)."""
    bypass: str
    designated: bool
    """The latent module is ``to_latent`` after a ``body``, instead of ``encoder``."""
    sequential_model: bool

    @property
    def in_width(self) -> int:
        return math.prod(self.in_shape)


def _plan(draw: Callable[..., Any], bypass: bool) -> _Plan:
    """Input and latent first, so that every other width can be drawn wider than the latent."""
    kind = draw(st.sampled_from(KINDS))
    dims = KINDS.index(kind)
    depth = draw(st.integers(2, 12))
    n_hidden = draw(st.integers(1, depth - 1)) - 1
    conditional = draw(st.booleans())
    output = draw(st.sampled_from(("tensor", "tuple", "dict")))
    sides = [] if output == "tensor" else draw(st.lists(st.sampled_from(("z", "stat")), unique=True, max_size=2))
    how_bypass = draw(st.sampled_from(BYPASSES)) if bypass else ""
    designated = n_hidden >= 1 and draw(st.booleans())
    sequential_model = not (conditional or output != "tensor" or bypass or designated) and draw(st.booleans())

    downs: list[str] = []
    if dims == 0:
        in_shape: Shape = (draw(st.integers(4, MAX_WIDTH)),)
    else:
        size = draw(st.sampled_from((4, 8, 16) if dims < 3 else (4, 8)))
        in_shape = (draw(st.integers(1, 4)), *[size] * dims)
        for _ in range(n_hidden):
            down = size >= 4 and draw(st.booleans())
            downs.append(draw(st.sampled_from(("stride", "pool"))) if down else "")
            size //= 2 if down else 1
    in_width = math.prod(in_shape)
    latent_kind = "linear" if dims == 0 else draw(st.sampled_from(("conv", "linear")))
    latent_down, latent_channels = "", 0
    if latent_kind == "conv":
        down = size >= 2 and draw(st.booleans())
        latent_down = draw(st.sampled_from(("stride", "pool"))) if down else ""
        if size**dims >= in_width:  # one input channel and no downsampling yet: the latent must shrink
            latent_down = latent_down or "stride"
        size //= 2 if latent_down else 1
        most = max(c for c in range(1, 5) if c == 1 or c * size**dims < in_width)
        latent_channels = draw(st.integers(1, most))
        latent_width = latent_channels * size**dims
    else:
        latent_width = draw(st.integers(1, min(MAX_LATENT, in_width - 1)))
    assert latent_width < in_width
    return _Plan(
        kind=kind,
        dims=dims,
        depth=depth,
        n_hidden=n_hidden,
        n_dec=depth - n_hidden - 1,
        in_shape=in_shape,
        downs=tuple(downs),
        latent_kind=latent_kind,
        latent_down=latent_down,
        latent_channels=latent_channels,
        latent_width=latent_width,
        conditional=conditional,
        n_classes=draw(st.integers(2, 10)) if conditional else 0,
        mix=draw(st.sampled_from(("cat", "add", "add_after"))) if conditional else "",
        output=output,
        order=tuple(draw(st.permutations(["recon", *sides]))),
        bypass=how_bypass,
        designated=designated,
        sequential_model=sequential_model,
    )


class _Gen:
    """Draws the steps of one autoencoder; every width off the latent's tail is checked as it is drawn."""

    def __init__(self, draw: Callable[..., Any], plan: _Plan) -> None:
        self.draw = draw
        self.plan = plan
        self.dims = plan.dims
        self.latent_width = plan.latent_width
        self.skip_count = 0

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def check(self, shape: Shape) -> Shape:
        """A node outside the latent module's tail: it must be strictly wider than the latent."""
        if math.prod(shape) <= self.latent_width:
            raise AssertionError(f"generator bug: {shape} is not wider than the latent ({self.latent_width})")
        return shape

    def channels(self, spatial: int) -> int:
        """A channel count that keeps a map of this size wider than the latent."""
        return self.draw(st.integers(self.latent_width // spatial**self.dims + 1, MAX_CHANNELS))

    # --- single steps

    def act(self, names: tuple[str, ...] = ACTIVATIONS) -> Op:
        name = self.draw(st.sampled_from(names))
        return Op("act", _ACT_MODULE[name], _ACT_CALL[name], functional=self.flag())

    def linear(self, n_in: int, n_out: int, *, plain: bool = False) -> Op:
        """nn.Linear, or (unless ``plain``) F.linear on raw parameters; with or without bias."""
        functional = not plain and self.flag()
        bias = plain or not self.flag()
        opt = "" if bias else ", bias=False"
        params = (("w", f"nn.Parameter(torch.randn({n_out}, {n_in}) * {1 / math.sqrt(n_in):.4f})"),)
        if bias:
            params += (("b", f"nn.Parameter(0.1 * torch.randn({n_out}))"),)
        cls = "FunctionalLinear" if functional else "nn.Linear"
        call = "F.linear({h}, {w}, {b})" if bias else "F.linear({h}, {w})"
        return Op("fc", f"{cls}({n_in}, {n_out}{opt})", call, functional=functional, params=params)

    def conv(
        self,
        n_in: int,
        n_out: int,
        kernel: int,
        stride: int = 1,
        padding: int = 0,
        *,
        transposed: bool = False,
        plain: bool = False,
    ) -> Op:
        """nn.Conv{d}d / nn.ConvTranspose{d}d, or (unless ``plain``) their functional form on raw weights."""
        d = self.dims
        functional = not plain and self.flag()
        bias = plain or not self.flag()
        options = (f", stride={stride}" if stride != 1 else "") + (f", padding={padding}" if padding else "")
        no_bias = "" if bias else ", bias=False"
        shape = (n_in, n_out) if transposed else (n_out, n_in)
        fan_in = n_in * kernel**d
        weight = f"torch.randn({', '.join(map(str, (*shape, *[kernel] * d)))}) * {1 / math.sqrt(fan_in):.4f}"
        params = (("w", f"nn.Parameter({weight})"),)
        if bias:
            params += (("b", f"nn.Parameter(0.1 * torch.randn({n_out}))"),)
        fn = f"F.conv_transpose{d}d" if transposed else f"F.conv{d}d"
        call = f"{fn}({{h}}, {{w}}, {{b}}{options})" if bias else f"{fn}({{h}}, {{w}}, None{options})"
        if functional:
            extra = (", transposed=True" if transposed else "") + no_bias
            module = f"FunctionalConv({d}, {n_in}, {n_out}, {kernel}{options}{extra})"
        else:
            cls = f"nn.ConvTranspose{d}d" if transposed else f"nn.Conv{d}d"
            module = f"{cls}({n_in}, {n_out}, {kernel}{options}{no_bias})"
        return Op("conv", module, call, functional=functional, params=params)

    def same_size_conv(self, n_in: int, n_out: int, *, plain: bool = False) -> Op:
        kernel = self.draw(st.sampled_from((3, 1)))
        return self.conv(n_in, n_out, kernel, padding=kernel // 2, plain=plain)

    def square(self, shape: Shape) -> Op:
        """A layer that keeps the shape: Linear(n, n) or a stride-1 convolution."""
        return self.linear(shape[0], shape[0]) if len(shape) == 1 else self.same_size_conv(shape[0], shape[0])

    def norm(self, shape: Shape) -> Op:
        channels, spatial = shape[0], math.prod(shape[1:])
        options = ["batch"]
        if math.prod(shape) >= 2:  # a LayerNorm over one element outputs its bias, whatever the input
            options.append("layer")
        groups = [g for g in (1, 2, 4) if channels % g == 0 and channels // g * spatial >= 2]
        if groups:
            options.append("group")
        kind = self.draw(st.sampled_from(options))
        if kind == "batch":
            return Op("norm", f"nn.BatchNorm{max(1, len(shape) - 1)}d({channels})")
        if kind == "layer":
            return Op("norm", f"nn.LayerNorm({channels if len(shape) == 1 else list(shape)})")
        return Op("norm", f"nn.GroupNorm({self.draw(st.sampled_from(groups))}, {channels})")

    def dropout(self) -> Op:
        return Op("drop", f"nn.Dropout({self.draw(st.sampled_from((0.1, 0.5)))})")

    def residual(self, shape: Shape) -> Op:
        """h + body(h); the body's inner width is free (it is bypassed)."""
        inner = self.draw(st.integers(1, MAX_CHANNELS))
        if len(shape) == 1:
            first, last = self.linear(shape[0], inner), self.linear(inner, shape[0])
        else:
            kernel = self.draw(st.sampled_from((1, 3)))
            first = self.conv(shape[0], inner, kernel, padding=kernel // 2)
            last = self.conv(inner, shape[0], kernel, padding=kernel // 2)
        body = f"nn.Sequential({first.module}, {self.act().module}, {last.module})"
        return Op("res", f"Residual({body})", "{h} + {m}({h})", functional=self.flag(), attr=body)

    def pool(self) -> Op:
        kind = self.draw(st.sampled_from(("max", "avg")))
        cls = "MaxPool" if kind == "max" else "AvgPool"
        return Op("pool", f"nn.{cls}{self.dims}d(2)", f"F.{kind}_pool{self.dims}d({{h}}, 2)", self.flag())

    def upsample(self, factor: int) -> Op:
        module = f"nn.Upsample(scale_factor={factor})"
        return Op("up", module, f"F.interpolate({{h}}, scale_factor={factor})", self.flag())

    def flatten(self) -> Op:
        call = self.draw(st.sampled_from(("{h}.flatten(1)", "{h}.reshape({h}.shape[0], -1)")))
        return Op("flat", "nn.Flatten()", call, self.flag())

    def unflatten(self, shape: Shape) -> Op:
        dims = ", ".join(map(str, shape))
        calls = (f"{{h}}.view(-1, {dims})", f"{{h}}.reshape({{h}}.shape[0], {dims})")
        return Op("unflat", f"nn.Unflatten(1, {_fmt(shape)})", self.draw(st.sampled_from(calls)), self.flag())

    def extras(self, shape: Shape) -> list[Op]:
        """What may follow a hidden layer without changing its shape: norm, activation, dropout, residual."""
        ops = [self.norm(shape)] if self.flag() else []
        ops.append(self.act())
        if self.flag():
            ops.append(self.dropout())
        if self.flag():
            ops.append(self.residual(shape))
        return ops

    def skips(self, shape: Shape, saved: Saved) -> tuple[list[Op], Shape]:
        """Hand-written parts: maybe merge a saved value of the same side (add or concat), maybe save h."""
        ops: list[Op] = []
        sources = [(var, s) for var, s in saved if s[1:] == shape[1:]]
        if sources and self.flag():
            var, source = self.draw(st.sampled_from(sources))
            if self.flag():
                proj = (
                    self.linear(source[0], shape[0], plain=True)
                    if len(shape) == 1
                    else self.conv(source[0], shape[0], 1, plain=True)
                )
                ops.append(Op("skip", call=f"{{h}} + {{m}}({var})", attr=proj.module))
            else:
                ops.append(Op("cat", call=f"torch.cat([{{h}}, {var}], dim=1)"))
                shape = self.check((shape[0] + source[0], *shape[1:]))
        if self.flag():
            ops.append(self.save(shape, saved))
        return ops, shape

    def save(self, shape: Shape, saved: Saved) -> Op:
        var = f"s{self.skip_count}"
        self.skip_count += 1
        saved.append((var, shape))
        return Op("save", save=var)

    # --- the parts

    def encoder_body(self, hand_written: bool) -> tuple[list[Op], Shape]:
        """The hidden encoder stages, all wider than the latent; skips only in a hand-written forward."""
        plan, ops, saved = self.plan, [], []
        shape = plan.in_shape
        if hand_written and self.flag():
            ops.append(self.save(shape, saved))
        for i in range(plan.n_hidden):
            if self.dims == 0:
                width = self.draw(st.integers(self.latent_width + 1, MAX_WIDTH))
                ops.append(self.linear(shape[0], width))
                shape = self.check((width,))
                ops += self.extras(shape)
            else:
                down = plan.downs[i]
                size = shape[1] // 2 if down else shape[1]
                channels = self.channels(size)
                if down == "stride":
                    ops.append(self.conv(shape[0], channels, 3, 2, 1))
                    shape = self.check((channels, *[size] * self.dims))
                else:
                    ops.append(self.same_size_conv(shape[0], channels))
                    shape = self.check((channels, *shape[1:]))
                ops += self.extras(shape)
                if down == "pool":
                    ops.append(self.pool())
                    shape = self.check((channels, *[size] * self.dims))
            if hand_written:
                merged, shape = self.skips(shape, saved)
                ops += merged
        return ops, shape

    def latent_module(self, shape: Shape) -> tuple[list[Op], Shape]:
        """The latent layer, its activation, and a tail of the latent's width (kept inside the module)."""
        plan, ops = self.plan, []
        if plan.latent_kind == "conv":
            if plan.latent_down == "stride":
                ops.append(self.conv(shape[0], plan.latent_channels, 3, 2, 1))
            else:
                ops.append(self.same_size_conv(shape[0], plan.latent_channels))
            ops.append(self.act())
            if plan.latent_down == "pool":
                ops.append(self.pool())
            size = shape[1] // 2 if plan.latent_down else shape[1]
            shape = (plan.latent_channels, *[size] * self.dims)
        else:
            if len(shape) > 1:
                ops.append(self.flatten())
                shape = (math.prod(shape),)
            ops += [self.linear(shape[0], self.latent_width), self.act()]
            shape = (self.latent_width,)
        for _ in range(self.draw(st.integers(0, MAX_TAIL))):
            step = self.draw(st.sampled_from(TAIL_STEPS if len(shape) > 1 else TAIL_STEPS[:-1]))
            if step == "flatten":
                ops.append(self.flatten())
                shape = (math.prod(shape),)
            elif step in ("act", "dropout"):
                ops.append(self.act() if step == "act" else self.dropout())
            else:
                ops.append({"norm": self.norm, "residual": self.residual, "square": self.square}[step](shape))
        assert math.prod(shape) == self.latent_width
        return ops, shape

    def label(self, shape: Shape, how: str) -> tuple[Op, Shape]:
        """The label's embedding, concatenated (channels) or added (broadcast over space)."""
        channels = self.draw(st.integers(1, 8)) if how == "cat" else shape[0]
        embedded = "{m}(label)"
        if len(shape) > 1:
            embedded += f".view(-1, {channels}{', 1' * self.dims})"
            if how == "cat":
                embedded += f".expand(-1, -1{f', {shape[1]}' * self.dims})"
        attr = f"nn.Embedding({self.plan.n_classes}, {channels})"
        if how == "cat":
            op = Op("embed", call=f"torch.cat([{{h}}, {embedded}], dim=1)", attr=attr)
            return op, (shape[0] + channels, *shape[1:])
        return Op("embed", call=f"{{h}} + {embedded}", attr=attr), shape

    def decoder(self, shape: Shape, hand_written: bool) -> list[Op]:
        """From the latent back to the input's shape; every step but a label added at the entry is wider."""
        plan, ops, saved = self.plan, [], []
        if plan.mix in ("cat", "add"):
            op, shape = self.label(shape, plan.mix)
            ops.append(op)
        if hand_written and self.flag():
            ops.append(self.save(shape, saved))

        def after_layer(shape: Shape, last: bool) -> Shape:
            """The label added after the first layer; then, between hidden layers, extras and skips."""
            if plan.mix == "add_after" and not any(op.prefix == "embed" for op in ops):
                op, shape = self.label(shape, "add")
                ops.append(op)
            if not last:
                ops.extend(self.extras(shape))
                if hand_written:
                    merged, shape = self.skips(shape, saved)
                    ops.extend(merged)
            return shape

        conv_layers = plan.n_dec
        if len(shape) == 1 and self.dims == 0:
            for _ in range(plan.n_dec - 1):
                width = self.draw(st.integers(self.latent_width + 1, MAX_WIDTH))
                ops.append(self.linear(shape[0], width))
                shape = after_layer(self.check((width,)), last=False)
            ops.append(self.linear(shape[0], plan.in_shape[0]))
            shape = after_layer(plan.in_shape, last=True)
            conv_layers = 0
        elif len(shape) == 1:  # a vector latent of a conv AE: Linear, unflatten, then convolutions
            target = plan.in_shape
            if plan.n_dec > 1:
                sizes = [plan.in_shape[1] >> j for j in range(plan.in_shape[1].bit_length())]
                # Maps too small need more than MAX_CHANNELS channels to stay wider than the latent.
                size = self.draw(
                    st.sampled_from([s for s in sizes if self.latent_width // s**self.dims < MAX_CHANNELS])
                )
                target = (self.channels(size), *[size] * self.dims)
            ops += [self.linear(shape[0], math.prod(target)), self.unflatten(target)]
            shape = after_layer(self.check(target), last=plan.n_dec == 1)
            conv_layers = plan.n_dec - 1
        for j in range(conv_layers):
            last = j == conv_layers - 1
            doublings = (plan.in_shape[1] // shape[1]).bit_length() - 1
            how = self.draw(st.sampled_from(["same", "transposed", "upsample"] if doublings else ["same"]))
            if last and doublings and how == "same":
                how = "upsample"
            if last and how == "transposed" and doublings > 1:
                ops.append(self.upsample(2 ** (doublings - 1)))
                shape = self.check((shape[0], *[shape[1] * 2 ** (doublings - 1)] * self.dims))
            if how == "upsample":
                factor = 2**doublings if last else 2
                ops.append(self.upsample(factor))
                shape = self.check((shape[0], *[shape[1] * factor] * self.dims))
            size = shape[1] * 2 if how == "transposed" else shape[1]
            channels = plan.in_shape[0] if last else self.channels(size)
            if how == "transposed":
                ops.append(self.conv(shape[0], channels, 4, 2, 1, transposed=True))
            else:
                ops.append(self.same_size_conv(shape[0], channels))
            shape = after_layer(self.check((channels, *[size] * self.dims)), last=last)
        assert shape == plan.in_shape, (shape, plan.in_shape)
        final = self.draw(st.sampled_from(("identity", "sigmoid", "tanh")))
        if final != "identity":
            ops.append(Op("act", _ACT_MODULE[final], _ACT_CALL[final], functional=self.flag()))
        return ops


MAX_TAIL = 2
"""Steps after the latent layer's activation, inside the latent module."""
TAIL_STEPS = ("act", "norm", "dropout", "residual", "square", "flatten")
"""Same-width steps a latent module may end with ("flatten" only for a feature-map latent)."""


def _model_source(plan: _Plan, parts: dict[str, _Part]) -> str:
    """The ``Model`` class (or ``build``'s nn.Sequential), ``build()`` and ``inputs(batch)``."""
    in_shape, dims = plan.in_shape, plan.dims
    model_inputs = ("x", "label") if plan.conditional else ("x",)
    init: list[str] = [f"self.{name} = {part.expression('        ')}" for name, part in parts.items()]
    forward: list[str] = []
    data = "x"
    if plan.bypass == "stem":
        stem = (
            f"nn.Linear({in_shape[0]}, {in_shape[0]})"
            if dims == 0
            else f"nn.Conv{dims}d({in_shape[0]}, {in_shape[0]}, 3, padding=1)"
        )
        init.append(f"self.stem = {stem}")
        forward.append("h = self.stem(x)")
        data = "h"
    forward.append(f"z = self.to_latent(self.body({data}))" if plan.designated else f"z = self.encoder({data})")
    forward.append(f"recon = self.decoder({', '.join(('z', *model_inputs[1:]))})")
    if plan.bypass == "residual":
        forward.append("recon = x + recon")
    elif plan.bypass == "concat":
        n = in_shape[0]
        init.append(f"self.mix = {f'nn.Linear({2 * n}, {n})' if dims == 0 else f'nn.Conv{dims}d({2 * n}, {n}, 1)'}")
        forward.append("recon = self.mix(torch.cat([recon, x], dim=1))")
    elif plan.bypass == "stem":
        forward.append("recon = recon + h")
    values = {"recon": "recon", "z": "z", "stat": "x.flatten(1).mean(dim=1)"}
    if plan.output == "tensor":
        forward.append("return recon")
    elif plan.output == "tuple":
        forward.append(f"return ({', '.join(values[k] for k in plan.order)}{',' * (len(plan.order) == 1)})")
    else:
        forward.append("return {" + ", ".join(f'"{k}": {values[k]}' for k in plan.order) + "}")

    classes = [part.definition() for part in parts.values() if part.hand_written]
    if plan.sequential_model:
        items = "".join(
            f'                ("{name}", {part.expression("                ")}),\n' for name, part in parts.items()
        )
        make = (
            "model = nn.Sequential(\n        OrderedDict(\n            [\n" + items + "            ]\n        )\n    )"
        )
    else:
        signature = ", ".join(f"{arg}: torch.Tensor" for arg in model_inputs)
        classes.append(
            "\n".join(
                [
                    "class Model(nn.Module):",
                    "    def __init__(self) -> None:",
                    "        super().__init__()",
                    *(f"        {line}" for line in init),
                    "",
                    f"    def forward(self, {signature}) -> Any:",
                    *(f"        {line}" for line in forward),
                ]
            )
        )
        make = "model = Model()"
    text = "\n\n\n".join(c.rstrip("\n") for c in classes)
    build = ["def build() -> nn.Module:", f"    {make}"]
    if "BatchNorm" in text + make:
        build += [
            "    for m in model.modules():  # eval-mode batch norm uses these statistics",
            "        if isinstance(m, nn.modules.batchnorm._BatchNorm):",
            "            m.running_mean.uniform_(-0.5, 0.5)",
            "            m.running_var.uniform_(0.5, 2.0)",
        ]
    build.append("    return model")
    arguments = f"torch.randn(batch, {', '.join(map(str, in_shape))})"
    arguments += f", torch.randint(0, {plan.n_classes}, (batch,))" if plan.conditional else ","
    header = [
        "from collections import OrderedDict" if plan.sequential_model else "from typing import Any",
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
    ]
    blocks = [
        "\n".join(header),
        *(src.strip() for name, src in _HELPERS.items() if f"{name}(" in text + make),
        text,
        "\n".join(build),
        f"def inputs(batch: int) -> tuple[torch.Tensor, ...]:\n    return ({arguments})",
    ]
    return "\n\n\n".join(b for b in blocks if b) + "\n"


@st.composite
def autoencoders(draw: Callable[..., Any], *, bypass: bool = False) -> AECase:
    """A random autoencoder whose latent is a known submodule's output (see the module docstring).

    ``bypass=True``: the same kind of model with a skip around the latent carrying the input.
    """
    plan = _plan(draw, bypass)
    g = _Gen(draw, plan)
    body_hand_written = draw(st.booleans())
    body, shape = g.encoder_body(body_hand_written)
    latent, latent_shape = g.latent_module(shape)
    decoder_hand_written = plan.conditional or draw(st.booleans())
    decoder = g.decoder(latent_shape, decoder_hand_written)
    dec_inputs = ("z", "label") if plan.conditional else ("z",)
    parts: dict[str, _Part] = {}
    if plan.designated:
        parts["body"] = _Part("Body", ("x",), body, body_hand_written)
        parts["to_latent"] = _Part("ToLatent", ("x",), latent, draw(st.booleans()))
    else:
        parts["encoder"] = _Part("Encoder", ("x",), body + latent, body_hand_written)
    parts["decoder"] = _Part("Decoder", dec_inputs, decoder, decoder_hand_written)
    for part in parts.values():
        if not part.hand_written and any(not op.module for op in part.ops):
            raise AssertionError(f"generator bug: {part.cls} has steps only a hand-written forward can take")
    summary = (
        f"{plan.kind}, input {list(plan.in_shape)}, latent {'to_latent' if plan.designated else 'encoder'} "
        f"{list(latent_shape)}, depth {plan.depth}"
        + (", conditional" if plan.conditional else "")
        + (f", {plan.output} output" if plan.output != "tensor" else "")
        + (f", bypass {plan.bypass}" if bypass else "")
    )
    return AECase(
        source=_model_source(plan, parts),
        seed=draw(st.integers(0, 2**16)),
        batch=draw(st.integers(2, 5)),
        latent_module="to_latent" if plan.designated else "encoder",
        latent_shape=latent_shape,
        input_shape=plan.in_shape,
        conditional=plan.conditional,
        bypass=plan.bypass,
        summary=summary,
    )
