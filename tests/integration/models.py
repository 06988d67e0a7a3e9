"""Real third-party autoencoders, small and randomly initialised: the one home of the integration zoo.

Each entry builds a model from its package's own constructor or config class (never ``from_pretrained``:
no downloads), scaled down so that converting it takes seconds on one CPU thread, and states what fxvae's
contract is checked against: the AE's reconstruction (the output leaf ``recon`` picks) and the AE's own
encoder output (``encode``, calling the model's encoder part directly). ``tests/integration`` asserts the
contract on every entry; ``benchmarks/real_models.py`` converts every entry for ``docs/models.md``.

Sizes: every latent is narrower than its input (an autoencoder compresses), and the blocks around the
latent (residual units, attention, weight norm, quantisers) are the package's own, with fewer channels and
stages: the integration module has to stay well under two minutes on two cores.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class RealModel:
    """One third-party autoencoder and how to check fxvae against it."""

    name: str
    """Test id, ``package-model``."""
    package: str
    """Import name; the entry is skipped when it is missing."""
    distribution: str
    """PyPI name, for the version in docs/models.md."""
    field: str
    model: str
    """The class, as the package's users name it."""
    build: Callable[[], nn.Module]
    """A zero-argument factory: same weights on every call (seeded), in eval mode."""
    inputs: Callable[[int], Inputs]
    """Example inputs for a batch size; the same batch size gives the same values."""
    recon: Callable[[Any], torch.Tensor]
    """The reconstruction leaf of the model's output (the VAE returns the same structure)."""
    encode: Callable[[nn.Module, Inputs], torch.Tensor] | None
    """The AE's own encoder output (the latent the VAE's mu must equal), by calling its encoder part."""
    encoder_part: str
    """``encode`` in words, for docs and failure messages."""
    ae_exports_to_onnx: bool
    """Whether ``torch.onnx.export(ae, x, dynamo=True)`` succeeds on the AE itself (checked on torch 2.13)."""
    structure: str
    """The structure around the latent, for the diagnosis in docs/models.md."""
    refuse: bool = False
    """A U-Net: ``fxvae.convert`` must raise BottleneckError (its skips bypass every narrow node)."""


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Random init that repeats: ``fxvae.load`` rebuilds the AE from the same factory."""

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _like_trained(factory()).eval()

    build.__doc__ = factory.__doc__
    return build


def _like_trained(model: nn.Module) -> nn.Module:
    """Give batch norms running statistics, every norm an affine map that is not the identity, and
    zero-initialised codebooks spread-out codes.

    Fresh batch norms are the identity in eval mode (mean 0, variance 1, weight 1, bias 0), which would
    hide a latent taken on the wrong side of one; a trained model's are not. A codebook of zeros (EnCodec's and Mimi's
    before its k-means initialisation) maps every input to one code, so the output ignores the input.
    """
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("embed", "embed_avg", "embed_sum")) and buffer.is_floating_point() and not buffer.any():
                buffer.normal_(0.0, 0.3)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                if getattr(module, "weight", None) is not None:
                    module.weight.uniform_(0.5, 1.5)
                if getattr(module, "bias", None) is not None:
                    module.bias.uniform_(-0.5, 0.5)
    return model


def _randn(*shape: int) -> Callable[[int], Inputs]:
    def inputs(batch: int) -> Inputs:
        return (torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch)),)

    return inputs


def _attr(name: str) -> Callable[[Any], torch.Tensor]:
    def get(out: Any) -> torch.Tensor:
        return out[name] if isinstance(out, dict) else getattr(out, name)

    return get


def _first(out: Any) -> torch.Tensor:
    return out[0]


def _same(out: Any) -> torch.Tensor:
    return out


def _cls(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


# --- medical imaging: MONAI ---------------------------------------------------------------------------


def _monai_autoencoder() -> nn.Module:
    """2-D AutoEncoder with one residual unit per stage: 1x32x32 -> 4x8x8."""
    autoencoder = _cls("monai.networks.nets", "AutoEncoder")
    return autoencoder(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 4), strides=(2, 2), num_res_units=1)


def _monai_unet() -> nn.Module:
    unet = _cls("monai.networks.nets", "UNet")
    return unet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _monai_basic_unet() -> nn.Module:
    basic_unet = _cls("monai.networks.nets", "BasicUNet")
    return basic_unet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))


# --- image generation: diffusers ------------------------------------------------------------------------

_DIFFUSERS_BLOCKS = {
    "down_block_types": ("DownEncoderBlock2D",),
    "up_block_types": ("UpDecoderBlock2D",),
    "block_out_channels": (8,),
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 16,
}


def _diffusers_tiny() -> nn.Module:
    """TAESD-style AutoencoderTiny: 3x16x16 -> 2x8x8, latents rounded to bytes inside forward."""
    tiny = _cls("diffusers", "AutoencoderTiny")
    return tiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=2,
    )


def _diffusers_kl() -> nn.Module:
    """AutoencoderKL (forward uses the posterior's mode by default): 3x16x16 -> 2x16x16."""
    return _cls("diffusers", "AutoencoderKL")(latent_channels=2, **_DIFFUSERS_BLOCKS)


def _diffusers_vq() -> nn.Module:
    """VQModel (VQ-GAN): 3x16x16 -> 2x16x16, nearest of 16 codes."""
    return _cls("diffusers", "VQModel")(latent_channels=2, num_vq_embeddings=16, **_DIFFUSERS_BLOCKS)


def _kl_encode(m: nn.Module, x: Inputs) -> torch.Tensor:
    return m.encode(*x).latent_dist.mode()


# --- audio codecs: transformers, snac -------------------------------------------------------------------


def _encodec() -> nn.Module:
    """EncodecModel: 1x512 samples -> 8x32 frames (hop 16), one residual VQ stage, weight-normed convs."""
    config = _cls("transformers", "EncodecConfig")(
        hidden_size=8, num_filters=4, upsampling_ratios=[4, 4], codebook_size=16, num_lstm_layers=1
    )
    return _cls("transformers", "EncodecModel")(config)


def _dac() -> nn.Module:
    """DacModel (Descript audio codec): 1x512 samples -> 4x32 frames, two residual codebooks."""
    config = _cls("transformers", "DacConfig")(
        encoder_hidden_size=2,
        downsampling_ratios=[16],
        decoder_hidden_size=16,
        n_codebooks=2,
        codebook_size=16,
        codebook_dim=4,
    )
    return _cls("transformers", "DacModel")(config)


def _mimi() -> nn.Module:
    """MimiModel: 1x512 samples -> 16x16 frames (SEANet, a transformer layer, a stride-2 conv), split RVQ."""
    config = _cls("transformers", "MimiConfig")(
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[4, 4],
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=32,
        codebook_size=16,
        codebook_dim=16,
        num_quantizers=2,
        vector_quantization_hidden_dimension=16,
        upsample_groups=16,
        sliding_window=16,
        max_position_embeddings=256,
    )
    return _cls("transformers", "MimiModel")(config)


def _snac() -> nn.Module:
    """SNAC: 1x1024 samples -> 64x8 frames (hop 128), local attention at both ends, 2-scale RVQ.

    LocalMHA has dim // 64 heads, so both ends need at least 64 channels.
    """
    snac = _cls("snac", "SNAC")
    return snac(
        sampling_rate=24000,
        encoder_dim=16,
        encoder_rates=[8, 16],
        decoder_dim=64,
        decoder_rates=[16, 8],
        attn_window_size=4,
        codebook_size=16,
        codebook_dim=4,
        vq_strides=[2, 1],
        noise=False,  # SNAC's noise blocks draw randn in eval mode too: no deterministic output to compare
        depthwise=True,
    )


# --- anomaly detection: PyOD ----------------------------------------------------------------------------


def _pyod() -> nn.Module:
    """PyOD AutoEncoder's torch module: 32 features -> 16 -> 4, LinearBlocks (Linear, ReLU, BN, Dropout)."""
    model = _cls("pyod.models.auto_encoder", "AutoEncoderModel")
    return model(feature_size=32, hidden_neuron_list=[16, 4], dropout_rate=0.2)


MODELS: tuple[RealModel, ...] = (
    RealModel(
        name="monai-AutoEncoder",
        package="monai",
        distribution="monai",
        field="medical imaging",
        model="monai.networks.nets.AutoEncoder",
        build=_seeded(_monai_autoencoder),
        inputs=_randn(1, 32, 32),
        recon=_same,
        encode=lambda m, x: m.intermediate(m.encode(*x)),
        encoder_part="m.intermediate(m.encode(x)) (intermediate is Identity here)",
        ae_exports_to_onnx=True,
        structure=(
            "encoder ends in a ResidualUnit (strided conv -> InstanceNorm -> PReLU, plus a strided 3x3 conv "
            "residual); the latent is the sum"
        ),
    ),
    RealModel(
        name="diffusers-AutoencoderTiny",
        package="diffusers",
        distribution="diffusers",
        field="image generation",
        model="diffusers.AutoencoderTiny",
        build=_seeded(_diffusers_tiny),
        inputs=_randn(3, 16, 16),
        recon=_attr("sample"),
        # VQModel.encode(x) also applies quant_conv, a 1x1 conv of the latent's width that lives outside
        # the `encoder` module: by fxvae's rule (the outermost module's output) it is on the decoder side.
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=True,
        structure=(
            "encoder ends in a plain conv; forward scales the latents, rounds them to uint8 and back "
            "(mul_/round_/byte) before the decoder's tanh(x / 3) * 3 clamp"
        ),
    ),
    RealModel(
        name="diffusers-AutoencoderKL",
        package="diffusers",
        distribution="diffusers",
        field="image generation",
        model="diffusers.AutoencoderKL",
        build=_seeded(_diffusers_kl),
        inputs=_randn(3, 16, 16),
        recon=_attr("sample"),
        encode=_kl_encode,
        encoder_part="m.encode(x).latent_dist.mode()",
        ae_exports_to_onnx=True,
        structure=(
            "encoder ends in a mid block (ResNet, self-attention, ResNet), GroupNorm, SiLU, conv_out to 2C "
            "channels, quant_conv; the latent is the mean half of torch.chunk(moments, 2, dim=1)"
        ),
    ),
    RealModel(
        name="diffusers-VQModel",
        package="diffusers",
        distribution="diffusers",
        field="image generation",
        model="diffusers.VQModel",
        build=_seeded(_diffusers_vq),
        inputs=_randn(3, 16, 16),
        recon=_attr("sample"),
        # VQModel.encode(x) also applies quant_conv, a 1x1 conv of the latent's width that lives outside
        # the `encoder` module: by fxvae's rule (the outermost module's output) it is on the decoder side.
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=True,
        structure=(
            "encoder like AutoencoderKL's (mid-block attention) then quant_conv; decode quantises "
            "(cdist, argmin, embedding, straight-through) and returns a 0-dim commit_loss beside the sample"
        ),
    ),
    RealModel(
        name="transformers-EncodecModel",
        package="transformers",
        distribution="transformers",
        field="audio codec",
        model="transformers.EncodecModel",
        build=_seeded(_encodec),
        inputs=_randn(1, 512),
        recon=_attr("audio_values"),
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=False,
        structure=(
            "SEANet encoder of weight-normed causal convs with shape-computed padding, a residual LSTM, "
            "then a conv; RVQ codes are returned chunk-first (batch is dim 1 of audio_codes)"
        ),
    ),
    RealModel(
        name="transformers-DacModel",
        package="transformers",
        distribution="transformers",
        field="audio codec",
        model="transformers.DacModel",
        build=_seeded(_dac),
        inputs=_randn(1, 512),
        recon=_attr("audio_values"),
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=True,
        structure=(
            "encoder: conv, blocks of residual units (Snake written with reshapes, dilated conv, Snake, 1x1 "
            "conv, shape-computed crop, add) then Snake and a strided conv, then Snake and conv2, all of the "
            "latent's width; the quantiser masks codebooks with torch.full((B,), i) < n (shape-only); the "
            "output is (B, T), not the input's (B, 1, T), beside a per-sample loss"
        ),
    ),
    RealModel(
        name="transformers-MimiModel",
        package="transformers",
        distribution="transformers",
        field="audio codec",
        model="transformers.MimiModel",
        build=_seeded(_mimi),
        inputs=_randn(1, 512),
        recon=_attr("audio_values"),
        encode=lambda m, x: m.encoder(*x).latents,
        encoder_part="m.encoder(x).latents",
        ae_exports_to_onnx=False,
        structure=(
            "SEANet convs, a transformer layer (RoPE, sliding-window attention, layer scale, residual), "
            "a stride-2 conv; the quantiser returns integer codes, the decoder embeds them"
        ),
    ),
    RealModel(
        name="snac-SNAC",
        package="snac",
        distribution="snac",
        field="audio codec",
        model="snac.SNAC",
        build=_seeded(_snac),
        inputs=_randn(1, 1024),
        recon=_first,
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=False,
        structure=(
            "encoder blocks (residual units with TorchScript Snake), LocalMHA (residual windowed attention), "
            "then a depthwise conv with parametrized weight norm; forward pads to a multiple with math.ceil"
        ),
    ),
    RealModel(
        name="pyod-AutoEncoder",
        package="pyod",
        distribution="pyod",
        field="anomaly detection",
        model="pyod.models.auto_encoder.AutoEncoderModel",
        build=_seeded(_pyod),
        inputs=_randn(32),
        recon=_same,
        encode=lambda m, x: m.encoder(*x),
        encoder_part="m.encoder(x)",
        ae_exports_to_onnx=True,
        structure="encoder ends in a LinearBlock: Linear -> BatchNorm1d -> ReLU -> Dropout (eval: identity)",
    ),
    RealModel(
        name="monai-UNet",
        package="monai",
        distribution="monai",
        field="medical imaging",
        model="monai.networks.nets.UNet",
        build=_seeded(_monai_unet),
        inputs=_randn(1, 32, 32),
        recon=_same,
        encode=None,
        encoder_part="-",
        ae_exports_to_onnx=True,
        structure="nested SkipConnection blocks: torch.cat of each stage's input with its subblock's output",
        refuse=True,
    ),
    RealModel(
        name="monai-BasicUNet",
        package="monai",
        distribution="monai",
        field="medical imaging",
        model="monai.networks.nets.BasicUNet",
        build=_seeded(_monai_basic_unet),
        inputs=_randn(1, 32, 32),
        recon=_same,
        encode=None,
        encoder_part="-",
        ae_exports_to_onnx=True,
        structure="four max-pool stages, UpCat decoders concatenating each encoder stage",
        refuse=True,
    ),
)

AUTOENCODERS = tuple(m for m in MODELS if not m.refuse)
UNETS = tuple(m for m in MODELS if m.refuse)
