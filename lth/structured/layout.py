"""Which units of which layers can be removed, and who reads them: a dataflow walk over the model's torch.fx graph.

A *producer* is a prunable Linear (rows) or Conv (filters, groups=1). Its units may be removed when every path from
its output reaches other prunable Linear/Conv layers (its *consumers*) through unit-preserving steps only: BatchNorm,
elementwise activations, dropout, pooling, scalar arithmetic, and flatten from dim 1 (Conv → flatten → Linear reads
each filter's positions as a contiguous block of columns). A producer whose output reaches anything else (a residual
`add`, a concatenation, an unknown module, the model's output) keeps all its units, and `UnitLayout.refused` says why.
So the output layer never loses units, and in a ResNet only the first conv of each block does.
"""

from __future__ import annotations

import copy
import inspect
import operator
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

WEIGHTED = (nn.Linear, _ConvNd)
# Modules that act on each unit (channel) separately and keep the unit axis where it was.
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
)
PASS_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardtanh,
    F.hardswish, F.hardsigmoid, F.softplus, F.softsign, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.neg, operator.neg,
}
PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "neg"}
SCALAR_OPS = {operator.mul, operator.truediv, operator.add, operator.sub, torch.mul, torch.add, torch.sub}
SHAPE_METHODS = {"size", "dim", "numel"}


@dataclass
class UnitLayout:
    """Producers whose units may go, the layers that read them, the BatchNorms on them, and why the rest stay."""

    removable: list[str] = field(default_factory=list)  # weight names, in the prunables' order
    consumers: dict[str, list[str]] = field(default_factory=dict)  # producer → weights reading its units
    norms: dict[str, list[str]] = field(default_factory=dict)  # producer → BatchNorm module names on its units
    refused: dict[str, str] = field(default_factory=dict)  # weight name → why its units are never removed


def module_of(weight_name: str) -> str:
    """The module name of a `.weight` parameter ('' for the root)."""
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else ""


def weight_of(module_name: str) -> str:
    """The parameter name of a module's weight."""
    return f"{module_name}.weight" if module_name else "weight"


def unit_layout(model: nn.Module, example_input: torch.Tensor | None = None,
                prunables: list[str] | None = None) -> UnitLayout:
    """Trace `model` and find which prunables' units can be removed (default prunables: all Linear/Conv weights)."""
    modules = dict(model.named_modules())
    if prunables is None:
        prunables = [weight_of(n) for n, m in modules.items() if isinstance(m, WEIGHTED)]
    for name in prunables:
        if not isinstance(modules.get(module_of(name)), WEIGHTED) or not name.endswith("weight"):
            raise ValueError(f"'{name}' is not the weight of a Linear or Conv layer; structured pruning needs those")
    graph = _trace(model, example_input)
    walk = _Walk(modules, set(prunables), graph)
    walk.run()
    layout = UnitLayout(refused=walk.refused)
    for name in prunables:
        if name not in walk.called:
            layout.refused.setdefault(name, "it is not called as a module by forward()")
        if name not in layout.refused:
            layout.removable.append(name)
            layout.consumers[name] = walk.consumers.get(name, [])
            layout.norms[name] = walk.norms.get(name, [])
    return layout


def _trace(model: nn.Module, example_input: torch.Tensor | None) -> torch.fx.Graph:
    """The model's fx graph; shape-dependent control flow is traced on a meta copy with `example_input`'s shape."""
    try:
        return torch.fx.symbolic_trace(model).graph
    except Exception as err:  # control flow on input shapes (e.g. `if x.dim() == 2`)
        from torch.fx.experimental import meta_tracer

        x = example_input if example_input is not None else _guess_input(model)
        if x is None:
            raise ValueError(f"cannot trace {type(model).__name__} ({err}); pass example_input") from err
        meta = copy.deepcopy(model).to("meta")
        arg = next(iter(inspect.signature(meta.forward).parameters))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return meta_tracer.symbolic_trace(meta, meta_args={arg: x.to("meta")}).graph
            except Exception as err2:
                raise ValueError(f"cannot trace {type(model).__name__} for structured pruning: {err2}") from err2


