"""Ex-post densities on a model's codes: the AE as a generative model (Ghosh et al. 2020, "From Variational to
Deterministic Autoencoders"; Dai & Wipf 2019), and a VAE's aggregate posterior.

```
data --[codes: the AE's code at the bottleneck fxvae finds / a VAE's posterior mean]--> z_1 .. z_n
z_1 .. z_n --[fit_density: a Gaussian (maximum likelihood) or a GMM (scikit-learn)]--> Density p(z)
Density --[sample]--> z --[the decoder of fxvae.split]--> x          (fxvae.sample(..., density=))
```
A calibrated conversion already treats the AE's codes as Gaussian: its prior N(0, I) is the Gaussian fit of the
codes, standardised. A :class:`Density` is the same latent machinery with the fit kept as it is (full covariance,
or a mixture), so the AE's decoder can be sampled from and given a likelihood (:func:`fxvae.evaluate`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae.errors import BottleneckError, InputError
from fxvae.io.data import batches, check_batch, to_device
from fxvae.modules import eval_mode, first_tensor, input_count, owned_copy
from fxvae.progress import bar
from fxvae.recipe import META_KEY, Conversion, unwrap

Kind = Literal["gaussian", "gmm"]
REG_COVAR = 1e-6
"""Added to every covariance's diagonal: scikit-learn's ``reg_covar`` default, so a one-component GMM equals
the Gaussian fit, and a code set in a subspace still has a density."""
_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True, eq=False)
class Density:
    """A mixture of full-covariance Gaussians on a flattened latent of ``latent_shape`` (float64).

    ``weights [C]``, ``means [C, D]``, ``covariances [C, D, D]``, D = prod(latent_shape); ``n`` is the number
    of codes it was fitted on (0 for one built by hand) and ``input_shape`` the per-sample shape of the data
    they came from (what :func:`fxvae.sample` builds an AE's decoder with).

    >>> density = fxvae.Density("gaussian", 1, (2,), 0, torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None])
    >>> density.log_prob(torch.zeros(3, 2))
    tensor([-1.8379, -1.8379, -1.8379], dtype=torch.float64)
    >>> density.sample(4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 2])
    """

    kind: Kind
    components: int
    latent_shape: tuple[int, ...]
    n: int
    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "gmm"):
            raise InputError(f"Density kind={self.kind!r} is not 'gaussian' or 'gmm'")
        dims = math.prod(self.latent_shape)
        count = self.components
        for name, shape in (("weights", (count,)), ("means", (count, dims)), ("covariances", (count, dims, dims))):
            value = torch.as_tensor(getattr(self, name), dtype=torch.float64).cpu()
            if tuple(value.shape) != shape:
                raise InputError(
                    f"Density {name} has shape {list(value.shape)}, but {count} component(s) on a latent of "
                    f"shape {list(self.latent_shape)} need {list(shape)}: pass tensors of those shapes"
                )
            object.__setattr__(self, name, value)
        if bool((self.weights < 0).any()) or abs(self.weights.sum().item() - 1) > 1e-6:
            raise InputError(f"Density weights {self.weights.tolist()} must be non-negative and sum to 1")
        object.__setattr__(self, "latent_shape", tuple(self.latent_shape))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(self.input_shape))

    @functools.cached_property
    def _cholesky(self) -> torch.Tensor:
        factor, info = torch.linalg.cholesky_ex(self.covariances)
        if bool((info != 0).any()):
            raise InputError(
                f"Density covariance {int(info.nonzero()[0])} is not positive definite: pass symmetric positive "
                "definite covariances (fxvae.fit_density adds 1e-6 to the diagonal for that)"
            )
        return factor

    @property
    def dims(self) -> int:
        return math.prod(self.latent_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) per sample, in float64 on ``z``'s device, for ``z`` of shape [N, *latent_shape]."""
        if tuple(z.shape[1:]) != self.latent_shape:
            raise InputError(
                f"the codes have shape {list(z.shape)}, but the density is on latents of shape "
                f"{list(self.latent_shape)}: pass codes of shape [batch, {', '.join(map(str, self.latent_shape))}]"
            )
        flat = z.reshape(len(z), self.dims).double()
        factor, means, offset = self._on(flat.device)
        centred = (flat[None] - means[:, None]).transpose(1, 2)  # [C, D, N]
        whitened = torch.linalg.solve_triangular(factor, centred, upper=False)
        return torch.logsumexp(offset[:, None] - 0.5 * whitened.pow(2).sum(1), 0)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Cholesky factors, means, log w_c - 1/2 log det(2 pi S_c)) on ``device``, kept per device: evaluate
        calls log_prob once per chunk of draws."""
        if device not in self._devices:
            factor = self._cholesky
            log_det = 2 * torch.log(torch.diagonal(factor, dim1=1, dim2=2)).sum(1)
            offset = torch.log(self.weights) - 0.5 * (log_det + self.dims * _LOG_2PI)
            self._devices[device] = (factor.to(device), self.means.to(device), offset.to(device))
        return self._devices[device]

    @functools.cached_property
    def _devices(self) -> dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return {}

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """``n`` draws of shape [n, *latent_shape]: a component by its weight, then its Gaussian (drawn on the
        CPU with ``generator``, or the global generator, in float64; returned in ``dtype`` on ``device``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InputError(f"n={n!r} must be a non-negative integer (how many draws)")
        if n == 0:
            return torch.zeros((0, *self.latent_shape), dtype=dtype, device=device)
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dims, 1, generator=generator, dtype=torch.float64)
        z = self.means[component] + (self._cholesky[component] @ eps).squeeze(-1)
        return z.reshape(n, *self.latent_shape).to(dtype=dtype, device=device)

    def marginal_variance(self) -> torch.Tensor:
        """The variance of each flattened latent element under the density (the mixture's, not a component's).

        >>> density = fxvae.Density("gaussian", 1, (2,), 0, torch.ones(1), torch.zeros(1, 2), 3 * torch.eye(2)[None])
        >>> density.marginal_variance()
        tensor([3., 3.], dtype=torch.float64)
        """
        second = (self.weights[:, None] * (torch.diagonal(self.covariances, dim1=1, dim2=2) + self.means.pow(2))).sum(0)
        return second - (self.weights[:, None] * self.means).sum(0).pow(2)

    def describe(self) -> str:
        """What the density is and what it was fitted on, in words.

        >>> fxvae.Density("gmm", 2, (1,), 3600, torch.ones(2) / 2, torch.zeros(2, 1), torch.ones(2, 1, 1)).describe()
        'gmm (2 components, full covariance) on 3,600 codes'
        """
        if self.kind == "gaussian":
            what = "gaussian (full covariance)"
        else:
            plural = "" if self.components == 1 else "s"
            what = f"{self.kind} ({self.components} component{plural}, full covariance)"
        return f"{what} on {self.n:,} codes" if self.n else f"{what}, set by hand"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record; :meth:`from_dict` reads it back.

        >>> density = fxvae.Density("gaussian", 1, (2,), 5, torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None])
        >>> fxvae.Density.from_dict(density.to_dict()).to_dict() == density.to_dict()
        True
        """
        return {
            "kind": self.kind,
            "components": self.components,
            "latent_shape": list(self.latent_shape),
            "n": self.n,
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Density:
        values = dict(data)
        for name in ("weights", "means", "covariances"):
            values[name] = torch.tensor(values[name], dtype=torch.float64)
        values["latent_shape"] = tuple(values["latent_shape"])
        return cls(**values)


def fit_density(
    model: nn.Module,
    data: Any,
    *,
    kind: Kind = "gaussian",
    components: int = 10,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Density:
    """Fit a density to ``model``'s codes on ``data``: an AE's codes at the bottleneck fxvae finds (every capture
    tier), a VAE's posterior means (see :func:`codes`).

    ``kind="gaussian"``: the maximum-likelihood mean and full covariance (divided by n) plus 1e-6 I.
    ``kind="gmm"``: scikit-learn's ``GaussianMixture`` with ``components`` full-covariance components (k-means
    start, ``random_state=seed``, the same 1e-6 on the diagonal), so one component equals the Gaussian fit.
    ``data`` is read as :func:`fxvae.evaluate` reads it; ``progress`` shows a bar over it.

    >>> density = fxvae.fit_density(ae, torch.randn(256, 64))
    >>> density.describe(), density.latent_shape
    ('gaussian (full covariance) on 256 codes', (8,))
    """
    if kind not in ("gaussian", "gmm"):
        raise InputError(f"kind={kind!r} is not a density fit_density knows: pass 'gaussian' or 'gmm'")
    if not isinstance(components, int) or isinstance(components, bool) or components < 1:
        raise InputError(f"components={components!r} must be a positive integer (the GMM's components)")
    found, input_shape = _codes(model, data, batch_size, progress)
    flat = found.reshape(len(found), -1).double().cpu()
    count = len(flat)
    if count < 2:
        raise InputError(f"fit_density needs at least 2 codes, got {count}: pass more data")
    latent_shape = tuple(found.shape[1:])
    if kind == "gaussian":
        mean = flat.mean(0)
        centred = flat - mean
        covariance = centred.T @ centred / count + REG_COVAR * torch.eye(flat.shape[1], dtype=torch.float64)
        return Density("gaussian", 1, latent_shape, count, torch.ones(1), mean[None], covariance[None], input_shape)
    if components > count:
        raise InputError(
            f"components={components} is more than the {count} codes in the data: a mixture cannot have more "
            "components than codes; pass more data or a smaller components"
        )
    mixture = _gaussian_mixture(components, seed).fit(flat.numpy())
    return Density(
        "gmm",
        components,
        latent_shape,
        count,
        torch.from_numpy(mixture.weights_),
        torch.from_numpy(mixture.means_),
        torch.from_numpy(mixture.covariances_),
        input_shape,
    )


def _gaussian_mixture(components: int, seed: int) -> Any:
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as err:
        raise InputError("fit_density(kind='gmm') needs scikit-learn: pip install 'fxvae[metrics]'") from err
    return GaussianMixture(components, covariance_type="full", reg_covar=REG_COVAR, random_state=seed)


def codes(model: nn.Module, data: Any, *, batch_size: int | None = None) -> torch.Tensor:
    """The codes of ``data``, shape [N, *latent_shape], in data order: an AE's latent at the bottleneck fxvae
    finds, a VAE's posterior mean mu (a calibrated VAE's standardised one).

    They are computed in eval mode without gradients; the model's mode, its parameters and buffers and the
    global random state are left as they were. A VQ or FSQ model, or a model with no bottleneck, is an
    :class:`~fxvae.InputError`.

    >>> fxvae.measure.density.codes(ae, torch.randn(10, 64)).shape
    torch.Size([10, 8])
    """
    return _codes(model, data, batch_size, False)[0]


def _codes(model: nn.Module, data: Any, batch_size: int | None, progress: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    if not isinstance(model, nn.Module):
        raise InputError(f"the model is a {type(model).__name__}, not a torch.nn.Module")
    inner = unwrap(model)
    count = input_count(inner)
    reference = first_tensor(inner)
    device = reference.device if reference is not None else torch.device("cpu")
    data = list(data) if isinstance(data, Iterator) else data
    total = math.ceil(len(data) / (batch_size or 256)) if isinstance(data, torch.Tensor) else None
    found: list[torch.Tensor] = []
    encoder, input_shape = None, None
    cuda = [device.index or 0] if device.type == "cuda" else []
    shown_bar = bar("reading the codes", total, enabled=progress)
    with torch.random.fork_rng(devices=cuda), torch.no_grad(), shown_bar as shown:
        for index, args in enumerate(batches(data, count, batch_size=batch_size)):
            if not args or not isinstance(args[0], torch.Tensor) or len(args[0]) == 0:
                continue
            args = to_device(args, device)
            if encoder is None:
                input_shape = tuple(args[0].shape[1:])
                encoder, _ = coder(model, args)
            check_batch(args, input_shape, f"batch {index} of the data")
            with eval_mode(encoder):
                found.append(encoder(*args))
            shown.advance()
    if not found:
        raise InputError("the data is empty: pass at least one sample (a tensor, a Dataset or a DataLoader)")
    return torch.cat(found), input_shape


class _Mean(nn.Module):
    """``encoder(*inputs) -> mu``: the posterior mean alone of a split VAE's encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, *args: Any) -> torch.Tensor:
        return self.encoder(*args)[0]


