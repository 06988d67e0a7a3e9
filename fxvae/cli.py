"""The ``fxvae`` command line: inspect an autoencoder's bottleneck, convert a checkpoint, benchmark AE vs VAE.

MODEL is ``package.module:factory`` or ``path/to/file.py:factory``, a callable returning the nn.Module::

    fxvae inspect tests/cli_models.py:conv_ae --input-shape 1,3,16,16 --plot widths.png
    fxvae convert my_pkg.models:ae --checkpoint ae.safetensors --input-shape 1,3,64,64 --out vae.safetensors
    fxvae bench benchmarks/models.py:conv_ae_2m5 --input-shape 1,3,64,64 --batch-sizes 1,32

Errors are one line on stderr and a documented exit code (:class:`ExitCode`, docs/cli.md); ``--debug``
adds the traceback. Only this module imports typer, rich and matplotlib.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

import fxvae
from fxvae.bench import BenchRow, measure
from fxvae.inspection import WidthProfile, width_profile
from fxvae.modules import eval_mode


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


app = typer.Typer(
    name="fxvae",
    help="Turn a trained PyTorch autoencoder into a VAE: inspect, convert, benchmark.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_out = Console()
_err = Console(stderr=True)

ModelArg = Annotated[
    str, typer.Argument(help="'package.module:factory' or 'path/to/file.py:factory' returning the nn.Module.")
]
InputShape = Annotated[str, typer.Option("--input-shape", help="Example input shape, batch first: 1,3,64,64.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
BottleneckOpt = Annotated[
    str | None, typer.Option("--bottleneck", help="Force the bottleneck (fx node name or module path).")
]


def main() -> None:
    """Entry point of the ``fxvae`` console script."""
    app()


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
    from fxvae.io import read_state_dict

    if not path.is_file():
        raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(path)!r} does not exist")
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


@contextlib.contextmanager
def _reported(debug: bool) -> Iterator[None]:
    """Turn any error into one line on stderr and its exit code; the traceback only with --debug."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as err:
        code = _exit_code(err)
        if debug:
            _err.print(traceback.format_exc(), markup=False, highlight=False)
        message = _one_line(str(err)) or type(err).__name__
        if code is ExitCode.INTERNAL:
            message = f"unexpected {type(err).__name__}: {message} (rerun with --debug for the traceback)"
        _err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(int(code)) from err


