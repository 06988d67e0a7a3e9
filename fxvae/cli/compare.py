"""The ``fxvae`` command line: inspect an autoencoder's bottleneck, convert a checkpoint, benchmark AE vs VAE,
evaluate models on held-out data, compare a converted VAE with one trained from scratch.

MODEL is ``package.module:factory`` or ``path/to/file.py:factory``, a callable returning the nn.Module::

    fxvae inspect tests/cli_models.py:conv_ae --input-shape 1,3,8,8 --plot widths.png
    fxvae convert tests/cli_models.py:mlp_ae --checkpoint ae.safetensors --input-shape 2,16 --out vae.safetensors
    fxvae bench benchmarks/models.py:conv_ae --input-shape 1,3,32,32 --batch-sizes 1,32
    fxvae evaluate ae.safetensors vae.safetensors --model tests/cli_models.py:mlp_ae --data held.pt

Errors are one line on stderr and a documented exit code (:class:`ExitCode`, docs/cli.md); ``--debug``
adds the traceback. The conversion options are :class:`fxvae.Options`'s fields, declared once there.
Only this module imports click and rich; matplotlib only for ``--plot``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from torch import nn

import fxvae
from fxvae.analysis.inspection import WidthProfile, width_profile
from fxvae.io.checkpoints import RECIPE_KEY, check_fits, read_state_dict, strip_ansi
from fxvae.io.data import batches, check_model_takes
from fxvae.io.datafiles import read_data
from fxvae.measure import likelihoods
from fxvae.measure.bench import BenchRow, measure
from fxvae.measure.likelihoods import LikelihoodName
from fxvae.modules import input_count
from fxvae.progress import bar
from fxvae.study import ledger
from fxvae.study.compare import run_comparison
from fxvae.study.options import CompareOptions

DEFAULT_THREADS = 1
"""torch threads for ``bench``: on 2 shared cores one epoch of a small MLP took 11.8 s with torch's default
2 threads under load and 0.41 s with 1 (docs/benchmarks.md); pass more for large models on idle machines."""


class ExitCode(IntEnum):
    """Process exit status of every command; the table in docs/cli.md mirrors this one."""

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
    """An error the command line reports as one line with its exit code."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fxvae.__version__, prog_name="fxvae")
def app() -> None:
    """Turn a trained PyTorch autoencoder into a VAE, and measure what that costs.

    \b
    inspect   show how an AE is traced, its width profile and the bottleneck found
    convert   convert an AE checkpoint into a VAE file (and optionally ONNX)
    bench     throughput and peak memory of the AE and its VAE
    evaluate  -ELBO, KL, IWAE NLL of VAE files and AE checkpoints on held-out data, in one table
    compare   train the AE beside its VAE and one from scratch; measure them alike; write a report

    Errors are one line with an exit code (docs/cli.md); --debug shows the traceback.
    """


def main() -> None:
    """Entry point of the ``fxvae`` console script."""
    app()


# --- shared options ----------------------------------------------------------------------------------------

_model_argument = click.argument("model", metavar="MODEL")
_input_shape = click.option(
    "--input-shape", required=True, metavar="SHAPE", help="Example input shape, batch first: 1,3,64,64."
)
_debug = click.option("--debug", is_flag=True, help="Show the traceback of an error.")
_as_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
_threads = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="torch threads; 1 is steadier and faster for small models on a busy machine.",
)


def conversion_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for the fields of :class:`fxvae.Options` (all, or those named), passed on as one
    ``options`` argument. The fields' types, defaults and help are declared once, on the dataclass."""
    return dataclass_options(fxvae.Options, *names)


def dataclass_options(
    cls: type, *names: str, into: str = "options"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for the fields of the dataclass ``cls`` (all, or those named), passed on as one ``cls``
    instance in the argument ``into``; the fields' types, defaults and ``metadata["help"]`` make the options."""
    fields = [f for f in dataclasses.fields(cls) if not names or f.name in names]
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {f.name: kwargs.pop(f.name) for f in fields}
            return command(**{into: cls(**chosen)}, **kwargs)

        for field in reversed(fields):
            kind = _click_type(hints[field.name])
            # A tuple default is given as it is typed, so that the help shows 8,5,5,5.
            default = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
            wrapper = click.option(
                f"--{field.name.replace('_', '-')}",
                field.name,
                type=kind,
                default=default,
                show_default=default is not None,
                metavar=None
                if isinstance(kind, click.Choice)
                else kind.name
                if isinstance(kind, _Words)
                else kind.name.upper(),
                help=field.metadata["help"],
            )(wrapper)
        return wrapper

    return decorate


class _NumberOr(click.ParamType):
    """A float, or one of the named values (``--log-sigma-init auto``)."""

    name = "number"

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words
        self.name = f"float|{'|'.join(words)}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.words or isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor one of {', '.join(self.words)}", param, ctx)


