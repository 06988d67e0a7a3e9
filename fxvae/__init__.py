"""fxvae: turn a trained PyTorch autoencoder into a variational autoencoder in one call.

>>> vae, kl = fxvae.convert(ae, x)
>>> loss = F.mse_loss(vae.train()(x), x) + kl()
"""

from __future__ import annotations

from fxvae.bottleneck import Bottleneck, Candidate
from fxvae.calibration import calibrate
from fxvae.convert import convert, find_bottleneck
from fxvae.errors import (
    BottleneckError,
    CheckpointError,
    FxvaeError,
    InputError,
    KLError,
    RewriteError,
    TraceError,
)
from fxvae.io import convert_checkpoint, load, load_ae_state_dict, save
from fxvae.latent import DiagonalGaussian, KLDivergence, Reparameterize
from fxvae.onnx import export_onnx
from fxvae.ops import kl_divergence
from fxvae.recipe import CalibrationInfo, Conversion, Options, conversion, posterior
from fxvae.split import sample, split
from fxvae.version import VERSION as __version__

__all__ = [
    "Bottleneck",
    "BottleneckError",
    "CalibrationInfo",
    "Candidate",
    "CheckpointError",
    "Conversion",
    "DiagonalGaussian",
    "FxvaeError",
    "InputError",
    "KLDivergence",
    "KLError",
    "Options",
    "Reparameterize",
    "RewriteError",
    "TraceError",
    "__version__",
    "calibrate",
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
