"""What fxvae knows about torch operators: which calls are layers, elementwise maps, shape moves, dropout.

A graph spells one operation three ways: a ``call_module`` of a torch.nn layer (symbolic_trace keeps
those as leaves), a torch function or Tensor method (symbolic_trace), or an ATen overload (torch.export).
The tables below list all three. Callers treat anything unlisted conservatively: an unknown operation
between a layer and the latent means the log-sigma head is not a copy of that layer, never a wrong one.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

aten = torch.ops.aten


@dataclass(frozen=True)
class LayerKind:
    """A parametrized layer whose weights can seed a mu head: as modules, functions and ATen ops."""

    name: str
    modules: tuple[type[nn.Module], ...]
    functions: frozenset[object]
    channel_dim: int
    """Dimension of the layer's output that its bias runs along."""
    transposed: bool = False


LAYER_KINDS: tuple[LayerKind, ...] = (
    LayerKind("linear", (nn.Linear,), frozenset({F.linear, aten.linear}), -1),
    LayerKind(
        "conv",
        (nn.Conv1d, nn.Conv2d, nn.Conv3d),
        frozenset({F.conv1d, F.conv2d, F.conv3d, aten.conv1d, aten.conv2d, aten.conv3d}),
        1,
    ),
    LayerKind(
        "conv_transpose",
        (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
        frozenset(
            {
                F.conv_transpose1d,
                F.conv_transpose2d,
                F.conv_transpose3d,
                aten.conv_transpose1d,
                aten.conv_transpose2d,
                aten.conv_transpose3d,
            }
        ),
        1,
        transposed=True,
    ),
)

SUPPORTED_LAYERS = "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d (as modules or functional calls)"

WEIGHT_ARG, BIAS_ARG = 1, 2
"""Positions of weight and bias in every functional layer signature above."""

CONV_ARG_NAMES = ("stride", "padding", "dilation", "groups")
CONV_TRANSPOSE_ARG_NAMES = ("stride", "padding", "output_padding", "groups", "dilation")
"""Positional hyperparameters after (input, weight, bias) in F.conv* / aten.conv* and their transposes."""

_DROPOUT_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
DROPOUT_FUNCTIONS = frozenset(
    {
        F.dropout,
        F.dropout1d,
        F.dropout2d,
        F.dropout3d,
        F.alpha_dropout,
        F.feature_alpha_dropout,
        aten.dropout,
        aten.feature_dropout,
        aten.alpha_dropout,
        aten.feature_alpha_dropout,
    }
)
"""Dropout as functions and ATen ops; the export tracer rewires the ATen ones to the module's mode flag."""

_ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.LogSigmoid,
    nn.Hardshrink,
    nn.Softshrink,
)
_ELEMENTWISE_MODULES = (
    *_ACTIVATION_MODULES,
    nn.Identity,
    # In eval mode a batch norm is a fixed affine map per channel.
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    *_DROPOUT_MODULES,
)
_ACTIVATION_FUNCTIONS = frozenset(
    {
        torch.relu,
        F.relu,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.selu,
        F.celu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardtanh,
        F.hardsigmoid,
        F.hardswish,
        F.softplus,
        F.softsign,
        F.logsigmoid,
        F.tanhshrink,
        F.threshold,
        F.hardshrink,
        F.softshrink,
        torch.sigmoid,
        F.sigmoid,
        torch.tanh,
        F.tanh,
        torch.clamp,
        torch.clip,
        aten.relu,
        aten.relu6,
        aten.gelu,
        aten.silu,
        aten.sigmoid,
        aten.tanh,
        aten.elu,
        aten.selu,
        aten.celu,
        aten.leaky_relu,
        aten.prelu,
        aten.hardtanh,
        aten.hardsigmoid,
        aten.hardswish,
        aten.softplus,
        aten.mish,
        aten.hardshrink,
        aten.softshrink,
        aten.clamp,
        aten.clamp_min,
        aten.clamp_max,
    }
)
_ELEMENTWISE_FUNCTIONS = frozenset(
    {
        *_ACTIVATION_FUNCTIONS,
        F.batch_norm,
        torch.round,
        torch.abs,
        torch.neg,
        torch.exp,
        torch.mul,
        torch.add,
        torch.sub,
        torch.div,
        operator.neg,
        operator.mul,
        operator.add,
        operator.sub,
        operator.truediv,
        *DROPOUT_FUNCTIONS,
        aten.round,
        aten.abs,
        aten.neg,
        aten.exp,
        aten.mul,
        aten.add,
        aten.sub,
        aten.div,
        aten.batch_norm,
        aten.clone,
        aten.alias,
        aten.detach,
        aten.contiguous,
        aten._to_copy,
    }
)
_ACTIVATION_METHODS = frozenset({"relu", "sigmoid", "tanh", "clamp", "clip"})
_ELEMENTWISE_METHODS = frozenset(
    {
        *_ACTIVATION_METHODS,
        "round",
        "abs",
        "neg",
        "exp",
        "mul",
        "add",
        "sub",
        "div",
        "float",
        "double",
        "half",
        "bfloat16",
        "to",
        "contiguous",
        "detach",
        "clone",
    }
)

