"""Small autoencoders that every test reuses, one per shape of the conversion problem.

Each entry knows how to build the model, an example batch, and what the bottleneck must be.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class MLPSigmoid(nn.Module):
    """z = sigmoid(W y + b): the seed answer's own example."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Sigmoid())
        self.dec = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class ConvFlatLinear(nn.Module):
    """conv -> flatten -> linear latent -> linear -> unflatten -> transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)
        )
        self.dec = nn.Sequential(
            nn.Linear(10, 4 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (4, 4, 4)),
            nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class ConvLatent(nn.Module):
    """A C x H x W latent from a strided conv, decoded by transposed convs."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(8, 2, 3, stride=2, padding=1)
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(2, 8, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


class PooledLatent(nn.Module):
    """conv -> relu -> max-pool latent: the log-sigma branch must replay the pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.dec = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.pool(F.relu(self.conv(x))))


class TupleOutput(nn.Module):
    """Returns (reconstruction, latent)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(20, 4)
        self.dec = nn.Linear(4, 20)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.tanh(self.enc(x))
        return self.dec(z), z


class DictOutput(nn.Module):
    """Returns a dict with the reconstruction, the latent and an input statistic."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(20, 12), nn.GELU(), nn.Linear(12, 5))
        self.dec = nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.Linear(12, 20))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.enc(x)
        return {"recon": self.dec(z), "z": z, "input_norm": x.norm(dim=1)}


@dataclass
class AEOutput:
    recon: torch.Tensor
    z: torch.Tensor


class DataclassOutput(nn.Module):
    """Returns a plain dataclass: symbolic_trace would rebuild it as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 3)
        self.dec = nn.Linear(3, 16)

    def forward(self, x: torch.Tensor) -> AEOutput:
        z = self.enc(x)
        return AEOutput(recon=torch.sigmoid(self.dec(z)), z=z)


@dataclass
class ModelOutputLike(OrderedDict):
    """The shape of transformers' ModelOutput: a dataclass that is also an ordered dict."""

    recon: torch.Tensor | None = None
    latent: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                self[field.name] = value


class ShapeControlFlow(nn.Module):
    """Branches on shapes and iterates over sizes: symbolic_trace fails, torch.export takes over.

    Also returns a ModelOutput-like class and has dropout and batch-norm, whose train/eval behaviour
    must survive the export path.
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(24, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.to_latent = nn.Linear(16, 6)
        self.dec = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 24))

    def forward(self, x: torch.Tensor) -> ModelOutputLike:
        if x.dim() == 3:
            x = x.flatten(1)
        flat = x.reshape(x.shape[0], int(torch.tensor(x.shape[1:]).prod()))
        for _ in range(len(self.enc)):
            pass
        z = self.to_latent(self.enc(flat))
        return ModelOutputLike(recon=self.dec(z).reshape(x.shape), latent=z)


class TiedWeights(nn.Module):
    """The decoder reuses the encoder's weight, transposed."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(32, 16)
        self.to_code = nn.Linear(16, 6)
        self.out_bias = nn.Parameter(torch.zeros(16))
        self.out = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.to_code(torch.relu(self.hidden(x))))
        h = torch.relu(F.linear(z, self.to_code.weight.t(), self.out_bias))
        return self.out(h)


class NormDropoutNearBottleneck(nn.Module):
    """Linear -> BatchNorm -> Sigmoid latent, dropout right before it."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Dropout(0.2), nn.Linear(20, 7), nn.BatchNorm1d(7))
        self.dec = nn.Sequential(nn.Dropout(0.1), nn.Linear(7, 20), nn.ReLU(), nn.Linear(20, 30))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.sigmoid(self.enc(x)))


class Conditional(nn.Module):
    """A conditional AE: the label goes straight to the decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 4))
        self.embed = nn.Embedding(10, 3)
        self.dec = nn.Sequential(nn.Linear(4 + 3, 16), nn.ReLU(), nn.Linear(16, 40))

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        return self.dec(torch.cat([z, self.embed(label)], dim=1))


class FunctionalLinear(nn.Module):
    """Raw parameters and F.linear instead of modules."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(12, 24) * 0.2)
        self.b1 = nn.Parameter(torch.zeros(12))
        self.w2 = nn.Parameter(torch.randn(5, 12) * 0.2)
        self.b2 = nn.Parameter(torch.zeros(5))
        self.w3 = nn.Parameter(torch.randn(24, 5) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.elu(F.linear(x, self.w1, self.b1))
        z = F.linear(h, self.w2, self.b2)
        return F.linear(z, self.w3)


class SqueezeExcite(nn.Module):
    """A conv AE with a squeeze-and-excitation gate: the gate is narrow but bypassed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 8, 1))
        self.conv2 = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = h * torch.sigmoid(self.gate(h))
        return self.dec(self.conv2(h))


