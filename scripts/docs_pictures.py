"""Draw the pictures of docs/howitworks.md from the code: the graphs of a small AE and of its VAE, and the
width profile that the bottleneck search reads.

    python scripts/docs_pictures.py            # writes docs/img/howitworks_*.png
    python scripts/docs_pictures.py --out DIR

Needs matplotlib (``pip install -e ".[plot]"``). The graphs are fxvae's own: ``torch.fx.symbolic_trace`` of
the AE, and the GraphModule that ``fxvae.convert`` returns, with the log-sigma branch that
``reparameterize`` runs in training mode drawn dashed beside it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

import fxvae
from fxvae.analysis.inspection import width_profile
from fxvae.cli.inspect import plot_profile

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"


def readme_autoencoder() -> nn.Module:
    """The README's quick-start AE: 64 -> 32 -> 8 (sigmoid latent) -> 32 -> 64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Sigmoid(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64)
    ).eval()


class GatedResidualAE(nn.Module):
    """An encoder with a residual block and a squeeze-and-excitation gate: both are bypassed, and the gate's
    4-wide middle is narrower than the 8-wide latent."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(64, 32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
        self.gate = nn.Sequential(nn.Linear(32, 4), nn.ReLU(), nn.Linear(4, 32), nn.Sigmoid())
        self.to_latent = nn.Linear(32, 8)
        self.decoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.block(h)
        h = h * self.gate(h)
        return self.decoder(self.to_latent(h))


@dataclass
class Box:
    label: str
    role: str
    """"data", "latent" (the bottleneck), "new" (inserted by fxvae) or "branch" (the log-sigma branch)."""
    column: int = 0
    row: float = 0.0
    inputs: list[str] = field(default_factory=list)


def _describe(gm: nn.Module, node: fx.Node) -> str:
    """``name = target: Kind`` for a module call (``name: Kind`` where the two names agree)."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        kind = type(module).__name__
        if isinstance(module, nn.Linear):
            kind = f"Linear({module.in_features}->{module.out_features})"
        return f"{node.name}: {kind}" if node.name == node.target else f"{node.name} = {node.target}: {kind}"
    if node.op == "placeholder":
        return f"{node.name} = input"
    return f"{node.name} = {node.target}"


def _shape(node: fx.Node) -> str:
    meta = node.meta.get("tensor_meta")
    return f"  [{', '.join(map(str, meta.shape[1:]))}]" if meta is not None and hasattr(meta, "shape") else ""


def graph_boxes(gm: fx.GraphModule, latent: str | None, new: set[str], notes: dict[str, str]) -> dict[str, Box]:
    """One box per node, top to bottom in graph order; ``notes`` adds a word to some labels."""
    boxes: dict[str, Box] = {}
    for row, node in enumerate(gm.graph.nodes):
        inputs = [n.name for n in node.all_input_nodes]
        if node.op == "output":
            boxes[node.name] = Box("output", "data", 0, row, inputs)
            continue
        role = "latent" if node.name == latent else "new" if str(node.target) in new else "data"
        note = f"  -> {notes[node.name]}" if node.name in notes else ""
        boxes[node.name] = Box(f"{_describe(gm, node)}{_shape(node)}{note}", role, 0, row, inputs)
    return boxes


