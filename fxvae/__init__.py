"""fxvae: turn a trained PyTorch autoencoder into a variational autoencoder in one call.

>>> vae, kl = fxvae.convert(ae, x)
>>> loss = F.mse_loss(vae.train()(x), x) + kl()
"""

from __future__ import annotations

from fxvae.bottleneck import Bottleneck, Candidate
from fxvae.calibration import calibrate
from fxvae.convert import convert, find_bottleneck
from fxvae.density import Density, fit_density
from fxvae.errors import (
    BottleneckError,
    CheckpointError,
    FxvaeError,
    InputError,
    KLError,
    RewriteError,
    TraceError,
)
from fxvae.evaluation import Estimate, Evaluation, evaluate
from fxvae.io import convert_checkpoint, load, load_ae_state_dict, save
from fxvae.latent import DiagonalGaussian, KLDivergence, Reparameterize
from fxvae.onnx import export_onnx
from fxvae.ops import kl_divergence
from fxvae.quantize import FiniteScalarQuantize, Quantized, QuantizerLoss, VectorQuantize
from fxvae.recipe import CalibrationInfo, Conversion, Options, QuantizerInfo, conversion, posterior, quantized
from fxvae.split import sample, split
from fxvae.study.compare import compare
from fxvae.study.comparison import Comparison
from fxvae.tokens import detokenize, split_tokens, tokenize
from fxvae.version import VERSION as __version__

__all__ = [
    "Bottleneck",
    "BottleneckError",
    "CalibrationInfo",
    "Candidate",
    "CheckpointError",
    "Comparison",
    "Conversion",
    "Density",
    "DiagonalGaussian",
    "Estimate",
    "Evaluation",
    "FiniteScalarQuantize",
    "FxvaeError",
    "InputError",
    "KLDivergence",
    "KLError",
    "Options",
    "Quantized",
    "QuantizerInfo",
    "QuantizerLoss",
    "Reparameterize",
    "RewriteError",
    "TraceError",
    "VectorQuantize",
    "__version__",
    "calibrate",
    "compare",
    "conversion",
    "convert",
    "convert_checkpoint",
    "detokenize",
    "evaluate",
    "export_onnx",
    "find_bottleneck",
    "fit_density",
    "kl_divergence",
    "load",
    "load_ae_state_dict",
    "posterior",
    "quantized",
    "sample",
    "save",
    "split",
    "split_tokens",
    "tokenize",
]