class EncodeDecode(nn.Module):
    """A 1-d conv AE with encode/decode methods, returning (reconstruction, latent)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv1d(2, 8, 5, stride=2, padding=2), nn.GELU(), nn.Conv1d(8, 4, 5, stride=2, padding=2)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose1d(4, 8, 4, stride=2, padding=1), nn.GELU(), nn.ConvTranspose1d(8, 2, 4, 2, 1)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


class TokenAttention(nn.Module):
    """Self-attention over tokens with a residual, then a per-token linear latent."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, 3)
        self.up = nn.Linear(3, dim)
        self.out = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        return self.out(F.relu(self.up(self.down(h))))


class Recurrent(nn.Module):
    """LSTM encoder's last hidden state -> latent -> repeated into an LSTM decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.LSTM(3, 16, batch_first=True)
        self.to_z = nn.Linear(16, 4)
        self.from_z = nn.Linear(4, 16)
        self.dec = nn.LSTM(16, 16, batch_first=True)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.enc(x)
        z = self.to_z(h[-1])
        y, _ = self.dec(self.from_z(z).unsqueeze(1).repeat(1, x.shape[1], 1))
        return self.out(y)


class WeightNormLatent(nn.Module):
    """The latent layer is parametrized (weight norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(20, 10), nn.Tanh(), nn.utils.parametrizations.weight_norm(nn.Linear(10, 3)))
        self.dec = nn.Linear(3, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.enc(x)))


class QuantisedLatent(nn.Module):
    """A sigmoid latent rounded with a straight-through estimator before decoding."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(20, 5)
        self.dec = nn.Linear(5, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(self.enc(x))
        return self.dec(z + (torch.round(z * 4) / 4 - z).detach())


class UNet(nn.Module):
    """A skip connection carries the full-resolution input around the narrow middle."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2, 1, 4, stride=2, padding=1)
        self.mix = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat([x, self.up(self.down(x))], dim=1))


class ValueControlFlow(nn.Module):
    """Branches on a tensor value: neither tracer can follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(8, 2)
        self.dec = nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        if z.sum() > 0:
            z = z * 2
        return self.dec(z)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], tuple[Any, ...]]
    """Example positional arguments for a given batch size."""
    bottleneck: str
    """fx node name the automatic search must pick."""
    layer: str
    """Module path of the layer seeding the mu head."""
    latent_shape: tuple[int, ...]
    tracer: str = "fx"


def _randn(*shape: int) -> Callable[[int], tuple[Any, ...]]:
    return lambda b: (torch.randn(b, *shape),)


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("mlp_sigmoid", MLPSigmoid, _randn(64), "enc_3", "enc.2", (8,)),
    ZooEntry("conv_flat_linear", ConvFlatLinear, _randn(1, 8, 8), "enc_3", "enc.3", (10,)),
    ZooEntry("conv_latent", ConvLatent, _randn(3, 8, 8), "enc_2", "enc.2", (2, 2, 2)),
    ZooEntry("pooled_latent", PooledLatent, _randn(1, 8, 8), "pool", "conv", (2, 4, 4)),
    ZooEntry("tuple_output", TupleOutput, _randn(20), "tanh", "enc", (4,)),
    ZooEntry("dict_output", DictOutput, _randn(20), "enc_2", "enc.2", (5,)),
    ZooEntry("dataclass_output", DataclassOutput, _randn(16), "enc", "enc", (3,)),
    ZooEntry("shape_control_flow", ShapeControlFlow, _randn(4, 6), "linear_1", "to_latent", (6,), "export"),
    ZooEntry("tied_weights", TiedWeights, _randn(32), "relu_1", "to_code", (6,)),
    ZooEntry("norm_dropout", NormDropoutNearBottleneck, _randn(30), "sigmoid", "enc.3", (7,)),
    ZooEntry(
        "conditional",
        Conditional,
        lambda b: (torch.randn(b, 40), torch.randint(0, 10, (b,))),
        "enc_2",
        "enc.2",
        (4,),
    ),
    ZooEntry("functional_linear", FunctionalLinear, _randn(24), "linear_1", "w2", (5,)),
    ZooEntry("squeeze_excite", SqueezeExcite, _randn(1, 8, 8), "conv2", "conv2", (4, 2, 2)),
    ZooEntry("encode_decode", EncodeDecode, _randn(2, 32), "encoder_2", "encoder.2", (4, 8)),
    ZooEntry("token_attention", TokenAttention, _randn(7, 4), "down", "down", (7, 3)),
    ZooEntry("recurrent", Recurrent, _randn(6, 3), "to_z", "to_z", (4,)),
    ZooEntry("weight_norm_latent", WeightNormLatent, _randn(20), "tanh", "enc.2", (3,)),
    ZooEntry("quantised_latent", QuantisedLatent, _randn(20), "sigmoid", "enc", (5,)),
)

BY_NAME: dict[str, ZooEntry] = {entry.name: entry for entry in ZOO}


def build(entry: ZooEntry, seed: int = 0) -> nn.Module:
    """The entry's model with deterministic weights, in eval mode."""
    torch.manual_seed(seed)
    return entry.build().eval()
