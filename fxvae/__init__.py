"""fxvae: turn a trained PyTorch autoencoder into a variational autoencoder in one call.

>>> import fxvae
>>> vae, kl = fxvae.convert(autoencoder, example_batch)
>>> loss = reconstruction_loss(vae(x), x) + kl()
"""

from __future__ import annotations

from fxvae.api import Conversion, conversion, convert, load_ae_state_dict, posterior
from fxvae.bottleneck import Bottleneck, Candidate, find_bottleneck
from fxvae.errors import BottleneckError, CheckpointError, FxvaeError, KLError, RewriteError, TraceError
from fxvae.io import convert_checkpoint, load, save
from fxvae.latent import DiagonalGaussian, KLDivergence, Reparameterize
from fxvae.onnx import export_onnx
from fxvae.ops import kl_divergence
from fxvae.split import sample, split

__version__ = "0.1.0"

__all__ = [
    "Bottleneck",
    "BottleneckError",
    "Candidate",
    "CheckpointError",
    "Conversion",
    "DiagonalGaussian",
    "FxvaeError",
    "KLDivergence",
    "KLError",
    "Reparameterize",
    "RewriteError",
    "TraceError",
    "__version__",
    "conversion",
    "convert",
    "convert_checkpoint",
    "export_onnx",
    "find_bottleneck",
    "kl_divergence",
    "load",
    "load_ae_state_dict",
    "posterior",
    "sample",
    "save",
    "split",
]