def vae_boxes(vae: fx.GraphModule) -> dict[str, Box]:
    recipe = fxvae.conversion(vae)
    new = {name for name in (recipe.mu_head, recipe.log_sigma_head, recipe.reparameterize) if name}
    reparam = next(n for n in vae.graph.nodes if n.op == "call_module" and n.target == recipe.reparameterize)
    boxes = graph_boxes(vae, recipe.bottleneck.node, new, {recipe.bottleneck.node: "mu", reparam.name: "z"})
    branch = vae.get_submodule(recipe.reparameterize).log_sigma_fn
    features = [a.name for a in reparam.args[1:]]
    rows = [boxes[f].row for f in features]
    # The branch's nodes, between the features they read and the reparameterisation that runs them.
    ops = [n for n in branch.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    top, bottom = max(rows), boxes[reparam.name].row
    placeholders = dict(zip((n.name for n in branch.graph.find_nodes(op="placeholder")), features, strict=True))
    previous: str | None = None
    for i, node in enumerate(ops):
        inputs = [placeholders.get(n.name, n.name) for n in node.all_input_nodes]
        target = vae.get_submodule(str(node.target)) if node.op == "call_module" else None
        what = f"Linear({target.in_features}->{target.out_features}), weight 0, bias {recipe.log_sigma_init:g}"
        label = f"{node.target}: {what}" if isinstance(target, nn.Linear) else f"{node.name} = {node.target}"
        label += "  -> log sigma" if i == len(ops) - 1 else ""
        name = f"branch:{node.name}"
        row = top + (bottom - top) * (i + 1) / (len(ops) + 1)
        boxes[name] = Box(label, "branch", 1, row, [f"branch:{previous}"] if previous else inputs)
        previous = node.name
    boxes[reparam.name].inputs = [a.name for a in reparam.args[:1]] + ([f"branch:{previous}"] if previous else [])
    return boxes


COLOURS = {"data": "#e8eef7", "latent": "#f4b6b6", "new": "#fde2b8", "branch": "#fff4e0"}


def draw(ax: object, boxes: dict[str, Box], title: str) -> None:
    rows = max(b.row for b in boxes.values()) + 1
    for box in boxes.values():
        x, y = 0.34 + 0.62 * box.column, rows - box.row
        dashed = box.role == "branch"
        ax.text(
            x,
            y,
            box.label,
            ha="center",
            va="center",
            fontsize=8,
            family="monospace",
            bbox={
                "boxstyle": "round,pad=0.35",
                "facecolor": COLOURS[box.role],
                "edgecolor": "0.35",
                "linestyle": "--" if dashed else "-",
            },
            zorder=2,
        )
        for source in box.inputs:
            start = boxes[source]
            sx, sy = 0.34 + 0.62 * start.column, rows - start.row
            ax.annotate(
                "",
                xy=(x, y + 0.28),
                xytext=(sx, sy - 0.28),
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "0.3",
                    "linestyle": "--" if dashed or start.role == "branch" else "-",
                    "connectionstyle": "arc3,rad=0.0" if start.column == box.column else "arc3,rad=-0.15",
                },
                zorder=1,
            )
    ax.set_xlim(-0.05, 1.2)
    ax.set_ylim(0.3, rows + 0.7)
    ax.axis("off")
    ax.set_title(title, fontsize=10)


def graphs_picture(path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ae = readme_autoencoder()
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    traced = fx.symbolic_trace(ae)
    ShapeProp(traced).propagate(x)
    vae, _ = fxvae.convert(ae, x)
    ShapeProp(vae.eval()).propagate(x)
    latent = fxvae.conversion(vae).bottleneck.node
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.6))
    draw(left, graph_boxes(traced, latent, set(), {latent: "z"}), "before: the AE's torch.fx graph")
    draw(right, vae_boxes(vae), "after: the VAE that fxvae.convert returns")
    legend = [
        Patch(facecolor=COLOURS["latent"], edgecolor="0.35", label="the latent (bottleneck)"),
        Patch(facecolor=COLOURS["new"], edgecolor="0.35", label="inserted or renamed by fxvae"),
        Patch(facecolor=COLOURS["branch"], edgecolor="0.35", ls="--", label="log-sigma branch (training mode only)"),
    ]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def widths_picture(path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    profile = width_profile(GatedResidualAE().eval(), x)
    plot_profile(profile, path, "GatedResidualAE: width of each node on the data path")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder for the PNGs (default {OUT})")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / "howitworks_graphs.png", args.out / "howitworks_widths.png"]
    graphs_picture(paths[0])
    widths_picture(paths[1])
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
