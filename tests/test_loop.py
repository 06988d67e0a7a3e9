"""fxvae.study.loop: the KL weight's schedule, the loss of each kind of start, the learning rate, the batch order,
and a run's steps, random stream and checkpoint, each checked against a value computed by hand."""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import pytest
import torch

import fxvae
from fxvae.study import CompareOptions, Samples, loop
from fxvae.study.starts import Begun
from tests.zoo import MLPSigmoid

CPU = torch.device("cpu")
DATA = torch.rand(20, 64, generator=torch.Generator().manual_seed(1))


def _begun(start: str = "warm", latent: str = "gaussian") -> Begun:
    torch.manual_seed(0)
    ae = MLPSigmoid()
    if start == "ae":
        return Begun("ae", ae.train(), None)
    kwargs = {"latent": fxvae.VQ(codebook_size=16), "calibration": DATA} if latent == "vq" else {}
    model, aux = fxvae.convert(ae, DATA[:4], **kwargs)
    return Begun(start, model.train(), aux)


def _run(
    options: CompareOptions,
    begun: Begun | None = None,
    *,
    likelihood: fxvae.likelihoods.Likelihood | None = None,
    steps_per_epoch: int = 3,
    seed: int = 0,
    rank: int = 0,
) -> loop.Run:
    lik = likelihood or fxvae.likelihoods.Gaussian(sigma=0.5)
    return loop.start_run(begun or _begun(), seed, options, lik, steps_per_epoch, CPU, rank)


def _kl_per_dim(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL_j = 1/B sum_b 1/2 (mu^2 + sigma^2 - 1 - 2 log sigma): the batch mean of each latent dimension's KL."""
    return (0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1) - log_sigma).mean(0)


def _loss_and_its_forward(run: loop.Run, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run's loss on x, and the reconstruction and posterior of the same forward (same noise)."""
    torch.manual_seed(5)
    loss = run.loss((x,))
    torch.manual_seed(5)
    with torch.no_grad():
        recon = run.model(x)
    return loss, recon, fxvae.posterior(run.model)


@pytest.mark.parametrize(("steps", "expected"), [(range(6), [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]), ([99], [0.5])])
def test_the_kl_weight_rises_linearly_over_kl_warmup_steps_to_beta_and_stays(steps, expected) -> None:
    run = _run(CompareOptions(beta=0.5, kl_warmup=4))
    betas = []
    for step in steps:
        run.step = step
        betas.append(run.beta())
    assert betas == pytest.approx(expected)


def test_without_kl_warmup_the_kl_weight_is_beta_from_the_first_step() -> None:
    run = _run(CompareOptions(beta=0.3))
    assert [run.beta() for run.step in (0, 1, 50)] == pytest.approx([0.3, 0.3, 0.3])


def test_a_vaes_loss_is_the_nll_plus_the_scheduled_beta_times_the_batchmean_kl() -> None:
    run = _run(CompareOptions(beta=0.5, kl_warmup=4))
    run.step = 1  # beta_t = 0.5 * 2 / 4
    x = DATA[:8]
    loss, recon, q = _loss_and_its_forward(run, x)
    nll = 0.5 * ((x - recon) / 0.5).pow(2).sum(1).mean() + 64 * (math.log(0.5) + 0.5 * math.log(2 * math.pi))
    expected = nll + 0.25 * _kl_per_dim(q.mu, q.log_sigma).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_free_bits_make_each_latent_dimension_pay_at_least_lambda_nats_of_its_batch_mean_kl() -> None:
    x = DATA[:8]
    _, _, q = _loss_and_its_forward(_run(CompareOptions()), x)
    per_dim = _kl_per_dim(q.mu, q.log_sigma).sort().values
    floor = float(per_dim[3] + per_dim[4]) / 2  # half the dimensions under the floor, half above
    run = _run(CompareOptions(beta=0.5, kl_warmup=4, free_bits=floor))
    run.step = 1
    loss, recon, q = _loss_and_its_forward(run, x)
    nll = fxvae.likelihoods.Gaussian(sigma=0.5).nll(recon, x)
    kl = _kl_per_dim(q.mu, q.log_sigma)
    clamped = kl.clamp(min=floor).sum()
    assert clamped > kl.sum() + 0.01  # the floor changes the loss here
    assert loss.item() == pytest.approx((nll + 0.25 * clamped).item(), rel=1e-6)


def test_free_bits_take_the_kl_gradient_off_the_dimensions_under_the_floor() -> None:
    x = DATA[:8]
    run = _run(CompareOptions(free_bits=10.0))  # every dimension's KL is under 10 nats here
    torch.manual_seed(5)
    run.loss((x,)).backward()
    with_floor = [p.grad.clone() for p in run.model.parameters()]
    run.model.zero_grad()
    torch.manual_seed(5)
    run.likelihood.nll(run.model(x), x).backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(with_floor, run.model.parameters(), strict=True))


