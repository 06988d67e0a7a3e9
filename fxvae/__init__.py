"""fxvae: turn a trained PyTorch autoencoder into a variational autoencoder in one call.

>>> vae, kl = fxvae.convert(ae, x)
>>> loss = F.mse_loss(vae.train()(x), x) + kl()
"""

from __future__ import annotations

from fxvae.analysis.bottleneck import Bottleneck, Candidate
from fxvae.convert import convert, find_bottleneck
from fxvae.errors import (
    BottleneckError,
    CallbackError,
    CheckpointError,
    FxvaeError,
    InputError,
    KLError,
    RewriteError,
    TraceError,
)
from fxvae.io.checkpoints import convert_checkpoint, load, load_ae_state_dict, save
from fxvae.io.onnx import export_onnx
from fxvae.latents.configs import FSQ, VQ, Gaussian
from fxvae.latents.gaussian import DiagonalGaussian, KLDivergence, Reparameterize, posterior
from fxvae.latents.quantize import FiniteScalarQuantize, Quantized, QuantizerLoss, VectorQuantize, quantized
from fxvae.latents.tokens import detokenize, split_tokens, tokenize
from fxvae.measure import likelihoods
from fxvae.measure.density import Density, fit_density
from fxvae.measure.evaluation import Estimate, Evaluation, evaluate
from fxvae.measure.quality import SampleQuality, sample_quality
from fxvae.measure.sampling import sample
from fxvae.ops import kl_divergence
from fxvae.recipe import CalibrationInfo, Conversion, Options, QuantizerInfo, conversion
from fxvae.study.compare import compare
from fxvae.study.comparison import Comparison
from fxvae.surgery.calibration import calibrate
from fxvae.surgery.split import split
from fxvae.version import VERSION as __version__

__all__ = [
    "FSQ",
    "VQ",
    "Bottleneck",
    "BottleneckError",
    "CalibrationInfo",
    "CallbackError",
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
    "Gaussian",
    "InputError",
    "KLDivergence",
    "KLError",
    "Options",
    "Quantized",
    "QuantizerInfo",
    "QuantizerLoss",
    "Reparameterize",
    "RewriteError",
    "SampleQuality",
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
    "likelihoods",
    "load",
    "load_ae_state_dict",
    "posterior",
    "quantized",
    "sample",
    "sample_quality",
    "save",
    "split",
    "split_tokens",
    "tokenize",
]
