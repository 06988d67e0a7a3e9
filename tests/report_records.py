"""``metrics.jsonl`` records made by hand, for the tests of the report's words and pictures.

>>> from fxvae.study import ledger
>>> ledger.comparison_of(records({"scratch": [[40, 24]]})).final_values("scratch")
[24.0]
"""

from __future__ import annotations

from typing import Any

from fxvae.evaluation import Estimate, Evaluation


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
