"""Capture a model as a torch.fx graph: symbolic_trace first, torch.export (non-strict) as the fallback.

Both paths return a GraphModule whose attribute paths are the model's own (``enc.0.weight``), whose
forward takes the model's positional arguments, whose output has the model's structure (tuples,
lists, dicts, dataclasses, ``ModelOutput``-like mappings, named tuples) and whose dropout and
batch-norm follow ``.train()`` / ``.eval()``. The captured module shares parameters with the model;
copying is the caller's decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.experimental.symbolic_shapes import has_free_symbols
from torch.fx.immutable_collections import immutable_dict
from torch.fx.passes.shape_prop import ShapeProp

from fxvae.errors import TraceError

TracerName = Literal["fx", "export"]

RECORD_META = "fxvae_record"
"""node.meta key marking call_function nodes that only rebuild the output's container class."""


@dataclass
class Traced:
    """A captured model: the graph module, which tracer made it, and why fx was not used."""

    graph_module: fx.GraphModule
    tracer: TracerName
    fx_failure: str | None = None
    dynamic_batch: bool = True


def as_args(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise ``example_inputs`` (a tensor or a tuple of positional arguments) to a tuple."""
    if isinstance(example_inputs, tuple):
        return example_inputs
    if isinstance(example_inputs, list):
        return tuple(example_inputs)
    return (example_inputs,)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def trace(model: nn.Module, example_inputs: Any) -> Traced:
    """Capture ``model`` with symbolic_trace, or with torch.export where fx cannot follow the code.

    The captured graph is run once on the example inputs (in eval mode), which records every node's
    shape in ``node.meta["tensor_meta"]`` and checks the graph against the model: an fx trace that ran
    but froze a Python-level decision the example contradicts falls back to torch.export too.
    """
    args = as_args(example_inputs)
    with eval_mode(model), torch.no_grad():
        expected = model(*args)
    try:
        gm = _symbolic_trace(model)
        _check_same(expected, propagate_shapes(gm, args))
        return Traced(gm, "fx")
    except Exception as fx_err:  # any fx failure: try the other tracer
        fx_failure = _describe(fx_err)
        fx_exc = fx_err
    try:
        gm, dynamic = _export(model, args, expected)
        _check_same(expected, propagate_shapes(gm, args), values=False)
    except Exception as export_err:  # reported together with the fx failure
        line = _user_line(export_err) or _user_line(fx_exc)
        where = f"\n  offending line: {line}" if line else ""
        raise TraceError(
            f"cannot trace {type(model).__name__}: neither tracer follows its forward.{where}\n"
            f"  torch.fx.symbolic_trace: {fx_failure}\n"
            f"  torch.export (non-strict): {_describe(export_err)}\n"
            "  fix: make control flow independent of tensor values (use torch.where, or move the "
            "branch outside forward), then convert again"
        ) from export_err
    return Traced(gm, "export", fx_failure=fx_failure, dynamic_batch=dynamic)


def propagate_shapes(gm: fx.GraphModule, args: Sequence[Any]) -> Any:
    """Record ``tensor_meta`` (shape, dtype) on every node by running ``gm`` once in eval mode."""
    with eval_mode(gm), torch.no_grad():
        return ShapeProp(gm).propagate(*args)


# --- symbolic_trace -----------------------------------------------------------------------------------


class _RecordTracer(fx.Tracer):
    """symbolic_trace that rebuilds dataclass, named-tuple and dict-subclass outputs as their own class.

    Plain fx turns a dict subclass into a dict and rejects dataclasses; here each such object becomes a
    ``call_function`` node whose target is the class, so the generated code returns the same class.
    """

    def create_arg(self, a: Any) -> Any:
        record = _record_parts(a)
        if record is None:
            return super().create_arg(a)
        cls, args, kwargs = record
        node = self.create_node("call_function", cls, self.create_arg(args), self.create_arg(kwargs))
        node.meta[RECORD_META] = True
        return node


def _record_parts(a: Any) -> tuple[type, tuple[Any, ...], dict[str, Any]] | None:
    """(class, args, kwargs) that rebuild ``a`` if it is a container class fx would lose, else None."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        kwargs = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.init}
        return type(a), (), kwargs
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a), tuple(a), {}
    if isinstance(a, dict) and type(a) not in (dict, immutable_dict):
        return type(a), (dict(a),), {}
    return None


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    tracer = _RecordTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


