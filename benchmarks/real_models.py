"""Which real third-party autoencoders does fxvae convert today, and how? Writes docs/models.md.

Converts every entry of tests/integration/models.py (the same table the integration tests use) and
records, per model: the package and its version, the tracer, the head kind, the latent (node, layer and
per-sample shape) and the conversion time (median of ``--repeats``), or the error class and first line
of the message where conversion fails. The tests, not this script, check the contract; this is for docs.

Run: python benchmarks/real_models.py --threads 1 [--repeats 3] [--check-onnx] [--out docs/models.md]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import importlib.metadata
import io
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from tests.integration.models import MODELS, RealModel  # noqa: E402

BATCH = 2


@dataclasses.dataclass(frozen=True)
class Row:
    entry: RealModel
    version: str
    tracer: str = "-"
    head_kind: str = "-"
    latent: str = "-"
    seconds: float | None = None
    error: str | None = None
    ae_onnx: bool | None = None
    """Whether the AE itself exported to ONNX in this run (``--check-onnx``); None when not checked."""

    @property
    def outcome(self) -> str:
        if self.entry.refuse:
            refused = self.error is not None and self.error.startswith("BottleneckError")
            return "refused, as it must be" if refused else "**converted, but must be refused**"
        return "converts" if self.error is None else "**fails**"


def _quietly() -> contextlib.ExitStack:
    """Tracers print whole graphs and tracebacks when they give up; the table keeps the first line."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _first_line(err: BaseException, limit: int = 240) -> str:
    """The error class and the message's first line, plus the offending source line a TraceError names."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    offending = next((line for line in lines if line.startswith("offending line:")), None)
    if offending is not None:
        # site-packages paths differ between machines; the package-relative part identifies the line.
        text += " at " + offending.removeprefix("offending line:").strip().split("site-packages/")[-1]
    return f"{type(err).__name__}: {text}"


def convert_row(entry: RealModel, repeats: int) -> Row:
    """Convert ``entry`` ``repeats`` times (each from a fresh build) and describe the last conversion."""
    try:
        importlib.import_module(entry.package)
        version = importlib.metadata.version(entry.distribution)
    except ImportError:
        return Row(entry, "not installed", error="ImportError: run scripts/install-dev.sh")
    x = entry.inputs(BATCH)
    times: list[float] = []
    for _ in range(repeats):
        ae = entry.build()
        start = time.perf_counter()
        try:
            with _quietly():
                vae, _ = fxvae.convert(ae, x)
        except Exception as err:
            return Row(entry, version, error=_first_line(err))
        times.append(time.perf_counter() - start)
    recipe = fxvae.conversion(vae)
    b = recipe.bottleneck
    shape = "x".join(str(d) for d in b.shape)
    return Row(
        entry,
        version,
        tracer=recipe.tracer,
        head_kind=str(getattr(recipe, "head_kind", "-")),
        latent=f"`{b.node}` / `{b.layer}` [{shape}]",
        seconds=statistics.median(times),
    )


def ae_exports_to_onnx(entry: RealModel) -> bool:
    """The check behind the table's ``ae_exports_to_onnx``: the AE itself through the dynamo exporter."""
    ae = entry.build()
    with tempfile.TemporaryDirectory() as tmp, _quietly(), torch.no_grad():
        try:
            torch.onnx.export(ae, entry.inputs(BATCH), f"{tmp}/ae.onnx", dynamo=True, verbose=False)
        except Exception:
            return False
    return True


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: list[Row], command: str, threads: int, repeats: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# fxvae on real autoencoders",
        "",
        "Third-party autoencoders from PyPI packages, built small and randomly initialised from their own",
        "constructors (no downloads; `tests/integration/models.py` holds the table), converted with",
        "`fxvae.convert(ae, x)` at batch size 2. `tests/integration/test_real_models.py` checks the",
        "contract on each (eval outputs, the latent, a training step, save/load, split, ONNX); this page",
        "records what conversion does. Install the packages with `scripts/install-dev.sh`.",
        "",
        f"Generated by `{command}` on {today}: torch {torch.__version__}, fxvae {fxvae.__version__},",
        f"{threads} torch thread(s), convert time is the median of {repeats} runs.",
        "",
        "| package | field | model | outcome | tracer | head kind | latent: node / layer [per sample] "
        "| convert | error |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: | --- |",
    ]
    for r in rows:
        e = r.entry
        seconds = f"{r.seconds * 1000:.0f} ms" if r.seconds is not None else "-"
        error = f"`{_cell(r.error)}`" if r.error else "-"
        lines.append(
            f"| {e.distribution} {r.version} | {e.field} | `{e.model}` | {r.outcome} | {r.tracer} "
            f"| {r.head_kind} | {r.latent} | {seconds} | {error} |"
        )
    lines += [
        "",
        "## What the VAE's mu must equal, and what surrounds the latent",
        "",
        "| model | the AE's own encoder output | AE exports to ONNX | structure around the latent |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        e = r.entry
        onnx = "yes" if e.ae_exports_to_onnx else "no"
        if r.ae_onnx is not None and r.ae_onnx != e.ae_exports_to_onnx:
            onnx += f" (**this run: {'yes' if r.ae_onnx else 'no'}**)"
        lines.append(f"| `{e.model}` | `{_cell(e.encoder_part)}` | {onnx} | {_cell(e.structure)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check-onnx", action="store_true", help="re-check each AE's own ONNX export")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "models.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The ONNX exporter and torch.export log through handlers that hold the real stderr.
    logging.getLogger("torch").setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    rows = []
    for entry in MODELS:
        row = convert_row(entry, args.repeats)
        if args.check_onnx and row.version != "not installed":
            row = dataclasses.replace(row, ae_onnx=ae_exports_to_onnx(entry))
        seconds = f"{row.seconds * 1000:.0f} ms" if row.seconds is not None else ""
        print(f"{entry.name}: {row.outcome} {seconds} {row.latent if row.error is None else row.error}")
        rows.append(row)
    command = " ".join(["python", "benchmarks/real_models.py", *sys.argv[1:]])
    args.out.write_text(markdown(rows, command, args.threads, args.repeats))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
