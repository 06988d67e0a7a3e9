"""``fxvae compare``: MODEL's VAE trained beside the same VAE from scratch and the AE itself, measured alike
(:func:`fxvae.study.compare.run_comparison`); the report written to ``--out``, its verdict printed."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import torch

import fxvae
from fxvae.cli.data import check_source, read_data_source
from fxvae.cli.errors import CliError, ExitCode, as_options, data_errors, one_line, reported
from fxvae.cli.models import load_checkpoint_into, load_factory, load_model
from fxvae.cli.options import dataclass_options, debug_option, model_argument, threads_option
from fxvae.cli.output import stderr, stdout
from fxvae.io.datafiles import read_data
from fxvae.study import ledger, tracking
from fxvae.study.compare import run_comparison
from fxvae.study.options import CompareOptions

QUICK = {"epochs": 2, "seeds": 1}
"""``--quick``: a run to try the command on, not one to conclude from."""


def _options_refused(command: Callable[..., Any]) -> Callable[..., Any]:
    """:class:`CompareOptions` refuses a value as it is built, before the command's body runs (a start of the
    other latent family, say): one line and USAGE, as for click's own option errors."""

    @functools.wraps(command)
    def checked(**kwargs: Any) -> Any:
        try:
            return command(**kwargs)
        except fxvae.InputError as err:
            stderr.print(f"error: {as_options(one_line(str(err)))}", markup=False, soft_wrap=True)
            raise click.exceptions.Exit(int(ExitCode.USAGE)) from err

    return checked


