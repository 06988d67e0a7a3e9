"""The result of :func:`fxvae.compare`: what the comparison measured (:mod:`fxvae.study.records`) and what it says,
as a report (:mod:`fxvae.study.report`), verdicts (:mod:`fxvae.study.verdict` for which VAE start,
:mod:`fxvae.study.ae_vs_vae` for the AE against its VAEs) and pictures (:mod:`fxvae.study.plots`).

Imports flow one way, from here down: the records know nothing of what is said about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fxvae.study import plots, report, verdict
from fxvae.study.ae_vs_vae import AeVsVae, Axis, Difference, Measured, Model
from fxvae.study.records import Records


class Comparison(Records):
    """The result of :func:`fxvae.compare`: per start and seed, the held-out curves and final measurements.

    ``to_markdown()`` is the report, ``plot(dir)`` writes its pictures, ``epochs_to_within()`` says how fast each
    start gets close to scratch's final -ELBO, ``final_values(start)`` are the table's final values (what the
    verdict quotes) and ``best()`` is the run that ends lowest (its ``model_file`` loads with ``fxvae.load``).
    ``ae_vs_vae_table()`` and ``ae_vs_vae_verdict()`` compare the AE against its VAEs on the same axes.

    >>> starts = ("ae", "scratch", "warm", "calibrated")
    >>> result = fxvae.compare(ae, torch.randn(120, 64), starts=starts, epochs=1, k=1, final_k=2, progress=False)
    >>> result.starts, len(result.runs)
    (['ae', 'scratch', 'warm', 'calibrated'], 4)
    >>> vaes = [s for s in result.starts if s != "ae"]  # the AE's value is its reconstruction term, not a -ELBO
    >>> result.best().final_objective == min(v for s in vaes for v in result.final_values(s))
    True
    """

    def verdict(self) -> list[str]:
        """Sentences computed from the table's numbers: what the warm starts buy against scratch, the price of
        the latent, the best run's model file, and what to trust (:func:`fxvae.study.verdict.verdict`).

        >>> Comparison({}, []).verdict()
        []
        """
        return verdict.verdict(self)

    def to_markdown(self, figures: Sequence[str] = ()) -> str:
        """The report: warnings, the AE against its VAEs (where the records measured it, with its pictures among
        ``figures``), what was run, the table of starts, its verdict, and the other ``figures`` (file names)
        (:func:`fxvae.study.report.markdown`).

        >>> Comparison({"model": "MLP"}, []).to_markdown().splitlines()[0]
        "# MLP: the AE's VAE against one trained from scratch"
        """
        return report.markdown(self, figures)

    def plot(self, directory: str | Path) -> list[Path]:
        """Write the report's pictures as PNGs in ``directory`` (matplotlib: the ``plot`` extra); their paths
        (:func:`fxvae.study.plots.plot_all`)."""
        return plots.plot_all(self, Path(directory))

    # --- AE against VAE (fxvae.study.ae_vs_vae) ---------------------------------------------------------

    def models(self) -> list[Model]:
        """The AE-vs-VAE table's rows: the AE with each density it was measured with, then each VAE start
        (:meth:`fxvae.study.ae_vs_vae.AeVsVae.models`).

        >>> Comparison({}, []).models()
        []
        """
        return AeVsVae(self).models()

    def ex_post_kind(self) -> str | None:
        """The density the VAEs' second samples column draws from (:meth:`fxvae.study.ae_vs_vae.AeVsVae.ex_post_kind`).

        >>> Comparison({}, []).ex_post_kind() is None
        True
        """
        return AeVsVae(self).ex_post_kind()

    def measured(self, model: Model, axis: Axis) -> dict[int, Measured]:
        """Per seed: ``model``'s value on ``axis`` (:meth:`fxvae.study.ae_vs_vae.AeVsVae.measured`)."""
        return AeVsVae(self).measured(model, axis)

    def difference(self, a: Model, b: Model, axis: Axis) -> Difference | None:
        """``a - b`` on ``axis`` over the seeds both have, with its standard error
        (:meth:`fxvae.study.ae_vs_vae.AeVsVae.difference`)."""
        return AeVsVae(self).difference(a, b, axis)

    def better(self, a: Model, b: Model, axis: Axis) -> bool:
        """Whether ``a`` is better than ``b`` on ``axis`` beyond the standard error of their difference
        (:meth:`fxvae.study.ae_vs_vae.AeVsVae.better`)."""
        return AeVsVae(self).better(a, b, axis)

    def ae_vs_vae_table(self) -> list[dict[str, Any]]:
        """One row per model, a cell bold where it is better than every other row beyond the standard error of
        the difference (:meth:`fxvae.study.ae_vs_vae.AeVsVae.table`).

        >>> Comparison({}, []).ae_vs_vae_table()
        []
        """
        return AeVsVae(self).table()

    def ae_vs_vae_verdict(self) -> list[str]:
        """Sentences computed from the AE-vs-VAE table's numbers: what the VAE gains and costs, then the evidence
        per axis (:meth:`fxvae.study.ae_vs_vae.AeVsVae.verdict`).

        >>> Comparison({}, []).ae_vs_vae_verdict()
        []
        """
        return AeVsVae(self).verdict()
