"""Core changes as per-instance patches of a converted VAE, and their measured effect (lookups, latest and gc
have since been adopted by the core: on a later commit the baseline already has them).

The core (fxvae/*.py) is not this script's to change; to measure what a change would buy, each one is
applied here to a copy of a converted VAE only, and the copies run interleaved with the unpatched VAE and
the AE in one process (same noise for all). Delete this file once the core has the changes.

- ``lookups``: the generated forward of the VAE (and of its log-sigma branch) reads submodules through
  ``self._modules[...]`` instead of ``self.name`` / ``getattr(self, "0")``. A submodule is not in the
  instance ``__dict__``, so each such read first fails the normal attribute lookup, which builds and
  drops an AttributeError before ``nn.Module.__getattr__`` finds it in ``_modules``: about 2-4 us per
  read on CPython 3.11, one read per call_module node (two for ``encoder.0``). An eager ``nn.Sequential``
  iterates its ``_modules`` and pays none of it.
- ``latest``: ``Reparameterize.forward`` stores its posterior with ``self.__dict__["latest"] = ...``
  rather than through ``nn.Module.__setattr__`` (which checks for parameters, modules and buffers first:
  about 3 us).
- ``call``: the VAE's class drops the ``__call__`` that ``GraphModule.recompile`` installs, which routes
  every call through fx's ``_WrappedCall`` (a try/except that decorates errors from generated code)
  before ``nn.Module.__call__``: about 3 us per call.

Conversion (fxvae.convert, timed against ``torch.fx.symbolic_trace`` plus one forward, interleaved):

- ``copy``: ``fxvae.modules.owned_copy`` seeds ``copy.deepcopy``'s memo with a fresh empty ``OrderedDict``
  for every empty ``OrderedDict`` attribute of every module (torch's ~13 hook registries per module).
  deepcopy reduces an OrderedDict through ``copyreg``, whose ``_slotnames`` cannot cache its answer on a
  built-in type and recomputes it every time: most of a module's copying cost is its empty hook dicts.
- ``lazy``: the traced GraphModule generates its code once, after the rewrite, instead of once at trace
  time and again after the rewrite (``torch.fx._lazy_graph_module._LazyGraphModule`` here; in the core,
  build the GraphModule only after the rewrite, running the analyses on the tracer's graph and root).
- ``gc``: Python's cyclic garbage collector is off during the conversion (it walks every live object
  each time a generation fills up, and a conversion creates a few hundred objects per node).

Run: python benchmarks/core_prototypes.py [--threads 1] [--repeats 21] [--repeat-ms 60]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import os
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx._lazy_graph_module import _LazyGraphModule, _make_graph_module
from torch.fx.graph import CodeGen, PythonCode, _format_target

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import machine, write_section  # noqa: E402
from benchmarks.convert_scaling import WIDTH, chain_autoencoder  # noqa: E402
from benchmarks.models import ZOO  # noqa: E402
from fxvae.latents.gaussian import KLDivergence, Reparameterize  # noqa: E402
from fxvae.measure.bench import Runner, calls_per_repeat, interleave, steady_allocator  # noqa: E402

CHANGES = ("lookups", "latest", "call")
CONVERT_CHANGES = ("copy", "lazy", "gc")
START, END = "<!-- prototypes:start -->", "<!-- prototypes:end -->"
ADOPTED = (
    "The changes `lookups`, `latest` and `gc` below are in the core since commit `7cd6a92` "
    "(`fxvae.surgery.rewrite.DirectLookups`, `Reparameterize` keeping its posterior in the instance dict, "
    "`fxvae.capture.tracing.conversion_scope`); the tables above measure the core with them. This section is the "
    "measurement that decided it, kept with its commit: this script applies the changes as patches, so on"
    " a later commit its `vae` column already has them. `call` (fx's call wrapper removed) and "
    "`copy`/`lazy` were not adopted: the first loses fx's error context, the others patch fx internals "
    "for 4-17%."
)


class DictLookupCodeGen(CodeGen):
    """fx code generation whose call_module lines read ``self._modules['a']._modules['0']``."""

    def _gen_python_code(self, nodes: Any, root_module: str, namespace: Any, **kwargs: Any) -> PythonCode:
        code = super()._gen_python_code(nodes, root_module, namespace, **kwargs)
        for node in nodes:
            if node.op == "call_module":
                slow = _format_target(root_module, str(node.target))
                fast = root_module + "".join(f"._modules[{part!r}]" for part in str(node.target).split("."))
                code.src = code.src.replace(f"{node.name} = {slow}(", f"{node.name} = {fast}(", 1)
        return code


class _DictLatest(Reparameterize):
    def forward(self, mu: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.__dict__["latest"] = (mu, features)
            return mu
        log_sigma = self.log_sigma(*features)
        self.__dict__["latest"] = fxvae.DiagonalGaussian(mu, log_sigma)
        return torch.addcmul(mu, torch.exp(log_sigma), torch.randn_like(mu))


def patched(vae: fx.GraphModule, changes: tuple[str, ...]) -> tuple[fx.GraphModule, KLDivergence]:
    """A deep copy of ``vae`` with ``changes`` applied, and its KL term."""
    vae = copy.deepcopy(vae)
    recipe = fxvae.conversion(vae)
    rep = vae.get_submodule(recipe.reparameterize)
    graphs = [vae] + [m for m in (rep.log_sigma_fn,) if isinstance(m, fx.GraphModule)]
    for gm in graphs:
        if "lookups" in changes:
            gm.graph.set_codegen(DictLookupCodeGen())
            gm.recompile()
        if "call" in changes and "__call__" in vars(type(gm)):
            delattr(type(gm), "__call__")
    if "latest" in changes:
        rep.__class__ = _DictLatest
    return vae, KLDivergence(rep)


def compare(name: str, batch: int, mode: str, repeats: int, repeat_s: float) -> dict[str, Any]:
    factory, shape = ZOO[name]
    torch.manual_seed(0)
    ae = factory()
    vae, kl = fxvae.convert(ae, torch.randn(1, *shape))
    variants: dict[str, tuple[nn.Module, Any]] = {"ae": (ae, None), "vae": (vae, kl)}
    for k in range(1, len(CHANGES) + 1):
        variants["+" + "+".join(CHANGES[:k])] = patched(vae, CHANGES[:k])
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = variants["vae"][0].eval()(x)
        assert all(torch.equal(m.eval()(x), reference) for m, _ in variants.values()), "a patch changed outputs"
    steps = [functools.partial(Runner(m, k, mode).step, x) for m, k in variants.values()]  # type: ignore[arg-type]
    calls = calls_per_repeat(steps, repeat_s)
    cpu = [t.cpu for t in interleave(steps, repeats=repeats, calls=calls)]
    ae_s = cpu[0]
    result = {"model": name, "batch_size": batch, "mode": mode, "ae_s": statistics.median(ae_s), "variants": {}}
    for label, times in zip(list(variants)[1:], cpu[1:], strict=True):
        ratios = [a / v for a, v in zip(ae_s, times, strict=True)]
        result["variants"][label] = {
            "ratio": statistics.median(ratios),
            "extra_s": statistics.median(v - a for a, v in zip(ae_s, times, strict=True)),
        }
    return result


class _SeededCopy:
    """Stands in for the ``copy`` module inside fxvae.modules: deepcopy with the hook registries pre-copied."""

    @staticmethod
    def deepcopy(obj: nn.Module, memo: dict[int, Any] | None = None) -> nn.Module:
        memo = {} if memo is None else memo
        for module in obj.modules():
            for value in vars(module).values():
                if type(value) is OrderedDict and not value and id(value) not in memo:
                    memo[id(value)] = OrderedDict()
        return copy.deepcopy(obj, memo)


def _lazy_symbolic_trace(model: nn.Module) -> fx.GraphModule:
    tracing = sys.modules["fxvae.capture.tracing"]
    tracer = tracing._RecordTracer()
    graph = tracer.trace(model)
    return _make_graph_module(tracer.root, graph, type(model).__name__, graph_module_cls=_LazyGraphModule)


@contextlib.contextmanager
def convert_changes(changes: tuple[str, ...]) -> Iterator[None]:
    """The conversion prototypes, as patches of fxvae's modules for the duration of the block."""
    patches: list[tuple[Any, str, Any]] = []
    if "copy" in changes:
        patches.append((sys.modules["fxvae.modules"], "copy", _SeededCopy))
    if "lazy" in changes:
        convert_module = sys.modules["fxvae.convert"]
        rewrite = convert_module.rewrite

        def rewrite_then_compile(gm: fx.GraphModule, *args: Any, **kwargs: Any) -> Any:
            inserted = rewrite(gm, *args, **kwargs)
            _LazyGraphModule.force_recompile(gm)  # once, now: a VAE is called right after conversion
            return inserted

        patches += [
            (sys.modules["fxvae.capture.tracing"], "_symbolic_trace", _lazy_symbolic_trace),
            (convert_module, "rewrite", rewrite_then_compile),
        ]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    collecting = gc.isenabled()
    if "gc" in changes:
        gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        for owner, attr, value in saved:
            setattr(owner, attr, value)