def test_an_autoencoders_loss_is_the_nll_alone() -> None:
    run = _run(CompareOptions(beta=2.0), _begun("ae"))
    x = DATA[:8]
    with torch.no_grad():
        expected = fxvae.likelihoods.Gaussian(sigma=0.5).nll(run.model(x), x)
    assert run.loss((x,)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_quantisers_loss_is_the_nll_plus_its_term_at_half_the_fisher_information_beta_aside() -> None:
    lik = fxvae.likelihoods.Gaussian(sigma=0.5)
    options = CompareOptions(beta=3.0, latent="vq", codebook_size=16, starts=("warm",))
    run = _run(options, _begun("warm", "vq"), likelihood=lik)
    x = DATA[:8]
    state = {k: v.clone() for k, v in run.model.state_dict().items()}
    loss = run.loss((x,))
    run.model.load_state_dict(state)  # a training forward moves the codebook's moving averages
    recon = run.model(x)
    expected = lik.nll(recon, x) + 64 / (2 * 0.5**2) * run.begun.aux()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("likelihood", "weight"),
    [
        (fxvae.likelihoods.Gaussian(sigma=0.25), 64 / (2 * 0.25**2)),
        (fxvae.likelihoods.LogProb(lambda recon, x: -(recon - x).abs().sum(1)), 64 / 2),
    ],
    ids=["gaussian", "log_prob"],
)
def test_a_quantisers_weight_is_half_the_fisher_information_summed_over_a_sample(likelihood, weight) -> None:
    assert loop.quantizer_weight(likelihood, torch.randn(5, 64)).item() == pytest.approx(weight)


def test_a_quantisers_weight_under_bernoulli_is_half_the_batch_mean_of_p_times_1_minus_p_summed() -> None:
    recon = torch.tensor([[0.0, 0.0], [2.0, -2.0]])
    p = torch.sigmoid(torch.tensor(2.0)).item()
    expected = 0.5 * ((0.25 + 0.25) + 2 * p * (1 - p)) / 2
    assert loop.quantizer_weight(fxvae.likelihoods.Bernoulli(), recon).item() == pytest.approx(expected)


def test_the_cosine_schedule_falls_from_lr_to_zero_over_the_run() -> None:
    options = CompareOptions(schedule="cosine")
    got = [loop.lr_factor(s, 8, options) for s in (0, 2, 4, 6, 8, 12)]
    assert got == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0, 0])


def test_a_run_of_one_step_or_none_starts_at_lr_and_ends_at_the_schedules_end() -> None:
    options = CompareOptions(schedule="cosine")
    assert [loop.lr_factor(0, 1, options), loop.lr_factor(1, 1, options)] == pytest.approx([1.0, 0.0])
    assert loop.lr_factor(0, 0, options) == 1.0


