"""How every command fails: one line on stderr and a documented exit code (:class:`ExitCode`, docs/cli.md), the
traceback only with ``--debug``; warnings one line each. fxvae's messages, which speak Python, are reworded in
command-line options here."""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator
from enum import IntEnum

import click

import fxvae
from fxvae.cli.output import stderr
from fxvae.io.checkpoints import strip_ansi


class ExitCode(IntEnum):
    """Process exit status of every command; the table in docs/cli.md mirrors this one.

    >>> int(ExitCode.DATA)
    7
    """

    OK = 0
    INTERNAL = 1
    """An unexpected error (a bug in fxvae or in the model); rerun with --debug for the traceback."""
    USAGE = 2
    """Bad option value (same code as click's own usage errors), or an output exists without --force."""
    MODEL = 3
    """The factory cannot be imported or called, does not return an nn.Module, or its forward fails."""
    CHECKPOINT = 4
    """The checkpoint is missing, corrupt, or does not fit the model (fxvae.CheckpointError)."""
    CONVERSION = 5
    """Tracing, bottleneck search or rewrite failed (TraceError, BottleneckError, RewriteError)."""
    EXPORT = 6
    """The ONNX export failed."""
    DATA = 7
    """The data cannot be read, or does not fit the model or the likelihood (evaluate, compare)."""


class CliError(Exception):
    """An error the command line reports as one line with its exit code.

    >>> CliError(ExitCode.USAGE, "--resize 28 must be HEIGHT,WIDTH").code.name
    'USAGE'
    """

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def one_line(message: str) -> str:
    """A message of several lines as one, its lines joined by ``;``.

    >>> one_line("shapes differ:\\n  0.weight [4, 16]\\n")
    'shapes differ:; 0.weight [4, 16]'
    """
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())


_PYTHON_TO_OPTIONS = (
    ("calibration=<a batch or a DataLoader>", "--calibration FILE"),
    ("bottleneck=", "--bottleneck "),
    ("log_sigma_init=", "--log-sigma-init "),
    ("likelihood=", "--likelihood "),
    ("density='gmm'", "--density gmm"),
    ("density=('gaussian',)", "--density gaussian"),
    ("anomaly_labels= (the AUROC)", "--anomaly-labels (the AUROC)"),
    ("labels= (the linear probe)", "--labels (the linear probe)"),
    ("eval_samples=", "--eval-samples "),
    ("eval_every=", "--eval-every "),
)


def as_options(message: str) -> str:
    """fxvae's messages speak Python (``bottleneck=...``); here they speak command-line options.

    >>> as_options("force one with bottleneck=<node or module>")
    'force one with --bottleneck <node or module>'
    """
    for python, option in _PYTHON_TO_OPTIONS:
        message = message.replace(python, option)
    return message


def _exit_code(err: BaseException) -> ExitCode:
    if isinstance(err, CliError):
        return err.code
    if isinstance(err, fxvae.CheckpointError):
        return ExitCode.CHECKPOINT
    if isinstance(err, fxvae.FxvaeError):
        return ExitCode.CONVERSION
    return ExitCode.INTERNAL


@contextlib.contextmanager
def reported(debug: bool) -> Iterator[None]:
    """Errors become one line on stderr and their exit code (the traceback only with --debug); warnings
    become one line each, without the source line Python would print, and come before the error they led to.
    Terminal escape codes (torch writes some) are stripped from both.

    >>> with reported(debug=False):
    ...     raise fxvae.CheckpointError("'ae.pt' does not exist")
    Traceback (most recent call last):
    click.exceptions.Exit: 4
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        except click.exceptions.Exit:
            raise
        except Exception as err:
            code = _exit_code(err)
            if debug:
                stderr.print(traceback.format_exc(), markup=False)
            _print_warnings(caught)
            message = strip_ansi(as_options(one_line(str(err)) or type(err).__name__))
            if code is ExitCode.INTERNAL:
                message = f"unexpected {type(err).__name__}: {message} (rerun with --debug for the traceback)"
            stderr.print(f"error: {message}", markup=False, soft_wrap=True)
            raise click.exceptions.Exit(int(code)) from err
        finally:
            _print_warnings(caught)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print the user warnings caught so far, once each."""
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            text = strip_ansi(as_options(one_line(str(warning.message))))
            stderr.print(f"warning: {text}", markup=False, soft_wrap=True)
    caught.clear()


@contextlib.contextmanager
def data_errors() -> Iterator[None]:
    """What fxvae refuses in the data (its shape, NaN, a likelihood that does not fit) exits with DATA.

    >>> with data_errors():
    ...     raise fxvae.InputError("--data held.pt holds NaN")
    Traceback (most recent call last):
    fxvae.cli.errors.CliError: --data held.pt holds NaN
    """
    try:
        yield
    except fxvae.InputError as err:
        raise CliError(ExitCode.DATA, str(err)) from err
