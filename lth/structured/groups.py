"""Dependency groups: the channels that must be removed together, found by a dataflow walk over the torch.fx graph.

A *group* is one channel space: channel j of a group is kept or removed in every member at once. Channels are coupled
by a residual add or subtraction (every value summed, and everything that reads the sum), a concatenation along the
channel dim (channel i of input k is channel offset_k + i of the concatenation), a depthwise convolution
(groups == in_channels == out_channels: its filter j reads only input channel j, so it joins its input's group),
BatchNorm (its entries), elementwise activations, dropout and pooling (they keep channels apart), and flatten after
pooling (channel j of a Conv output becomes a contiguous block of the flattened columns a Linear reads).

Members of a group, each a `Slice` (a stretch of the group's channels starting at `offset`, `size` units long):
- `producers`: weights whose dim-0 rows (and bias entries) are the group's channels — Linear rows, Conv filters,
  depthwise filters;
- `norms`: BatchNorm modules whose entries are the group's channels;
- `consumers`: weights whose dim-1 columns read the group's channels; `block` columns per channel (1, or the
  positions per channel after a flatten: channel j is columns (j − offset)·block … (j − offset + 1)·block − 1).

A group is *refused* (never loses channels; `GroupLayout.refused` maps each of its producers' weights to the reason)
when its channels reach the model's output, are combined with the model's input or with a tensor the walk does not
follow (a parameter used functionally), reach an op the walk cannot follow (e.g. `torch.roll`, `chunk`, a channel
shuffle's `view`/`transpose`, a multiplication of two feature maps) — the reason names the op, the fx node and the
module path — or have a member that is shared (called twice), grouped or transposed, or (when `prunables` is given)
a Linear/Conv member that is not prunable. Linear outputs are taken as (batch, units).

    layout = dependency_groups(model, example_input)           # GroupLayout
    layout.groups                                              # [Group], in the order of their first producer
    layout["blocks.0.conv2.weight"]                            # the group a producer's weight (or a group name) is in
    layout.refused                                             # producer weight → why its channels stay
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lth.structured.layout import (
    PASS_FUNCTIONS,
    PASS_METHODS,
    PASS_MODULES,
    SCALAR_OPS,
    SHAPE_METHODS,
    WEIGHTED,
    _trace,
    flattens,
    module_of,
    passes,
    weight_of,
)

# Pass-through steps that map 0 to 0, so a channel that is 0 before stays 0 (sigmoid, softplus, hardsigmoid: not).
ZERO_MODULES: tuple[type[nn.Module], ...] = tuple(
    m for m in PASS_MODULES if m not in (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus))
ZERO_FUNCTIONS = PASS_FUNCTIONS - {torch.sigmoid, F.sigmoid, F.hardsigmoid, F.softplus}
ZERO_METHODS = PASS_METHODS - {"sigmoid"}
ADDS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, "add", "add_", "sub", "sub_"}
CATS = {torch.cat, torch.concat}
OPAQUE = "opaque"  # a tensor whose channels the walk does not follow (the model's input, a functional parameter)


@dataclass(frozen=True)
class Slice:
    """One member's stretch of a group: its units are the group's channels offset … offset + size − 1."""

    name: str  # weight name (producers, consumers) or module name (norms)
    offset: int
    size: int
    block: int = 1  # consumers: input columns per channel


@dataclass
class Group:
    """Channels removed together: the weights writing them (rows), the BatchNorms on them, the weights reading them."""

    name: str  # its first producer's weight name
    size: int  # channels
    producers: list[Slice] = field(default_factory=list)
    norms: list[Slice] = field(default_factory=list)
    consumers: list[Slice] = field(default_factory=list)
    zero_safe: bool = True  # every step on its values maps 0 to 0 (a channel written as 0 everywhere stays 0)
    couplings: list[str] = field(default_factory=list)  # the adds / concats / depthwise convs that joined it

    @property
    def coupled(self) -> bool:
        """Whether more than one layer writes its channels (a residual add, a concatenation, a depthwise conv)."""
        return len(self.producers) > 1


@dataclass
class GroupLayout:
    """Every group found, the removable ones in `groups` (first-producer order), and why the others stay."""

    groups: list[Group] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # producer weight name → why its channels are never removed
    refused_groups: list[Group] = field(default_factory=list)
    of: dict[str, str] = field(default_factory=dict)  # producer weight name → its group's name (removable groups)

    def __getitem__(self, name: str) -> Group:
        """The removable group named `name`, or holding producer weight `name`."""
        key = self.of.get(name, name)
        for g in self.groups:
            if g.name == key:
                return g
        raise KeyError(f"'{name}' is in no removable group" + (f" ({self.refused[name]})" if name in self.refused
                                                                else ""))

    @property
    def removable(self) -> list[str]:
        """The removable groups' names."""
        return [g.name for g in self.groups]