def coder(model: nn.Module, example_args: tuple[Any, ...]) -> tuple[nn.Module, nn.Module]:
    """``(encoder, decoder)`` of a model's latent: ``encoder(*inputs) -> code`` and ``decoder(z, *conditions)``.

    A VAE made by :func:`fxvae.convert` is split (:func:`fxvae.split`; the code is its posterior mean). An
    autoencoder is converted with ``copy=False`` on a copy of its modules that shares its parameters and
    buffers, so both follow later training of the AE, and the AE itself (its modules, hooks and flags) is
    not touched; ``decoder(encoder(x))`` is then the AE's eval output. ``example_args`` is one batch of the
    model's inputs (the capture needs it).

    >>> encoder, decoder = fxvae.measure.density.coder(ae, (x,))
    >>> torch.allclose(decoder(encoder(x)), ae(x))
    True
    """
    from fxvae.convert import convert
    from fxvae.surgery.split import split

    inner = unwrap(model)
    recipe = inner.meta.get(META_KEY) if isinstance(inner, fx.GraphModule) else None
    if isinstance(recipe, Conversion):
        if recipe.reparameterize is None:
            raise InputError(
                f"{type(model).__name__} has latent={recipe.options.latent.family!r}, no Gaussian posterior whose "
                "means a density can be fitted to; fit the density to the autoencoder or a Gaussian VAE instead"
            )
        encoder, decoder = split(inner)
        return _Mean(encoder), decoder
    # The copy owns its modules (the hooks tier registers a hook on one) in eval mode (the capture runs a
    # forward, which must not move a batch norm's shared running statistics).
    shared = owned_copy(inner, share_tensors=True).eval()
    device = example_args[0].device if isinstance(example_args[0], torch.Tensor) else torch.device("cpu")
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        try:
            vae, _ = convert(shared, example_args, copy=False)
        except BottleneckError as err:
            raise InputError(
                f"{type(model).__name__} has no bottleneck to read codes at ({err}); a density needs the latent: "
                "convert it with fxvae.convert(model, x, bottleneck=...) and fit the density to that VAE"
            ) from err
    encoder, decoder = split(vae)
    return _Mean(encoder), decoder
