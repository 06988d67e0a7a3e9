"""How many posterior draws should one decoder call decode? The chunk rule of ``fxvae.evaluate``, measured.

``fxvae.evaluate(vae, data, k=K)`` takes the K draws of each batch in blocks of about 2^18 reconstruction
elements (``CHUNK_ELEMENTS``: the likelihood and the sums run once per block) and by default decodes a block in
calls sized by the decoder's work: as many rows (draws of one sample) per call as keep the decoder's largest
activation within ``fxvae.measure.evaluation.CACHE_BYTES`` (2 MiB, and at least ``MIN_ROWS`` = 64 rows), the
largest activation per row coming from shape propagation on the split decoder's graph (``chunk_rows``). This
script sweeps the rows per decoder call from 8 to 8192 on three decoders, by setting ``CACHE_BYTES`` to rows x
the decoder's bytes per row, and times the whole ``fxvae.evaluate`` call at each, interleaved; beside them the
rule's own pick and the previous rule (one decoder call per block, ``chunk=`` draws of the whole batch). Target: the
rule's pick within 10% of the best swept time.

Decoders (untrained weights: the cost does not depend on them):

- pythae's default MLP on scikit-learn's digits: 64 -> 512 -> 8 -> 512 -> 64, Sigmoid (Bernoulli-probs), 200 digits;
- benchmarks/models.py's ``conv_ae`` on 64 random 3x32x32 images (Gaussian, sigma 0.1);
- a 1-d conv codec (``CodecAE(8, (2, 4, 4), latent=8)``: 1x2048 in, 8x64 latent) on 64 random signals.

Run: python benchmarks/iwae_chunk_sweep.py --threads 1 [--repeats 5]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from benchmarks.models import CodecAE, conv_ae  # noqa: E402
from fxvae.measure import evaluation  # noqa: E402
from fxvae.measure.bench import interleave  # noqa: E402

TARGET = 1.10
ROWS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
START, END = "<!-- chunk-sweep:start -->", "<!-- chunk-sweep:end -->"


def pythae_mlp() -> nn.Module:
    """pythae 0.1.2's default VAE architecture for 64 inputs and 8 latents, as an AE (mu only)."""
    return nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 8), nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 64), nn.Sigmoid()
    )


