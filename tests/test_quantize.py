"""The quantisers: straight-through gradients, the codebook's EMA and restarts, FSQ's levels and rounding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fxvae
from tests.discrete_zoo import BY_NAME, ENTRIES, calibration, convert
from tests.helpers import recon


def _vq(**options: object) -> fxvae.VectorQuantize:
    torch.manual_seed(0)
    return fxvae.VectorQuantize(8, 3, **options)


@pytest.mark.parametrize("latent", ["vq", "fsq"])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_straight_through_gradients_reach_the_encoder(entry, latent: str) -> None:
    model, _ = convert(entry, latent)
    model.train()
    args = entry.inputs(8)
    x = args[0]
    F.mse_loss(recon(model(*args)).reshape(x.shape), x).backward()  # the reconstruction alone: no quantiser loss
    quantizer = f"{fxvae.conversion(model).quantizer.module}."
    encoder = next(p for name, p in model.named_parameters() if not name.startswith(quantizer))  # the first layer
    assert encoder.grad is not None and encoder.grad.abs().sum() > 0


def test_ema_updates_move_only_the_codes_that_were_used() -> None:
    vq = _vq(dead_code_threshold=0.0).train()
    before = vq.codebook.clone()
    z = torch.randn(5, 3)
    vq(z)
    used = torch.zeros(8, dtype=torch.bool)
    used[vq.quantized().codes] = True
    moved = (vq.codebook != before).any(1)
    assert used.sum() < 8 and torch.equal(moved, used)


def test_an_ema_code_is_the_moving_average_of_the_codes_it_wins() -> None:
    vq = _vq(dead_code_threshold=0.0, decay=0.5).train()
    z = vq.codebook[2:3].repeat(4, 1) + 0.01 * torch.randn(4, 3)
    vq(z)
    # From zero moving averages, one step makes the code the mean of the rows it won.
    torch.testing.assert_close(vq.codebook[2], z.mean(0))
    assert vq.usage[2] == pytest.approx(0.5 * 4)


def test_a_gradient_codebook_learns_from_the_codebook_term() -> None:
    vq = _vq(update="gradient", dead_code_threshold=0.0).train()
    assert isinstance(vq.codebook, torch.nn.Parameter) and vq.code_sum is None
    before = vq.codebook.detach().clone()
    vq(torch.randn(5, 3, requires_grad=True))
    vq.loss().backward()
    used = torch.unique(vq.quantized().codes)
    assert (vq.codebook.grad[used] != 0).all()
    assert torch.equal(vq.codebook.detach(), before)  # the optimiser moves it, not the forward


def test_dead_codes_restart_at_encoder_outputs_of_the_batch() -> None:
    vq = _vq(decay=0.9).train()
    with torch.no_grad():
        vq.usage.fill_(10.0)
        vq.usage[5] = 0.0  # no position has chosen code 5 for a long while
        vq.codebook[5] = 100.0
    z = torch.randn(6, 3)
    vq(z)
    assert (vq.codebook[5] == z).all(1).any()
    assert vq.usage[5] == pytest.approx(vq.usage.mean().item(), rel=0.2)
    assert torch.equal(vq.code_sum[5], vq.codebook[5] * vq.usage[5])


def test_no_code_restarts_when_the_threshold_is_zero() -> None:
    vq = _vq(dead_code_threshold=0.0).train()
    with torch.no_grad():
        vq.codebook[5] = 100.0
    vq(torch.randn(6, 3))
    assert (vq.codebook[5] == 100.0).all()


def test_eval_mode_learns_nothing() -> None:
    vq = _vq().eval()
    state = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(6, 3))
    assert all(torch.equal(v, state[k]) for k, v in vq.state_dict().items())


def test_each_forward_records_its_codebook_usage() -> None:
    vq = _vq()
    with torch.no_grad():
        vq.codebook.copy_(torch.eye(8, 3) * 10)
    vq(torch.eye(8, 3)[[0, 0, 1, 2]] * 10)
    step = vq.quantized()
    assert step.codes.tolist() == [0, 0, 1, 2]
    assert step.used == 3 / 8
    assert step.perplexity == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_eval_forward_is_the_lookup_of_the_codes(quantizer: str) -> None:
    torch.manual_seed(0)
    module = fxvae.VectorQuantize(16, 4) if quantizer == "vq" else fxvae.FiniteScalarQuantize((4, 3), 4)
    z = torch.randn(2, 4, 3, 5)  # channels first: a code per position of the 3 x 5 grid
    module.feature_dim = 1
    module.eval()
    codes = module.codes(z)
    assert codes.shape == (2, 3, 5) and codes.dtype == torch.int64
    assert torch.equal(module.lookup(codes), module(z))


def test_the_vq_loss_is_beta_times_the_commitment() -> None:
    vq = _vq(commitment=0.4).train()
    codebook = vq.codebook.clone()  # as the forward read it, before its moving averages
    z = torch.randn(5, 3, requires_grad=True)
    vq(z)
    expected = 0.4 * F.mse_loss(z, codebook[vq.quantized().codes])
    torch.testing.assert_close(vq.loss(), expected)


def test_fsq_has_no_training_term() -> None:
    fsq = fxvae.FiniteScalarQuantize((3, 3), 2)
    fsq(torch.randn(4, 2))
    assert fsq.loss().item() == 0.0


def test_asking_for_the_loss_before_a_forward_says_to_run_the_model() -> None:
    with pytest.raises(fxvae.FxvaeError, match=r"has not run yet: call model\(\*inputs\)"):
        _vq().loss()


def test_a_latent_of_another_width_is_refused() -> None:
    with pytest.raises(fxvae.FxvaeError, match=r"VectorQuantize quantises 3 features along dim -1.*got shape \[4, 5\]"):
        _vq()(torch.randn(4, 5))


def test_fsq_codes_cover_exactly_prod_levels_values() -> None:
    fsq = fxvae.FiniteScalarQuantize((3, 2, 4), 3)
    codes = fsq.codes(torch.randn(20_000, 3) * 3)
    assert torch.equal(torch.unique(codes), torch.arange(3 * 2 * 4))
    values = fsq.lookup(torch.arange(24))
    assert [len(torch.unique(values[:, d])) for d in range(3)] == [3, 2, 4]
    assert fsq.rate_bits == pytest.approx(math.log2(24))


def test_fsq_rounding_error_is_at_most_half_a_step_without_projection() -> None:
    entry = BY_NAME["token_attention"]  # 3 features per token
    model, _ = convert(entry, "fsq", levels=(7, 5, 3))
    info = fxvae.conversion(model).quantizer
    fsq = model.get_submodule(info.module)
    assert not info.projected and fsq.project_down is None
    encoder, _ = fxvae.split(model)
    with torch.no_grad():
        latent = encoder(*calibration(entry)[0])
        fsq.fit([latent])  # the data fit itself (convert keeps it only where it reconstructs better)
        error = (fsq.eval()(latent) - latent).abs()
    half_step = fsq.scale / torch.tensor([6.0, 4.0, 2.0])
    assert (error <= half_step * (1 + 1e-5)).all()
    assert (error.amax((0, 1)) > 0.5 * half_step).all()  # the steps are the data's range over the levels


def test_fsq_projections_start_at_the_principal_components() -> None:
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(8, 3))[0]
    latent = torch.randn(500, 3) @ basis.T + 2.0  # codes in a 3-d subspace of R^8
    fsq = fxvae.FiniteScalarQuantize((1024,) * 3, 8)
    fsq.fit([latent])
    with torch.no_grad():
        error = (fsq.eval()(latent) - latent).norm(dim=1)
    # Nothing is truncated: the distortion is the rounding, a small fraction of the data's spread.
    assert error.max() < 0.01 * latent.std(0).norm()
    assert torch.allclose(fsq.project_down.weight @ fsq.project_down.weight.T, torch.eye(3), atol=1e-5)


DDP_WORLD, DDP_STEPS = 2, 4


def _ddp_model(dead_code_threshold: float) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 3),
        fxvae.VectorQuantize(8, 3, decay=0.8, dead_code_threshold=dead_code_threshold),
        torch.nn.Linear(3, 6),
    ).train()


def _ddp_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randn(2 * 10, 6, generator=generator) for _ in range(DDP_STEPS)]


def _ddp_train(model: torch.nn.Module, batches: list[torch.Tensor], shard: slice) -> list[dict[str, torch.Tensor]]:
    """The quantiser's state after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    vq = model.module[1] if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model[1]
    states = []
    for batch in batches:
        x = batch[shard]
        opt.zero_grad()
        (F.mse_loss(model(x), x) + vq.loss()).backward()
        opt.step()
        states.append({k: v.clone() for k, v in vq.state_dict().items()})
    return states


