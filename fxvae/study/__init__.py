"""The study layer: train the AE's VAE beside one trained from scratch, and report (``fxvae.compare``).

- :mod:`fxvae.study.compare`: the call, from data to report;
- :mod:`fxvae.study.starts`: where each start begins (warm, calibrated, scratch, the AE itself);
- :mod:`fxvae.study.loop`: the one training loop every start runs;
- :mod:`fxvae.study.axes`: the end of every run, the AE's and each VAE's measured alike (densities, likelihood,
  samples, latent, reconstruction, downstream use); :mod:`fxvae.study.labels`: the labels those downstream uses read;
- :mod:`fxvae.study.samples`: the data as indexable samples (the same batches for every start);
- :mod:`fxvae.study.ledger`: ``metrics.jsonl``, written as it happens and read back; :mod:`fxvae.study.tracking`:
  each epoch's record also to TensorBoard and the user's callbacks;
- :mod:`fxvae.study.comparison`: the result, :class:`Comparison`: what it measured (:mod:`fxvae.study.records`)
  and what it says: the report (:mod:`fxvae.study.report`), which VAE start (:mod:`fxvae.study.verdict`), the AE
  against its VAEs (:mod:`fxvae.study.ae_vs_vae`) and the pictures (:mod:`fxvae.study.plots`);
- :mod:`fxvae.study.options`: the options, shared with the command line.
"""

from __future__ import annotations

from fxvae.study.comparison import Comparison
from fxvae.study.ledger import read
from fxvae.study.options import CompareOptions
from fxvae.study.records import Point, RunRecord
from fxvae.study.samples import Samples
from fxvae.study.tracking import scalars

__all__ = ["CompareOptions", "Comparison", "Point", "RunRecord", "Samples", "read", "scalars"]