def _refuse_overwrite(path: Path | None, force: bool) -> None:
    if path is None:
        return
    if path.exists() and not force:
        raise CliError(ExitCode.USAGE, f"{str(path)!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise CliError(ExitCode.USAGE, f"directory {str(path.parent)!r} of {str(path)!r} does not exist")


# --- inspect ------------------------------------------------------------------------------------------


def plot_profile(profile: WidthProfile, path: Path, title: str) -> None:
    """Write the hourglass picture: width per node (log scale) along the data path, bottleneck marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(i, n) for i, n in enumerate(profile.nodes) if n.width is not None]
    xs = [i for i, _ in points]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(profile.nodes) + 2.5), 4.2))
    ax.plot(xs, [n.width for _, n in points], color="0.6", lw=1.2, zorder=1)
    sep = [(i, n.width) for i, n in points if n.separator]
    byp = [(i, n.width) for i, n in points if not n.separator]
    if sep:
        ax.scatter(*zip(*sep, strict=True), s=28, color="tab:blue", zorder=2, label="separator (on every path)")
    if byp:
        ax.scatter(
            *zip(*byp, strict=True),
            s=28,
            facecolors="white",
            edgecolors="tab:orange",
            zorder=2,
            label="bypassed by a skip edge",
        )
    chosen = next(i for i, n in points if n.name == profile.bottleneck.node)
    ax.scatter(
        [chosen],
        [profile.bottleneck.width],
        marker="*",
        s=260,
        color="tab:red",
        zorder=3,
        label=f"bottleneck {profile.bottleneck.node} {list(profile.bottleneck.shape)}",
    )
    ax.axhline(profile.input_width, color="0.3", ls="--", lw=0.8, label=f"input width {profile.input_width}")
    ax.set_yscale("log")
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
def inspect(
    model: ModelArg,
    input_shape: InputShape,
    checkpoint: Annotated[Path | None, typer.Option(help="Load these weights first (.safetensors/.pt).")] = None,
    bottleneck: BottleneckOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Write the width profile as a PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    debug: Debug = False,
) -> None:
    """Show how MODEL is traced, its width profile, the chosen bottleneck and the runners-up."""
    with _reported(debug):
        module = load_model(model)
        shape = parse_ints(input_shape, "--input-shape")
        notes = load_checkpoint_into(module, checkpoint) if checkpoint is not None else []
        profile = width_profile(module, example_input(module, shape), bottleneck=bottleneck)
        if plot is not None:
            plot_profile(profile, plot, f"{model}  input {list(shape)}")
        if as_json:
            typer.echo(json.dumps({**asdict(profile), "checkpoint_notes": notes}, indent=2))
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
    for col, justify in (
        ("#", "right"),
        ("node", "left"),
        ("op", "left"),
        ("shape", "left"),
        ("width", "right"),
        ("", "left"),
    ):
        table.add_column(col, justify=justify)
    for i, n in enumerate(profile.nodes):
        mark = (
            "[red]<- bottleneck[/]"
            if n.name == b.node
            else ("separator" if n.separator else f"[dim]bypassed: {n.bypass}[/]")
        )
        table.add_row(
            str(i),
            n.name,
            n.target,
            str(list(n.shape)) if n.shape is not None else "-",
            str(n.width) if n.width is not None else "-",
            mark,
        )
    _out.print(table)
    _out.print(
        f"bottleneck: [bold]{b.node}[/] {list(b.shape)} (width {b.width} of {b.input_width}, "
        f"{b.input_width / b.width:.1f}x compression), mu head seeded by {b.layer!r}"
    )
    cands = Table(title="candidates", title_justify="left")
    for col in ("node", "shape", "width", "separates", "why"):
        cands.add_column(col)
    for c in b.candidates:
        cands.add_row(c.node, str(list(c.shape)), str(c.width), "yes" if c.separates else "no", c.reason)
    _out.print(cands)


# --- convert ------------------------------------------------------------------------------------------


@app.command()
def convert(
    model: ModelArg,
    checkpoint: Annotated[Path, typer.Option(help="The AE's weights (.safetensors, .pt, .pth).")],
    input_shape: InputShape,
    out: Annotated[Path, typer.Option(help="Where to write the VAE (.safetensors).")],
    bottleneck: BottleneckOpt = None,
    log_sigma_init: Annotated[float, typer.Option(help="Initial log-sigma head bias.")] = 0.0,
    onnx: Annotated[Path | None, typer.Option(help="Also export the eval-mode VAE (z = mu) to ONNX.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    debug: Debug = False,
) -> None:
    """Convert an AE checkpoint into a VAE checkpoint (and optionally an ONNX file)."""
    with _reported(debug):
        _refuse_overwrite(out, force)
        _refuse_overwrite(onnx, force)
        if not checkpoint.is_file():
            raise CliError(ExitCode.CHECKPOINT, f"checkpoint {str(checkpoint)!r} does not exist")
        with _err.status("loading the model"):
            module = load_model(model)
            x = example_input(module, parse_ints(input_shape, "--input-shape"))
        with _err.status(f"converting {checkpoint}"):
            start = time.perf_counter()
            vae, _ = fxvae.convert_checkpoint(
                module, checkpoint, x, out=out, bottleneck=bottleneck, log_sigma_init=log_sigma_init
            )
            elapsed = time.perf_counter() - start
        recipe = fxvae.conversion(vae)
        b = recipe.bottleneck
        _err.print(f"bottleneck {b.node} {list(b.shape)} (mu head from {b.layer!r}, traced with {recipe.tracer})")
        _err.print(f"wrote {out} in {elapsed:.2f} s; keys moved: {recipe.key_map}, new: {list(recipe.new_keys)}")
        if onnx is not None:
            with _err.status(f"exporting {onnx}"):
                # The exported graph is the deterministic one: eval mode, z = mu.
                vae.eval()
                try:
                    fxvae.export_onnx(vae, onnx, x)
                except Exception as err:
                    raise CliError(ExitCode.EXPORT, f"ONNX export to {str(onnx)!r} failed: {err}") from err
            _err.print(f"wrote {onnx}")


# --- bench ------------------------------------------------------------------------------------------


@app.command()
def bench(
    model: ModelArg,
    input_shape: InputShape,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,32,256",
    mode: Annotated[str, typer.Option(help="eval (no-grad forward), train (whole step), or both.")] = "eval,train",
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats per model and phase.")] = 20,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed steps per model and phase.")] = 3,
    repeat_ms: Annotated[float, typer.Option(min=0.0, help="Target duration of one timed repeat.")] = 50.0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch.set_num_threads; 1 is steadier on a busy machine.")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Load these weights first.")] = None,
    bottleneck: BottleneckOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """Throughput (samples/s) and peak memory of MODEL and its VAE, inference and training step."""
    with _reported(debug):
        if device not in ("cpu", "cuda"):
            raise CliError(ExitCode.USAGE, f"--device {device!r} must be cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        modes = tuple(m.strip() for m in mode.split(","))
        if not modes or any(m not in ("eval", "train") for m in modes):
            raise CliError(ExitCode.USAGE, f"--mode {mode!r} must be eval, train or eval,train")
        if threads is not None:
            torch.set_num_threads(threads)
        sizes = parse_ints(batch_sizes, "--batch-sizes")
        shape = parse_ints(input_shape, "--input-shape")
        module = load_model(model)
        if checkpoint is not None:
            load_checkpoint_into(module, checkpoint)
        x = example_input(module, shape)
        start = time.perf_counter()
        vae, kl = fxvae.convert(module, x, bottleneck=bottleneck)
        convert_s = time.perf_counter() - start
        if not fxvae.conversion(vae).dynamic_batch and set(sizes) != {shape[0]}:
            raise CliError(
                ExitCode.USAGE,
                f"the VAE was exported with a fixed batch of {shape[0]}; pass --batch-sizes {shape[0]}",
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
            typer.echo(json.dumps(result, indent=2))
            return
        _print_bench(rows, model, device, convert_s, params)


def _print_bench(rows: list[BenchRow], model: str, device: str, convert_s: float, params: tuple[int, int]) -> None:
    table = Table(
        title=f"{model} on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads); "
        f"converted in {convert_s:.2f} s; params AE {params[0]:,} VAE {params[1]:,}",
        title_justify="left",
    )
    for col in (
        "mode",
        "batch",
        "AE samples/s (IQR)",
        "VAE samples/s (IQR)",
        "VAE/AE (IQR)",
        "peak MiB AE / VAE",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        peak = " / ".join(f"{s.peak_mem_mib:.1f}" if s.peak_mem_mib is not None else "n/a" for s in (r.ae, r.vae))
        table.add_row(
            r.mode,
            str(r.batch_size),
            f"{r.ae.median:,.0f} ({r.ae.q1:,.0f}-{r.ae.q3:,.0f})",
            f"{r.vae.median:,.0f} ({r.vae.q1:,.0f}-{r.vae.q3:,.0f})",
            f"{r.ratio:.3f} ({r.ratio_q1:.3f}-{r.ratio_q3:.3f})",
            peak,
        )
    _out.print(table)


if __name__ == "__main__":
    main()
