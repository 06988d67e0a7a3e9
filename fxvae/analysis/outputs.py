"""The structure of a model's output: its tensor leaves, and how to rebuild it, in eager code and in graphs.

An autoencoder may return a tensor, a tuple, list or dict of them, a dataclass, a named tuple or a
dict subclass (the ``ModelOutput`` classes of several libraries). Tracing, splitting, benchmarking and
ONNX export all flatten such an output to its tensors and some rebuild it; this module is the one place
that knows how.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn
from torch.fx.immutable_collections import immutable_dict, immutable_list

RECORD_META = "fxvae_record"
"""``node.meta`` key marking call_function nodes that only rebuild the output's container class."""

Layout = Literal["args", "kwargs", "mapping"]


@dataclass(frozen=True)
class DictRecord:
    """Rebuilds a dict subclass whose constructor cannot take its own items: fill a bare instance.

    Used where neither ``cls(items)`` nor ``cls(**items)`` gives back the same keys (a class whose
    ``__init__`` takes other arguments, or whose ``__setitem__`` is restricted).
    """

    cls: type

    def __post_init__(self) -> None:
        # torch.fx names a call_function target in generated code by these two attributes.
        object.__setattr__(self, "__name__", f"build_{self.cls.__name__}")
        object.__setattr__(self, "__module__", __name__)

    def __call__(self, items: dict[Any, Any]) -> Any:
        record = self.cls.__new__(self.cls)
        dict.update(record, items)
        return record


@dataclass(frozen=True)
class Record:
    """A container class instance taken apart: ``build`` applied to ``values`` (as ``layout``) remakes it."""

    build: Callable[..., Any]
    layout: Layout
    keys: tuple[Any, ...]
    values: tuple[Any, ...]

    def assemble(self, values: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) for ``build`` with other ``values`` (tensors, or graph nodes)."""
        if self.layout == "args":
            return tuple(values), {}
        if self.layout == "kwargs":
            return (), dict(zip(self.keys, values, strict=True))
        return (dict(zip(self.keys, values, strict=True)),), {}


def record_parts(obj: Any) -> Record | None:
    """How to take apart and rebuild ``obj`` if it is a container class that tracers would lose, else None.

    Dataclasses are rebuilt from their init fields, named tuples positionally; a dict subclass by the
    first of ``cls(items)``, ``cls(**items)`` and filling a bare instance that gives back its items.

    >>> record_parts({"a": 1}) is None
    True
    """
    cls = type(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = [f.name for f in dataclasses.fields(obj) if f.init]
        return Record(cls, "kwargs", tuple(fields), tuple(getattr(obj, f) for f in fields))
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return Record(cls, "args", tuple(range(len(obj))), tuple(obj))
    if isinstance(obj, dict) and cls not in (dict, immutable_dict):
        keys, values = tuple(obj), tuple(obj.values())
        for build, layout in ((cls, "mapping"), (cls, "kwargs")):
            record = Record(build, layout, keys, values)
            if _rebuilds(record, obj):
                return record
        return Record(DictRecord(cls), "mapping", keys, values)
    return None


def _rebuilds(record: Record, original: dict[Any, Any]) -> bool:
    if record.layout == "kwargs" and not all(isinstance(k, str) and k.isidentifier() for k in record.keys):
        return False
    try:
        args, kwargs = record.assemble(record.values)
        rebuilt = record.build(*args, **kwargs)
    except Exception:  # a constructor that does not take these arguments
        return False
    return (
        type(rebuilt) is type(original)
        and list(rebuilt) == list(original)
        and all(rebuilt[k] is original[k] for k in original)
    )


@dataclass(frozen=True)
class Spec:
    """How to rebuild a model output from its flat tensor leaves."""

    kind: Literal["tensor", "const", "tuple", "list", "dict", "record"]
    children: tuple[Spec, ...] = ()
    keys: tuple[Any, ...] = ()
    build: Callable[..., Any] | None = None
    layout: Layout = "args"
    value: Any = None


def flatten(obj: Any, leaves: list[torch.Tensor]) -> Spec:
    """Append ``obj``'s tensors to ``leaves`` depth first and return the spec that rebuilds it.

    >>> leaves = []
    >>> flatten({"recon": torch.zeros(1), "z": (torch.ones(1), None)}, leaves).kind, len(leaves)
    ('dict', 2)
    """
    if isinstance(obj, torch.Tensor):
        leaves.append(obj)
        return Spec("tensor")
    record = record_parts(obj)
    if record is not None:
        children = tuple(flatten(v, leaves) for v in record.values)
        return Spec("record", children, record.keys, record.build, record.layout)
    if isinstance(obj, (tuple, list)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return Spec(kind, tuple(flatten(v, leaves) for v in obj))
    if isinstance(obj, dict):
        return Spec("dict", tuple(flatten(v, leaves) for v in obj.values()), tuple(obj))
    return Spec("const", value=obj)


def unflatten(spec: Spec, leaves: Iterator[Any]) -> Any:
    """The output that ``spec`` describes, with its tensors taken in order from ``leaves``.

    >>> leaves = []
    >>> spec = flatten((torch.zeros(1), {"z": torch.ones(1)}), leaves)
    >>> unflatten(spec, iter(["a", "b"]))
    ('a', {'z': 'b'})
    """
    return _assemble(spec, leaves, lambda build, args, kwargs: build(*args, **kwargs))


def rebuild_in_graph(graph: fx.Graph, spec: Spec, leaves: Iterator[fx.Node]) -> Any:
    """Emit the nodes that turn flat output leaves back into the output structure ``spec`` describes."""

    def record(build: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> fx.Node:
        node = graph.call_function(build, args, kwargs)
        node.meta[RECORD_META] = True
        return node

    return _assemble(spec, leaves, record)


def _assemble(spec: Spec, leaves: Iterator[Any], record: Callable[..., Any]) -> Any:
    """``spec``'s structure around ``leaves``; container classes are made by ``record(build, args, kwargs)``."""
    if spec.kind == "tensor":
        return next(leaves)
    if spec.kind == "const":
        return spec.value
    children = [_assemble(child, leaves, record) for child in spec.children]
    if spec.kind == "tuple":
        return tuple(children)
    if spec.kind == "list":
        return children
    if spec.kind == "dict":
        return dict(zip(spec.keys, children, strict=True))
    args, kwargs = Record(spec.build, spec.layout, spec.keys, ()).assemble(children)
    return record(spec.build, args, kwargs)


