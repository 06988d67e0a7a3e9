"""The third capture tier: models no tracer follows (branches on tensor values, ``.item()``, numpy on
tensors, calls into extensions), converted from real forwards.

A module's output M(x) separates the data input from the reconstruction exactly when the reconstruction
depends on x only through M(x): run the model on x while a forward hook makes M return M(x'), recorded
on another input x'; the reconstruction must then equal model(x') bit for bit. A skip or an input
statistic reaching the decoder makes it differ. Several pairs are checked, every forward under one seed.
The narrowest separating module narrower than the input is the bottleneck (equal widths: the outermost
module around the first one, as in the graph tiers).

The VAE keeps the model as a submodule and installs a forward hook on that module: mu is its output,
log sigma a zero pointwise layer on mu, z = reparameterize(mu) replaces the output. ``split`` cuts it
with the same hook: the encoder stops at the latent, the decoder runs the model on a zero input with
the latent replaced by z (exact, since the latent separates), and returns None for the outputs that
read the input's values. A discrete latent's hook quantises the output instead of sampling it.
:class:`HooksTier` is this tier behind the :class:`~fxvae.capture.tier.Tier` interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import SHOWN_CANDIDATES, Bottleneck, Candidate
from fxvae.analysis.operators import module_layout
from fxvae.analysis.outputs import Spec, flatten, reconstruction_index, unflatten
from fxvae.capture.tier import Captured, Site, Tier
from fxvae.errors import BottleneckError, InputError, RewriteError
from fxvae.latents.configs import HeadChoice
from fxvae.latents.gaussian import Reparameterize
from fxvae.modules import eval_mode, input_names, owned_copy
from fxvae.recipe import CalibrationInfo, Conversion, conversion
from fxvae.surgery.rewrite import LOG_SIGMA_HEAD, REPARAMETERIZE, Inserted, pointwise_layer, zero_head
from fxvae.surgery.standardize import LatentAffine

MODEL = "model"
"""Name of the autoencoder inside a hooks-tier VAE (its state-dict keys gain this prefix)."""
_SEED = 0
_PAIRS = 3


@dataclass(frozen=True)
class HookPlan:
    """The hooks tier's bottleneck: the latent module, and which outputs the latent alone determines."""

    report: Bottleneck
    module: str
    feature_dim: int
    decoded: tuple[bool, ...]
    """Per output leaf: computed from the latent alone (the decoder returns it), or from the input's values."""
    dtype: torch.dtype
    """The latent's."""


@dataclass
class _Run:
    """One recorded forward: the output's leaves and spec, each module's tensor output and call count."""

    leaves: list[torch.Tensor]
    spec: Spec
    outputs: dict[str, torch.Tensor]
    calls: dict[str, int]
    order: list[str]


