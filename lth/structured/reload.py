"""A compacted network as files: its architecture as a plain config (round_XX/compact.json) and its state dict
(round_XX/compact.pt), and the way back — the small model rebuilt from the model registry and that config, its
weights loaded with `torch.load(weights_only=True)` (no pickled module).

The config names the registry model and its constructor arguments (`model`, `args`, `input_shape`, `num_classes`),
the width map (`widths`: module → its kept `rows`, dim 0 of its parameters and buffers, and `cols`, dim 1 of its
weight, for every module whose sizes differ from the registry model's) and every state entry's shape (`shapes`).
A module keeps the first `rows`/`cols` entries of the registry model's shapes; the state dict then sets all values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lth.io import atomic_torch_save, atomic_write_text

CONFIG_FILE, STATE_FILE = "compact.json", "compact.pt"
COMPACT_VERSION = 1


def _registry_model(name: str, args: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The registry model on the meta device (shapes only: no memory, no draw from the global RNG)."""
    from lth.models import build_model

    with torch.device("meta"):
        return build_model(name, input_shape, num_classes, **dict(args))


def _own_tensors(mod: nn.Module) -> dict[str, Tensor]:
    return {n: t for n, t in [*mod.named_parameters(recurse=False), *mod.named_buffers(recurse=False)]
            if t is not None and t.dim() >= 1}


def _sizes(mod: nn.Module) -> tuple[int | None, int | None]:
    """(dim 0 of the module's own tensors, dim 1 of its weight): None where it has none."""
    own = _own_tensors(mod)
    rows = {int(t.shape[0]) for t in own.values()}
    if len(rows) > 1:
        raise ValueError(f"module {type(mod).__name__} has tensors of different lengths {sorted(rows)}")
    weight = own.get("weight")
    return (rows.pop() if rows else None), (int(weight.shape[1]) if weight is not None and weight.dim() >= 2 else None)


def compact_config(small: nn.Module, model: str, args: Mapping[str, Any], input_shape: Sequence[int],
                   num_classes: int) -> dict[str, Any]:
    """The plain (JSON) config that rebuilds `small`, a compacted registry model `model` built with these arguments."""
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(args).items()}
    dense = _registry_model(model, args, input_shape, num_classes)
    dense_modules = dict(dense.named_modules())
    widths: dict[str, dict[str, int]] = {}
    for name, mod in small.named_modules():
        if name not in dense_modules:
            raise ValueError(f"module '{name}' is not in model '{model}': not a compacted '{model}'")
        (rows, cols), (rows0, cols0) = _sizes(mod), _sizes(dense_modules[name])
        entry = {k: v for k, v, v0 in (("rows", rows, rows0), ("cols", cols, cols0)) if v != v0}
        groups = getattr(mod, "groups", None)
        if isinstance(groups, int) and groups != getattr(dense_modules[name], "groups", None):
            entry["groups"] = groups
        if entry:
            widths[name] = entry
    return {
        "version": COMPACT_VERSION, "model": model, "args": args, "input_shape": [int(s) for s in input_shape],
        "num_classes": int(num_classes), "widths": widths,
        "shapes": {k: list(v.shape) for k, v in small.state_dict().items()},
    }


def build_compact(config: Mapping[str, Any]) -> nn.Module:
    """The compacted model's architecture from `config` (`compact_config`'s), on the CPU with uninitialised values."""
    from lth.structured.compact import Plan, build

    version = int(config.get("version", 0))
    if version != COMPACT_VERSION:
        raise ValueError(f"compact config version {version}; this lth reads version {COMPACT_VERSION}")
    dense = _registry_model(config["model"], config["args"], config["input_shape"], config["num_classes"])
    how = Plan(layout=None)
    for name, entry in config["widths"].items():
        if "rows" in entry:
            how.rows[name] = torch.arange(int(entry["rows"]))
        if "cols" in entry:
            how.cols[name] = torch.arange(int(entry["cols"]))
    small = build(dense, {}, how).to_empty(device="cpu")
    for name, entry in config["widths"].items():
        if "groups" in entry:
            small.get_submodule(name).groups = int(entry["groups"])
    shapes = {k: list(v.shape) for k, v in small.state_dict().items()}
    if shapes != {k: list(v) for k, v in config["shapes"].items()}:
        wrong = sorted(k for k in set(shapes) | set(config["shapes"]) if shapes.get(k) != config["shapes"].get(k))
        raise ValueError(f"the rebuilt model's shapes differ from the config's at {wrong[:5]}")
    return small


def save_compact(folder: str | Path, small: nn.Module, config: Mapping[str, Any]) -> None:
    """Write `config` (compact.json) and `small`'s state dict (compact.pt) into `folder`, each atomically."""
    folder = Path(folder)
    atomic_torch_save({k: v.detach().cpu() for k, v in small.state_dict().items()}, folder / STATE_FILE)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True) + "\n")


def load_compact(folder: str | Path) -> nn.Module:
    """The compacted model saved in `folder` (a round folder): rebuilt from the registry and compact.json, its
    weights from compact.pt, in eval mode."""
    folder = Path(folder)
    paths = [folder / CONFIG_FILE, folder / STATE_FILE]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {' or '.join(missing)}: not a compacted round (pruning."
                                "granularity=neuron writes them)")
    small = build_compact(json.loads(paths[0].read_text()))
    small.load_state_dict(torch.load(paths[1], map_location="cpu", weights_only=True))
    return small.eval()
