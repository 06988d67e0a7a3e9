"""fxvae.evaluate's importance-weighted NLL against pythae 0.1.2's get_nll, on the same VAE.

pythae's default MLP VAE (``VAE(VAEConfig(input_dim=(64,), latent_dim=8, reconstruction_loss="bce"))``: 64 -> 512
-> (mu, log_var) 8 -> 512 -> 64, Sigmoid) is trained briefly on scikit-learn's digits (scaled to [0, 1], the
last 200 held out). Its encoder's mu path and its decoder become an AE (their own modules, shared parameters),
converted with ``fxvae.convert``; the VAE's log-sigma head then gets pythae's ``log_var`` layer halved (pythae
parametrises q(z | x) by log sigma^2, fxvae by log sigma), so q(z | x) and p(x | z) (Bernoulli on the Sigmoid's
probabilities, ``likelihood="bernoulli-probs"``, log clamped as ``F.binary_cross_entropy`` clamps it) are the
same in both libraries. Timed in one process, one thread, interleaved (order rotating every repeat):

- fxvae: ``fxvae.evaluate(vae, digits, likelihood="bernoulli-probs", k=K)``, the default call (it also measures
  the ELBO, the KL, active units and the mutual information);
- pythae as users call it: ``model.get_nll(digits, n_samples=K)`` (gradients on, ``batch_size=100``);
- pythae's best: ``with torch.no_grad(): model.get_nll(digits, n_samples=K, batch_size=min(K, 1000))``.

Goals at K = 1000 on 200 held-out digits: fxvae at least 5x faster than pythae as users call it, at least 1.5x
faster than pythae's best, and the two NLLs equal within the paired difference's standard error (per-sample
values: pythae's get_nll on one digit at a time). Also K = 5000, and pythae's MNIST conv VAE
(``pythae.models.nn.benchmarks.mnist``: 1x28x28 -> 1024-channel convs -> 16 -> ConvTranspose2d, Sigmoid;
untrained weights, the cost does not depend on them) on 10 digits upscaled to 28x28 at K = 50; with
fxvae's peak memory (torch's profiler: the most bytes its tensors held at once during one call).

pythae lives in a benchmark-only environment, never a test dependency (its own requirements would pull other
versions of torch and pydantic). pythae.models imports torch, numpy, pydantic (>= 2), cloudpickle, scipy, tqdm and
typing_extensions, which the project's environment already has; ``--no-deps`` keeps pip from touching them:

    python -m venv --system-site-packages /tmp/pythae-env
    echo "torch==2.13.0" > /tmp/pythae-constraints.txt
    /tmp/pythae-env/bin/pip install --no-deps -c /tmp/pythae-constraints.txt pythae==0.1.2
    OMP_NUM_THREADS=1 /tmp/pythae-env/bin/python benchmarks/pythae_iwae.py --threads 1 [--repeats 5]
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from fxvae.measure.bench import _Memory, interleave  # noqa: E402

GOAL_USERS, GOAL_BEST = 5.0, 1.5
START, END = "<!-- pythae:start -->", "<!-- pythae:end -->"


class PythaeAE(nn.Module):
    """pythae's encoder (its mu path) and decoder as an autoencoder, made of their own modules."""

    def __init__(self, layers: nn.Module, embedding: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.layers, self.embedding, self.decoder = layers, embedding, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.embedding(self.layers(x)))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return data[:-200], data[-200:]


def mlp_case() -> tuple[Any, nn.Module, torch.Tensor]:
    """pythae's default MLP VAE, trained briefly on the digits, and the fxvae VAE with its q(z | x) and p(x | z)."""
    from pythae.models import VAE, VAEConfig

    train, test = digits()
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(64,), latent_dim=8, reconstruction_loss="bce"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        for batch in train[torch.randperm(len(train))].split(64):
            loss = model({"data": batch}).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    encoder, decoder = model.encoder, model.decoder
    ae = PythaeAE(nn.Sequential(*encoder.layers), encoder.embedding, nn.Sequential(*decoder.layers))
    return model, _vae(ae, encoder.log_var, train[:2]), test


def conv_case() -> tuple[Any, nn.Module, torch.Tensor]:
    """pythae's MNIST conv VAE (untrained), on 10 digits upscaled to 1x28x28."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST

    _, test = digits()
    images = F.interpolate(test[:10].view(-1, 1, 8, 8), size=(28, 28), mode="bilinear").clamp(0, 1)
    torch.manual_seed(0)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder_Conv_VAE_MNIST(config), decoder=Decoder_Conv_AE_MNIST(config)).eval()
    encoder, decoder = model.encoder, model.decoder
    decoding = _ConvDecoder(decoder.layers[0], nn.Sequential(*decoder.layers[1:]))
    ae = PythaeAE(nn.Sequential(*encoder.layers, nn.Flatten()), encoder.embedding, decoding)
    return model, _vae(ae, encoder.log_var, images[:2]), images


class _ConvDecoder(nn.Module):
    """pythae's Decoder_Conv_AE_MNIST.forward: its first layer (fc), a reshape to 1024x4x4, the others."""

    def __init__(self, fc: nn.Module, deconv: nn.Module) -> None:
        super().__init__()
        self.fc, self.deconv = fc, deconv

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).reshape(z.shape[0], 1024, 4, 4))