def test_a_cosine_schedule_spans_every_epoch_of_the_run() -> None:
    options = CompareOptions(batch_size=4, epochs=2, schedule="cosine", lr=0.01, lr_warmup=0)
    run = _run(options, steps_per_epoch=5)
    run.train_epoch(Samples(DATA), CPU, rank=0, world=1)  # half-way through the run's 10 steps
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_the_one_cycle_schedule_rises_from_lr_over_25_for_30_percent_then_falls_to_lr_over_1e4() -> None:
    options = CompareOptions(schedule="one-cycle")
    rise = [loop.lr_factor(s, 100, options) for s in (0, 15, 30)]
    assert rise == pytest.approx([1 / 25, 1 / 25 + (1 - 1 / 25) * 0.5, 1.0])
    fall = [loop.lr_factor(s, 100, options) for s in (65, 100)]
    assert fall == pytest.approx([1e-4 + (1 - 1e-4) * 0.5, 1e-4])


def test_a_linear_warm_up_multiplies_any_schedule_over_its_first_steps() -> None:
    options = CompareOptions(schedule="cosine")
    got = [loop.lr_factor(s, 100, options, warmup=4) for s in (0, 1, 3)]
    plain = [loop.lr_factor(s, 100, options) for s in (0, 1, 3)]
    assert got == pytest.approx([0.25 * plain[0], 0.5 * plain[1], plain[2]])
    constant = CompareOptions(schedule="constant")
    assert [loop.lr_factor(s, 10, constant, warmup=4) for s in (0, 3, 9)] == pytest.approx([0.25, 1.0, 1.0])
    assert [loop.lr_factor(s, 10, constant) for s in (0, 9)] == [1.0, 1.0]


def test_the_learning_rate_warm_up_is_one_epoch_unless_given() -> None:
    assert loop.warmup_steps(CompareOptions(), steps_per_epoch=23) == 23
    assert loop.warmup_steps(CompareOptions(lr_warmup=0), steps_per_epoch=23) == 0
    assert loop.warmup_steps(CompareOptions(lr_warmup=7), steps_per_epoch=23) == 7


def test_the_batch_order_is_a_fixed_permutation_of_the_seed_and_epoch() -> None:
    # Fixed values: a comparison resumed from its checkpoints continues with the batches it would have had.
    order = [b.tolist() for b in loop.batch_order(7, 3, seed=2, epoch=3)]
    generator = torch.Generator().manual_seed(2 * 1_000_003 + 3)
    assert order == [b.tolist() for b in torch.randperm(7, generator=generator).split(3)]
    assert [len(b) for b in order] == [3, 3, 1]
    assert loop.batch_order(7, 3, seed=3, epoch=2)[0].tolist() != order[0]


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_the_optimiser_is_the_one_named_at_lr(name: str, cls: type) -> None:
    opt = loop.optimiser(_begun().model, CompareOptions(optimizer=name, lr=0.02))
    assert type(opt) is cls and [g["lr"] for g in opt.param_groups] == [0.02]


def test_sgd_runs_with_momentum_0_9() -> None:
    opt = loop.optimiser(_begun().model, CompareOptions(optimizer="sgd", lr=0.02))
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[0]["lr"] == 0.02


def test_the_log_sigma_head_learns_at_log_sigma_lr_times_lr_in_a_group_of_its_own() -> None:
    model = _begun().model
    head = model.get_submodule(fxvae.recipe.conversion(model).log_sigma_head)
    opt = loop.optimiser(model, CompareOptions(lr=0.02, log_sigma_lr=5.0))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.1])
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in head.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable


def test_frozen_parameters_are_left_out_and_an_autoencoder_has_one_group() -> None:
    model = _begun("ae").model
    model.enc[0].weight.requires_grad_(False)
    opt = loop.optimiser(model, CompareOptions(log_sigma_lr=5.0))
    assert len(opt.param_groups) == 1
    assert id(model.enc[0].weight) not in {id(p) for p in opt.param_groups[0]["params"]}


def test_an_epoch_steps_through_every_batch_and_returns_their_mean_loss() -> None:
    run = _run(CompareOptions(batch_size=8, epochs=2, schedule="constant", lr_warmup=0), steps_per_epoch=3)
    losses = []
    original = run.loss
    run.loss = lambda args: losses.append(original(args)) or losses[-1]  # type: ignore[method-assign]
    began = time.perf_counter()
    mean = run.train_epoch(Samples(DATA), CPU, rank=0, world=1)
    wall = time.perf_counter() - began
    assert (run.epoch, run.step, run.total_steps) == (1, 3, 6)
    # Summed in float64: the mean of the float32 losses, as Python's floats add them.
    assert mean == sum(loss.item() for loss in losses) / 3 and run.losses == [mean]
    assert len(run.epoch_seconds) == 1 and 0 < run.seconds == run.epoch_seconds[0] <= wall


