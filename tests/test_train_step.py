"""The training step at GPU scale (fxvae.study.loop): bf16 and fp16 autocast with the likelihood and KL in float32,
torch.compile of the forward, and gradient accumulation, each checked against the plain float32 step."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner

import fxvae
from fxvae.cli.options import dataclass_options
from fxvae.examples import ConvAE
from fxvae.study import CompareOptions, Samples, loop
from fxvae.study.starts import Begun
from tests.helpers import free_port, gloo_group
from tests.zoo import MLPSigmoid

CPU = torch.device("cpu")
DATA = torch.rand(20, 64, generator=torch.Generator().manual_seed(1))


def _run(options: CompareOptions, batches_per_epoch: int, start: str = "warm") -> loop.Run:
    torch.manual_seed(0)
    ae = MLPSigmoid()
    begun = Begun("ae", ae.train(), None) if start == "ae" else Begun(start, *fxvae.convert(ae, DATA[:4]))
    begun.model.train()
    return loop.start_run(begun, 0, options, fxvae.likelihoods.Gaussian(sigma=0.5), batches_per_epoch, CPU, 0)


def _step_gradients(run: loop.Run) -> list[list[torch.Tensor]]:
    """Trains one epoch on DATA; returns the gradients each optimiser step applied."""
    seen: list[list[torch.Tensor]] = []
    run.optimizer.register_step_pre_hook(lambda *_: seen.append([p.grad.clone() for p in run.model.parameters()]))
    run.train_epoch(Samples((DATA,)), CPU, 0, 1)
    return seen


class _Recording(fxvae.likelihoods.Gaussian):
    """A Gaussian likelihood that keeps the dtype of each reconstruction it scores."""

    def __init__(self) -> None:
        super().__init__(sigma=0.5)
        self.dtypes: list[torch.dtype] = []

    def nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.dtypes.append(recon.dtype)
        return super().nll(recon, x)


@pytest.mark.parametrize(("precision", "half"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_half_precision_step_runs_the_forward_in_half_and_the_likelihood_and_kl_in_float32(
    monkeypatch, precision: str, half: torch.dtype
) -> None:
    run = _run(CompareOptions(batch_size=4, precision=precision), 5)
    run.likelihood = likelihood = _Recording()
    kl_inputs: list[tuple[torch.dtype, torch.dtype]] = []
    forward: list[torch.dtype] = []

    def kl_divergence(mu: torch.Tensor, log_sigma: torch.Tensor, **kwargs) -> torch.Tensor:
        forward.append(fxvae.posterior(run.model).mu.dtype)
        kl_inputs.append((mu.dtype, log_sigma.dtype))
        return fxvae.kl_divergence(mu, log_sigma, **kwargs)

    monkeypatch.setattr(loop, "kl_divergence", kl_divergence)
    loss = run.train_epoch(Samples((DATA,)), CPU, 0, 1)
    assert torch.isfinite(torch.tensor(loss))
    assert forward == [half] * 5  # autocast reached the model
    assert kl_inputs == [(torch.float32, torch.float32)] * 5
    assert likelihood.dtypes == [torch.float32] * 5


def test_a_half_precision_loss_is_the_float32_loss_to_half_precision_rounding() -> None:
    x = DATA[:8]
    losses = {}
    for precision in ("fp32", "bf16"):
        run = _run(CompareOptions(precision=precision), 1)
        torch.manual_seed(5)
        losses[precision] = run.loss((x,)).item()
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]


def test_fp16_scales_the_loss_and_its_checkpoint_keeps_the_scale() -> None:
    run = _run(CompareOptions(batch_size=4, precision="fp16"), 5)
    assert isinstance(run.scaler, torch.amp.GradScaler)
    run.train_epoch(Samples((DATA,)), CPU, 0, 1)
    scale = run.scaler.get_scale()
    assert run.state()["scaler"]["scale"] == scale
    resumed = _run(CompareOptions(batch_size=4, precision="fp16"), 5)
    resumed.restore(run.state())
    assert resumed.scaler.get_scale() == scale
    assert _run(CompareOptions(precision="bf16"), 1).scaler is None


def test_a_compiled_runs_first_step_loss_and_gradient_equal_eagers(monkeypatch) -> None:
    # Inductor draws its own random numbers unless told to call torch's: the same noise as eager, to compare.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    eager, compiled = _run(CompareOptions(batch_size=20), 1), _run(CompareOptions(batch_size=20, compile=True), 1)
    assert compiled.trained is not compiled.model
    (eager_grads,), (compiled_grads,) = _step_gradients(eager), _step_gradients(compiled)
    assert compiled.losses[0] == pytest.approx(eager.losses[0], rel=1e-5)
    for got, expected in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("start", ["warm", "ae"])
def test_accumulated_batches_give_the_gradient_of_one_batch_that_many_times_larger(start: str) -> None:
    # 20 samples: 3 batches of 4 then 2 (a short last step) against batches of 12 then 8.
    small = _run(CompareOptions(batch_size=4, accumulate=3), 5, start)
    large = _run(CompareOptions(batch_size=12), 2, start)
    small_grads, large_grads = _step_gradients(small), _step_gradients(large)
    assert len(small_grads) == len(large_grads) == 2
    for small_step, large_step in zip(small_grads, large_grads, strict=True):
        for got, expected in zip(small_step, large_step, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert small.losses == pytest.approx(large.losses, rel=1e-6)


def _ddp_accumulating(rank: int, port: int, out: str) -> None:
    with gloo_group(rank, port, 2):
        run = _sgd_accumulating(rank)
        assert isinstance(run.trained, torch.nn.parallel.DistributedDataParallel)
        run.train_epoch(Samples((DATA,)), CPU, rank, 2)
        torch.save(run.model.state_dict(), Path(out) / f"rank{rank}.pt")


def _sgd_accumulating(rank: int = 0) -> loop.Run:
    torch.manual_seed(0)
    # sigma = exp(-30): the ranks' own noise streams are far below float32 resolution, so runs compare exactly.
    vae, kl = fxvae.convert(MLPSigmoid(), DATA[:4], log_sigma_init=-30.0)
    options = CompareOptions(batch_size=4, accumulate=2, optimizer="sgd", lr=0.1)
    lik = fxvae.likelihoods.Gaussian(sigma=0.5)
    return loop.start_run(Begun("warm", vae.train(), kl), 0, options, lik, 5, CPU, rank)


def test_two_ddp_ranks_accumulating_shards_agree_and_match_one_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_accumulating, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = _sgd_accumulating()
    single.train_epoch(Samples((DATA,)), CPU, 0, 1)
    for key, value in single.model.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, atol=1e-6, rtol=1e-5)


def test_accumulation_counts_optimiser_steps_for_the_schedules_and_the_steps_per_epoch() -> None:
    run = _run(CompareOptions(batch_size=4, accumulate=2, kl_warmup=10), 5)
    assert run.steps_per_epoch == 3 and run.total_steps == 3 * run.options.epochs
    run.train_epoch(Samples((DATA,)), CPU, 0, 1)
    assert run.step == run.scheduler.last_epoch == 3
    assert run.beta() == pytest.approx(0.4)  # kl_warmup counts optimiser steps: (3 + 1) / 10


def test_accumulate_one_is_the_plain_step() -> None:
    plain, one = _run(CompareOptions(batch_size=4), 5), _run(CompareOptions(batch_size=4, accumulate=1), 5)
    for a, b in zip(_step_gradients(plain), _step_gradients(one), strict=True):
        for got, expected in zip(a, b, strict=True):
            assert torch.equal(got, expected)


def test_channels_last_trains_the_conv_weights_and_batches_in_channels_last_to_the_same_loss() -> None:
    images = torch.rand(8, 2, 8, 8, generator=torch.Generator().manual_seed(2))  # 2 channels: 1 has both layouts
    runs = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        # The AE: a VAE's noise is drawn in the latent's memory layout, so it differs between the layouts.
        ae = ConvAE(2, (16,), latent=2).train()
        options = CompareOptions(batch_size=8, channels_last=channels_last)
        runs[channels_last] = run = loop.start_run(
            Begun("ae", ae, None), 0, options, fxvae.likelihoods.Gaussian(sigma=0.5), 1, CPU, 0
        )
        seen: list[bool] = []
        run.model.register_forward_pre_hook(
            lambda _, args, seen=seen: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        for _ in range(2):  # the second epoch's loss follows the first step's update
            run.train_epoch(Samples((images,)), CPU, 0, 1)
        assert seen == [channels_last] * 2
    weight = runs[True].model.get_parameter("encoder.0.weight")
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert runs[True].losses == pytest.approx(runs[False].losses, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "fp8"}, r"precision='fp8' must be one of \('fp32', 'bf16', 'fp16'\)"),
        ({"precision": "float16"}, "precision='float16' must be one of"),
        ({"accumulate": 0}, "accumulate=0 must be a positive whole number"),
        ({"accumulate": 2.5}, "accumulate=2.5 must be a positive whole number"),
        ({"compile": "yes"}, "compile='yes' must be True or False"),
        ({"channels_last": 1}, "channels_last=1 must be True or False"),
    ],
)
def test_bad_step_options_are_refused_naming_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(fxvae.InputError, match=match):
        CompareOptions(**kwargs)


def test_the_command_line_takes_precision_accumulate_and_compile_and_channels_last_switches() -> None:
    @click.command()
    @dataclass_options(CompareOptions, "precision", "accumulate", "compile", "channels_last")
    def show(options: CompareOptions) -> None:
        click.echo(f"{options.precision} {options.accumulate} {options.compile} {options.channels_last}")

    runner = CliRunner()
    assert runner.invoke(show, []).output == "fp32 1 False False\n"
    given = ["--precision", "bf16", "--accumulate", "4", "--compile", "--channels-last"]
    assert runner.invoke(show, given).output == "bf16 4 True True\n"
    refused = runner.invoke(show, ["--precision", "fp8"])
    assert refused.exit_code == 2 and "fp8" in refused.output
