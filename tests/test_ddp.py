"""Two-process DistributedDataParallel (gloo, CPU) training of a converted VAE with its KL term."""

from __future__ import annotations

import gc
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import fxvae
from tests.helpers import free_port, gloo_group
from tests.zoo import ZOO, build

ENTRY = next(e for e in ZOO if e.name == "mlp_sigmoid")
WORLD, STEPS, GLOBAL_BATCH = 2, 3, 8
LOG_SIGMA_INIT = -30.0
"""sigma = exp(-30): the sampling noise is far below float32 resolution, so runs are comparable exactly."""


def _data() -> torch.Tensor:
    return torch.randn(GLOBAL_BATCH, 64, generator=torch.Generator().manual_seed(7))


def _train(vae: torch.nn.Module, kl: fxvae.KLDivergence, x: torch.Tensor) -> None:
    opt = torch.optim.SGD(vae.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.mse_loss(vae(x), x) + kl()
        loss.backward()
        opt.step()


def _wrap_train_and_save(rank: int, out: str) -> None:
    torch.manual_seed(rank)
    vae, kl = fxvae.convert(build(ENTRY), ENTRY.inputs(4), log_sigma_init=LOG_SIGMA_INIT)
    ddp = torch.nn.parallel.DistributedDataParallel(vae.train())
    shard = _data().chunk(WORLD)[rank]
    _train(ddp, kl, shard)
    torch.save(vae.state_dict(), Path(out) / f"rank{rank}.pt")


def _worker(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, port, WORLD):
        _wrap_train_and_save(rank, out)
        gc.collect()  # frees the wrapper's gloo work while its group lives (see tests/test_fsdp.py)


def test_ddp_ranks_agree_and_match_a_single_process_run_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    vae, kl = fxvae.convert(build(ENTRY), ENTRY.inputs(4), log_sigma_init=LOG_SIGMA_INIT)
    _train(vae.train(), kl, _data())
    single = vae.state_dict()
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, atol=1e-6, rtol=1e-5)
