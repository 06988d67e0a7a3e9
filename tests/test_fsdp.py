"""Two-process FSDP2 (``torch.distributed.fsdp.fully_shard``, gloo, CPU) training of a converted VAE.

Structured like tests/test_ddp.py: both ranks train on their half of a global batch, and the gathered
parameters must match one process trained on the whole batch. Two wrappings: the root alone, and the
mu and log-sigma heads as their own FSDP units (the log-sigma head then runs, and all-gathers, inside
the reparameterisation and again when kl() is asked after an eval forward).
"""

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
WRAPPINGS = ("root", "heads_and_root")


def _data() -> torch.Tensor:
    return torch.randn(GLOBAL_BATCH, 64, generator=torch.Generator().manual_seed(7))


def _train(vae: torch.nn.Module, kl: fxvae.KLDivergence, x: torch.Tensor) -> torch.Tensor:
    """A few SGD steps; returns the KL of an eval forward on the whole batch afterwards."""
    opt = torch.optim.SGD(vae.parameters(), lr=0.1)
    vae.train()
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.mse_loss(vae(x), x) + kl()
        loss.backward()
        opt.step()
    with torch.no_grad():
        vae.eval()(_data())
        return kl().detach()


def _shard_train_and_save(rank: int, wrapping: str, out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    vae, kl = fxvae.convert(build(ENTRY), ENTRY.inputs(4), log_sigma_init=LOG_SIGMA_INIT)
    recipe = fxvae.conversion(vae)
    if wrapping == "heads_and_root":
        fully_shard(vae.get_submodule(recipe.mu_head))
        fully_shard(vae.get_submodule(recipe.log_sigma_head))
    fully_shard(vae)
    # Really sharded: each rank holds half of every parameter's first dimension.
    assert all(type(p).__name__ == "DTensor" and p.placements[0].is_shard(0) for p in vae.parameters())
    eval_kl = _train(vae, kl, _data().chunk(WORLD)[rank])
    # full_tensor() is a collective: every rank gathers every parameter.
    state = {k: v.full_tensor() for k, v in vae.state_dict().items()}
    torch.save({"state": state, "eval_kl": eval_kl}, Path(out) / f"{wrapping}{rank}.pt")


def _worker(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, port, WORLD):
        for wrapping in WRAPPINGS:
            _shard_train_and_save(rank, wrapping, out)
        # The sharded model holds gloo work objects; freed after its group is gone, one aborts the
        # process now and then ("terminate called without an active exception").
        gc.collect()


def test_fully_shard_ranks_agree_and_match_a_single_process_run_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    vae, kl = fxvae.convert(build(ENTRY), ENTRY.inputs(4), log_sigma_init=LOG_SIGMA_INIT)
    single_kl = _train(vae, kl, _data())
    single = vae.state_dict()
    for wrapping in WRAPPINGS:
        ranks = [torch.load(tmp_path / f"{wrapping}{r}.pt", weights_only=True) for r in range(WORLD)]
        assert list(ranks[0]["state"]) == list(single), wrapping
        for key, value in single.items():
            assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), (wrapping, key)
            torch.testing.assert_close(ranks[0]["state"][key], value, atol=1e-6, rtol=1e-5)
        for rank in ranks:
            torch.testing.assert_close(rank["eval_kl"], single_kl, atol=1e-4, rtol=1e-6)
