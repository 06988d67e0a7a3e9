"""``metrics.jsonl`` records made by hand, for the tests of the report's words and pictures.

>>> from fxvae.study import ledger
>>> ledger.comparison_of(records({"scratch": [[40, 24]]})).final_values("scratch")
[24.0]
"""

from __future__ import annotations

import math
from typing import Any

from fxvae.measure.evaluation import Estimate, Evaluation


def evaluation(value: float, kind: str = "vae", kl_per_dim: tuple[float, ...] = ()) -> dict[str, Any]:
    """A measurement whose ranked value (the -ELBO of a VAE, the distortion of a quantised model, the AE's
    reconstruction term) is ``value``."""
    v = Estimate(float(value), 0.1)
    if kind == "ae":
        result = Evaluation("ae", 10, 1, "bernoulli", 0, 64, recon=v)
    elif kind == "vae":
        kl = Estimate(sum(kl_per_dim), 0.0)
        active = sum(k > 0.01 for k in kl_per_dim)
        result = Evaluation(
            "vae", 10, 1, "bernoulli", 0, 64, recon=v, kl=kl, neg_elbo=v, kl_per_dim=kl_per_dim, active_units=active
        )
    else:
        kl = Estimate(5.0, 0.0)
        result = Evaluation(
            kind, 10, 1, "bernoulli", 0, 64, recon=v, kl=kl, neg_elbo=Estimate(value + 5.0, 0.1), rate_bits=7.2,
            perplexity=3.0 + value / 10, codes_used=0.5,
        )  # fmt: skip
    return result.to_dict()