def _vae(ae: nn.Module, log_var: nn.Linear, example: torch.Tensor) -> nn.Module:
    vae, _ = fxvae.convert(ae.eval(), example, bottleneck="embedding")
    head = vae.get_submodule("log_sigma_head")
    with torch.no_grad():
        head.weight.copy_(log_var.weight / 2)
        head.bias.copy_(log_var.bias / 2)
    return vae.eval()


def pythae_per_sample(model: Any, data: torch.Tensor, k: int) -> torch.Tensor:
    """pythae's NLL of each sample (get_nll on one sample at a time returns that sample's log p)."""
    with torch.no_grad():
        torch.manual_seed(1)
        return torch.tensor(
            [-model.get_nll(data[i : i + 1], n_samples=k, batch_size=min(k, 1000)) for i in range(len(data))]
        )


def where_the_time_goes(vae: nn.Module, data: torch.Tensor, k: int) -> dict[str, float]:
    """Shares of fxvae.evaluate's self CPU time, from torch's profiler: the decoder's matmuls and activations,
    the Bernoulli log-likelihood, the noise, the rest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fxvae.evaluate(vae, data, likelihood="bernoulli-probs", k=k)
    groups = {
        "decoder matmuls (addmm, mm)": ("aten::addmm", "aten::mm", "aten::mkldnn_convolution", "aten::convolution"),
        "decoder activations (relu, sigmoid)": ("aten::clamp_min", "aten::relu", "aten::sigmoid"),
        "Bernoulli log p(x | z) (log, log1p, clamp)": ("aten::log", "aten::log1p", "aten::clamp"),
        "noise (counter-based normals)": ("aten::__rshift__", "aten::bitwise_xor", "aten::cos", "aten::sin_"),
    }
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {name: sum(e.self_cpu_time_total for e in events if e.key in ops) / total for name, ops in groups.items()}
    shares["everything else"] = 1 - sum(shares.values())
    shares["total_s"] = total / 1e6
    return shares


def steps(model: Any, vae: nn.Module, data: torch.Tensor, k: int) -> list[Callable[[], None]]:
    def ours() -> None:
        fxvae.evaluate(vae, data, likelihood="bernoulli-probs", k=k)

    def users() -> None:
        model.get_nll(data, n_samples=k, batch_size=100)

    def best() -> None:
        with torch.no_grad():
            model.get_nll(data, n_samples=k, batch_size=min(k, 1000))

    return [ours, users, best]


def run(repeats: int) -> list[dict[str, Any]]:
    mlp_model, mlp_vae, mlp_test = mlp_case()
    conv_model, conv_vae, conv_test = conv_case()
    rows = []
    for name, model, vae, data, k in [
        ("pythae default MLP 64-512-8, 200 digits", mlp_model, mlp_vae, mlp_test, 1000),
        ("pythae default MLP 64-512-8, 200 digits", mlp_model, mlp_vae, mlp_test, 5000),
        ("pythae MNIST conv VAE, 10 digits at 1x28x28", conv_model, conv_vae, conv_test, 50),
    ]:
        ours_nll = fxvae.evaluate(vae, data, likelihood="bernoulli-probs", k=k, per_sample=True).per_sample["nll"]
        theirs_nll = pythae_per_sample(model, data, k)
        difference = ours_nll - theirs_nll
        with _Memory(torch.device("cpu")) as memory:
            fxvae.evaluate(vae, data, likelihood="bernoulli-probs", k=k)
        profile = where_the_time_goes(vae, data, k)
        timed = interleave(steps(model, vae, data, k), repeats=repeats, calls=1)
        ours, users, best = (t.wall for t in timed)
        row = {
            "model": name,
            "n": len(data),
            "k": k,
            "fxvae_s": statistics.median(ours),
            "users_s": statistics.median(users),
            "best_s": statistics.median(best),
            "vs_users": statistics.median(u / o for o, u in zip(ours, users, strict=True)),
            "vs_best": statistics.median(b / o for o, b in zip(ours, best, strict=True)),
            "vs_users_cpu": statistics.median(u / o for o, u in zip(timed[0].cpu, timed[1].cpu, strict=True)),
            "vs_best_cpu": statistics.median(b / o for o, b in zip(timed[0].cpu, timed[2].cpu, strict=True)),
            "fxvae_nll": ours_nll.mean().item(),
            "pythae_nll": theirs_nll.mean().item(),
            "difference": difference.mean().item(),
            "difference_se": difference.std().item() / math.sqrt(len(data)),
            "fxvae_peak_mib": memory.peak_mib,
            "fxvae_profile": profile,
        }
        rows.append(row)
        print(
            f"{name}, k={k}: fxvae {row['fxvae_s']:.3f} s, pythae as called {row['users_s']:.3f} s "
            f"({row['vs_users']:.2f}x), pythae no_grad batch {min(k, 1000)} {row['best_s']:.3f} s "
            f"({row['vs_best']:.2f}x); NLL {row['fxvae_nll']:.4f} vs {row['pythae_nll']:.4f}, paired difference "
            f"{row['difference']:+.4f} +- {row['difference_se']:.4f}; fxvae peak {memory.peak_mib:.1f} MiB",
            flush=True,
        )
    return rows


def markdown(data: dict[str, Any]) -> str:
    lines = [
        START,
        "## The IWAE NLL against pythae's get_nll",
        "",
        f"{provenance(data)} Wall seconds of one call, median of {data['repeats']} interleaved repeats; each "
        "speed-up is the median of the per-repeat ratios (on CPU time in brackets). pythae 0.1.2 runs in a "
        "benchmark-only environment (`benchmarks/pythae_iwae.py` gives the commands: a `--system-site-packages` "
        "venv, `pip install --no-deps -c constraints pythae==0.1.2` with `torch==2.13.0` in the constraints "
        "file). Both libraries measure one VAE: pythae's, its encoder and decoder loaded into fxvae with the "
        "log-sigma head set to pythae's log-variance layer halved. NLLs in nats per digit; the difference is "
        "paired per sample, with its standard error. The environment, exactly as measured:",
        "",
        "```bash",
        "python -m venv --system-site-packages /tmp/pythae-env",
        'echo "torch==2.13.0" > /tmp/pythae-constraints.txt',
        "/tmp/pythae-env/bin/pip install --no-deps -c /tmp/pythae-constraints.txt pythae==0.1.2",
        "OMP_NUM_THREADS=1 /tmp/pythae-env/bin/python benchmarks/pythae_iwae.py --threads 1 --repeats 5",
        "```",
        "",
        "`pythae.models` imports torch, numpy, pydantic (>= 2), cloudpickle, scipy, tqdm and typing_extensions, "
        "all in fxvae's own environment here, so `--no-deps` leaves them as they are; imageio (its samplers) and "
        "the trainers' extras are not needed. pythae is never a test dependency.",
        "",
        "| model | k | fxvae (s) | pythae as called (s) | pythae no_grad, batch min(k, 1000) (s) | vs as called | "
        "vs no_grad | NLL fxvae | NLL pythae | difference | fxvae peak MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['k']} | {r['fxvae_s']:.3f} | {r['users_s']:.3f} | {r['best_s']:.3f} | "
            f"{r['vs_users']:.2f}x ({r['vs_users_cpu']:.2f}x) | {r['vs_best']:.2f}x ({r['vs_best_cpu']:.2f}x) | "
            f"{r['fxvae_nll']:.4f} | {r['pythae_nll']:.4f} | {r['difference']:+.4f} ± {r['difference_se']:.4f} | "
            f"{r['fxvae_peak_mib']:.1f} |"
        )
    goal = data["rows"][0]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in goal["fxvae_profile"].items() if name != "total_s")
    decoder = sum(share for name, share in goal["fxvae_profile"].items() if name.startswith("decoder"))
    cut = max(0.0, 1 - goal["users_s"] / GOAL_USERS / goal["fxvae_s"])
    lines += [
        "",
        f"Goals at k = 1000 on the digits: at least {GOAL_USERS:.0f}x pythae as called "
        f"({'met' if goal['vs_users'] >= GOAL_USERS else 'missed'}: {goal['vs_users']:.2f}x) and at least "
        f"{GOAL_BEST}x its best ({'met' if goal['vs_best'] >= GOAL_BEST else 'missed'}: {goal['vs_best']:.2f}x). "
        "pythae decodes one sample's draws per call (100 or 1000 rows) and runs the encoder once per draw; fxvae "
        "encodes each batch once and decodes its draws in cache-sized chunks (the rule of the chunk sweep above), "
        "its sums in float64. Where fxvae's time goes at k = 1000 (self CPU time of one call under torch's "
        f"profiler, {goal['fxvae_profile']['total_s']:.2f} s, profiler included): {shares}. At 5x, fxvae would "
        f"take {goal['users_s'] / GOAL_USERS:.3f} s, {cut:.0%} less than now; the decoder's matmuls and "
        f"activations are {decoder:.0%} of its time, so the rest (the likelihood, the noise, the log densities "
        f"and sums) would have to shrink by {cut / (1 - decoder):.0%}: fxvae/measure/likelihoods.py and noise.py, "
        "outside this benchmark's change.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("pythae_iwae", __doc__, repeats=5)
    args = parser.parse_args()
    recorded("pythae_iwae", args, lambda: run(args.repeats), markdown, (START, END))


if __name__ == "__main__":
    main()