# --- torch.export -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """How to rebuild a model output from its flat tensor leaves."""

    kind: Literal["tensor", "const", "tuple", "list", "dict", "record"]
    children: tuple[_Spec, ...] = ()
    keys: tuple[Any, ...] = ()
    cls: type | None = None
    value: Any = None


def _flatten(obj: Any, leaves: list[torch.Tensor]) -> _Spec:
    if isinstance(obj, torch.Tensor):
        leaves.append(obj)
        return _Spec("tensor")
    record = _record_parts(obj)
    if record is not None:
        cls, args, kwargs = record
        keys = tuple(range(len(args))) + tuple(kwargs)
        values = [*args, *kwargs.values()]
        return _Spec("record", tuple(_flatten(v, leaves) for v in values), keys, cls)
    if isinstance(obj, (tuple, list)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return _Spec(kind, tuple(_flatten(v, leaves) for v in obj))
    if isinstance(obj, dict):
        return _Spec("dict", tuple(_flatten(v, leaves) for v in obj.values()), tuple(obj))
    return _Spec("const", value=obj)


def _rebuild(graph: fx.Graph, spec: _Spec, leaves: Iterator[fx.Node]) -> Any:
    """Emit the nodes that turn flat output leaves back into the model's output structure."""
    if spec.kind == "tensor":
        return next(leaves)
    if spec.kind == "const":
        return spec.value
    children = [_rebuild(graph, child, leaves) for child in spec.children]
    if spec.kind == "tuple":
        return tuple(children)
    if spec.kind == "list":
        return children
    if spec.kind == "dict":
        return dict(zip(spec.keys, children, strict=True))
    args = tuple(c for k, c in zip(spec.keys, children, strict=True) if isinstance(k, int))
    kwargs = {k: c for k, c in zip(spec.keys, children, strict=True) if isinstance(k, str)}
    if spec.cls is not None and issubclass(spec.cls, dict) and not dataclasses.is_dataclass(spec.cls):
        args = (dict(zip(spec.keys, children, strict=True)),)
        kwargs = {}
    node = graph.call_function(spec.cls, args, kwargs)
    node.meta[RECORD_META] = True
    return node


class _FlatOutput(nn.Module):
    """Wraps the model so that torch.export sees a flat tuple of tensors, whatever the model returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        leaves: list[torch.Tensor] = []
        _flatten(self.model(*args), leaves)
        return tuple(leaves)


class ModeFlag(nn.Module):
    """Returns the module's training flag, so exported dropout and batch-norm follow train()/eval()."""

    def forward(self) -> bool:
        return self.training


_DROPOUT_OPS = {
    torch.ops.aten.dropout.default,
    torch.ops.aten.feature_dropout.default,
    torch.ops.aten.alpha_dropout.default,
    torch.ops.aten.feature_alpha_dropout.default,
}
_BATCH_NORM_TRAINING_ARG = 5
_BATCH_NORM_RUNNING_MEAN_ARG = 3


def _export(model: nn.Module, args: tuple[Any, ...], expected: Any) -> tuple[fx.GraphModule, bool]:
    """Export ``model``; ``expected`` is its eager output, whose structure the graph module rebuilds."""
    wrapper = _FlatOutput(model)
    export_args = args
    batch_dims = [a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim() > 0]
    if batch_dims and all(b == 1 for b in batch_dims):
        # torch.export specialises a size-1 dimension; a batch of two copies keeps the batch symbolic.
        export_args = tuple(
            torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args
        )
    # Dim.AUTO keeps the batch symbolic where the code allows it (a named Dim would fail on a model
    # that bounds the batch, e.g. "batch <= 63") and specialises it where the code fixes it.
    dynamic_shapes = (
        tuple(
            {0: torch.export.Dim.AUTO} if isinstance(a, torch.Tensor) and a.dim() > 0 else None
            for a in export_args
        ),
    )
    with eval_mode(model):
        program = torch.export.export(wrapper, export_args, dynamic_shapes=dynamic_shapes, strict=False)
    user_inputs = set(program.graph_signature.user_inputs)
    values = [n.meta.get("val") for n in program.graph.nodes if n.name in user_inputs]
    dynamic = any(isinstance(v, torch.Tensor) and has_free_symbols(v.shape[0]) for v in values)
    if not dynamic:
        warnings.warn(
            f"{type(model).__name__} fixes its batch size in forward (a hard-coded reshape?): the VAE "
            f"captured by torch.export runs only at batch size {batch_dims[0] if batch_dims else '?'}",
            stacklevel=4,
        )
    spec = _flatten(expected, [])
    return _reroot(program.module(), spec, _input_names(model, len(args))), dynamic


def _input_names(model: nn.Module, count: int) -> list[str]:
    names: list[str] = []
    for param in inspect.signature(model.forward).parameters.values():
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            break
        names.append(param.name)
    return [names[i] if i < len(names) else f"input_{i}" for i in range(count)]


def _reroot(exported: fx.GraphModule, spec: _Spec, input_names: list[str]) -> fx.GraphModule:
    """Copy the exported graph into a plain GraphModule with the model's names and output structure.

    Drops the ``model.`` prefix of the wrapper, the shape guards (the batch is dynamic), and the pytree
    calling convention; turns the mode baked into dropout and batch-norm into a read of the flag.
    """
    graph = fx.Graph()
    val_map: dict[fx.Node, Any] = {}
    placeholders = [n for n in exported.graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, input_names, strict=True):
        val_map[node] = graph.placeholder(name)
        val_map[node].meta = dict(node.meta)
    for node in exported.graph.nodes:
        if node.op == "call_module" and node.target.startswith("_guards"):
            val_map[node] = None
    flag = graph.call_module("training_flag")
    flat_out = graph.graph_copy(exported.graph, val_map)
    graph.output(_rebuild(graph, spec, iter(flat_out)))

    attributes: dict[str, Any] = {"training_flag": ModeFlag()}
    for node in graph.nodes:
        if node.op == "get_attr":
            value = _get_attr(exported, node.target)
            node.target = node.target.removeprefix("model.")
            attributes[node.target] = value
        elif node.op == "call_function" and node.target in _DROPOUT_OPS:
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


def _get_attr(module: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


# --- checks and messages --------------------------------------------------------------------------------


def _check_same(expected: Any, got: Any, *, values: bool = True) -> None:
    """Raise unless the graph's output has the model's structure and shapes (and values, if asked)."""
    exp_leaves: list[torch.Tensor] = []
    got_leaves: list[torch.Tensor] = []
    exp_spec, got_spec = _flatten(expected, exp_leaves), _flatten(got, got_leaves)
    if exp_spec != got_spec or any(e.shape != g.shape for e, g in zip(exp_leaves, got_leaves, strict=True)):
        raise TraceError("the traced graph returns a different output structure than the model")
    pairs = zip(exp_leaves, got_leaves, strict=True)
    if not all(torch.allclose(e, g, rtol=1e-5, atol=1e-6, equal_nan=True) for e, g in pairs):
        message = "the traced graph computes different values than the model on the example"
        if values:
            raise TraceError(message)
        warnings.warn(f"{message} (randomness in eval mode?); check the converted VAE", stacklevel=4)


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


_LIBRARY_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,
    os.path.dirname(contextlib.__file__) + os.sep,
)
"""Frames in these folders are not the user's code."""


def _user_line(err: BaseException) -> str | None:
    """``file:line: code`` of the deepest frame in the user's code, across the exception chain."""
    found = None
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if not frame.filename.startswith(_LIBRARY_DIRS) and not frame.filename.startswith("<"):
                found = f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
        current = current.__cause__ or current.__context__
    return found