def _forward(
    model: nn.Module, args: tuple[Any, ...], replace: tuple[str, torch.Tensor] | None = None, seed: int = _SEED
) -> _Run:
    """Run ``model`` in eval mode under a fixed seed, recording module outputs (or replacing one)."""
    outputs: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    order: list[str] = []
    handles = []

    def record(path: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            calls[path] = calls.get(path, 0) + 1
            order.append(path)
            if replace is not None and path == replace[0]:
                return replace[1]
            if isinstance(output, torch.Tensor):
                outputs[path] = output
            return None

        return hook

    for path, module in model.named_modules():
        if path and (replace is None or path == replace[0]):
            handles.append(module.register_forward_hook(record(path)))
    try:
        with eval_mode(model), torch.no_grad(), _seeded(seed):
            out = model(*args)
    finally:
        for handle in handles:
            handle.remove()
    leaves: list[torch.Tensor] = []
    spec = flatten(out, leaves)
    return _Run(leaves, spec, outputs, calls, order)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _other_inputs(x: torch.Tensor) -> list[torch.Tensor]:
    """Inputs to pair with ``x``: its samples shifted along the batch, and a perturbed copy."""
    others = [torch.roll(x, shift, 0) for shift in (1, 2) if x.shape[0] > shift]
    if x.is_floating_point():
        generator = torch.Generator().manual_seed(_SEED)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        scale = x.std() if x.numel() > 1 else torch.ones((), dtype=x.dtype, device=x.device)
        others.append(x + 0.5 * scale * noise)
    if not others:
        raise BottleneckError(
            f"the data input has batch size 1 and dtype {x.dtype}: the hooks tier compares forwards on "
            "different inputs; pass an example batch of at least 2 samples"
        )
    return others[:_PAIRS]


def locate(model: nn.Module, args: tuple[Any, ...], forced: str | None) -> HookPlan:
    """The bottleneck of ``model`` from real forwards (see the module docstring)."""
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise BottleneckError(
            f"the data input of {type(model).__name__} must be a tensor with the batch first, got "
            f"{type(x).__name__} {list(getattr(x, 'shape', []))}"
        )
    name = type(model).__name__
    base = _forward(model, args)
    again = _forward(model, args, seed=_SEED + 1)
    if not all(torch.equal(a, b) for a, b in zip(base.leaves, again.leaves, strict=True)):
        raise BottleneckError(
            f"{name} returns different outputs for the same input in eval mode (random operations stay "
            "active): fxvae cannot tell the latent from a bypass; make eval mode deterministic"
        )
    shapes = [tuple(t.shape) if t.is_floating_point() else None for t in base.leaves]
    if not any(s is not None for s in shapes):
        returned = ", ".join(dict.fromkeys(str(t.dtype) for t in base.leaves)) or "no tensor"
        raise BottleneckError(
            f"{name} returns no floating-point tensor to treat as the reconstruction (it returns {returned}); "
            "convert a model whose forward returns its reconstruction"
        )
    recon = reconstruction_index(shapes, tuple(x.shape))
    batch, input_width = x.shape[0], x[0].numel()
    references = [_forward(model, (other, *args[1:])) for other in _other_inputs(x)]
    if all(torch.equal(base.leaves[recon], r.leaves[recon]) for r in references):
        raise BottleneckError(
            f"the reconstruction of {name} does not change when the input does (an untrained quantiser that "
            "maps every input to one code?): fxvae cannot tell where it compresses; convert a trained model"
        )
    forcible = [
        path
        for path in dict.fromkeys(base.order)
        if base.calls.get(path) == 1
        and path in base.outputs
        and _is_latent_like(base.outputs[path], batch)
        # A module whose output ignores the input (a weight parametrization) carries no data.
        and any(not torch.equal(base.outputs[path], r.outputs.get(path, base.outputs[path])) for r in references)
    ]
    candidates = [p for p in forcible if base.outputs[p][0].numel() < input_width or p == forced]
    if forced is not None and forced not in candidates:
        raise BottleneckError(
            f"bottleneck={forced!r} is not a module of {name} that runs once and returns a floating-point "
            f"tensor with the batch first that depends on the input; modules that do: "
            f"{', '.join(candidates[:SHOWN_CANDIDATES])}"
        )
    width = {p: base.outputs[p][0].numel() for p in candidates}
    rank = {p: i for i, p in enumerate(base.order)}
    candidates.sort(key=lambda p: (width[p], rank[p]))

    def separates(path: str) -> tuple[bool, tuple[bool, ...]]:
        decoded = [True] * len(base.leaves)
        for reference in references:
            swapped = _forward(model, args, replace=(path, reference.outputs[path]))
            for i, (got, want) in enumerate(zip(swapped.leaves, reference.leaves, strict=True)):
                decoded[i] = decoded[i] and got.shape == want.shape and torch.equal(got, want)
        return decoded[recon], tuple(decoded)

    tested: dict[str, tuple[bool, tuple[bool, ...]]] = {}
    best: int | None = None
    for path in candidates if forced is None else [forced]:
        if best is not None and width[path] > best:
            break
        tested[path] = separates(path)
        if tested[path][0]:
            best = width[path]
    if forced is None and best is None:
        narrowest = candidates[0] if candidates else None
        if narrowest:
            detail = (
                f"the narrowest module, {narrowest!r}, is bypassed: the output changes when only its value is swapped"
            )
        else:
            detail = "every module that carries the input is at least as wide as it"
        # The module that returns the reconstruction is no latent to force.
        inner = [p for p in forcible if base.outputs[p] is not base.leaves[recon]]
        ranked = sorted(inner, key=lambda p: (base.outputs[p][0].numel(), rank[p]))[:SHOWN_CANDIDATES]
        named = ", ".join(
            f"{p!r} [{base.outputs[p][0].numel()}]{' (bypassed)' if p in tested and not tested[p][0] else ''}"
            for p in ranked
        )
        raise BottleneckError(
            f"no module of {name} narrower than the input ({input_width}) separates the input from the "
            f"reconstruction ({detail}); force one with bottleneck=<module path>, narrowest first: "
            f"{named or 'none runs once and returns a tensor with the batch first'}"
        )
    chosen = forced if forced is not None else _outermost(candidates, tested, best)
    separating, decoded = tested[chosen]
    latent = base.outputs[chosen]
    reason = "chosen: narrowest module output on every path from input to reconstruction"
    if forced is not None:
        reason = "forced" + ("" if separating else "; bypassed: not a separator")
    report = Bottleneck(
        node=chosen,
        layer=None,
        shape=tuple(latent.shape[1:]),
        width=latent[0].numel(),
        candidates=_rank(candidates, tested, width, chosen, reason),
        tracer="hooks",
        input_width=input_width,
        layer_node=None,
        chain=(chosen,),
        head_kind="pointwise",
        module=chosen,
        forced=forced is not None,
        feature_dim=_feature_dim(model, chosen, latent),
    )
    return HookPlan(report, chosen, report.feature_dim, decoded, latent.dtype)


def _is_latent_like(value: torch.Tensor, batch: int) -> bool:
    return value.is_floating_point() and value.dim() >= 2 and value.shape[0] == batch


def _outermost(candidates: list[str], tested: dict[str, tuple[bool, Any]], best: int | None) -> str:
    """Among the narrowest separators, the outermost module around the first one to finish."""
    narrowest = [p for p in candidates if tested.get(p, (False,))[0] and p in tested]
    first = narrowest[0]
    around = [p for p in narrowest if first == p or first.startswith(p + ".")]
    return min(around, key=lambda p: p.count("."))


def _rank(
    candidates: list[str],
    tested: dict[str, tuple[bool, Any]],
    width: dict[str, int],
    chosen: str,
    reason: str,
) -> tuple[Candidate, ...]:
    ranked = sorted(candidates, key=lambda p: (p != chosen, width[p]))[:SHOWN_CANDIDATES]
    result = []
    for path in ranked:
        separating = tested[path][0] if path in tested else None
        if path == chosen:
            why = reason
        elif separating is None:
            why = f"wider than {chosen} ({width[path]} > {width[chosen]}): not tested"
        elif not separating:
            why = "bypassed: the output changes when only this module's value is swapped"
        else:
            why = f"same width, inside {chosen!r}" if path.startswith(chosen + ".") else "same width, later"
        result.append(Candidate(path, (width[path],), width[path], bool(separating), why, path))
    return tuple(result)


def _feature_dim(model: nn.Module, path: str, latent: torch.Tensor) -> int:
    if latent.dim() <= 2:
        return -1
    layouts = [module_layout(m) for m in model.get_submodule(path).modules()]
    known = [layout for layout in layouts if layout is not None]
    return known[-1] if known else 1


class _LatentHook:
    """The forward hook that turns the latent module's output into z (and carries what split needs).

    ``at_latent`` is the reparameterisation, or the module at a discrete latent (its quantiser). With a
    ``calibration`` map (:func:`fxvae.calibrate`), mu is the standardised output and the model goes on with the
    destandardised z.
    """

    def __init__(self, at_latent: nn.Module, decoded: tuple[bool, ...], input_dtype: torch.dtype):
        self.at_latent = at_latent
        self.decoded = decoded
        self.input_dtype = input_dtype
        self.calibration: nn.Module | None = None
        self.replacement: torch.Tensor | None = None
        self.stop = False

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        mu = output if self.calibration is None else self.calibration(output)
        discrete = not isinstance(self.at_latent, Reparameterize)
        if self.stop:
            raise _Latent(mu, None if discrete else self.at_latent.log_sigma(output))
        if self.replacement is not None:
            z = self.replacement
        else:
            z = self.at_latent(mu) if discrete else self.at_latent(mu, output)
        return z if self.calibration is None else self.calibration(z, inverse=True)


class _Latent(Exception):
    """Carries (mu, log_sigma) out of the forward once the encoder has computed them (log_sigma is None for
    a discrete latent)."""

    def __init__(self, mu: torch.Tensor, log_sigma: torch.Tensor | None) -> None:
        super().__init__("latent reached")
        self.mu, self.log_sigma = mu, log_sigma


def rewrite(
    model: nn.Module,
    args: tuple[Any, ...],
    plan: HookPlan,
    log_sigma_init: float,
    device: torch.device,
    at: tuple[nn.Module, str] | None = None,
) -> tuple[fx.GraphModule, Inserted]:
    """The hooks-tier VAE: a GraphModule calling the model, whose latent module's output is sampled (or,
    given ``at``, a module and its name, replaced by ``module(latent)``)."""
    module = at[0] if at is not None else None
    if module is None:
        latent = _forward(model, args).outputs[plan.module]
        head = zero_head(pointwise_layer(tuple(latent.shape), plan.feature_dim, latent.dtype, device), log_sigma_init)
        at_latent: nn.Module = Reparameterize(head)
    else:
        at_latent = module
    hook = _LatentHook(at_latent, plan.decoded, args[0].dtype)
    model.get_submodule(plan.module).register_forward_hook(hook)
    graph = fx.Graph()
    inputs = [graph.placeholder(name) for name in input_names(model, len(args))]
    graph.output(graph.call_module(MODEL, tuple(inputs)))
    root = nn.Module()
    root.add_module(MODEL, model)
    gm = fx.GraphModule(root, graph, type(model).__name__)
    key_map = {key: f"{MODEL}.{key}" for key in model.state_dict()}
    if at is not None:
        gm.add_submodule(at[1], module)
        return gm, Inserted(None, None, at[1], key_map)
    gm.add_submodule(LOG_SIGMA_HEAD, head)
    gm.add_submodule(REPARAMETERIZE, at_latent)
    return gm, Inserted(None, LOG_SIGMA_HEAD, REPARAMETERIZE, key_map)


def latent_hook(vae: fx.GraphModule, module: str) -> _LatentHook:
    target = vae.get_submodule(f"{MODEL}.{module}")
    hook = next((h for h in target._forward_hooks.values() if isinstance(h, _LatentHook)), None)
    if hook is None:
        raise RewriteError(f"the latent hook on {module!r} is gone; convert the autoencoder again")
    return hook


class HookedEncoder(nn.Module):
    """``encoder(*inputs) -> (mu, log_sigma)``: the model run up to its latent module, then stopped (a
    discrete latent's encoder returns the latent alone, before quantisation).

    >>> encoder, decoder = fxvae.split(hooks_vae)  # doctest: +SKIP
    """

    def __init__(self, vae: fx.GraphModule, module: str) -> None:
        super().__init__()
        self.vae = owned_copy(vae, share_tensors=True)
        self.module = module

    def forward(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        hook = latent_hook(self.vae, self.module)
        hook.stop = True
        try:
            self.vae(*args)
        except _Latent as reached:
            return reached.mu if reached.log_sigma is None else (reached.mu, reached.log_sigma)
        finally:
            hook.stop = False
        raise RewriteError(f"the model's forward did not run {self.module!r}; convert again")


class HookedDecoder(nn.Module):
    """``decoder(z, *conditions)``: the model run on a zero input with its latent replaced by ``z``.

    The latent separates input from reconstruction, so the result is exactly what the model computes
    from that latent; outputs that read the input's values are None.
    """

    def __init__(self, vae: fx.GraphModule, module: str, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.vae = owned_copy(vae, share_tensors=True)
        self.module = module
        self.input_shape = input_shape

    def forward(self, z: torch.Tensor, *conditions: Any) -> Any:
        hook = latent_hook(self.vae, self.module)
        x = torch.zeros((z.shape[0], *self.input_shape), dtype=hook.input_dtype, device=z.device)
        hook.replacement = z
        try:
            out = self.vae(x, *conditions)
        finally:
            hook.replacement = None
        leaves: list[torch.Tensor] = []
        spec = flatten(out, leaves)
        kept = (t if keep else None for t, keep in zip(leaves, hook.decoded, strict=True))
        return unflatten(spec, kept)


class HooksTier(Tier):
    """The tier for models no tracer follows: captured as they are, operated on through a forward hook.

    It refuses no model that runs, so it is tried last.

    >>> from fxvae.capture.tiers import tier_of
    >>> tier_of("hooks").tracers
    ('hooks',)
    """

    tracers = ("hooks",)

    def capture(self, model: nn.Module, args: tuple[Any, ...]) -> Captured:
        return Captured(model, args, self, "hooks", None)

    def locate(self, captured: Captured, forced: str | None, model_name: str) -> Site:
        plan = locate(captured.model, captured.args, forced)
        return Site(plan.report, plan.feature_dim, plan.dtype, plan)

    def insert_posterior(
        self, captured: Captured, site: Site, log_sigma_init: float, device: torch.device, head_kind: HeadChoice
    ) -> tuple[fx.GraphModule, Inserted]:
        if head_kind == "layer":
            raise InputError(
                f"head_kind='layer' takes over the layer that makes the latent, and the hooks tier sees "
                f"{site.report.node!r} only as a module's output: pass head_kind='auto' or 'pointwise'"
            )
        return rewrite(captured.model, captured.args, site.detail, log_sigma_init, device)

    def insert_module(
        self, captured: Captured, site: Site, module: nn.Module, device: torch.device, name: str
    ) -> tuple[fx.GraphModule, Inserted]:
        return rewrite(captured.model, captured.args, site.detail, 0.0, device, (module, name))

    def split(self, vae: fx.GraphModule, recipe: Conversion) -> tuple[nn.Module, nn.Module]:
        module = recipe.bottleneck.node
        return HookedEncoder(vae, module), HookedDecoder(vae, module, recipe.input_shape)

    def fold(self, vae: fx.GraphModule, recipe: Conversion, affine: LatentAffine) -> tuple[str | None, str | None]:
        # The model's layers are opaque here: the latent hook runs the map.
        return None, None

    def unfold(self, vae: fx.GraphModule, info: CalibrationInfo, old: LatentAffine) -> None:
        latent_hook(vae, conversion(vae).bottleneck.node).calibration = None

    def place(
        self,
        vae: fx.GraphModule,
        recipe: Conversion,
        affine: LatentAffine,
        name: str,
        *,
        standardize: bool,
        destandardize: bool,
    ) -> None:
        # Nothing is folded in this tier, so the hook always runs both directions of the map.
        vae.add_submodule(name, affine)
        latent_hook(vae, recipe.bottleneck.node).calibration = affine
