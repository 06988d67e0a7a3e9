"""Capture a model: symbolic_trace first, torch.export (non-strict) next, and forward hooks where neither follows.

The two graph tiers return a GraphModule whose attribute paths are the model's own (``enc.0.weight``),
whose forward takes the model's positional arguments, whose output has the model's structure (see
:mod:`fxvae.analysis.outputs`) and whose dropout and batch-norm follow ``.train()`` / ``.eval()``. The captured
module shares parameters with the model; copying is the caller's decision. Where both fail but the
model runs, the third tier (:mod:`fxvae.capture.hooks_tier`) works from real forwards; only a forward that does not
run at all is a :class:`TraceError`.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from fxvae.analysis.operators import DROPOUT_FUNCTIONS
from fxvae.analysis.outputs import RECORD_META, Spec, flatten, rebuild_in_graph, record_parts
from fxvae.errors import TraceError, first_line
from fxvae.modules import eval_mode, first_tensor, input_names, resolve

CAPTURE_LOCK = threading.RLock()
"""symbolic_trace patches torch.nn.Module.__call__ process-wide while it runs, so no other forward may run
then: fxvae holds this lock over each whole conversion (capture, rewrite, calibration)."""


@dataclass
class Traced:
    """A captured model: the graph module and the tracer that made it (both None where neither follows the
    model), and why the tracers before it were not used."""

    graph_module: fx.GraphModule | None
    tracer: Literal["fx", "export"] | None
    fx_failure: str | None = None
    export_failure: str | None = None
    dynamic_batch: bool = True


@contextlib.contextmanager
def conversion_scope() -> Iterator[None]:
    """One conversion at a time (:data:`CAPTURE_LOCK`), with Python's cycle collector paused: a graph of
    thousands of nodes is thousands of cyclic objects, and collecting while building them cost a fifth of
    the conversion time of a 5,000-node model (docs/benchmarks.md)."""
    with CAPTURE_LOCK:
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()


def as_args(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise ``example_inputs`` (a tensor or a tuple/list of positional arguments) to a tuple.

    >>> len(as_args(torch.zeros(2, 3))), len(as_args((torch.zeros(2, 3), 1)))
    (1, 2)
    """
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


def trace(model: nn.Module, example_inputs: Any) -> Traced:
    """Capture ``model``: symbolic_trace, else torch.export, else no graph (the hooks tier's case).

    The model is run once on the example inputs in eval mode; a forward that raises is a
    :class:`TraceError` naming the user's line. A graph is run once too, which records every node's
    shape in ``node.meta["tensor_meta"]`` and checks it against the model: an fx trace that froze a
    Python-level decision the example contradicts falls through to torch.export.
    """
    args = as_args(example_inputs)
    with CAPTURE_LOCK:
        expected = run_eagerly(model, args)
        try:
            gm = _symbolic_trace(model)
            check_same_output(expected, propagate_shapes(gm, args))
            return Traced(gm, "fx")
        except Exception as err:  # any fx failure: try the next tier
            fx_failure = describe_failure(err, "fx")
        try:
            gm, dynamic = _export(model, args, expected)
            check_same_output(expected, propagate_shapes(gm, args), values=False)
            return Traced(gm, "export", fx_failure=fx_failure, dynamic_batch=dynamic)
        except Exception as err:  # reported with the fx failure when the hooks tier runs
            export_failure = describe_failure(err, "export")
    return Traced(None, None, fx_failure=fx_failure, export_failure=export_failure)


def run_eagerly(model: nn.Module, args: Sequence[Any]) -> Any:
    """``model(*args)`` in eval mode without gradients; a raising forward becomes a TraceError."""
    try:
        with eval_mode(model), torch.no_grad():
            return model(*args)
    except Exception as err:
        line = user_line(err)
        where = f" at {line}" if line else ""
        shapes = ", ".join(
            f"{tuple(a.shape)} {a.dtype} on {a.device}" if isinstance(a, torch.Tensor) else type(a).__name__
            for a in args
        )
        raise TraceError(
            f"the forward of {type(model).__name__} raises on the example inputs ({shapes}){where}: "
            f"{type(err).__name__}: {first_line(err)}; {_input_hint(model, args)}"
        ) from err


def _input_hint(model: nn.Module, args: Sequence[Any]) -> str:
    """What to change in the example: its dtype or device where they differ from the model's."""
    reference = first_tensor(model)
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and reference is not None:
        if x.device != reference.device:
            return f"the model is on {reference.device}: pass x.to({str(reference.device)!r})"
        if x.dtype != reference.dtype:
            return f"the model computes in {reference.dtype}: pass x.to({reference.dtype})"
    return "pass example inputs the model accepts (shape, dtype, device, batch dimension first)"