def compare_conversion(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    """fxvae.convert now and with the conversion prototypes applied cumulatively, interleaved with the
    baseline (symbolic_trace + one no-grad forward); every variant's VAE is checked against today's."""

    def baseline() -> None:
        fx.symbolic_trace(model)
        with torch.no_grad():
            model(x)

    variants = {"now": ()} | {"+" + "+".join(CONVERT_CHANGES[:k]): CONVERT_CHANGES[:k] for k in range(1, 4)}
    reference, _ = fxvae.convert(model, x)
    for changes in variants.values():
        with convert_changes(changes):
            vae, _ = fxvae.convert(model, x)
        assert vae.state_dict().keys() == reference.state_dict().keys(), "a prototype changed the VAE"
        with torch.no_grad():
            assert torch.equal(vae.eval()(x), reference.eval()(x)), "a prototype changed the VAE's outputs"

    def run(changes: tuple[str, ...]) -> None:
        with convert_changes(changes):
            fxvae.convert(model, x)

    steps = [baseline, *(functools.partial(run, c) for c in variants.values())]
    cpu = [t.cpu for t in interleave(steps, repeats=repeats, calls=1)]
    base = statistics.median(cpu[0])
    return {
        "model": name,
        "nodes": len(fx.symbolic_trace(model).graph.nodes),
        "baseline_s": base,
        "variants": {
            label: {"convert_s": statistics.median(t), "ratio": statistics.median(t) / base}
            for label, t in zip(variants, cpu[1:], strict=True)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--repeat-ms", type=float, default=60.0)
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument(
        "--batch-sizes",
        default="1",
        help="the changes remove fixed costs per call, so batch 1 shows them best; larger batches cost minutes",
    )
    parser.add_argument("--convert-repeats", type=int, default=7)
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "core_prototypes.json")
    args = parser.parse_args()
    steady = steady_allocator()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, steady allocator: {steady}, load {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    data: dict[str, Any] = {
        "command": " ".join(["python benchmarks/core_prototypes.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "loadavg_before": os.getloadavg()[0],
        "machine": machine(),
        "rows": [],
    }
    for name in args.models.split(","):
        for mode in ("eval", "train"):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                row = compare(name, batch, mode, args.repeats, args.repeat_ms / 1000)
                data["rows"].append(row)
                cells = "  ".join(
                    f"{k} {v['ratio']:.3f} ({v['extra_s'] * 1e6:+.0f} us)" for k, v in row["variants"].items()
                )
                print(f"{name:11} {mode:5} batch {batch:3}: AE {row['ae_s'] * 1e6:8.0f} us  {cells}")
    conversions = [(name, factory().eval(), torch.randn(1, *shape)) for name, (factory, shape) in ZOO.items()]
    conversions += [(f"chain {n}", chain_autoencoder(n).eval(), torch.randn(8, WIDTH)) for n in (1000, 5000)]
    data["conversion"] = []
    for name, model, x in conversions:
        row = compare_conversion(name, model, x, args.convert_repeats if "chain 5000" not in name else 3)
        data["conversion"].append(row)
        cells = "  ".join(f"{k} {v['convert_s'] * 1e3:.1f} ms ({v['ratio']:.2f}x)" for k, v in row["variants"].items())
        print(f"convert {name:11}: baseline {row['baseline_s'] * 1e3:.1f} ms  {cells}")
    data["loadavg_after"] = os.getloadavg()[0]
    data["wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out} in {data['wall_s']:.0f} s")
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", markdown(data), START, END)
        print("wrote docs/benchmarks.md")


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    labels = list(data["rows"][0]["variants"])
    lines = [
        START,
        "## Core changes, measured before they were adopted",
        "",
        ADOPTED,
        "",
        f"`{data['command']}`: {m['cpu']}, **{data['threads']} torch thread(s)**, Python {m['python']}, "
        f"torch {m['torch']}, commit `{m['commit'][:10]}`{dirty}, load average {data['loadavg_before']:.1f} "
        f"before, {data['loadavg_after']:.1f} after, {data['wall_s']:.0f} s. Raw numbers: "
        "`benchmarks/results/core_prototypes.json`. The VAE as converted today and copies of it with the "
        "changes that `benchmarks/core_prototypes.py` describes applied cumulatively (`lookups`: the generated "
        "forward reads submodules from `_modules`; `latest`: `Reparameterize` stores its posterior without "
        "`nn.Module.__setattr__`; `call`: no fx `_WrappedCall` around the VAE's call), all interleaved with the "
        "AE in one process. Cells: VAE/AE throughput (median of per-pair CPU-time ratios) and the median extra "
        "CPU time per step. Eval outputs are checked equal for all variants.",
        "",
        "| model | mode | batch | AE step | " + " | ".join(labels) + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in labels) + " |",
    ]
    for r in data["rows"]:
        cells = " | ".join(f"{v['ratio']:.3f} ({v['extra_s'] * 1e6:+.0f} us)" for v in r["variants"].values())
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch_size']} | {r['ae_s'] * 1e6:,.0f} us | {cells} |")
    labels = list(data["conversion"][0]["variants"])
    lines += [
        "",
        "Conversion: `fxvae.convert` today and with the conversion prototypes applied cumulatively (`copy`: "
        "`owned_copy` pre-copies the empty hook `OrderedDict`s in deepcopy's memo; `lazy`: the GraphModule "
        "generates its code once, after the rewrite; `gc`: the cyclic garbage collector is off during the "
        "conversion), interleaved with the baseline `symbolic_trace` + one no-grad forward. Cells: median CPU "
        "time and its ratio to the baseline. Every variant's VAE has today's state-dict keys and eval outputs.",
        "",
        "| model | graph nodes | baseline | " + " | ".join(labels) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in labels) + " |",
    ]
    for r in data["conversion"]:
        cells = " | ".join(f"{_ms(v['convert_s'])} ({v['ratio']:.2f}x)" for v in r["variants"].values())
        lines.append(f"| {r['model']} | {r['nodes']:,} | {_ms(r['baseline_s'])} | {cells} |")
    lines += ["", END]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
