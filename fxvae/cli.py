"""The ``fxvae`` command line: inspect an autoencoder's bottleneck, convert a checkpoint, benchmark AE vs VAE.

MODEL is ``package.module:factory`` or ``path/to/file.py:factory``, a callable returning the nn.Module::

    fxvae inspect tests/cli_models.py:conv_ae --input-shape 1,3,8,8 --plot widths.png
    fxvae convert tests/cli_models.py:mlp_ae --checkpoint ae.safetensors --input-shape 2,16 --out vae.safetensors
    fxvae bench benchmarks/models.py:conv_ae --input-shape 1,3,32,32 --batch-sizes 1,32

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
import sys
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

import fxvae
from fxvae.bench import BenchRow, measure
from fxvae.inspection import WidthProfile, width_profile
from fxvae.io import read_data, read_state_dict
from fxvae.modules import eval_mode

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
    """Turn a trained PyTorch autoencoder into a VAE: inspect, convert, benchmark."""


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


def conversion_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for the fields of :class:`fxvae.Options` (all, or those named), passed on as one
    ``options`` argument. The fields' types, defaults and help are declared once, on the dataclass."""
    fields = [f for f in dataclasses.fields(fxvae.Options) if not names or f.name in names]
    hints = typing.get_type_hints(fxvae.Options)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {f.name: kwargs.pop(f.name) for f in fields}
            return command(options=fxvae.Options(**chosen), **kwargs)

        for field in reversed(fields):
            kind = _click_type(hints[field.name])
            wrapper = click.option(
                f"--{field.name.replace('_', '-')}",
                field.name,
                type=kind,
                default=field.default,
                show_default=field.default is not None,
                metavar=None if isinstance(kind, click.Choice) else kind.name.upper(),
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


def _click_type(hint: Any) -> click.ParamType:
    """The click type of an Options field: its type hint, None and Literal values included."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in args])
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
    """A seeded random batch of ``shape`` that ``model`` is checked to accept."""
    if len(shape) < 2:
        raise CliError(
            ExitCode.USAGE,
            f"--input-shape {','.join(map(str, shape))} has no batch dimension: put the batch first, "
            f"e.g. --input-shape 1,{','.join(map(str, shape))}",
        )
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    except Exception as err:
        raise CliError(
            ExitCode.MODEL,
            f"{type(model).__name__} fails on an input of shape {list(shape)}: {type(err).__name__}: "
            f"{_one_line(str(err))}; check --input-shape",
        ) from err
    return x


def load_checkpoint_into(model: nn.Module, path: Path) -> list[str]:
    """Load ``path`` (safetensors or torch pickle) into ``model``; returns fxvae.io's notes on the file."""
    state_dict, notes = read_state_dict(path)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise CliError(
            ExitCode.CHECKPOINT, f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {err}"
        ) from err
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


def _as_options(message: str) -> str:
    """fxvae's messages speak Python (``bottleneck=...``); here they speak command-line options."""
    return message.replace("bottleneck=", "--bottleneck ").replace("log_sigma_init=", "--log-sigma-init ")


@contextlib.contextmanager
def _reported(debug: bool) -> Iterator[None]:
    """Errors become one line on stderr and their exit code (the traceback only with --debug); warnings
    become one line each, without the source line Python would print."""
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
            message = _as_options(_one_line(str(err)) or type(err).__name__)
            if code is ExitCode.INTERNAL:
                message = f"unexpected {type(err).__name__}: {message} (rerun with --debug for the traceback)"
            _err.print(f"error: {message}", markup=False, soft_wrap=True)
            raise click.exceptions.Exit(int(code)) from err
        finally:
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    text = _as_options(_one_line(str(warning.message)))
                    _err.print(f"warning: {text}", markup=False, soft_wrap=True)


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
    table.add_column("")
    for i, n in enumerate(profile.nodes):
        if n.name == b.node:
            mark = "[red]<- bottleneck[/]"
        else:
            mark = "separator" if n.separator else f"[dim]bypassed: {n.bypass}[/]"
        shape = str(list(n.shape)) if n.shape is not None else "-"
        table.add_row(str(i), n.name, n.target, shape, str(n.width) if n.width is not None else "-", mark)
    _out.print(table)
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
    _out.print(cands)


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
    help="Data to standardise the latent with (.pt, .npy, .safetensors; batch first), see fxvae.calibrate.",
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
        with _err.status(f"converting {checkpoint}"):
            start = time.perf_counter()
            data = read_data(calibration) if calibration is not None else None
            vae, _ = fxvae.convert_checkpoint(module, checkpoint, x, out=out, calibration=data, **asdict(options))
            elapsed = time.perf_counter() - start
        recipe = fxvae.conversion(vae)
        b = recipe.bottleneck
        head = f"mu head from {b.layer!r}" if b.head_kind == "layer" else "pointwise log-sigma head"
        _err.print(f"bottleneck {b.node} {list(b.shape)} ({head}, traced with {recipe.tracer})", markup=False)
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
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="torch threads; 1 is steadier and faster for small models on a busy machine.",
)
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
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err,
            transient=True,
            disable=as_json,
        ) as progress:
            task = progress.add_task("AE vs VAE", total=len(modes) * len(sizes) * repeats)
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
                on_repeat=lambda: progress.advance(task),
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
    # RSS deltas below allocator granularity read as noise (or -0.0): show them as 0.
    return "n/a" if value is None else f"{max(value, 0.0):.1f}"


def _print_bench(rows: list[BenchRow], model: str, device: str, convert_s: float, params: tuple[int, int]) -> None:
    threads = torch.get_num_threads()
    _out.print(f"torch threads: {threads}", markup=False)
    table = Table(
        title=f"{model} on {device} (torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}); "
        f"converted in {convert_s:.2f} s; params AE {params[0]:,} VAE {params[1]:,}",
        title_justify="left",
    )
    for col in ("mode", "batch", "AE samples/s (IQR)", "VAE samples/s (IQR)", "VAE/AE (IQR)", "peak MiB AE / VAE"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.mode,
            str(r.batch_size),
            f"{r.ae.median:,.0f} ({r.ae.q1:,.0f}-{r.ae.q3:,.0f})",
            f"{r.vae.median:,.0f} ({r.vae.q1:,.0f}-{r.vae.q3:,.0f})",
            f"{r.ratio:.3f} ({r.ratio_q1:.3f}-{r.ratio_q3:.3f})",
            f"{_mib(r.ae.peak_mem_mib)} / {_mib(r.vae.peak_mem_mib)}",
        )
    _out.print(table)


if __name__ == "__main__":
    main()
