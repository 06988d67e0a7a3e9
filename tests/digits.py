"""scikit-learn's 8x8 digits and a small MLP autoencoder trained on them: a real AE for the study tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxvae.examples import DigitsAE  # the architecture ships with fxvae, for the docs' examples

SAMPLES = 400


def digits(samples: int = SAMPLES) -> torch.Tensor:
    """The first ``samples`` digits, flattened, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data[:samples], dtype=torch.float32) / 16.0


def trained_ae(data: torch.Tensor, epochs: int = 15) -> DigitsAE:
    """The AE after ``epochs`` epochs of Bernoulli reconstruction loss (deterministic: seed 0), in eval mode."""
    torch.manual_seed(0)
    ae = DigitsAE()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in data.split(50):
            loss = F.binary_cross_entropy_with_logits(ae(batch), batch, reduction="sum") / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ae.eval()
