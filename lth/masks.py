"""MaskManager: prunables, masks, weight snapshots (θ0, θk), mask enforcement; the mask file format."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lth.config import Mask0, choices
from lth.io import atomic_torch_save

Masks = dict[str, Tensor]

PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MASK0_ACTIONS = choices(Mask0)  # the schema's enum is the one list
# On CPU, masks multiply as float copies in the weights' dtype only while those copies take at most this much memory
# (~1M float32 weights): where a step is small enough for the masking to show (LeNet: 1 MB of copies); larger models
# use uint8 views of the masks, which cost no memory (4 bytes a weight would be 4× the masks themselves).
FLOAT_FACTORS_MAX_BYTES = 4 * 2**20
MASK_FORMAT = "lth.mask"
MASK_VERSION = 1


def name_matches(pattern: str | re.Pattern[str], name: str) -> bool:
    """True if `pattern` names a parameter or the module owning a weight (fullmatch of `name` or `name`−`.weight`)."""
    # so `fc1` matches `fc1.weight`, not `fc1.bias`; include/exclude and pruning overrides all use this rule
    if re.fullmatch(pattern, name):
        return True
    return name.endswith(".weight") and re.fullmatch(pattern, name[: -len(".weight")]) is not None


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def layer_of(name: str) -> str:
    """The layer (module) a parameter belongs to: its name less the last component (`hidden.0.bias` → `hidden.0`)."""
    return name.rpartition(".")[0]


def layer_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Prunables grouped by their layer (`layer_of`), layers and members in `names` order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(layer_of(n), []).append(n)
    return groups


def find_prunables(
    model: nn.Module, include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
    biases: bool = False,
) -> list[str]:
    """Names of the prunable parameters, in `model.named_parameters()` order (`biases`: the default set adds the
    bias of every Linear/Conv layer)."""
    include_p, exclude_p = _as_patterns(include), _as_patterns(exclude)
    kinds = ("weight", "bias") if biases else ("weight",)
    default = {
        f"{mod_name}.{kind}" if mod_name else kind
        for mod_name, mod in model.named_modules() if isinstance(mod, PRUNABLE_MODULES)
        for kind in kinds if getattr(mod, kind, None) is not None
    }
    names = []
    for name, _ in model.named_parameters():
        chosen = any(name_matches(p, name) for p in include_p) if include_p else name in default
        if chosen and not any(name_matches(p, name) for p in exclude_p):
            names.append(name)
    return names


class MaskManager:
    """Owns the masks of a model's prunables, its weight snapshots and the mask-0 action; masks are not buffers."""

    def __init__(
        self,
        model: nn.Module,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        mask0: str = "zero",
        biases: bool = False,
    ) -> None:
        if mask0 not in MASK0_ACTIONS:
            raise ValueError(f"unknown mask-0 action '{mask0}'; valid choices: {', '.join(MASK0_ACTIONS)}")
        self.model = model
        self.mask0 = mask0
        self.names = find_prunables(model, include, exclude, biases)
        if not self.names:
            kinds = ", ".join(t.__name__ for t in PRUNABLE_MODULES)
            raise ValueError(
                f"the model has no prunable parameters (default: weights of {kinds}; "
                f"include={include!r}, exclude={exclude!r})"
            )
        params = dict(model.named_parameters())
        self.params: list[nn.Parameter] = [params[n] for n in self.names]
        self.masks: Masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in zip(self.names, self.params)}
        self._factors: tuple[list[tuple[Tensor, int]], list[Tensor]] = ([], [])  # ((mask, version)s, factors)
        self._snapshots: dict[str, dict[str, Tensor]] = {}
        self._init_values: tuple[dict[str, Tensor] | None, torch.device | None, list[Tensor]] = (None, None, [])
        self.snapshot("init")

    # ----- masks
    def set_masks(self, masks: Mapping[str, Tensor]) -> None:
        """Replace the masks (validated against the prunables' names and shapes) and enforce them."""
        check_masks(masks, {n: p.shape for n, p in zip(self.names, self.params)})
        self._factors = ([], [])  # let the old masks go now
        self.masks = {n: masks[n].to(device=p.device, dtype=torch.bool) for n, p in zip(self.names, self.params)}
        self.apply()

    def _mask_list(self) -> list[Tensor]:
        """The masks in prunable order, on the prunables' device."""
        masks = [self.masks[n] for n in self.names]
        if masks[0].device != self.params[0].device:  # the model moved (e.g. to a GPU) since the masks were set
            self.masks = {n: m.to(p.device) for n, m, p in zip(self.names, masks, self.params)}
            masks = [self.masks[n] for n in self.names]
        return masks

    def mask_factors(self) -> list[Tensor]:
        """The masks as 0/1 multiplication factors, cached while the masks stay the same tensors, unedited.

        On CPU the factors are copies in the weights' dtype while they take at most FLOAT_FACTORS_MAX_BYTES: float ×
        float runs torch's vectorised kernel, ~2× faster than float × uint8 and ~7× faster than float × bool (a
        per-element casting loop). Otherwise, and on accelerators, where all three are vectorised, they are uint8 views
        of the bool masks (no memory). An in-place edit of a mask bumps its version counter and rebuilds the factors.
        """
        masks = self._mask_list()
        key = [(m, m._version) for m in masks]
        cached, factors = self._factors
        if len(cached) != len(key) or any(a is not b or va != vb for (a, va), (b, vb) in zip(cached, key)):
            copy = sum(m.numel() * p.element_size() for m, p in zip(masks, self.params)) <= FLOAT_FACTORS_MAX_BYTES
            factors = [m.to(p.dtype) if copy and m.device.type == "cpu" and p.is_floating_point() else
                       m.view(torch.uint8) if m.dtype == torch.bool else m for m, p in zip(masks, self.params)]
            self._factors = (key, factors)
        return factors

    @torch.no_grad()
    def apply(self) -> None:
        """Set every pruned weight to its mask-0 value, in place."""
        if self.mask0 == "zero":
            torch._foreach_mul_([p.data for p in self.params], self.mask_factors())
            return
        for p, m, v in zip(self.params, self._mask_list(), self._init_list()):
            p.data.copy_(torch.where(m, p.data, v))

    def _init_list(self) -> list[Tensor]:
        """θ0 of the prunables on their device, in prunable order; copied once per snapshot and device, then cached."""
        init, device = self._snapshots["init"], self.params[0].device
        cached, cached_device, values = self._init_values
        if cached is not init or cached_device != device:
            values = [init[n].to(p.device) for n, p in zip(self.names, self.params)]
            self._init_values = (init, device, values)
        return values

    @torch.no_grad()
    def mask_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero `optimizer`'s state of pruned weights (every state tensor shaped like its weight: moments, momentum).

        A pruned weight's state no longer moves it (its gradient is masked, the weight re-masked), but a moment that
        decays from a non-zero value reaches denormal floats after ~700 steps, where a CPU's arithmetic is ~10× slower;
        an elementwise optimizer's update of the kept weights does not read it."""
        for p, f in zip(self.params, self.mask_factors()):
            for v in optimizer.state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:
                    v.mul_(f)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights, in place."""
        grads, factors = [p.grad for p in self.params], self.mask_factors()
        if any(g is None for g in grads):  # parameters that took no part in this step's loss
            factors = [m for g, m in zip(grads, factors) if g is not None]
            grads = [g for g in grads if g is not None]
        if grads:
            torch._foreach_mul_(grads, factors)

    def density(self) -> float:
        """Fraction of prunable weights kept."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / self.numel()

    def layer_density(self) -> dict[str, float]:
        """Per-prunable fraction of weights kept."""
        return {n: int(m.sum()) / m.numel() for n, m in self.masks.items()}

    def numel(self) -> int:
        """Number of prunable weights."""
        return sum(p.numel() for p in self.params)

    # ----- snapshots
    @torch.no_grad()
    def snapshot(self, tag: str) -> None:
        """Store a copy of the whole model state (parameters and buffers) under `tag` ("init" = θ0, "rewind" = θk)."""
        self._snapshots[tag] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def has_snapshot(self, tag: str) -> bool:
        """True if a snapshot `tag` exists."""
        return tag in self._snapshots

    def state(self, tag: str) -> dict[str, Tensor]:
        """The full model state stored under `tag`."""
        if tag not in self._snapshots:
            raise KeyError(f"no snapshot '{tag}'; have: {', '.join(sorted(self._snapshots))}")
        return self._snapshots[tag]

    def weights(self, tag: str) -> dict[str, Tensor]:
        """The prunables' values stored under `tag`."""
        state = self.state(tag)
        return {n: state[n] for n in self.names}

    def current(self) -> dict[str, Tensor]:
        """The prunables' current values (detached views)."""
        return {n: p.detach() for n, p in zip(self.names, self.params)}

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Copy values into the prunables, then enforce the masks."""
        for n, p in zip(self.names, self.params):
            p.data.copy_(weights[n])
        self.apply()

    # ----- persistence
    def state_dict(self) -> dict[str, Any]:
        """Masks (bit-packed), snapshots and settings, for checkpoints."""
        return {
            "version": MASK_VERSION,
            "names": list(self.names),
            "mask0": self.mask0,
            "masks": pack(self.masks),
            "snapshots": {t: {k: v.cpu() for k, v in s.items()} for t, s in self._snapshots.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from `state_dict()`; a mismatch with this model's prunables is an error."""
        if state.get("version") != MASK_VERSION:
            raise ValueError(f"mask-manager state has version {state.get('version')!r}, expected {MASK_VERSION}")
        if list(state["names"]) != self.names:
            raise ValueError(
                f"mask-manager state does not match the model: state has prunables {list(state['names'])}, "
                f"model has {self.names}"
            )
        self.mask0 = state["mask0"]
        device = self.params[0].device
        self._snapshots = {t: {k: v.to(device) for k, v in s.items()} for t, s in state["snapshots"].items()}
        self.set_masks(unpack(state["masks"]))