def _guess_input(model: nn.Module) -> torch.Tensor | None:
    """A batch of 2 shaped for the first Linear/Conv layer (spatial size 32), or None."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return torch.zeros(2, m.in_features)
        if isinstance(m, _ConvNd):
            return torch.zeros(2, m.in_channels, *([32] * len(m.kernel_size)))
    return None


def passes(node: torch.fx.Node) -> bool:
    """Whether `node` acts on its one tensor argument channel by channel (an activation, pooling, x * scalar...)."""
    tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if len(tensor_args) != 1 or node.args[0] is not tensor_args[0] or node.kwargs.get("return_indices"):
        return False
    if node.op == "call_function" and node.target in SCALAR_OPS:
        return all(isinstance(a, int | float) for a in node.args[1:])
    if node.op == "call_function":
        return node.target in PASS_FUNCTIONS
    return node.op == "call_method" and node.target in PASS_METHODS


def flattens(node: torch.fx.Node) -> bool:
    """flatten(x, 1) / x.flatten(1) / x.view(batch, -1) / x.reshape(batch, -1)."""
    args, kw = node.args[1:], node.kwargs
    if node.target in (torch.flatten, "flatten"):
        start = args[0] if args else kw.get("start_dim", 0)
        end = args[1] if len(args) > 1 else kw.get("end_dim", -1)
        return start == 1 and end == -1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = args[0] if len(args) == 1 and isinstance(args[0], tuple | list) else args
        return len(shape) == 2 and shape[1] == -1
    return False


class _Walk:
    """Forward provenance over the graph: each value carries (producer weight, flattened?) or None."""

    def __init__(self, modules: dict[str, nn.Module], prunables: set[str], graph: torch.fx.Graph) -> None:
        self.modules = modules
        self.prunables = prunables
        self.graph = graph
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        self.prov: dict[torch.fx.Node, tuple[str, bool] | None] = {}
        self.consumers: dict[str, list[str]] = {}
        self.norms: dict[str, list[str]] = {}
        self.refused: dict[str, str] = {}
        self.called: set[str] = set()

    def refuse(self, producers: list[tuple[str, bool]], why: str) -> None:
        for p, _ in producers:
            self.refused.setdefault(p, why)

    def run(self) -> None:
        for node in self.graph.nodes:
            inputs: list[torch.fx.Node] = []
            torch.fx.node.map_arg((node.args, node.kwargs), inputs.append)
            srcs = [p for p in (self.prov.get(a) for a in inputs) if p is not None]
            self.prov[node] = self.visit(node, srcs)

    def visit(self, node: torch.fx.Node, srcs: list[tuple[str, bool]]) -> tuple[str, bool] | None:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            self.refuse(srcs, "its units are the model's outputs")
            return None
        if node.op == "call_module":
            return self.visit_module(node, srcs)
        if node.op == "call_method" and node.target in SHAPE_METHODS:
            return None
        if node.op == "call_function" and node.target is getattr:
            return None
        if len(srcs) != 1:
            self.refuse(srcs, f"its output is combined with another layer's in '{node.name}' ({_what(node)})")
            return None
        src = srcs[0]
        if passes(node):
            return src
        if flattens(node):
            return src[0], True
        self.refuse(srcs, f"its output reaches '{node.name}' ({_what(node)}), which does not keep units apart")
        return None

    def visit_module(self, node: torch.fx.Node, srcs: list[tuple[str, bool]]) -> tuple[str, bool] | None:
        name = str(node.target)
        mod = self.modules[name]
        once = self.calls[name] == 1
        if isinstance(mod, WEIGHTED):
            w = weight_of(name)
            self.called.add(w)
            extra = [a for a in node.args[1:] if isinstance(a, torch.fx.Node)]
            if srcs:
                why = self.cannot_consume(mod, w, srcs, once, bool(extra or node.kwargs))
                if why:
                    self.refuse(srcs, why)
                else:
                    self.consumers.setdefault(srcs[0][0], []).append(w)
            if w not in self.prunables:
                return None
            if not once:
                self.refused.setdefault(w, f"'{name}' is called {self.calls[name]} times (shared weights)")
            elif isinstance(mod, _ConvNd) and (mod.groups != 1 or mod.transposed):
                self.refused.setdefault(w, f"'{name}' is a grouped or transposed conv")
            return w, False
        if not srcs:
            return None
        if isinstance(mod, _BatchNorm) and len(srcs) == 1 and once:
            if mod.num_features != self.units(srcs[0][0]):
                self.refuse(srcs, f"BatchNorm '{name}' has {mod.num_features} features, not one per unit")
                return None
            self.norms.setdefault(srcs[0][0], []).append(name)
            return srcs[0]
        if len(srcs) == 1 and isinstance(mod, PASS_MODULES) and not getattr(mod, "return_indices", False):
            return srcs[0]
        if len(srcs) == 1 and isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1:
            return srcs[0][0], True
        self.refuse(srcs, f"its output reaches module '{name}' ({type(mod).__name__}), which does not keep units apart")
        return None

    def units(self, producer: str) -> int:
        return int(self.modules[module_of(producer)].weight.shape[0])

    def cannot_consume(self, mod: nn.Module, w: str, srcs: list[tuple[str, bool]], once: bool,
                       extra: bool) -> str | None:
        """Why `mod` cannot have its inputs sliced by its producer's removed units (None: it can)."""
        if len(srcs) != 1 or extra:
            return f"'{module_of(w)}' reads it together with other inputs"
        producer, flat = srcs[0]
        prod = self.modules[module_of(producer)]
        n = self.units(producer)
        if w not in self.prunables:
            return f"'{module_of(w)}' reads its units but is not prunable (its input columns have no mask)"
        if not once:
            return f"'{module_of(w)}' reads its units and is called more than once"
        if isinstance(mod, _ConvNd):
            ok = (isinstance(prod, _ConvNd) and not flat and mod.groups == 1 and not mod.transposed
                  and mod.in_channels == n and len(mod.kernel_size) == len(prod.kernel_size))
        else:
            ok = mod.in_features == n if isinstance(prod, nn.Linear) else flat and mod.in_features % n == 0
        return None if ok else f"'{module_of(w)}' ({type(mod).__name__}) reads it in a layout other than one input " \
                               "slice per unit"


def _what(node: torch.fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target}"