def records(
    curves: dict[str, list[list[float]]],
    *,
    finals: dict[str, list[float]] | None = None,
    fields: dict[tuple[str, int], dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    latent: str = "gaussian",
    final: bool = True,
) -> list[dict[str, Any]]:
    """A config line, an epoch line per start, seed and epoch with the given value, then (``final``) a final
    line per run: its value from ``finals`` (start -> one per seed; by default the curve's last value), with
    the extra ``fields`` of that (start, seed) (``mse``, ``model_file``, ``samples``, ...)."""
    options = {"starts": list(curves), "k": 8, "final_k": 100, "latent": latent}
    lines: list[dict[str, Any]] = [{"type": "config", "model": "AE", "options": options, **(config or {})}]
    fields = fields or {}

    def kind(start: str) -> str:
        return "ae" if start == "ae" else "vae" if latent == "gaussian" else latent

    for start, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            for epoch, value in enumerate(curve):
                lines.append(
                    {
                        "type": "epoch",
                        "start": start,
                        "seed": seed,
                        "epoch": epoch,
                        "step": 10 * epoch,
                        "train_loss": None,
                        "seconds": float(epoch),
                        "eval": evaluation(value, kind(start)),
                    }
                )
    if final:
        for start, seeds in curves.items():
            for seed, curve in enumerate(seeds):
                value = finals[start][seed] if finals and start in finals else curve[-1]
                extra = dict(fields.get((start, seed), {}))
                kl_per_dim = tuple(extra.pop("kl_per_dim", ()))
                lines.append(
                    {
                        "type": "final",
                        "start": start,
                        "seed": seed,
                        "epoch": len(curve) - 1,
                        "eval": evaluation(value, kind(start), kl_per_dim),
                        "steps_per_s": None,
                        **extra,
                    }
                )
    return lines


# --- the AE against its VAEs -----------------------------------------------------------------------------------

HELD_OUT = 40
"""Held-out samples of the hand-made per-sample values."""

SCENARIO: dict[str, dict[str, Any]] = {
    "ae": {
        "mse": 0.010,
        "nll": {"gaussian": 30.0, "gmm": 26.0},
        "samples": {"gaussian": 0.050, "gmm": 0.020},
        "latent": {"gaussian": 0.010, "gmm": 0.005},
        "interpolation": 0.060,
        "active_units": 8,
        "steps_per_s": 100.0,
    },
    "scratch": {
        "mse": 0.020,
        "sampled": 0.030,
        "nll": {"prior": 27.0},
        "samples": {"prior": 0.030, "gmm": 0.025},
        "latent": {"prior": 0.010, "gmm": 0.008},
        "interpolation": 0.035,
        "active_units": 5,
        "steps_per_s": 90.0,
    },
    "warm": {
        "mse": 0.012,
        "sampled": 0.016,
        "nll": {"prior": 25.8},
        "samples": {"prior": 0.021, "gmm": 0.012},
        "latent": {"prior": 0.040, "gmm": 0.006},
        "interpolation": 0.030,
        "active_units": 7,
        "steps_per_s": 90.0,
    },
    "calibrated": {
        "mse": 0.011,
        "sampled": 0.015,
        "nll": {"prior": 24.5},
        "samples": {"prior": 0.019, "gmm": 0.018},
        "latent": {"prior": 0.020, "gmm": 0.006},
        "interpolation": 0.031,
        "active_units": 7,
        "steps_per_s": 90.0,
    },
}
"""What each start measured (the AE: per density kind; a VAE: from its prior and from an ex-post gmm). A VAE
gains sampling, a likelihood and a smoother latent, and costs MSE and step rate; warm's samples are closer from
its ex-post gmm than from its prior."""


def _centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def per_sample(value: float, spread: float, model: int) -> list[float]:
    """``HELD_OUT`` values with mean ``value``: a part every model shares (how hard each held-out sample is), of
    sd about ``spread``, and a small part of the model's own, so that paired differences are far more precise
    than unpaired ones.

    >>> values = per_sample(25.0, 3.0, 1)
    >>> len(values), round(sum(values) / len(values), 9)
    (40, 25.0)
    """
    shared = _centred([spread * math.sin(1.7 * i) for i in range(HELD_OUT)])
    own = _centred([0.02 * spread * math.sin(2.9 * i + model) for i in range(HELD_OUT)])
    return [value + s + o for s, o in zip(shared, own, strict=True)]


def distance(value: float, stderr: float = 0.002) -> dict[str, Any]:
    """A ``SampleQuality.to_dict()`` of distance ``value``."""
    return {
        "distance": {"value": value, "stderr": stderr},
        "p_value": 0.01,
        "features": "the data, flattened",
        "n_samples": 500,
        "n_reference": HELD_OUT,
    }


def _estimate(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return {"value": mean, "stderr": sd / math.sqrt(len(values))}


def axes_fields(start: str, measured: dict[str, Any], seed: int = 0, *, pictures: bool = True) -> dict[str, Any]:
    """The final record's ``mse``, ``steps_per_s``, ``axes`` and ``pictures`` of one run, from one entry of
    :data:`SCENARIO` (values shifted by 1% per seed, so that seeds differ)."""
    shift = 1 + 0.01 * seed
    model = list(SCENARIO).index(start) if start in SCENARIO else 9
    nll_values = {k: per_sample(v * shift, 3.0, model) for k, v in measured["nll"].items()}
    mse_values = per_sample(measured["mse"] * shift, measured["mse"] / 2, model)
    axes: dict[str, Any] = {
        "psnr": measured.get("psnr"),
        "ssim": measured.get("ssim"),
        "nll": {k: _estimate(v) for k, v in nll_values.items()},
        "samples": {k: distance(v * shift) for k, v in measured["samples"].items()},
        "latent": {k: distance(v * shift) for k, v in measured["latent"].items()},
        "active_units": measured["active_units"],
        "latent_dims": 8,
        "interpolation": distance(measured["interpolation"] * shift),
        "probe": measured.get("probe"),
        "auroc": measured.get("auroc"),
        "auroc_score": measured.get("auroc_score"),
        "paired": {"nll": nll_values, "mse": mse_values},
        "densities": {k: {"kind": k} for k in measured["samples"] if k != "prior"},
    }
    fields: dict[str, Any] = {
        "mse": {"eval": sum(mse_values) / HELD_OUT, "sampled": measured.get("sampled")},
        "steps_per_s": measured["steps_per_s"],
        "axes": axes,
    }
    if pictures:
        # A signal of 16 steps per sample: a ramp whose slope tells the sources apart.
        fields["pictures"] = {
            "samples": {k: [[j * (i + 1) / 16 for j in range(16)] for i in range(3)] for k in measured["samples"]},
            "interpolation": [[[(j / 16) * (t / 4) for j in range(16)] for t in range(5)] for _ in range(2)],
        }
    return fields


def ae_vs_vae_records(
    seeds: int = 1, changes: dict[str, dict[str, Any]] | None = None, *, pictures: bool = True, **kwargs: Any
) -> list[dict[str, Any]]:
    """The records of a comparison of every start of :data:`SCENARIO` (with ``changes`` merged into each
    start's entry) under ``seeds`` seeds, with the final records' AE-against-VAE keys.

    >>> from fxvae.study import ledger
    >>> [m.name for m in ledger.comparison_of(ae_vs_vae_records()).models()]
    ['ae + gaussian', 'ae + gmm', 'scratch', 'warm', 'calibrated']
    """
    scenario = {start: {**measured, **(changes or {}).get(start, {})} for start, measured in SCENARIO.items()}
    curves = {"ae": [[1.0, 0.9]] * seeds, "scratch": [[40.0, 27.5]] * seeds}
    curves |= {"warm": [[30.0, 26.0]] * seeds, "calibrated": [[26.0, 24.6]] * seeds}
    fields = {
        (start, seed): axes_fields(start, measured, seed, pictures=pictures)
        for start, measured in scenario.items()
        for seed in range(seeds)
    }
    return records(curves, fields=fields, **kwargs)