class _Ints(click.ParamType):
    """Comma-separated integers, as a tuple (``--levels 8,5,5,5``)."""

    name = "n,n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).replace(" ", "").split(","))
        except ValueError:
            self.fail(f"{value!r} is not comma-separated integers, e.g. 8,5,5,5", param, ctx)


class _Words(click.ParamType):
    """Comma-separated names, each one of ``choices``, as a tuple (``--starts scratch,warm,ae``)."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices
        self.name = ",".join(choices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        words = tuple(w for w in str(value).replace(" ", "").split(",") if w)
        unknown = [w for w in words if w not in self.choices]
        if unknown or not words:
            self.fail(f"{value!r}: each must be one of {', '.join(self.choices)}", param, ctx)
        return words


def _click_type(hint: Any) -> click.ParamType:
    """The click type of an options field: its type hint, None, Literal values and tuples (of ints, or of
    Literal names) included."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in args])
    if typing.get_origin(hint) is tuple:
        item = args[0] if args else int
        return _Words(typing.get_args(item)) if typing.get_origin(item) is typing.Literal else _Ints()
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        words = tuple(w for a in args if typing.get_origin(a) is typing.Literal for w in typing.get_args(a))
        plain = [a for a in args if typing.get_origin(a) is not typing.Literal]
        if words:
            return _NumberOr(words)
        return _click_type(plain[0])
    return {str: click.STRING, float: click.FLOAT, int: click.INT}[hint]