def test_an_epoch_of_one_batch_returns_its_loss() -> None:
    run = _run(CompareOptions(batch_size=32), steps_per_epoch=1)
    losses = []
    original = run.loss
    run.loss = lambda args: losses.append(original(args)) or losses[-1]  # type: ignore[method-assign]
    assert run.train_epoch(Samples(DATA), CPU, rank=0, world=1) == losses[0].item()


def _recorded(run: loop.Run, samples: Samples) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Lists that fill as ``run`` trains on ``samples``: the indices of every batch read, and every loss."""
    seen: list[list[int]] = []
    losses: list[torch.Tensor] = []
    batch, loss = samples.batch, run.loss
    samples.batch = lambda indices: seen.append(indices.tolist()) or batch(indices)  # type: ignore[method-assign]
    run.loss = lambda args: losses.append(loss(args)) or losses[-1]  # type: ignore[method-assign]
    return seen, losses


def test_a_rank_trains_on_its_shard_of_each_batch_and_all_skip_a_batch_smaller_than_the_world() -> None:
    run = _run(CompareOptions(batch_size=8), steps_per_epoch=2)
    samples = Samples(DATA[:17])  # batches of 8, 8 and 1
    seen, losses = _recorded(run, samples)
    mean = run.train_epoch(samples, CPU, rank=1, world=2)
    order = loop.batch_order(17, 8, run.seed, 1)
    assert seen == [order[0][1::2].tolist(), order[1][1::2].tolist()] and run.step == 2
    assert mean == pytest.approx(sum(v.item() for v in losses) / 2)


def test_a_last_batch_as_large_as_the_world_is_shared_out_and_counted() -> None:
    run = _run(CompareOptions(batch_size=8), steps_per_epoch=3)
    samples = Samples(DATA[:18])  # batches of 8, 8 and 2
    seen, losses = _recorded(run, samples)
    mean = run.train_epoch(samples, CPU, rank=0, world=2)
    assert seen[-1] == loop.batch_order(18, 8, run.seed, 1)[2][0::2].tolist() and run.step == 3
    assert mean == pytest.approx(sum(v.item() for v in losses) / 3)


def test_a_constant_rate_still_warms_up_over_the_first_epoch_by_default() -> None:
    options = CompareOptions(batch_size=4, schedule="constant", lr=0.01)
    run = _run(options, steps_per_epoch=10)  # a warm-up of 10 steps; the epoch below takes 5
    run.train_epoch(Samples(DATA), CPU, rank=0, world=1)
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 6 / 10)


def test_a_schedule_moves_the_learning_rate_every_step_and_a_constant_rate_only_counts() -> None:
    cosine = _run(CompareOptions(batch_size=4, epochs=1, schedule="cosine", lr=0.01, lr_warmup=0), steps_per_epoch=5)
    cosine.train_epoch(Samples(DATA), CPU, rank=0, world=1)
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    constant = _run(CompareOptions(batch_size=4, schedule="constant", lr=0.01, lr_warmup=0), steps_per_epoch=5)
    constant.train_epoch(Samples(DATA), CPU, rank=0, world=1)
    assert constant.optimizer.param_groups[0]["lr"] == 0.01 and constant.scheduler.last_epoch == 5


def test_an_epoch_leaves_the_global_random_state_and_continues_the_runs_own_stream() -> None:
    options = CompareOptions(batch_size=10, epochs=2)
    together = _run(options, steps_per_epoch=2)
    apart = _run(options, steps_per_epoch=2)
    other = _run(options, _begun("scratch"), seed=1, steps_per_epoch=2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    together.train_epoch(Samples(DATA), CPU, 0, 1)
    together.train_epoch(Samples(DATA), CPU, 0, 1)
    apart.train_epoch(Samples(DATA), CPU, 0, 1)
    other.train_epoch(Samples(DATA), CPU, 0, 1)  # another run's epoch in between draws from its own stream
    apart.train_epoch(Samples(DATA), CPU, 0, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert together.losses == apart.losses
    assert torch.equal(together.rng, apart.rng)


def test_a_runs_stream_is_seeded_by_its_seed_and_rank() -> None:
    def first_draw(seed: int, rank: int) -> torch.Tensor:
        run = _run(CompareOptions(), seed=seed, rank=rank)
        generator = torch.Generator()
        generator.set_state(run.rng)
        return torch.rand(3, generator=generator)

    assert torch.equal(first_draw(2, 1), torch.rand(3, generator=torch.Generator().manual_seed(2 * 7919 + 1)))
    assert not torch.equal(first_draw(2, 0), first_draw(2, 1))
    assert _run(CompareOptions()).cuda_rng is None  # a CPU run has no CUDA stream


def test_a_process_group_of_one_trains_the_model_itself_without_a_ddp_wrapper() -> None:
    dist = torch.distributed
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        run = _run(CompareOptions())
    finally:
        dist.destroy_process_group()
    assert run.trained is run.model


def test_a_run_continues_exactly_from_its_checkpoint(tmp_path: Path) -> None:
    options = CompareOptions(batch_size=8, epochs=3, schedule="cosine")
    straight = _run(options)
    for _ in range(3):
        straight.train_epoch(Samples(DATA), CPU, 0, 1)
    stopped = _run(options)
    stopped.train_epoch(Samples(DATA), CPU, 0, 1)
    path = tmp_path / "run.pt"
    assert not loop.load_checkpoint(stopped, path)
    loop.save_checkpoint(stopped, path)
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    resumed = _run(options)
    assert loop.load_checkpoint(resumed, path)
    for _ in range(2):
        resumed.train_epoch(Samples(DATA), CPU, 0, 1)
    assert resumed.losses == straight.losses and (resumed.epoch, resumed.step) == (3, 9)
    assert len(resumed.epoch_seconds) == 3 and resumed.seconds == pytest.approx(sum(resumed.epoch_seconds))
    for name, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_a_checkpoint_is_read_without_running_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    torch.save({"model": Samples(DATA)}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        loop.load_checkpoint(_run(CompareOptions()), path)


def test_steps_per_second_is_the_median_epochs_leaving_out_the_first() -> None:
    run = _run(CompareOptions(), steps_per_epoch=10)
    assert run.steps_per_s() is None
    run.epoch_seconds = [9.0]
    assert run.steps_per_s() == pytest.approx(10 / 9)
    run.epoch_seconds = [9.0, 1.0, 4.0, 2.0]
    assert run.steps_per_s() == pytest.approx(10 / 2)
    run.epoch_seconds = [9.0, 1.0, 4.0, 2.0, 8.0]  # of an even count, the upper of the two middle ones
    assert run.steps_per_s() == pytest.approx(10 / 4)
    assert (run.name, run.model) == ("warm", run.begun.model)


def test_on_a_cuda_device_an_epoch_swaps_the_runs_cuda_stream_in_and_the_callers_back(monkeypatch) -> None:
    # The calls, recorded on a machine without a GPU: get and set of each stream on the run's device.
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: calls.append(("get", device)) or f"now@{device}")
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append(("set", state, device)))
    run = _run(CompareOptions())
    run.cuda_rng = "run's"
    cuda = torch.device("cuda", 1)
    with loop._RandomState(run, cuda):
        assert calls == [("get", cuda), ("set", "run's", cuda)]
    assert calls[2:] == [("get", cuda), ("set", "now@cuda:1", cuda)] and run.cuda_rng == "now@cuda:1"
    calls.clear()
    run.cuda_rng = None  # a run that has not drawn on the device yet starts from the device's stream
    with loop._RandomState(run, cuda):
        assert calls == [("get", cuda)]