def check_masks(masks: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> None:
    """Raise ValueError unless `masks` has exactly the names and shapes in `shapes`."""
    missing, extra = sorted(set(shapes) - set(masks)), sorted(set(masks) - set(shapes))
    if missing or extra:
        raise ValueError(f"mask does not match the model's prunables: missing {missing}, unexpected {extra}")
    for n, shape in shapes.items():
        if tuple(masks[n].shape) != tuple(shape):
            raise ValueError(f"mask '{n}' has shape {tuple(masks[n].shape)}, the parameter has {tuple(shape)}")


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], what: str) -> None:
    """Raise ValueError unless `state` has exactly `expected`'s names and shapes."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{what} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{what} does not match the model: '{k}' has shape {tuple(state[k].shape)}, "
                             f"the model's has {tuple(v.shape)}")


def random_masks_like(masks: Mapping[str, Tensor], seed: int) -> Masks:
    """Random masks with exactly the same number of kept weights per layer."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in masks.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:kept]] = True
        out[n] = flat.reshape(m.shape)
    return out


def signs(t: Tensor) -> Tensor:
    """±1 of `t`'s dtype with sign(0) = +1 (signed resets and signed-constant weights never give a kept zero)."""
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of True entries over all masks."""
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def pack(masks: Mapping[str, Tensor]) -> dict[str, dict[str, Any]]:
    """Bit-pack masks: name → {shape, bits (uint8, 1 bit per weight)}."""
    out = {}
    for n, m in masks.items():
        flags = m.detach().cpu().numpy().reshape(-1).astype(np.bool_, copy=False)  # no copy for bool masks
        out[n] = {"shape": list(m.shape), "bits": torch.from_numpy(np.packbits(flags)), "kept": int(flags.sum())}
    return out


def unpack(packed: Mapping[str, Mapping[str, Any]]) -> Masks:
    """Inverse of `pack`; a count mismatch (a damaged file) is an error."""
    out = {}
    for n, entry in packed.items():
        shape = tuple(entry["shape"])
        numel = int(np.prod(shape)) if shape else 1
        flat = np.unpackbits(entry["bits"].numpy(), count=numel).view(np.bool_)  # 0/1 bytes: a view, no copy
        m = torch.from_numpy(flat).reshape(shape)
        if "kept" in entry and int(m.sum()) != entry["kept"]:
            raise ValueError(f"mask '{n}' is damaged: {int(m.sum())} kept weights, the file says {entry['kept']}")
        out[n] = m
    return out


def save(masks: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Write a mask file (bit-packed, versioned, atomic)."""
    atomic_torch_save({"format": MASK_FORMAT, "version": MASK_VERSION, "masks": pack(masks)}, path)


def load(path: str | os.PathLike) -> Masks:
    """Read a mask file written by `save`: name → BoolTensor."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"cannot read mask file {path}: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != MASK_FORMAT:
        raise ValueError(f"{path} is not an lth mask file")
    if obj.get("version") != MASK_VERSION:
        raise ValueError(f"{path} has mask format version {obj.get('version')!r}; this lth reads {MASK_VERSION}")
    return unpack(obj["masks"])