@dataclass(frozen=True)
class _Val:
    """A traced value whose dim carrying channels is space `space`; `flat` after a flatten; `linear`: (batch, units)."""

    space: int
    flat: bool = False
    linear: bool = False


class _Spaces:
    """Union-find of channel spaces with offsets: space i's channel c is channel c + off[i] of space parent[i]."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.off: list[int] = []
        self.size: list[int] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.off.append(0)
        self.size.append(int(size))
        return len(self.parent) - 1

    def find(self, i: int) -> tuple[int, int]:
        off = 0
        while self.parent[i] != i:
            off += self.off[i]
            i = self.parent[i]
        return i, off

    def join(self, a: int, b: int, shift: int) -> bool:
        """Couple channel c of `a` with channel c + shift of `b`; False if that contradicts earlier couplings."""
        ra, xa = self.find(a)
        rb, xb = self.find(b)
        d = shift + xb - xa  # ra's channel c is rb's channel c + d
        if ra == rb:
            return d == 0
        if 0 <= d and d + self.size[ra] <= self.size[rb]:
            self.parent[ra], self.off[ra] = rb, d
        elif 0 <= -d and -d + self.size[rb] <= self.size[ra]:
            self.parent[rb], self.off[rb] = ra, -d
        else:
            return False
        return True


def dependency_groups(model: nn.Module, example_input: torch.Tensor | None = None,
                      prunables: list[str] | None = None) -> GroupLayout:
    """Trace `model` and group its channels (default prunables: every Linear/Conv weight; others refuse their group).

    `example_input` is only needed for models whose forward branches on input shapes (traced on a meta copy).
    """
    modules = dict(model.named_modules())
    if prunables is not None:
        for name in prunables:
            if not isinstance(modules.get(module_of(name)), WEIGHTED) or not name.endswith("weight"):
                raise ValueError(f"'{name}' is not the weight of a Linear or Conv layer; structured pruning needs those")
    walk = _GroupWalk(modules, _trace(model, example_input))
    walk.run()
    return walk.layout(prunables)


class _GroupWalk:
    """Forward provenance over the graph: each value is a `_Val`, OPAQUE (a tensor of unknown channels) or None."""

    def __init__(self, modules: dict[str, nn.Module], graph: torch.fx.Graph) -> None:
        from collections import Counter

        self.modules = modules
        self.graph = graph
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        self.spaces = _Spaces()
        self.prov: dict[torch.fx.Node, _Val | str | None] = {}
        # (kind, space, name, block) with kind producer / norm / consumer; offsets are resolved at the end
        self.members: list[tuple[str, int, str, int]] = []
        self.refusals: list[tuple[int, str]] = []
        self.unsafe: set[int] = set()
        self.couplings: list[tuple[int, str]] = []

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def refuse(self, vals: list[_Val], why: str) -> None:
        self.refusals.extend((v.space, why) for v in vals)

    def run(self) -> None:
        for node in self.graph.nodes:
            args: list[torch.fx.Node] = []
            torch.fx.node.map_arg((node.args, node.kwargs), args.append)
            ins = [self.prov.get(a) for a in args]
            vals = [v for v in ins if isinstance(v, _Val)]
            opaque = any(v == OPAQUE for v in ins)
            self.prov[node] = self.visit(node, vals, opaque)

    def layout(self, prunables: list[str] | None) -> GroupLayout:
        find = self.spaces.find
        groups: dict[int, Group] = {}
        for kind, space, name, block in self.members:
            root, off = find(space)
            g = groups.setdefault(root, Group(name="", size=self.spaces.size[root]))
            piece = Slice(name, off, self.spaces.size[space], block)
            {"producer": g.producers, "norm": g.norms, "consumer": g.consumers}[kind].append(piece)
        why: dict[int, str] = {}
        for space, reason in self.refusals:
            why.setdefault(find(space)[0], reason)
        for space in self.unsafe:
            if find(space)[0] in groups:
                groups[find(space)[0]].zero_safe = False
        for space, what in self.couplings:
            if find(space)[0] in groups:
                groups[find(space)[0]].couplings.append(what)
        allowed = None if prunables is None else set(prunables)
        out = GroupLayout()
        order = {w: i for i, w in enumerate(weight_of(n) for n in self.modules)}
        for root, g in sorted(groups.items(), key=lambda kv: min(order[p.name] for p in kv[1].producers)):
            g.producers.sort(key=lambda s: order[s.name])
            g.name = g.producers[0].name
            if root not in why and allowed is not None:
                outside = [s.name for s in g.producers + g.consumers if s.name not in allowed]
                if outside:
                    why[root] = f"'{module_of(outside[0])}' writes or reads its channels but is not prunable"
            if root in why:
                out.refused_groups.append(g)
                for p in g.producers:
                    out.refused.setdefault(p.name, why[root])
            else:
                out.groups.append(g)
                out.of.update((p.name, g.name) for p in g.producers)
        return out

    # -- the walk --------------------------------------------------------------------------------------------------
    def visit(self, node: torch.fx.Node, vals: list[_Val], opaque: bool) -> _Val | str | None:
        if node.op in ("placeholder", "get_attr"):
            return OPAQUE
        if node.op == "output":
            self.refuse(vals, "its channels are the model's outputs")
            return None
        if node.op == "call_module":
            return self.visit_module(node, vals, opaque)
        if (node.op == "call_method" and node.target in SHAPE_METHODS) or node.target is getattr:
            return None
        if not vals:
            return OPAQUE if opaque else None
        if node.target in ADDS and len(vals) >= 2:
            return self.add(node, vals, opaque)
        if node.target in CATS or node.target == "cat":
            return self.cat(node, vals)
        if len(vals) != 1 or opaque:
            self.refuse(vals, f"it is combined with another tensor in {_where(node)}")
            return OPAQUE
        v = vals[0]
        if passes(node):
            if not self.zero_preserving(node):
                self.unsafe.add(v.space)
            return v
        if flattens(node):
            return _Val(v.space, flat=not v.linear, linear=v.linear)
        self.refuse(vals, f"it reaches {_where(node)}, which the layout cannot follow")
        return OPAQUE

    def add(self, node: torch.fx.Node, vals: list[_Val], opaque: bool) -> _Val | str:
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if opaque or len(tensors) != len(vals) or any(v.flat for v in vals) or len({v.linear for v in vals}) > 1:
            self.refuse(vals, f"it is added to a tensor of other channels in {_where(node)}")
            return OPAQUE
        for v in vals[1:]:
            if self.spaces.size[v.space] != self.spaces.size[vals[0].space] or not self.spaces.join(
                    v.space, vals[0].space, 0):
                self.refuse(vals, f"{_where(node)} adds channels that do not line up")
                return OPAQUE
        self.couplings.append((vals[0].space, f"residual add {_where(node)}"))
        return vals[0]

    def cat(self, node: torch.fx.Node, vals: list[_Val]) -> _Val | str:
        items = node.args[0] if node.args else node.kwargs.get("tensors", ())
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        parts = [self.prov.get(a) if isinstance(a, torch.fx.Node) else None for a in items]
        linear = all(isinstance(p, _Val) and p.linear for p in parts)
        ok = (all(isinstance(p, _Val) and not p.flat for p in parts) and len({p.linear for p in parts}) == 1
              and (dim == 1 or (linear and dim == -1)))
        if not ok:
            self.refuse(vals, f"it is concatenated in {_where(node)} along dim {dim} or with tensors of unknown "
                              "channels")
            return OPAQUE
        out = self.spaces.new(sum(self.spaces.size[p.space] for p in parts))
        offset = 0
        for p in parts:
            if not self.spaces.join(p.space, out, offset):
                self.refuse(vals, f"{_where(node)} concatenates channels in an order that contradicts another "
                                  "concatenation")
                return OPAQUE
            offset += self.spaces.size[p.space]
        self.couplings.append((out, f"concatenation {_where(node)}"))
        return _Val(out, linear=linear)

    @staticmethod
    def zero_preserving(node: torch.fx.Node) -> bool:
        if node.target in SCALAR_OPS:  # x * c, x / c keep 0; x + c, x - c do not
            return node.target in (operator.mul, operator.truediv, torch.mul)
        return node.target in ZERO_FUNCTIONS or node.target in ZERO_METHODS

    def visit_module(self, node: torch.fx.Node, vals: list[_Val], opaque: bool) -> _Val | str | None:
        name = str(node.target)
        mod = self.modules[name]
        once = self.calls[name] == 1
        if isinstance(mod, WEIGHTED):
            return self.weighted(node, name, mod, vals, opaque, once)
        if not vals:
            return OPAQUE if opaque else None
        v = vals[0]
        if len(vals) != 1 or opaque:
            self.refuse(vals, f"module '{name}' ({type(mod).__name__}) combines it with another tensor")
            return OPAQUE
        if isinstance(mod, _BatchNorm) and once and not v.flat and not v.linear:
            if mod.num_features != self.spaces.size[v.space]:
                self.refuse(vals, f"BatchNorm '{name}' has {mod.num_features} features, not one per channel")
                return OPAQUE
            self.members.append(("norm", v.space, name, 1))
            return v
        if isinstance(mod, PASS_MODULES) and not getattr(mod, "return_indices", False):
            if not isinstance(mod, ZERO_MODULES):
                self.unsafe.add(v.space)
            return v
        if isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1:
            return _Val(v.space, flat=not v.linear, linear=v.linear)
        self.refuse(vals, f"it reaches module '{name}' ({type(mod).__name__}), which the layout cannot follow")
        return OPAQUE

    def weighted(self, node: torch.fx.Node, name: str, mod: nn.Module, vals: list[_Val], opaque: bool,
                 once: bool) -> _Val:
        w = weight_of(name)
        extra = [a for a in node.args[1:] if isinstance(a, torch.fx.Node)] or node.kwargs
        conv = isinstance(mod, _ConvNd)
        depthwise = conv and not mod.transposed and mod.groups > 1 and mod.groups == mod.in_channels == \
            mod.out_channels
        out = self.spaces.new(int(mod.weight.shape[0]) if not (conv and mod.transposed) else mod.out_channels)
        if not once:
            self.refuse([*vals, _Val(out)], f"'{name}' is called {self.calls[name]} times (shared weights)")
        elif conv and (mod.transposed or (mod.groups > 1 and not depthwise)):
            self.refuse([*vals, _Val(out)], f"'{name}' is a grouped or transposed conv")
        elif vals or opaque:
            why = self.cannot_read(mod, vals, opaque, bool(extra))
            if why:
                self.refuse([*vals], why.format(name=f"'{name}'"))
                if depthwise:
                    self.refuse([_Val(out)], why.format(name=f"'{name}'"))
            elif depthwise:  # filter j reads input channel j only: its output channels are its input's
                self.spaces.join(out, vals[0].space, 0)
                self.couplings.append((out, f"depthwise conv '{name}'"))
            elif vals:
                v = vals[0]
                block = 1 if not v.flat else mod.in_features // self.spaces.size[v.space]
                self.members.append(("consumer", v.space, w, block))
        self.members.append(("producer", out, w, 1))
        return _Val(out, linear=isinstance(mod, nn.Linear))

    def cannot_read(self, mod: nn.Module, vals: list[_Val], opaque: bool, extra: bool) -> str | None:
        """Why `mod` cannot have its input columns sliced by the group of what it reads (None: it can)."""
        if not vals:
            return None  # it reads the model's input: no group
        if len(vals) != 1 or opaque or extra:
            return "{name} reads it together with other inputs"
        v = vals[0]
        n = self.spaces.size[v.space]
        if isinstance(mod, _ConvNd):
            ok = not v.flat and not v.linear and mod.in_channels == n
        elif v.linear:
            ok = mod.in_features == n
        else:
            ok = v.flat and mod.in_features % n == 0
        return None if ok else "{name} (" + type(mod).__name__ + ") reads it in a layout other than one input " \
                               "slice per channel"


def _where(node: torch.fx.Node) -> str:
    """The fx node, its op and the module path it was called in."""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"'{node.name}' ({node.op} {target}, in module '{path}')"