def propagate_shapes(gm: fx.GraphModule, args: Sequence[Any]) -> Any:
    """Record ``tensor_meta`` (shape, dtype) on every node by running ``gm`` once in eval mode."""
    with eval_mode(gm), torch.no_grad():
        return ShapeProp(gm).propagate(*args)


# --- symbolic_trace -----------------------------------------------------------------------------------


class _RecordTracer(fx.Tracer):
    """symbolic_trace that rebuilds dataclass, named-tuple and dict-subclass outputs as their own class.

    Plain fx turns a dict subclass into a dict and rejects dataclasses; here each such object becomes a
    ``call_function`` node that builds the class (:func:`fxvae.analysis.outputs.record_parts`).
    """

    def create_arg(self, a: Any) -> Any:
        record = record_parts(a)
        if record is None:
            return super().create_arg(a)
        args, kwargs = record.assemble(record.values)
        node = self.create_node("call_function", record.build, self.create_arg(args), self.create_arg(kwargs))
        node.meta[RECORD_META] = True
        return node


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    tracer = _RecordTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


# --- torch.export -------------------------------------------------------------------------------------


class _FlatOutput(nn.Module):
    """Wraps the model so that torch.export sees a flat tuple of tensors, whatever the model returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        leaves: list[torch.Tensor] = []
        flatten(self.model(*args), leaves)
        return tuple(leaves)


class ModeFlag(nn.Module):
    """Returns the module's training flag, so exported dropout and batch-norm follow train()/eval()."""

    def forward(self) -> bool:
        return self.training


_BATCH_NORM_TRAINING_ARG = 5
_BATCH_NORM_RUNNING_MEAN_ARG = 3
_WRAPPER_PREFIX = "model."