def tensors(out: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of a nested output, depth first: tuple/list items in order, dict values in insertion
    order, dataclass fields in declaration order; ``None`` and other non-tensors are skipped.

    >>> r, z = torch.zeros(1), torch.ones(1)
    >>> tensors({"recon": r, "z": (z, None)}) == (r, z)
    True
    """
    leaves: list[torch.Tensor] = []
    flatten(out, leaves)
    return tuple(leaves)


def graph_leaves(graph: fx.Graph) -> list[fx.Node]:
    """The nodes a graph returns, looking through lists, dicts and the nodes that rebuild output classes."""
    leaves: list[fx.Node] = []
    pending: list[Any] = [graph.output_node().args[0]]
    while pending:
        item = pending.pop(0)
        if isinstance(item, fx.Node) and item.meta.get(RECORD_META):
            pending[:0] = [*item.args, *item.kwargs.values()]
        elif isinstance(item, fx.Node):
            if item not in leaves:
                leaves.append(item)
        elif isinstance(item, (tuple, list, immutable_list)):
            pending[:0] = list(item)
        elif isinstance(item, dict):
            pending[:0] = list(item.values())
    return leaves


def reconstruction_index(shapes: Sequence[tuple[int, ...] | None], input_shape: tuple[int, ...]) -> int:
    """Which output leaf is the reconstruction: the first with the input's shape, else the widest.

    ``shapes`` holds one entry per candidate leaf (None for leaves that cannot be one).

    >>> reconstruction_index([(8, 4), (8, 16)], (8, 16)), reconstruction_index([(8, 4), (8, 2)], (8, 16))
    (1, 0)
    """
    same = [i for i, s in enumerate(shapes) if s is not None and tuple(s) == tuple(input_shape)]
    if same:
        return same[0]
    sized = [(math.prod(s), -i) for i, s in enumerate(shapes) if s is not None]
    if not sized:
        raise ValueError("no candidate leaf")
    return -max(sized)[1]


def reconstruction(out: Any, like: torch.Tensor) -> torch.Tensor:
    """The reconstruction inside a model output (see :func:`reconstruction_index`).

    >>> recon = reconstruction({"z": torch.zeros(2, 3), "recon": torch.ones(2, 8)}, torch.zeros(2, 8))
    >>> recon.shape
    torch.Size([2, 8])
    """
    leaves = tensors(out)
    shapes = [tuple(t.shape) if t.is_floating_point() else None for t in leaves]
    return leaves[reconstruction_index(shapes, tuple(like.shape))]


def reconstruction_like(out: Any, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction inside a model output, in the data's shape: a leaf that holds as many elements per
    sample as ``x`` in another layout (a flattened image) is reshaped to ``x``'s shape.

    >>> reconstruction_like((torch.zeros(2, 12), torch.ones(2, 3)), torch.zeros(2, 3, 4)).shape
    torch.Size([2, 3, 4])
    """
    if isinstance(out, torch.Tensor) and out.shape == x.shape:
        return out
    recon = reconstruction(out, x)
    if recon.shape != x.shape and recon.dim() >= 1 and len(recon) == len(x) and recon[0].numel() == x[0].numel():
        return recon.reshape(x.shape)
    return recon


class FlatOutputs(nn.Module):
    """Runs ``module`` and returns its output's tensors as a flat tuple, in :func:`tensors` order.

    torch.export and the ONNX exporter refuse output classes they do not know; this wrapper hides them.

    >>> FlatOutputs(nn.Linear(2, 2))(torch.zeros(1, 2))[0].shape
    torch.Size([1, 2])
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        return tensors(self.module(*args))
