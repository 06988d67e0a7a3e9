"""The end of a Gaussian comparison: the AE and each VAE measured alike, on what each is for. Ex-post densities
of the run's training codes (:func:`fxvae.fit_density`), the likelihood (the AE's under each density, paired
sample by sample with the VAEs'), sample, latent and interpolation distances (:func:`fxvae.sample_quality`),
reconstruction in the data's units (:mod:`fxvae.measure.fidelity`), active units, and the downstream uses that labels
allow (:mod:`fxvae.measure.downstream`): the final record's ``"axes"`` and ``"pictures"``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fxvae.analysis.outputs import reconstruction_like
from fxvae.convert import convert
from fxvae.errors import InputError
from fxvae.io.data import to_device
from fxvae.latents.gaussian import posterior
from fxvae.measure import downstream, fidelity
from fxvae.measure.density import coder, codes, fit_density
from fxvae.measure.evaluation import evaluate
from fxvae.measure.quality import sample_quality
from fxvae.measure.sampling import sample
from fxvae.modules import eval_mode, first_tensor
from fxvae.recipe import conversion
from fxvae.study.ledger import rounded
from fxvae.study.loop import Run, is_gaussian
from fxvae.surgery.split import decoder_conditions, split

SUBSET_SEED = 0
"""The held-out subset the axes are measured on does not change with the seeds, as the held-out split does not."""
AXES_SAMPLES = 1000
"""The most held-out samples the axes are measured on (a seeded subset), and the most draws per sample distance:
the kernel two-sample statistic's cost grows with the square of the count."""
AXES_PERMUTATIONS = 100
"""Permutations of each sample distance's test (its p-value resolves 1%)."""
SSIM_SAMPLES = 100
"""The most held-out images SSIM is measured on (the first of the axes' subset): torchmetrics' SSIM in float64
takes about 22 ms per 3x32x32 image on one CPU thread, PSNR almost nothing."""
STRIP_PAIRS, STRIP_STEPS = 4, 8
"""The pictures' interpolation strips: pairs of held-out samples, points per straight line (the ends included)."""
_CHUNK = 256
"""Draws decoded per decoder call."""
GMM_COMPONENTS = 10
"""The gmm density's components (fit_density's default, Ghosh et al. 2020's ex-post GMM)."""