def _ddp_worker(rank: int, port: int, out: str, dead_code_threshold: float) -> None:
    from tests.helpers import gloo_group

    with gloo_group(rank, port, DDP_WORLD):
        model = _ddp_model(dead_code_threshold)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        torch.manual_seed(rank)  # each rank's own random stream: restarts must follow rank 0's draw
        size = 2 * 10 // DDP_WORLD
        states = _ddp_train(ddp, _ddp_batches(), slice(rank * size, (rank + 1) * size))
        torch.save(states, f"{out}/rank{rank}.pt")


def _ddp_ranks_and_single_process(tmp_path, dead_code_threshold: float) -> tuple[list[list[dict]], list[dict]]:
    """Each rank's quantiser state after each step, and a single process's on the ranks' batches together."""
    import torch.multiprocessing as mp

    from tests.helpers import free_port

    mp.spawn(_ddp_worker, args=(free_port(), str(tmp_path), dead_code_threshold), nprocs=DDP_WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(DDP_WORLD)]
    single = _ddp_model(dead_code_threshold)
    torch.manual_seed(0)  # rank 0's stream
    return ranks, _ddp_train(single, _ddp_batches(), slice(None))


def test_under_ddp_the_ema_codebook_is_the_single_process_one_on_the_ranks_batches_together(tmp_path) -> None:
    ranks, single = _ddp_ranks_and_single_process(tmp_path, dead_code_threshold=0.0)
    for step, expected in enumerate(single):
        for rank in ranks:
            for key in ("codebook", "usage", "code_sum"):
                torch.testing.assert_close(rank[step][key], expected[key], atol=1e-6, rtol=1e-5, msg=f"{key} {step}")