def _export(model: nn.Module, args: tuple[Any, ...], expected: Any) -> tuple[fx.GraphModule, bool]:
    """Export ``model``; ``expected`` is its eager output, whose structure the graph module rebuilds."""
    from torch.fx.experimental.symbolic_shapes import has_free_symbols  # pulls in sympy: import on use

    export_args = args
    batch_dims = [a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    if batch_dims and all(b == 1 for b in batch_dims):
        # torch.export specialises a size-1 dimension; a batch of two copies keeps the batch symbolic.
        export_args = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)
    # Dim.AUTO keeps the batch symbolic where the code allows it (a named Dim would fail on a model
    # that bounds the batch, e.g. "batch <= 63") and specialises it where the code fixes it.
    dynamic_shapes = (
        tuple({0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in export_args),
    )
    with eval_mode(model), _quiet_export():
        program = torch.export.export(_FlatOutput(model), export_args, dynamic_shapes=dynamic_shapes, strict=False)
    user_inputs = set(program.graph_signature.user_inputs)
    values = [n.meta.get("val") for n in program.graph.nodes if n.name in user_inputs]
    dynamic = any(isinstance(v, torch.Tensor) and has_free_symbols(v.shape[0]) for v in values)
    if not dynamic:
        warnings.warn(
            f"{type(model).__name__} fixes its batch size in forward (a hard-coded reshape?): the VAE "
            f"captured by torch.export runs only at batch size {batch_dims[0] if batch_dims else '?'}",
            stacklevel=4,
        )
    spec = flatten(expected, [])
    return _reroot(program.module(), spec, input_names(model, len(args))), dynamic


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """torch.export prints its partial graph to stderr when it fails; here a failure only means the next
    tier runs, and the reason is reported in one line. Output of a successful export is passed on."""
    captured = io.StringIO()
    shapes_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = shapes_log.level
    shapes_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(captured), warnings.catch_warnings():
            # Old-style weight norm assigns its computed weight as a plain attribute on every call.
            warnings.filterwarnings("ignore", message="The tensor attribute .* was assigned during export")
            yield
        sys.stderr.write(captured.getvalue())
    finally:
        shapes_log.setLevel(level)


def _reroot(exported: fx.GraphModule, spec: Spec, names: list[str]) -> fx.GraphModule:
    """Copy the exported graph into a plain GraphModule with the model's names and output structure.

    Drops the wrapper's ``model.`` prefix (from attribute paths and module stacks), the shape guards
    (the batch is dynamic) and the pytree calling convention; turns the mode baked into dropout and
    batch-norm into a read of the module's training flag.
    """
    graph = fx.Graph()
    val_map: dict[fx.Node, Any] = {}
    placeholders = exported.graph.find_nodes(op="placeholder")
    for node, name in zip(placeholders, names, strict=True):
        val_map[node] = graph.placeholder(name)
        val_map[node].meta = dict(node.meta)
    for node in exported.graph.nodes:
        if node.op == "call_module" and node.target.startswith("_guards"):
            val_map[node] = None
    flag = graph.call_module("training_flag")
    flat_out = graph.graph_copy(exported.graph, val_map)
    graph.output(rebuild_in_graph(graph, spec, iter(flat_out)))

    attributes: dict[str, Any] = {"training_flag": ModeFlag()}
    for node in graph.nodes:
        _strip_wrapper(node)
        if node.op == "get_attr":
            value = resolve(exported, node.target)
            node.target = node.target.removeprefix(_WRAPPER_PREFIX)
            attributes[node.target] = value
        elif node.op == "call_function" and getattr(node.target, "overloadpacket", None) in DROPOUT_FUNCTIONS:
            node.update_arg(2, flag)
        elif (
            node.op == "call_function"
            and node.target is torch.ops.aten.batch_norm.default
            and node.args[_BATCH_NORM_RUNNING_MEAN_ARG] is not None
        ):
            node.update_arg(_BATCH_NORM_TRAINING_ARG, flag)
    gm = fx.GraphModule(attributes, graph, "ExportedModule")
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def _strip_wrapper(node: fx.Node) -> None:
    """Module stacks as symbolic_trace records them: paths of the model's own modules, root left out."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return
    node.meta["nn_module_stack"] = {
        key: (path.removeprefix(_WRAPPER_PREFIX), cls)
        for key, (path, cls) in stack.items()
        if path.startswith(_WRAPPER_PREFIX)
    }


# --- checks and messages --------------------------------------------------------------------------------


def check_same_output(expected: Any, got: Any, *, values: bool = True) -> None:
    """Raise unless the graph's output has the model's structure and shapes (and values, if asked)."""
    exp_leaves: list[torch.Tensor] = []
    got_leaves: list[torch.Tensor] = []
    exp_spec, got_spec = flatten(expected, exp_leaves), flatten(got, got_leaves)
    if exp_spec != got_spec or any(e.shape != g.shape for e, g in zip(exp_leaves, got_leaves, strict=True)):
        raise TraceError("the traced graph returns a different output structure than the model")
    pairs = [(e, g) for e, g in zip(exp_leaves, got_leaves, strict=True) if e.device.type != "meta"]
    if not all(torch.allclose(e, g, rtol=1e-5, atol=1e-6, equal_nan=True) for e, g in pairs):
        message = "the traced graph computes different values than the model on the example"
        if values:
            raise TraceError(message)
        warnings.warn(f"{message} (randomness in eval mode?); check the converted VAE", stacklevel=4)


_FX_HINTS = (
    ("cannot be used as inputs to control flow", "an if/while on a traced tensor, shape or size"),
    ("cannot be iterated", "iteration over a tensor or its shape"),
    ("'len' is not supported", "len() of a tensor"),
    ("__array__", "a traced value passed to numpy"),
    ("numpy", "a traced value passed to numpy"),
    ("different output structure", "an output structure that depends on Python-level decisions"),
    ("different values", "a Python-level decision frozen at tracing that the example contradicts"),
)
_EXPORT_HINTS = (
    ("data-dependent", "control flow or .item()/.tolist() on tensor values"),
    ("data dependent", "control flow or .item()/.tolist() on tensor values"),
    ("Unsupported", "an operation torch.export does not support"),
    ("different output structure", "an output structure torch.export cannot rebuild"),
)


def describe_failure(err: BaseException, tracer: Literal["fx", "export"]) -> str:
    """One line: what the tracer stopped on (when recognised), the error, and the user's line."""
    text = f"{type(err).__name__}: {first_line(err)}"
    hints = _FX_HINTS if tracer == "fx" else _EXPORT_HINTS
    full = str(err)
    cause = next((hint for needle, hint in hints if needle in full), None)
    line = user_line(err)
    parts = [f"stopped on {cause}" if cause else None, text, f"at {line}" if line else None]
    return "; ".join(p for p in parts if p)


_LIBRARY_DIRS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(__file__) + os.sep)
_STDLIB_DIR = os.path.dirname(contextlib.__file__) + os.sep


def _is_user_frame(filename: str) -> bool:
    """Frames of torch, fxvae and the standard library are not the user's code; installed packages
    (a third-party model's forward) are."""
    if filename.startswith(("<", *_LIBRARY_DIRS)):
        return False
    return not filename.startswith(_STDLIB_DIR) or f"{os.sep}site-packages{os.sep}" in filename


def user_line(err: BaseException) -> str | None:
    """``file:line: code`` of the deepest frame in the user's code, across the exception chain."""
    found = None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if _is_user_frame(frame.filename):
                found = f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
        current = current.__cause__ or current.__context__
    return found