class FinalAxes:
    """What the end of a Gaussian comparison measures on every run, the AE's and each VAE's alike: ex-post
    densities of its training codes, likelihoods, sample and latent distances, interpolations, reconstruction
    in the data's units, active units, and the downstream uses that labels allow (the final record's ``"axes"``
    and ``"pictures"``)."""

    def __init__(self, study: Any, features: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.study, self.features = study, features
        self.kinds = density_kinds(study.options.density, study.warnings, len(study.train))
        self.labels = study.labels
        if "labels" in self.labels and not _importable("sklearn"):
            raise InputError("labels= (the linear probe) needs scikit-learn: pip install 'fxvae[metrics]'")
        if "anomaly_labels" in self.labels and not _importable("torchmetrics"):
            raise InputError("anomaly_labels= (the AUROC) needs torchmetrics: pip install 'fxvae[metrics]'")
        self.fidelity = _importable("torchmetrics")
        if not self.fidelity:
            study.warnings.append("PSNR and SSIM were skipped: they need torchmetrics (pip install 'fxvae[metrics]')")
        test = study.test
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(SUBSET_SEED))
        self.reference = test.batch(order[:AXES_SAMPLES].sort().values)
        self.conditions_at = self._decoder_inputs()

    def describe(self) -> dict[str, Any]:
        """What the config records of the axes: the densities fitted, the caps, the features, the labels."""
        labels, anomalies = self.labels.get("labels"), self.labels.get("anomaly_labels")
        return {
            "densities": list(self.kinds),
            "samples": len(self.reference[0]),
            "ssim_samples": min(SSIM_SAMPLES, len(self.reference[0])),
            "permutations": AXES_PERMUTATIONS,
            "features": _name(self.features) if self.features is not None else None,
            "labels": {"classes": int(labels.train.unique().numel())} if labels is not None else None,
            "anomaly_labels": {"anomalies": int(anomalies.test.sum())} if anomalies is not None else None,
        }

    def _decoder_inputs(self) -> list[int]:
        """Positions, among the model's inputs, of the conditions its decoder takes (none for most models)."""
        example = self.study.example
        if len(example) == 1:
            return []
        home = first_tensor(self.study.ae).device
        vae, _ = convert(self.study.ae, to_device(example, home), bottleneck=self.study.options.bottleneck)
        return decoder_conditions(vae, split(vae)[1], len(example))

    def seconds(self, run: Run, measured: float) -> float:
        """What :meth:`measure` will take, from what the run's last measurement (``measured`` seconds) and epoch
        took: a pass over the training data per density fit (and the probe's), a third of an epoch's forward
        and backward; the AE's nll at final_k per density, final_k times its one-pass measurement."""
        passes = len(self.kinds) + ("labels" in self.labels)
        forward = (run.epoch_seconds[-1] / 3) if run.epoch_seconds else 0.0
        likelihoods = 0.0 if run.begun.is_vae else len(self.kinds) * self.study.options.final_k * measured
        return passes * forward + likelihoods

    def measure(self, run: Run, evaluation: Any, errors: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        """(axes, pictures) of the run at its end; ``evaluation`` is its final one (with per-sample values) and
        ``errors`` its held-out per-sample MSE in eval mode."""
        study, model, vae = self.study, run.model, run.begun.is_vae
        args = to_device(self.reference, study.device)
        x, conditions = args[0], [args[i] for i in self.conditions_at]
        encoder, decoder = coder(model, to_device(study.example, study.device))
        densities = {
            kind: fit_density(model, study.train, kind=kind, components=GMM_COMPONENTS, seed=run.seed)
            for kind in self.kinds
        }
        codes_eval = self._chunked(lambda a: encoder(*a), args)
        held_codes = self._posterior_draws(run, args) if vae else codes_eval
        nll, paired = self._likelihoods(run, evaluation, densities)
        drawn, latent = self._drawn(run, densities, held_codes, conditions, x)
        pairs = torch.randperm(len(x), generator=torch.Generator().manual_seed(run.seed))
        midpoints = self._decoded(
            lambda count, at: decoder((codes_eval[at] + codes_eval[pairs[at]]) / 2, *[c[at] for c in conditions]),
            len(x),
            x,
        )
        axes = {
            **self._fidelity(run, args),
            "nll": nll,
            "samples": {source: self._distance(means, x, run) for source, means in drawn.items()},
            "latent": latent,
            "active_units": evaluation.active_units if vae else _active(codes_eval, evaluation.active_threshold),
            "latent_dims": codes_eval[0].numel(),
            "interpolation": self._distance(midpoints, x, run),
            **self._downstream(run, model, evaluation),
            "paired": {"nll": paired, "mse": _listed(errors)},
            "densities": {kind: density.to_dict() for kind, density in densities.items()},
        }
        shown = study.options.shown
        pictures = {
            "samples": {source: rounded(means[:shown]) for source, means in drawn.items()},
            "interpolation": self._strips(codes_eval, decoder, conditions, x),
        }
        return axes, pictures

    def _likelihoods(
        self, run: Run, evaluation: Any, densities: dict[str, Any]
    ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
        """The nll (value, standard error) and its per-sample values: a VAE's under its prior, from its final
        evaluation; the AE's under each density, at final_k and the run's seed (the same posterior noise as the
        VAEs' of that seed, so that the differences pair sample by sample)."""
        if run.begun.is_vae:
            return {"prior": _estimate(evaluation.nll)}, {"prior": _listed(evaluation.per_sample["nll"])}
        nll, paired = {}, {}
        for kind, density in densities.items():
            measured = evaluate(
                run.model,
                self.study.test,
                likelihood=self.study.likelihood,
                k=self.study.options.final_k,
                seed=run.seed,
                density=density,
                per_sample=True,
            )
            nll[kind], paired[kind] = _estimate(measured.nll), _listed(measured.per_sample["nll"])
        return nll, paired

    def _drawn(
        self,
        run: Run,
        densities: dict[str, Any],
        held_codes: torch.Tensor,
        conditions: list[torch.Tensor],
        x: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Per source (a VAE's prior, each density): as many decoded draws as held-out samples (each with its
        sample's conditions), and the distance of the held-out codes from the source's latent draws."""
        drawn: dict[str, torch.Tensor] = {}
        latent: dict[str, Any] = {}
        sources: dict[str, Any] = ({"prior": None} if run.begun.is_vae else {}) | densities
        n = len(x)
        for index, (source, density) in enumerate(sources.items()):
            generator = torch.Generator().manual_seed(run.seed * 1_000_003 + index)
            drawn[source] = self._decoded(
                lambda count, at, d=density, g=generator: sample(
                    run.model, count, *[c[at] for c in conditions], generator=g, density=d
                ),
                n,
                x,
            )
            z = (
                torch.randn((n, *held_codes.shape[1:]), generator=generator)
                if density is None
                else density.sample(n, generator=generator)
            )
            latent[source] = self._distance(held_codes, z.to(held_codes), run, features=False)
        return drawn, latent

    def _chunked(self, call: Callable[[tuple[Any, ...]], torch.Tensor], args: tuple[Any, ...]) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([call(tuple(a[i : i + _CHUNK] for a in args)) for i in range(0, len(args[0]), _CHUNK)])

    def _decoded(self, decode: Callable[[int, slice], Any], n: int, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's means of ``n`` decoded draws, ``_CHUNK`` to a call (``decode(count, rows)``)."""
        means = []
        with torch.no_grad():
            for i in range(0, n, _CHUNK):
                rows = slice(i, min(i + _CHUNK, n))
                out = decode(rows.stop - rows.start, rows)
                means.append(self.study.likelihood.mean(reconstruction_like(out, x[rows])))
        return torch.cat(means)

    def _posterior_draws(self, run: Run, args: tuple[Any, ...]) -> torch.Tensor:
        """One draw of q(z | x) per held-out sample (a VAE's codes as its prior is meant to match them)."""
        generator = torch.Generator().manual_seed(run.seed)
        draws = []
        with eval_mode(run.model), torch.no_grad():
            for i in range(0, len(args[0]), _CHUNK):
                run.model(*(a[i : i + _CHUNK] for a in args))
                q = posterior(run.model)
                noise = torch.randn(q.mu.shape, generator=generator, dtype=q.mu.dtype).to(q.mu.device)
                draws.append(q.mu + q.log_sigma.exp() * noise)
        return torch.cat(draws)

    def _distance(self, samples: torch.Tensor, reference: torch.Tensor, run: Run, features: bool = True) -> Any:
        if len(reference) < 2:  # one held-out sample: no distance between distributions to measure
            return None
        return sample_quality(
            samples,
            reference,
            features=self.features if features else None,
            max_samples=AXES_SAMPLES,
            permutations=AXES_PERMUTATIONS,
            seed=run.seed,
        ).to_dict()

    def _fidelity(self, run: Run, args: tuple[Any, ...]) -> dict[str, Any]:
        """PSNR (on the axes' held-out subset) and SSIM (on its first SSIM_SAMPLES) of the reconstructions in
        eval mode, and of a Gaussian VAE's with z drawn, for images; the data range is the subset's."""
        x = args[0]
        shape = self.study.options.image_shape
        view = tuple(x.shape) if shape is None or len(shape) < 2 else (len(x), *([1] * (3 - len(shape))), *shape)
        if not self.fidelity or not fidelity.is_image(view) or math.prod(view[1:]) != x[0].numel():
            return {"psnr": None, "ssim": None}
        span = (float(x.min()), float(x.max()))
        psnr, ssim = {}, {}
        for mode in ("eval", "sampled"):
            if mode == "sampled" and not is_gaussian(run):
                psnr[mode] = ssim[mode] = None
                continue
            with eval_mode(run.model):
                if mode == "sampled":
                    run.model.get_submodule(str(conversion(run.model).reparameterize)).train()
                recon = self._decoded(lambda count, at: run.model(*(a[at] for a in args)), len(x), x)
            recon, images = recon.reshape(view), x.reshape(view)
            psnr[mode] = fidelity.psnr(recon, images, data_range=span)
            ssim[mode] = fidelity.ssim(recon[:SSIM_SAMPLES], images[:SSIM_SAMPLES], data_range=span)
        return {"psnr": psnr, "ssim": ssim if ssim["eval"] is not None else None}

    def _downstream(self, run: Run, model: nn.Module, evaluation: Any) -> dict[str, Any]:
        """The linear probe's accuracy on the codes (``labels``), the AUROC of the per-sample score
        (``anomaly_labels``): the AE's reconstruction term, a VAE's nll."""
        found: dict[str, Any] = {"probe": None, "auroc": None, "auroc_score": None}
        labels = self.labels.get("labels")
        if labels is not None:
            train = codes(model, self.study.train).flatten(1).cpu()
            test = codes(model, self.study.test).flatten(1).cpu()
            found["probe"] = _estimate(downstream.linear_probe(train, labels.train, test, labels.test))
        anomalies = self.labels.get("anomaly_labels")
        if anomalies is not None:
            score = "nll" if run.begun.is_vae else "recon"
            found["auroc"] = downstream.auroc(evaluation.per_sample[score], anomalies.test)
            found["auroc_score"] = score
        return found

    def _strips(
        self, codes_eval: torch.Tensor, decoder: Any, conditions: list[torch.Tensor], x: torch.Tensor
    ) -> list[Any]:
        """Decoded straight lines between pairs of held-out codes, STRIP_STEPS points each."""
        pairs = min(STRIP_PAIRS, len(codes_eval) // 2)
        t = torch.linspace(0, 1, STRIP_STEPS, dtype=codes_eval.dtype, device=codes_eval.device)
        strips = []
        with torch.no_grad():
            for p in range(pairs):
                a, b = codes_eval[2 * p], codes_eval[2 * p + 1]
                line = (1 - t).view(-1, *[1] * a.dim()) * a + t.view(-1, *[1] * a.dim()) * b
                shared = [c[2 * p].expand(STRIP_STEPS, *c.shape[1:]) for c in conditions]
                like = x[2 * p].expand(STRIP_STEPS, *x.shape[1:])
                strips.append(rounded(self.study.likelihood.mean(reconstruction_like(decoder(line, *shared), like))))
        return strips


def density_kinds(density: tuple[str, ...] | None, warned: list[str], codes: int) -> tuple[str, ...]:
    """The densities to fit: those named, or gaussian and gmm (where scikit-learn imports and the ``codes``
    training samples are enough for its components), checked before any training."""
    sklearn = _importable("sklearn")
    if density is not None:
        if "gmm" in density and not sklearn:
            raise InputError("density='gmm' needs scikit-learn: pip install 'fxvae[metrics]', or density=('gaussian',)")
        if "gmm" in density and codes < GMM_COMPONENTS:
            raise InputError(
                f"density='gmm' fits {GMM_COMPONENTS} components to the {codes} training samples' codes, which are "
                "too few: pass more training data, or density=('gaussian',)"
            )
        return density
    if sklearn and codes >= GMM_COMPONENTS:
        return ("gaussian", "gmm")
    why = "it needs scikit-learn (pip install 'fxvae[metrics]')" if not sklearn else f"{codes} training samples"
    why += "" if not sklearn else f" are too few for its {GMM_COMPONENTS} components"
    warned.append(f"the gmm density was skipped: {why}; only the gaussian one was fitted")
    return ("gaussian",)


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _name(features: Callable[..., Any]) -> str:
    """The features' name as :func:`fxvae.sample_quality` records it."""
    return getattr(features, "__name__", None) or type(features).__name__


def _estimate(value: Any) -> dict[str, float]:
    return {"value": value.value, "stderr": value.stderr}


def _listed(values: torch.Tensor) -> list[float]:
    """Per-sample values for the record (6 decimals: far below any difference a standard error resolves)."""
    return [round(v, 6) for v in values.detach().double().cpu().tolist()]


def _active(codes_eval: torch.Tensor, threshold: float) -> int:
    """An AE's active units, as evaluate counts a VAE's: latent elements whose code varies over the held-out
    data by more than ``threshold`` (Burda et al. 2015)."""
    return int((codes_eval.flatten(1).double().var(0) > threshold).sum())