def test_under_ddp_dead_codes_restart_alike_on_every_rank(tmp_path) -> None:
    ranks, single = _ddp_ranks_and_single_process(tmp_path, dead_code_threshold=0.5)
    # Codes restart in the first steps (5, 3, 0 and 1 of the 8), each rank drawing from its own random stream.
    for step, expected in enumerate(single):
        for key in ("codebook", "usage", "code_sum"):
            assert torch.equal(ranks[0][step][key], ranks[1][step][key]), f"{key} {step}"
            torch.testing.assert_close(ranks[0][step][key], expected[key], atol=1e-6, rtol=1e-5, msg=f"{key} {step}")


_BOUNDED_SEARCH = """
import resource, sys, torch
import fxvae
torch.manual_seed(0)
vq = fxvae.VectorQuantize(65536, 8).eval()
z = torch.randn(8192, 8)
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
# 1 GiB more than the process holds now; every score at once would take 8192 x 65536 x 4 bytes = 2 GiB.
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
codes = vq.codes(z)
assert codes.shape == (8192,) and codes.min() >= 0 and codes.max() < 65536
vq.search_block = 2**40  # the unchunked search: the limit must bind for the test to mean anything
try:
    vq.codes(z)
except RuntimeError as err:
    assert "memory" in str(err), err
else:
    sys.exit("the unchunked search fitted under the limit")
print("bounded")
"""


def test_a_65536_code_search_on_a_large_batch_stays_within_a_memory_limit() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _BOUNDED_SEARCH], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "bounded", done.stderr[-2000:] + done.stdout


def test_the_vq_codes_do_not_depend_on_the_search_block() -> None:
    torch.manual_seed(0)
    vq = fxvae.VectorQuantize(1000, 4).eval()
    z = torch.randn(600, 4)
    whole = vq.codes(z)
    book = vq.codebook
    assert torch.equal(whole, torch.addmm((book * book).sum(1), z, book.T, alpha=-2).argmin(1))
    vq.search_block = 100
    assert torch.equal(vq.codes(z), whole)


def _uneven_rows() -> list[torch.Tensor]:
    """Two ranks' rows for each of three steps, 5 and 11 rows: the ranks' batches differ in length."""
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(16, 3, generator=generator) for _ in range(3)]


def _uneven_worker(rank: int, port: int, out: str) -> None:
    from tests.helpers import gloo_group

    with gloo_group(rank, port, DDP_WORLD):
        torch.manual_seed(0)
        vq = fxvae.VectorQuantize(8, 3, decay=0.8, dead_code_threshold=0.5).train()
        torch.manual_seed(rank)
        for rows in _uneven_rows():
            vq(rows[:5] if rank == 0 else rows[5:])
        torch.save(vq.state_dict(), f"{out}/rank{rank}.pt")


def test_ranks_with_batches_of_different_lengths_hold_the_single_process_codebook(tmp_path) -> None:
    import torch.multiprocessing as mp

    from tests.helpers import free_port

    mp.spawn(_uneven_worker, args=(free_port(), str(tmp_path)), nprocs=DDP_WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(DDP_WORLD)]
    torch.manual_seed(0)
    single = fxvae.VectorQuantize(8, 3, decay=0.8, dead_code_threshold=0.5).train()
    torch.manual_seed(0)  # rank 0's stream
    for rows in _uneven_rows():
        single(rows)
    for key, expected in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], expected, atol=1e-6, rtol=1e-5, msg=key)