# --- loading ------------------------------------------------------------------------------------------


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``package.module:factory`` or ``path/to/file.py:factory``.

    >>> type(load_factory("tests/cli_models.py:mlp_ae")()).__name__
    'Sequential'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise CliError(ExitCode.USAGE, f"MODEL {spec!r} must be 'package.module:factory' or 'path/to/file.py:factory'")
    if module_name.endswith(".py") or "/" in module_name:
        module = _import_file(Path(module_name))
    else:
        # Console scripts do not put the working directory on sys.path; `python -m` does. Do the same.
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise CliError(ExitCode.MODEL, f"cannot import module {module_name!r}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise CliError(ExitCode.MODEL, f"{module_name!r} has no callable {attr!r}; callables there: {', '.join(found)}")
    return factory


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise CliError(ExitCode.MODEL, f"model file {str(path)!r} does not exist")
    name = f"_fxvae_factory_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(ExitCode.MODEL, f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # dataclasses and pickling look the module up by name while it executes.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise CliError(ExitCode.MODEL, f"cannot import {str(path)!r}: {type(err).__name__}: {err}") from err
    return module


def load_model(spec: str) -> nn.Module:
    """Call the factory named by ``spec`` and check that it returns an nn.Module."""
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as err:
        raise CliError(ExitCode.MODEL, f"factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise CliError(ExitCode.MODEL, f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; every entry must be a positive integer."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise CliError(ExitCode.USAGE, f"{option} {text!r} must be comma-separated positive integers, e.g. 1,3,64,64")
    return values


def example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A seeded random batch of ``shape`` that ``model`` is checked to accept (:func:`check_data`)."""
    text = ",".join(map(str, shape))
    if len(shape) < 2:
        raise CliError(
            ExitCode.USAGE,
            f"--input-shape {text} has no batch dimension: put the batch first, e.g. --input-shape 1,{text}",
        )
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    check_data(model, (x,), f"--input-shape {text}")
    return x


def check_data(model: nn.Module, example: tuple[Any, ...], what: str) -> None:
    """Exit with DATA where ``model`` cannot take the batch ``example`` (fxvae.io.data.check_model_takes names the
    shape it takes), and with MODEL where its forward fails for another reason."""
    try:
        check_model_takes(model, example, what)
    except fxvae.InputError as err:
        raise CliError(ExitCode.DATA, str(err)) from err
    except Exception as err:
        shape = list(example[0].shape) if isinstance(example[0], torch.Tensor) else type(example[0]).__name__
        raise CliError(
            ExitCode.MODEL,
            f"{type(model).__name__} fails on {what} (shape {shape}): {type(err).__name__}: {_one_line(str(err))}",
        ) from err


def load_checkpoint_into(model: nn.Module, path: Path) -> list[str]:
    """Load ``path`` (safetensors or torch pickle) into ``model``; returns fxvae.io.checkpoints's notes on the file.

    A file that does not fit is one line: the missing and unexpected keys, or the mismatched shapes, summarised.
    """
    state_dict, notes = read_state_dict(path)
    check_fits(state_dict, model.state_dict(), f"checkpoint {str(path)!r} does not fit {type(model).__name__}")
    model.load_state_dict(state_dict)
    return notes


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def _exit_code(err: BaseException) -> ExitCode:
    if isinstance(err, CliError):
        return err.code
    if isinstance(err, fxvae.CheckpointError):
        return ExitCode.CHECKPOINT
    if isinstance(err, fxvae.FxvaeError):
        return ExitCode.CONVERSION
    return ExitCode.INTERNAL


_PYTHON_TO_OPTIONS = (
    ("calibration=<a batch or a DataLoader>", "--calibration FILE"),
    ("bottleneck=", "--bottleneck "),
    ("log_sigma_init=", "--log-sigma-init "),
    ("likelihood=", "--likelihood "),
    ("density='gmm'", "--density gmm"),
    ("density=('gaussian',)", "--density gaussian"),
    ("anomaly_labels= (the AUROC)", "--anomaly-labels (the AUROC)"),
    ("labels= (the linear probe)", "--labels (the linear probe)"),
)


def _as_options(message: str) -> str:
    """fxvae's messages speak Python (``bottleneck=...``); here they speak command-line options."""
    for python, option in _PYTHON_TO_OPTIONS:
        message = message.replace(python, option)
    return message


def _print_table(table: Table) -> None:
    """A table at its natural width: in a file or a pipe rich would squeeze it to 80 columns and cut numbers."""
    if _out.is_terminal:
        _out.print(table)
        return
    width = max(80, Measurement.get(_out, _out.options.update_width(10_000), table).maximum)
    Console(highlight=False, width=width, file=sys.stdout).print(table)


@contextlib.contextmanager
def _reported(debug: bool) -> Iterator[None]:
    """Errors become one line on stderr and their exit code (the traceback only with --debug); warnings
    become one line each, without the source line Python would print, and come before the error they led to.
    Terminal escape codes (torch writes some) are stripped from both."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        except click.exceptions.Exit:
            raise
        except Exception as err:
            code = _exit_code(err)
            if debug:
                _err.print(traceback.format_exc(), markup=False)
            _print_warnings(caught)
            message = strip_ansi(_as_options(_one_line(str(err)) or type(err).__name__))
            if code is ExitCode.INTERNAL:
                message = f"unexpected {type(err).__name__}: {message} (rerun with --debug for the traceback)"
            _err.print(f"error: {message}", markup=False, soft_wrap=True)
            raise click.exceptions.Exit(int(code)) from err
        finally:
            _print_warnings(caught)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print the user warnings caught so far, once each."""
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            text = strip_ansi(_as_options(_one_line(str(warning.message))))
            _err.print(f"warning: {text}", markup=False, soft_wrap=True)
    caught.clear()


def _check_output(path: Path | None, force: bool, option: str) -> None:
    if path is None:
        return
    if path.exists() and not force:
        raise CliError(ExitCode.USAGE, f"{str(path)!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise CliError(ExitCode.USAGE, f"{option}: directory {str(path.parent)!r} of {str(path)!r} does not exist")


# --- inspect ------------------------------------------------------------------------------------------


def plot_profile(profile: WidthProfile, path: Path, title: str) -> None:
    """Write the hourglass picture: width per node (log scale) along the data path, bottleneck marked.

    A forced bottleneck that is bypassed is drawn hollow and labelled so.
    """
    try:
        import matplotlib
    except ImportError as err:
        raise CliError(ExitCode.USAGE, "--plot needs matplotlib: pip install 'fxvae[plot]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, ScalarFormatter

    points = [(i, n) for i, n in enumerate(profile.nodes) if n.width is not None]
    xs = [i for i, _ in points]
    widths = [n.width for _, n in points]
    b = profile.bottleneck
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(profile.nodes) + 2.5), 4.4))
    ax.plot(xs, widths, color="0.6", lw=1.2, zorder=1)
    for separating, style in (
        (True, {"color": "tab:blue", "label": "separator (on every path)"}),
        (False, {"facecolors": "white", "edgecolors": "tab:orange", "label": "bypassed by a skip edge"}),
    ):
        chosen = [(i, n.width) for i, n in points if n.separator == separating]
        if chosen:
            ax.scatter(*zip(*chosen, strict=True), s=28, zorder=2, clip_on=False, **style)
    bypassed = b.forced and any(c.node == b.node and not c.separates for c in b.candidates)
    star = next((i for i, n in points if n.name == b.node), None)
    if star is not None:
        label = f"{'forced, bypassed' if bypassed else 'bottleneck'} {b.node} {list(b.shape)}"
        fill = {"facecolors": "white", "edgecolors": "tab:red"} if bypassed else {"color": "tab:red"}
        ax.scatter([star], [b.width], marker="*", s=260, zorder=3, clip_on=False, label=label, **fill)
    ax.axhline(profile.input_width, color="0.3", ls="--", lw=0.8, label=f"input width {profile.input_width}")
    ax.set_yscale("log")
    low, high = min([*widths, profile.input_width]), max([*widths, profile.input_width])
    ax.set_ylim(low / 1.6, high * 1.6)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(plt.NullFormatter())
    ax.margins(x=0.03)
    ax.set_xticks(xs, [n.name for _, n in points], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("per-sample width (elements)")
    ax.set_xlabel("node along the data path (input -> reconstruction)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@app.command()
@_model_argument
@_input_shape
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="FILE", help="Load these weights first.")
@conversion_options("bottleneck")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="Write the width profile as a PNG.")
@_as_json
@_debug
def inspect(
    model: str,
    input_shape: str,
    checkpoint: Path | None,
    options: fxvae.Options,
    plot: Path | None,
    as_json: bool,
    debug: bool,
) -> None:
    """Show how MODEL is traced, its width profile, the chosen bottleneck and the runners-up."""
    with _reported(debug):
        _check_output(plot, force=True, option="--plot")
        module = load_model(model)
        shape = parse_ints(input_shape, "--input-shape")
        notes = load_checkpoint_into(module, checkpoint) if checkpoint is not None else []
        profile = width_profile(module, example_input(module, shape), bottleneck=options.bottleneck)
        if plot is not None:
            plot_profile(profile, plot, f"{model}  input {list(shape)}")
        if as_json:
            click.echo(json.dumps({**asdict(profile), "checkpoint_notes": notes}, indent=2))
            return
        _print_profile(profile, notes)
        if plot is not None:
            _out.print(f"wrote {plot}")


def _print_profile(profile: WidthProfile, notes: list[str]) -> None:
    b = profile.bottleneck
    for note in notes:
        _out.print(f"checkpoint: {note}", markup=False)
    _out.print(
        f"tracer: [bold]{profile.tracer}[/]   nodes: {profile.node_count}   "
        f"data path: {len(profile.nodes)} nodes   input width: {profile.input_width}"
    )
    table = Table(title="width profile (input -> reconstruction)", title_justify="left")
    for col, justify in (("#", "right"), ("node", "left"), ("op", "left"), ("shape", "left"), ("width", "right")):
        table.add_column(col, justify=justify)
    table.add_column("role on the data path")
    for i, n in enumerate(profile.nodes):
        if n.name == b.node:
            mark = "[red]<- bottleneck[/]"
        else:
            mark = "separator" if n.separator else f"[dim]bypassed: {n.bypass}[/]"
        shape = str(list(n.shape)) if n.shape is not None else "-"
        table.add_row(str(i), n.name, n.target, shape, str(n.width) if n.width is not None else "-", mark)
    _print_table(table)
    where = f", the output of {b.module!r}" if b.module else ""
    head = f"mu head: {b.layer} {b.layer_type}" if b.head_kind == "layer" else "pointwise log-sigma head on mu"
    _out.print(
        f"bottleneck: [bold]{b.node}[/]{where} {list(b.shape)} (width {b.width} of {b.input_width}, "
        f"{b.input_width / b.width:.1f}x compression); head kind: {b.head_kind} ({head})",
        markup=True,
    )
    cands = Table(title="candidates", title_justify="left")
    for col in ("node", "module", "shape", "width", "separates", "why"):
        cands.add_column(col)
    for c in b.candidates:
        separates = "yes" if c.separates else "no"
        cands.add_row(c.node, c.module or "-", str(list(c.shape)), str(c.width), separates, _as_options(c.reason))
    _print_table(cands)


# --- convert ------------------------------------------------------------------------------------------


@app.command()
@_model_argument
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="The AE's weights (.safetensors, .pt, .pth).",
)
@_input_shape
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Where to write the VAE (.safetensors).",
)
@conversion_options()
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Data to calibrate with (.pt, .npy, .npz, .safetensors; batch first): it standardises a Gaussian latent "
    "(fxvae.calibrate) and fits a vq codebook or fsq projections.",
)
@click.option(
    "--onnx", type=click.Path(path_type=Path), metavar="FILE", help="Also export the eval-mode VAE (z = mu) to ONNX."
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_debug
def convert(
    model: str,
    checkpoint: Path,
    input_shape: str,
    out: Path,
    options: fxvae.Options,
    calibration: Path | None,
    onnx: Path | None,
    force: bool,
    debug: bool,
) -> None:
    """Convert an AE checkpoint into a VAE checkpoint (and optionally an ONNX file)."""
    with _reported(debug):
        _check_output(out, force, "--out")
        _check_output(onnx, force, "--onnx")
        if not checkpoint.is_file():
            raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        with _err.status("loading the model"):
            module = load_model(model)
            x = example_input(module, parse_ints(input_shape, "--input-shape"))
        data = None
        if calibration is not None:
            with _data_errors():
                data = read_data(calibration)
            check_source(module, data, f"--calibration {calibration}")
        with _err.status(f"converting {checkpoint}"):
            start = time.perf_counter()
            vae, _ = fxvae.convert_checkpoint(module, checkpoint, x, out=out, calibration=data, **asdict(options))
            elapsed = time.perf_counter() - start
        recipe = fxvae.conversion(vae)
        b = recipe.bottleneck
        head = f"mu head from {b.layer!r}" if b.head_kind == "layer" else "pointwise log-sigma head"
        q = recipe.quantizer
        if q is not None:
            head = (
                f"{q.family} quantiser {q.module!r}: {q.codebook_size} codes, {q.rate_bits:.4g} bits per position, "
                f"codes per sample {list(q.code_shape)}"
            )
        _err.print(f"bottleneck {b.node} {list(b.shape)} ({head}, traced with {recipe.tracer})", markup=False)
        if q is not None and q.quantized_mse is not None:
            _err.print(
                f"reconstruction MSE on the calibration data: {q.ae_mse:.6g} (AE), {q.quantized_mse:.6g} "
                f"(quantised, before training)",
                markup=False,
            )
        _err.print(
            f"wrote {out} in {elapsed:.2f} s; keys moved: {recipe.key_map}, new: {list(recipe.new_keys)}", markup=False
        )
        if onnx is not None:
            with _err.status(f"exporting {onnx}"):
                try:
                    fxvae.export_onnx(vae, onnx, x)
                except Exception as err:
                    raise CliError(ExitCode.EXPORT, f"ONNX export to {str(onnx)!r} failed: {err}") from err
            _err.print(f"wrote {onnx}", markup=False)


# --- bench ------------------------------------------------------------------------------------------


@app.command()
@_model_argument
@_input_shape
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@click.option(
    "--batch-sizes", default="1,32,256", show_default=True, metavar="N,N", help="Comma-separated batch sizes."
)
@click.option(
    "--mode",
    type=click.Choice(["eval", "train", "eval,train"]),
    default="eval,train",
    show_default=True,
    help="eval (no-grad forward), train (whole step), or both.",
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=20, show_default=True, help="Timed repeats per model and phase."
)
@click.option(
    "--warmup", type=click.IntRange(min=1), default=3, show_default=True, help="Untimed steps per model and phase."
)
@click.option(
    "--repeat-ms",
    type=click.FloatRange(min=0.0),
    default=50.0,
    show_default=True,
    help="Target duration of one timed repeat.",
)
@_threads
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="FILE", help="Load these weights first.")
@conversion_options()
@_as_json
@_debug
def bench(
    model: str,
    input_shape: str,
    device: str,
    batch_sizes: str,
    mode: str,
    repeats: int,
    warmup: int,
    repeat_ms: float,
    threads: int,
    checkpoint: Path | None,
    options: fxvae.Options,
    as_json: bool,
    debug: bool,
) -> None:
    """Throughput (samples/s) and peak memory of MODEL and its VAE, inference and training step."""
    with _reported(debug):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        modes = tuple(mode.split(","))
        torch.set_num_threads(threads)
        sizes = parse_ints(batch_sizes, "--batch-sizes")
        shape = parse_ints(input_shape, "--input-shape")
        module = load_model(model)
        if checkpoint is not None:
            load_checkpoint_into(module, checkpoint)
        x = example_input(module, shape)
        start = time.perf_counter()
        vae, kl = fxvae.convert(module, x, **asdict(options))
        convert_s = time.perf_counter() - start
        if not fxvae.conversion(vae).dynamic_batch and set(sizes) != {shape[0]}:
            raise CliError(
                ExitCode.USAGE, f"the VAE was exported with a fixed batch of {shape[0]}; pass --batch-sizes {shape[0]}"
            )
        params = (sum(p.numel() for p in module.parameters()), sum(p.numel() for p in vae.parameters()))
        with bar("AE vs VAE", len(modes) * len(sizes) * repeats, enabled=not as_json) as shown:
            rows = measure(
                module,
                vae,
                kl,
                shape[1:],
                device=device,
                batch_sizes=sizes,
                modes=modes,
                repeats=repeats,
                warmup=warmup,
                repeat_s=repeat_ms / 1000,
                on_repeat=shown.advance,
            )
        if as_json:
            result = {
                "model": model,
                "input_shape": list(shape),
                "device": device,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "convert_s": convert_s,
                "params": params,
                "rows": [asdict(r) for r in rows],
            }
            click.echo(json.dumps(result, indent=2))
            return
        _print_bench(rows, model, device, convert_s, params)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _print_bench(rows: list[BenchRow], model: str, device: str, convert_s: float, params: tuple[int, int]) -> None:
    threads = torch.get_num_threads()
    _out.print(f"torch threads: {threads}", markup=False)
    table = Table(
        title=f"{model} on {device} (torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}); "
        f"converted in {convert_s:.2f} s; params AE {params[0]:,} VAE {params[1]:,}",
        title_justify="left",
    )
    columns = ("mode", "batch", "AE samples/s (IQR)", "VAE samples/s (IQR)", "VAE/AE wall clock (IQR)")
    columns += ("VAE/AE CPU time (IQR)", "peak MiB AE / VAE")
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        cpu = "n/a" if r.cpu_ratio is None else f"{r.cpu_ratio:.3f} ({r.cpu_ratio_q1:.3f}-{r.cpu_ratio_q3:.3f})"
        table.add_row(
            r.mode,
            str(r.batch_size),
            f"{r.ae.median:,.0f} ({r.ae.q1:,.0f}-{r.ae.q3:,.0f})",
            f"{r.vae.median:,.0f} ({r.vae.q1:,.0f}-{r.vae.q3:,.0f})",
            f"{r.ratio:.3f} ({r.ratio_q1:.3f}-{r.ratio_q3:.3f})",
            cpu,
            f"{_mib(r.ae.peak_mem_mib)} / {_mib(r.vae.peak_mem_mib)}",
        )
    _print_table(table)
    _out.print(
        "VAE/AE: the VAE's throughput over the AE's, median of interleaved pairs; the CPU-time ratio counts only "
        "this process's time. Peak MiB: the most memory a step's tensors hold at once (CUDA: the allocator's "
        "peak; CPU: torch's profiler).",
        markup=False,
        soft_wrap=True,
    )