_SHAPE_MODULES = (
    nn.Flatten,
    nn.Unflatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
)
_SHAPE_FUNCTIONS = frozenset(
    {
        torch.flatten,
        torch.reshape,
        torch.permute,
        torch.transpose,
        torch.squeeze,
        torch.unsqueeze,
        torch.movedim,
        torch.swapaxes,
        torch.chunk,
        torch.split,
        torch.unbind,
        torch.narrow,
        torch.select,
        F.max_pool1d,
        F.max_pool2d,
        F.max_pool3d,
        F.avg_pool1d,
        F.avg_pool2d,
        F.avg_pool3d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.adaptive_avg_pool3d,
        F.adaptive_max_pool1d,
        F.adaptive_max_pool2d,
        F.adaptive_max_pool3d,
        F.pixel_shuffle,
        F.pixel_unshuffle,
        operator.getitem,
        aten.view,
        aten.reshape,
        aten._unsafe_view,
        aten.permute,
        aten.transpose,
        aten.squeeze,
        aten.unsqueeze,
        aten.flatten,
        aten.unflatten,
        aten.movedim,
        aten.swapaxes,
        aten.split,
        aten.split_with_sizes,
        aten.chunk,
        aten.unbind,
        aten.slice,
        aten.select,
        aten.narrow,
        aten.max_pool1d,
        aten.max_pool2d,
        aten.max_pool3d,
        aten.max_pool2d_with_indices,
        aten.max_pool3d_with_indices,
        aten.avg_pool1d,
        aten.avg_pool2d,
        aten.avg_pool3d,
        aten.adaptive_avg_pool1d,
        aten.adaptive_avg_pool2d,
        aten.adaptive_avg_pool3d,
        aten._adaptive_avg_pool2d,
        aten.adaptive_max_pool1d,
        aten.adaptive_max_pool2d,
        aten.adaptive_max_pool3d,
        aten.pixel_shuffle,
        aten.pixel_unshuffle,
    }
)
_SHAPE_METHODS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "unflatten",
        "permute",
        "transpose",
        "squeeze",
        "unsqueeze",
        "movedim",
        "swapaxes",
        "chunk",
        "split",
        "unbind",
        "narrow",
        "select",
    }
)

_FEATURES_LAST = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.RMSNorm)
_FEATURES_LAST_FUNCTIONS = frozenset(
    {
        F.linear,
        F.layer_norm,
        F.rms_norm,
        F.scaled_dot_product_attention,
        aten.linear,
        aten.layer_norm,
        aten.rms_norm,
        aten.scaled_dot_product_attention,
    }
)
_CHANNELS_FIRST = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
_CHANNELS_FIRST_FUNCTIONS = frozenset(
    {
        *LAYER_KINDS[1].functions,
        *LAYER_KINDS[2].functions,
        F.group_norm,
        F.batch_norm,
        F.instance_norm,
        aten.group_norm,
        aten.batch_norm,
        aten.instance_norm,
    }
)


def _packet(target: object) -> object:
    """An ATen overload's packet (``aten.relu.default`` -> ``aten.relu``), any other target itself."""
    return getattr(target, "overloadpacket", target)


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def layer_kind_by_target(gm: fx.GraphModule, node: fx.Node) -> LayerKind | None:
    """The kind of parametrized layer that ``node`` calls, judged by its target alone (module class or
    function); else None. :func:`fxvae.analysis.graph.stored_layer_kind` also asks where the weight comes from.

    >>> gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2)))
    >>> [layer_kind_by_target(gm, n).name for n in gm.graph.nodes if n.op == "call_module"]
    ['linear']
    """
    module = _module(gm, node)
    if module is not None:
        return next((k for k in LAYER_KINDS if isinstance(module, k.modules)), None)
    if node.op == "call_function":
        target = _packet(node.target)
        return next((k for k in LAYER_KINDS if target in k.functions), None)
    return None


@dataclass(frozen=True)
class OpClass:
    """A class of operations, in the three spellings a graph can hold them."""

    modules: tuple[type[nn.Module], ...]
    functions: frozenset[object]
    methods: frozenset[str]

    def __contains__(self, call: tuple[fx.GraphModule, fx.Node]) -> bool:
        gm, node = call
        module = _module(gm, node)
        if module is not None:
            return isinstance(module, self.modules)
        if node.op == "call_function":
            return _packet(node.target) in self.functions
        return node.op == "call_method" and node.target in self.methods


ELEMENTWISE = OpClass(_ELEMENTWISE_MODULES, _ELEMENTWISE_FUNCTIONS, _ELEMENTWISE_METHODS)
"""Maps each element of the data input to the element at the same place. Callers check that the node has
a single data input of the output's shape (a binary op's other operand is then a constant or a parameter)."""
ACTIVATIONS = OpClass(_ACTIVATION_MODULES, _ACTIVATION_FUNCTIONS, _ACTIVATION_METHODS)
"""Elementwise nonlinearities (ReLU, sigmoid, tanh, clamp...): the ``f`` in a latent z = f(W y + b).
Affine arithmetic, rounding and casts are not."""
SHAPE_MOVES = OpClass(_SHAPE_MODULES, _SHAPE_FUNCTIONS, _SHAPE_METHODS)
"""Only move, select or pool elements (reshape, permute, slice, pooling)."""


def module_layout(module: nn.Module) -> int | None:
    """The dimension ``module`` treats as features: -1 (linear, attention, layer norm), 1 (conv, batch or
    group norm), or None where its class says nothing about it."""
    if isinstance(module, _FEATURES_LAST):
        return -1
    return 1 if isinstance(module, _CHANNELS_FIRST) else None


def feature_layout(gm: fx.GraphModule, node: fx.Node) -> int | None:
    """:func:`module_layout` of the module ``node`` calls, or the same for a function or ATen op."""
    module = _module(gm, node)
    if module is not None:
        return module_layout(module)
    if node.op == "call_function":
        target = _packet(node.target)
        if target in _FEATURES_LAST_FUNCTIONS:
            return -1
        return 1 if target in _CHANNELS_FIRST_FUNCTIONS else None
    return None