def cases() -> list[tuple[str, nn.Module, torch.Tensor, int, dict[str, Any]]]:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = torch.tensor(load_digits().data[-200:], dtype=torch.float32) / 16.0
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    signals = torch.rand(64, 1, 2048, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gaussian = {"likelihood": "gaussian", "sigma": 0.1}
    return [
        ("pythae MLP 64-512-8 (200 digits)", pythae_mlp(), digits, 1000, {"likelihood": "bernoulli-probs"}),
        ("conv_ae (64 x 3x32x32)", conv_ae(), images, 16, gaussian),
        ("1-d conv codec (64 x 1x2048)", CodecAE(8, (2, 4, 4), latent=8), signals, 16, gaussian),
    ]


def call(
    vae: nn.Module, data: torch.Tensor, k: int, options: dict[str, Any], budget: int | None, chunk: int | None
) -> Callable[[], None]:
    """One evaluate call: with ``budget``, decoder calls of ``budget`` bytes of the largest activation (no floor
    of rows), with ``chunk`` that many draws a call (the previous rule), with neither the rule's own pick."""

    def evaluate() -> None:
        saved = evaluation.CACHE_BYTES, evaluation.MIN_ROWS
        if budget is not None:
            evaluation.CACHE_BYTES, evaluation.MIN_ROWS = budget, 1
        try:
            fxvae.evaluate(vae, data, k=k, chunk=chunk, **options)
        finally:
            evaluation.CACHE_BYTES, evaluation.MIN_ROWS = saved

    return evaluate


def run(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, ae, data, k, options in cases():
        vae, _ = fxvae.convert(ae.eval(), data[:2])
        encoder, decoder = fxvae.split(vae)
        with torch.no_grad():
            mu, _ = encoder(data[:1])
        row_bytes = evaluation._largest_row_bytes(decoder, mu, [])
        pick = evaluation.chunk_rows(decoder, mu, [])
        old_chunk = max(1, evaluation.CHUNK_ELEMENTS // data.numel())
        budgets = [r * row_bytes for r in ROWS] + [None]
        steps = [call(vae, data, k, options, b, None) for b in budgets] + [call(vae, data, k, options, None, old_chunk)]
        # The numbers do not depend on the chunk (up to float64 rounding of the merged logsumexps).
        by_rule = fxvae.evaluate(vae, data, k=k, per_sample=True, **options).per_sample["nll"]
        by_old = fxvae.evaluate(vae, data, k=k, chunk=old_chunk, per_sample=True, **options).per_sample["nll"]
        torch.testing.assert_close(by_rule, by_old, rtol=1e-9, atol=1e-9)
        timed = interleave(steps, repeats=repeats, calls=1)
        seconds = [statistics.median(t.cpu) for t in timed]
        swept = dict(zip(ROWS, seconds[: len(ROWS)], strict=True))
        best_rows = min(swept, key=swept.get)
        rule_s, old_s = seconds[len(ROWS)], seconds[len(ROWS) + 1]
        row = {
            "model": name,
            "k": k,
            "n": len(data),
            "row_bytes": row_bytes,
            "rule_rows": pick,
            "swept_s": {str(r): s for r, s in swept.items()},
            "best_rows": best_rows,
            "best_s": swept[best_rows],
            "rule_s": rule_s,
            "old_rule_rows": old_chunk * len(data),
            "old_rule_s": old_s,
            "rule_vs_best": rule_s / swept[best_rows],
            "old_vs_best": old_s / swept[best_rows],
        }
        rows.append(row)
        sweep = ", ".join(f"{r}: {s:.3f}" for r, s in swept.items())
        print(
            f"{name}: largest activation {row_bytes} B/row; swept (rows: s) {sweep}; rule {pick} rows {rule_s:.3f} s "
            f"({row['rule_vs_best']:.3f}x best); previous rule {row['old_rule_rows']} rows {old_s:.3f} s "
            f"({row['old_vs_best']:.3f}x best)",
            flush=True,
        )
    return rows


def markdown(data: dict[str, Any]) -> str:
    header = " | ".join(f"{r} rows" for r in ROWS)
    lines = [
        START,
        "## How many draws per decoder call? (the IWAE chunk rule)",
        "",
        f"{provenance(data)} CPU seconds of one whole `fxvae.evaluate` call, median of {data['repeats']} "
        "interleaved repeats, at each number of rows (draws of one sample) per decoder call; the rule's pick "
        "(`CACHE_BYTES` = 2 MiB over the decoder's largest activation per row, at least `MIN_ROWS` = 64 rows) "
        "against the best swept time. "
        f"Target: at most {TARGET:.2f}x the best.",
        "",
        f"| decoder | k | bytes/row | {header} | rule: rows, s | rule / best | previous rule: rows, s "
        "| previous / best |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in ROWS) + " | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        cells = " | ".join(f"**{s:.3f}**" if int(n) == r["best_rows"] else f"{s:.3f}" for n, s in r["swept_s"].items())
        lines.append(
            f"| {r['model']} | {r['k']} | {r['row_bytes']} | {cells} | {r['rule_rows']}, {r['rule_s']:.3f} | "
            f"{r['rule_vs_best']:.3f} | {r['old_rule_rows']}, {r['old_rule_s']:.3f} | {r['old_vs_best']:.3f} |"
        )
    worst = max(r["rule_vs_best"] for r in data["rows"])
    lines += [
        "",
        f"The rule's pick is at most {worst:.3f}x the best swept time ({'meets' if worst <= TARGET else 'misses'} "
        f"the {TARGET:.2f}x target). The draws are taken in blocks of about 2^18 reconstruction elements (the "
        "likelihood and the sums run once per block), and a block is decoded in calls of the rule's rows: fewer "
        "than a batch's samples for a conv decoder, several draws of the batch for the MLP. Where the previous "
        "rule gives the same rows as the rule, the two columns differ by this machine's noise alone. The "
        "numbers do not depend on the chunk: each sample's draws are keyed by its index and the draw's. Where "
        "the decoder has no graph (the hooks tier) the previous rule (`CHUNK_ELEMENTS`, 2^18 output elements "
        "per call) stays; on a GPU too, where wide calls pay.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("iwae_chunk_sweep", __doc__, repeats=5)
    args = parser.parse_args()
    recorded("iwae_chunk_sweep", args, lambda: run(args.repeats), markdown, (START, END))


if __name__ == "__main__":
    main()