# --- evaluate -------------------------------------------------------------------------------------------

_LIKELIHOODS = click.Choice(list(typing.get_args(LikelihoodName)))


def read_data_source(spec: str, resize: str | None) -> Any:
    """``--data``: a data file or folder of images (:func:`fxvae.io.datafiles.read_data`), or
    ``package.module:factory`` returning a tensor, a Dataset or a DataLoader."""
    size = parse_ints(resize, "--resize") if resize is not None else None
    if size is not None and len(size) != 2:
        raise CliError(ExitCode.USAGE, f"--resize {resize!r} must be HEIGHT,WIDTH, e.g. 28,28")
    path, _, _ = spec.rpartition(":")
    if Path(spec).exists() or (path and Path(path).is_file() and not path.endswith(".py")) or ":" not in spec:
        try:
            return read_data(spec, resize=size)
        except fxvae.InputError as err:
            raise CliError(ExitCode.DATA, f"--data: {err}") from err
    factory = load_factory(spec)
    try:
        data = factory()
    except Exception as err:
        raise CliError(ExitCode.MODEL, f"data factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(data, (torch.Tensor, Iterable, torch.utils.data.Dataset)):
        raise CliError(
            ExitCode.DATA, f"data factory {spec!r} returned {type(data).__name__}, not a tensor, Dataset or DataLoader"
        )
    return data


def first_batch(data: Any, count: int, what: str = "--data") -> tuple[Any, ...]:
    """The inputs of the data's first batch: the example a model is rebuilt with."""
    with _data_errors():
        for args in batches(data, count):
            return args
    raise CliError(ExitCode.DATA, f"{what} holds no samples")


def check_source(model: nn.Module, source: Any, what: str) -> None:
    """Exit with DATA where ``model`` cannot take the first batch of ``source`` (``what``: ``"--data held.pt"``)."""
    check_data(model, first_batch(source, input_count(model), what), what)


def is_vae_file(path: Path) -> bool:
    """Whether ``path`` is a VAE that fxvae.save wrote (a safetensors file with an fxvae recipe)."""
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return RECIPE_KEY in (handle.metadata() or {})
    except Exception:  # unreadable: fxvae.load names the problem
        return True


@contextlib.contextmanager
def _data_errors() -> Iterator[None]:
    """What fxvae refuses in the data (its shape, NaN, a likelihood that does not fit) exits with DATA."""
    try:
        yield
    except fxvae.InputError as err:
        raise CliError(ExitCode.DATA, str(err)) from err


def _sigma(value: str | None) -> float | str | None:
    if value is None or value == "optimal":
        return value
    try:
        return float(value)
    except ValueError as err:
        raise CliError(ExitCode.USAGE, f"--sigma {value!r} must be a positive number or 'optimal'") from err


@app.command()
@click.argument("checkpoints", metavar="FILE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, metavar="MODEL", help="The AE's factory, as for convert.")
@click.option("--data", required=True, metavar="DATA", help="Held-out data: a file, a folder of images, or a factory.")
@click.option("--resize", metavar="H,W", help="Scale a folder of images to this size.")
@click.option("--likelihood", type=_LIKELIHOODS, default="gaussian", show_default=True, help="What the output is.")
@click.option(
    "--sigma",
    metavar="FLOAT|optimal",
    help="The Gaussian sigma or Laplace b (default: optimal, fitted once and shared by every row).",
)
@click.option("--k", "k", type=click.IntRange(min=1), default=1, show_default=True, help="Posterior draws per sample.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Samples per batch of a data file (default 256).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the posterior draws.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@_threads
@_as_json
@_debug
def evaluate(
    checkpoints: tuple[Path, ...],
    model: str,
    data: str,
    resize: str | None,
    likelihood: str,
    sigma: str | None,
    k: int,
    batch_size: int | None,
    seed: int,
    device: str,
    threads: int,
    as_json: bool,
    debug: bool,
) -> None:
    """Measure VAE files (from fxvae convert) and AE checkpoints on held-out data, one row each: -ELBO, KL,
    importance-weighted NLL, active units, mutual information. An autoencoder checkpoint (.pt, or safetensors
    without a recipe) gets its reconstruction term under the same likelihood.

    Every row shares one likelihood: an optimal sigma is fitted once, to the first AE checkpoint given (else
    to the first file) on --data, and the output says so."""
    with _reported(debug):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        torch.set_num_threads(threads)
        for checkpoint in checkpoints:
            if not checkpoint.is_file():
                raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        scale = _sigma(sigma)
        source = read_data_source(data, resize)
        architecture = load_model(model)
        example = first_batch(source, input_count(architecture))
        check_data(architecture, example, f"--data {data}")
        measured = {checkpoint: _measured(checkpoint, model, example).to(device) for checkpoint in checkpoints}
        if not as_json:
            _out.print(f"torch threads: {torch.get_num_threads()}", markup=False)
        # A fitted scale is fitted once, to the AE where one is given: the reference the VAEs are read against.
        order = sorted(checkpoints, key=is_vae_file)
        shared: Any = likelihood
        fitted_to: Path | None = None
        results: dict[Path, fxvae.Evaluation] = {}
        for checkpoint in order:
            with _data_errors():
                results[checkpoint] = fxvae.evaluate(
                    measured[checkpoint],
                    source,
                    likelihood=shared,
                    sigma=scale if isinstance(shared, str) else None,
                    k=k,
                    batch_size=batch_size if isinstance(source, torch.Tensor) else None,
                    seed=seed,
                    progress=not as_json,
                )
            if isinstance(shared, str) and likelihood in ("gaussian", "laplace") and scale in (None, "optimal"):
                shared, fitted_to = _fitted_likelihood(likelihood, results[checkpoint]), checkpoint
        rows = [(checkpoint, results[checkpoint]) for checkpoint in checkpoints]
        if as_json:
            records = [
                {
                    "checkpoint": str(checkpoint),
                    "model": model,
                    "likelihood_fitted_to": None if fitted_to is None else {"file": str(fitted_to), "data": data},
                    **result.to_dict(),
                }
                for checkpoint, result in rows
            ]
            click.echo(json.dumps(records, indent=2))
            return
        _print_evaluations(rows, data, k, fitted_to)


def _measured(checkpoint: Path, model: str, example: tuple[Any, ...]) -> nn.Module:
    """The model in ``checkpoint``: a VAE file rebuilt with fxvae.load, or MODEL with an AE checkpoint's weights."""
    module = load_model(model)
    if is_vae_file(checkpoint):
        with _err.status(f"loading {checkpoint}"):
            return fxvae.load(module, checkpoint, example)[0]
    load_checkpoint_into(module, checkpoint)
    return module


def _fitted_likelihood(name: str, result: fxvae.Evaluation) -> likelihoods.Likelihood:
    """The likelihood ``result`` was measured with, its fitted scale fixed, for the other rows to share."""
    cls = likelihoods.Gaussian if name == "gaussian" else likelihoods.Laplace
    return cls(result.scale, fitted=True)


_KINDS = {"vae": "VAE", "vq": "VQ model", "fsq": "FSQ model", "ae": "AE (recon only)"}


def _estimate(value: fxvae.Estimate | None) -> str:
    return "-" if value is None else f"{value.value:.4f} ± {value.stderr:.2g}"


def _print_evaluations(rows: list[tuple[Path, fxvae.Evaluation]], data: str, k: int, fitted_to: Path | None) -> None:
    first = rows[0][1]
    _out.print(
        f"{data}: n={first.n}, k={k}, likelihood {first.likelihood}, seed {first.seed}; nats per sample "
        "(± standard error over the data)",
        markup=False,
        soft_wrap=True,
    )
    if fitted_to is not None:
        name = "sigma" if first.likelihood.startswith("gaussian") else "b"
        _out.print(
            f"{name} = {first.scale:.4g} (optimal: fitted to {fitted_to} on {data}; shared by every row)",
            markup=False,
            soft_wrap=True,
        )
    table = Table(title_justify="left")
    for col in ("file", "model", "recon", "kl", "neg_elbo", "nll", "bits/dim"):
        table.add_column(col, justify="left" if col in ("file", "model") else "right", no_wrap=True)
    for checkpoint, result in rows:
        bound = "nll" if result.nll is not None else "neg_elbo" if result.neg_elbo is not None else None
        bits = f"{result.bits_per_dim(bound).value:.5f} ({bound})" if bound is not None else "-"
        table.add_row(
            str(checkpoint),
            _KINDS[result.kind],
            _estimate(result.recon),
            _estimate(result.kl),
            _estimate(result.neg_elbo),
            _estimate(result.nll),
            bits,
        )
    _print_table(table)
    for checkpoint, result in rows:
        if result.active_units is not None:
            _out.print(
                f"{checkpoint}: active units {result.active_units} of {result.latent_dims} (Var_x E_q[z] > "
                f"{result.active_threshold}); mutual information {_estimate(result.mutual_info)} nats from "
                f"{result.mixture} posteriors (at most log {result.mixture} = {math.log(result.mixture):.2f})",
                markup=False,
                soft_wrap=True,
            )
        if result.rate_bits is not None:
            _out.print(
                f"{checkpoint}: rate {result.rate_bits:.4g} bits per sample; codebook perplexity "
                f"{result.perplexity:.4g}, {100 * (result.codes_used or 0):.1f}% of the codes used; kl is positions "
                "x log K (a uniform prior)",
                markup=False,
                soft_wrap=True,
            )


# --- compare ------------------------------------------------------------------------------------------

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
            _err.print(f"error: {_as_options(_one_line(str(err)))}", markup=False, soft_wrap=True)
            raise click.exceptions.Exit(int(ExitCode.USAGE)) from err

    return checked


def _warn_now(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """A warning raised while a comparison runs, printed as it happens (one line), not after the run."""
    if issubclass(category, UserWarning):
        _err.print(f"warning: {_as_options(_one_line(str(message)))}", markup=False, soft_wrap=True)


@app.command()
@_options_refused
@_model_argument
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
@click.option("--force", is_flag=True, help="Start over where --out already holds a comparison.")
@click.option("--quick", is_flag=True, help=f"Try it: {QUICK['epochs']} epochs, {QUICK['seeds']} seed.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@_threads
@_debug
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
    with _reported(debug), _holding(out if first else None):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
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
            _err.print(f"torch threads: {threads}", markup=False)
        try:
            with _data_errors(), warnings.catch_warnings():
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
                )
        except KeyboardInterrupt:
            _err.print(
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
                    _out.print(f"{title}:", markup=False, soft_wrap=True)
                for line in lines:
                    _out.print(f"- {line}", markup=False, soft_wrap=True)
            _out.print(f"wrote {out / 'report.md'}", markup=False, soft_wrap=True)


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
        raise CliError(ExitCode.DATA, f"{option} {path}: {_one_line(str(err))}") from err
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