def _warn_now(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A warning raised while a comparison runs, printed as it happens (one line), not after the run."""
    if issubclass(category, UserWarning):
        stderr.print(f"warning: {as_options(one_line(str(message)))}", markup=False, soft_wrap=True)


@click.command()
@_options_refused
@model_argument
@click.option(
    "--checkpoint", required=True, type=click.Path(path_type=Path), metavar="FILE", help="The trained AE's weights."
)
@click.option("--data", required=True, metavar="DATA", help="Training data: a file, a folder of images, or a factory.")
@click.option(
    "--test",
    metavar="DATA",
    help="Held-out data, ideally the AE's own test data (default: a seeded --holdout of --data, which the AE may "
    "have been trained on: a warning says so).",
)
@click.option(
    "--ae-train",
    metavar="DATA",
    help="The AE's own training data: without --test, only samples of --data that are not in it are held out; "
    "with --test, test samples in it are warned about.",
)
@click.option(
    "--labels",
    metavar="FILE",
    help="One integer class per sample of --data (.npy, .pt or .csv): the accuracy of a linear probe on each "
    "model's codes.",
)
@click.option("--test-labels", metavar="FILE", help="With --test and --labels: one class per sample of --test.")
@click.option(
    "--anomaly-labels",
    metavar="FILE",
    help="One 0 (normal) or 1 (anomaly) per sample of --data (.npy, .pt or .csv): the AUROC of each model's "
    "per-sample score (the AE's reconstruction term, a VAE's NLL).",
)
@click.option(
    "--test-anomaly-labels", metavar="FILE", help="With --test and --anomaly-labels: one per sample of --test."
)
@click.option(
    "--features",
    metavar="FACTORY",
    help="package.module:factory returning features(batch) -> [N, F] (a classifier of your data, say): sample "
    "distances in its space instead of the data's.",
)
@click.option("--resize", metavar="H,W", help="Scale folders of images to this size.")
@dataclass_options(CompareOptions)
@click.option("--scratch", metavar="MODEL", help="A factory of the untrained architecture, for the scratch start.")
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="DIR", help="Where the report goes.")
@click.option("--resume", is_flag=True, help="Continue the comparison that --out holds.")
@click.option(
    "--tensorboard/--no-tensorboard",
    default=None,
    help="Every run's curves as TensorBoard event files in DIR/tensorboard (default: where tensorboard is "
    "installed; otherwise a warning says how to install it).",
)
@click.option("--force", is_flag=True, help="Start over where --out already holds a comparison.")
@click.option("--quick", is_flag=True, help=f"Try it: {QUICK['epochs']} epochs, {QUICK['seeds']} seed.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@threads_option
@debug_option
def compare(
    model: str,
    checkpoint: Path,
    data: str,
    test: str | None,
    ae_train: str | None,
    labels: str | None,
    test_labels: str | None,
    anomaly_labels: str | None,
    test_anomaly_labels: str | None,
    features: str | None,
    resize: str | None,
    options: CompareOptions,
    scratch: str | None,
    out: Path,
    resume: bool,
    tensorboard: bool | None,
    force: bool,
    quick: bool,
    device: str,
    threads: int,
    debug: bool,
) -> None:
    """Train MODEL's VAE (warm, calibrated) beside the same VAE from scratch and the AE itself, on your data, and
    measure them on the same axes (likelihood, samples, latent, reconstruction; a probe and an AUROC with
    --labels and --anomaly-labels); write a report.

    Under torchrun (torchrun --nproc-per-node N -m fxvae.cli compare ...) every start trains with
    DistributedDataParallel and rank 0 writes the report. A second comparison into the same --out is refused
    while one runs."""
    first = int(os.environ.get("RANK", "0")) == 0
    with reported(debug), _holding(out if first else None):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        if tensorboard and not tracking.installed():
            raise CliError(ExitCode.USAGE, f"--tensorboard needs TensorBoard: {tracking.INSTALL}")
        if (out / "metrics.jsonl").exists() and not (resume or force):
            raise CliError(
                ExitCode.USAGE,
                f"{str(out)!r} holds a comparison: pass --resume to continue it, or --force to start over",
            )
        if resume and not (out / "metrics.jsonl").exists():
            raise CliError(ExitCode.USAGE, f"--resume: {str(out)!r} holds no comparison to continue")
        if quick:
            options = dataclasses.replace(options, **QUICK)
        classes = _labels_option(labels, test_labels, "--labels", test is not None)
        anomalies = _labels_option(anomaly_labels, test_anomaly_labels, "--anomaly-labels", test is not None)
        if not checkpoint.is_file():
            raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        module = load_model(model)
        load_checkpoint_into(module, checkpoint)
        train = read_data_source(data, resize)
        held_out = read_data_source(test, resize) if test is not None else None
        seen = read_data_source(ae_train, resize) if ae_train is not None else None
        check_source(module, train, f"--data {data}")
        if held_out is not None:
            check_source(module, held_out, f"--test {test}")
        if seen is not None:
            check_source(module, seen, f"--ae-train {ae_train}")
        untrained = load_factory(scratch) if scratch is not None else None
        extractor = _features(features) if features is not None else None
        if first:
            stderr.print(f"torch threads: {threads}", markup=False)
        try:
            with data_errors(), warnings.catch_warnings():
                warnings.simplefilter("always", UserWarning)
                warnings.showwarning = _warn_now if first else lambda *args, **kwargs: None
                result = run_comparison(
                    module.eval(),
                    train,
                    held_out,
                    options,
                    labels=classes,
                    anomaly_labels=anomalies,
                    features=extractor,
                    scratch=untrained,
                    ae_train=seen,
                    device=device,
                    threads=threads,
                    out=out,
                    resume=resume,
                    tensorboard=tensorboard,
                )
        except KeyboardInterrupt:
            stderr.print(
                f"stopped: every finished epoch is in {out / 'metrics.jsonl'}; continue with --resume",
                markup=False,
                soft_wrap=True,
            )
            raise click.exceptions.Exit(130) from None
        if first:
            # As the report does: the AE against its VAEs first, then which VAE start.
            sections = [("AE vs VAE", result.ae_vs_vae_verdict())] if result.has_axes else []
            sections.append(("Which VAE start" if result.has_axes else "", result.verdict()))
            for title, lines in sections:
                if title:
                    stdout.print(f"{title}:", markup=False, soft_wrap=True)
                for line in lines:
                    stdout.print(f"- {line}", markup=False, soft_wrap=True)
            stdout.print(f"wrote {out / 'report.md'}", markup=False, soft_wrap=True)


def _labels_option(
    path: str | None, test_path: str | None, option: str, held_out: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """``--labels`` (and ``--test-labels``) read: one label array, or the pair for --data and --test."""
    test_option = f"--test-{option[2:]}"
    if path is None:
        if test_path is not None:
            raise CliError(ExitCode.USAGE, f"{test_option} labels --test's samples: pass {option} for --data's too")
        return None
    if test_path is not None and not held_out:
        raise CliError(ExitCode.USAGE, f"{test_option} labels the samples of --test: pass --test too")
    if held_out and test_path is None:
        raise CliError(ExitCode.USAGE, f"{option} with --test: pass {test_option} FILE, one label per sample of --test")
    train = read_labels(path, option)
    return (train, read_labels(test_path, test_option)) if test_path is not None else train


def read_labels(path: str, option: str = "--labels") -> torch.Tensor:
    """One integer per sample from a ``.csv`` (numbers separated by commas or new lines) or any data file
    :func:`fxvae.io.datafiles.read_data` reads (``.npy``, ``.pt``, ...).

    >>> _ = (tmp / "labels.csv").write_text("0,1,1")
    >>> read_labels(str(tmp / "labels.csv")).tolist()
    [0, 1, 1]
    """
    file = Path(path)
    try:
        if file.suffix.lower() == ".csv":
            if not file.is_file():
                raise fxvae.InputError(f"labels file {path!r} does not exist")
            text = file.read_text().replace(",", " ").split()
            values = torch.tensor([float(v) for v in text], dtype=torch.float64)
        else:
            values = read_data(path).double().flatten()
    except (fxvae.InputError, ValueError) as err:
        raise CliError(ExitCode.DATA, f"{option} {path}: {one_line(str(err))}") from err
    if not (torch.isfinite(values).all() and (values == values.round()).all()):
        raise CliError(ExitCode.DATA, f"{option} {path}: holds numbers that are not whole; pass one integer per sample")
    return values.long()


def _features(spec: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``--features``: the extractor its factory returns (a callable batch -> [N, F])."""
    factory = load_factory(spec)
    try:
        extractor = factory()
    except Exception as err:
        raise CliError(ExitCode.MODEL, f"features factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not callable(extractor):
        raise CliError(ExitCode.MODEL, f"features factory {spec!r} returned {type(extractor).__name__}, not a callable")
    return extractor


@contextlib.contextmanager
def _holding(out: Path | None) -> Iterator[None]:
    """The output folder held for the whole command, from before its check that it holds no comparison: a second
    compare into it, however closely it starts, is refused (USAGE); a killed one leaves nothing behind."""
    with contextlib.ExitStack() as stack:
        if out is not None:
            try:
                stack.enter_context(ledger.locked(out))
            except fxvae.InputError as err:
                raise CliError(ExitCode.USAGE, str(err)) from err
        yield
