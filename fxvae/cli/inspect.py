"""``fxvae inspect``: how MODEL is traced, its width profile, the bottleneck chosen and the runners-up; ``--plot``
draws the width profile (the only use of matplotlib)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from rich.table import Table

import fxvae
from fxvae.analysis.inspection import WidthProfile, width_profile
from fxvae.cli.data import example_input
from fxvae.cli.errors import CliError, ExitCode, as_options, reported
from fxvae.cli.models import load_checkpoint_into, load_model
from fxvae.cli.options import (
    check_output,
    conversion_options,
    debug_option,
    input_shape_option,
    json_option,
    model_argument,
    parse_ints,
)
from fxvae.cli.output import print_table, stdout


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


@click.command()
@model_argument
@input_shape_option
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="FILE", help="Load these weights first.")
@conversion_options("bottleneck")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="Write the width profile as a PNG.")
@json_option
@debug_option
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
    with reported(debug):
        check_output(plot, force=True, option="--plot")
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
            stdout.print(f"wrote {plot}")


def _print_profile(profile: WidthProfile, notes: list[str]) -> None:
    b = profile.bottleneck
    for note in notes:
        stdout.print(f"checkpoint: {note}", markup=False)
    stdout.print(
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
    print_table(table)
    where = f", the output of {b.module!r}" if b.module else ""
    head = f"mu head: {b.layer} {b.layer_type}" if b.head_kind == "layer" else "pointwise log-sigma head on mu"
    stdout.print(
        f"bottleneck: [bold]{b.node}[/]{where} {list(b.shape)} (width {b.width} of {b.input_width}, "
        f"{b.input_width / b.width:.1f}x compression); head kind: {b.head_kind} ({head})",
        markup=True,
    )
    cands = Table(title="candidates", title_justify="left")
    for col in ("node", "module", "shape", "width", "separates", "why"):
        cands.add_column(col)
    for c in b.candidates:
        separates = "yes" if c.separates else "no"
        cands.add_row(c.node, c.module or "-", str(list(c.shape)), str(c.width), separates, as_options(c.reason))
    print_table(cands)
