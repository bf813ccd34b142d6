"""Checks a lineage's config before any training: one clear error naming what is wrong and the valid choices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lth.config import BRANCH_DEFAULTS, Config


def _in_open_unit(name: str, x: float) -> None:
    if not 0.0 < x < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {x}")


def validate(cfg: Config) -> None:
    """Raise ValueError for the first problem found in `cfg`."""
    from lth.data import DATASETS
    from lth.models import MODELS
    from lth.pruning import CRITERIA
    from lth.reset import RESETS

    for what, registry, name in (
        ("pruning.criterion", CRITERIA, cfg.pruning.criterion),
        ("ticket.reset", RESETS, cfg.ticket.reset),
        ("model.name", MODELS, cfg.model.name),
        ("data.name", DATASETS, cfg.data.name),
    ):
        if name not in registry:
            raise ValueError(f"{what}: {registry.unknown(name)}")
    _in_open_unit("pruning.fraction", cfg.pruning.fraction)
    if cfg.pruning.target_density is not None:
        _in_open_unit("pruning.target_density", cfg.pruning.target_density)
        if cfg.ticket.rounds < 1:
            raise ValueError("pruning.target_density needs ticket.rounds >= 1 (1 = one-shot pruning)")
    for key, frac in {"pruning.output_fraction": cfg.pruning.output_fraction, **{
        f"pruning.overrides[{k}]": v for k, v in cfg.pruning.overrides.items()}}.items():
        if frac is not None and not 0.0 <= frac < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {frac}")
    t, tk = cfg.trainer, cfg.ticket
    if t.max_steps <= 0:
        raise ValueError(f"trainer.max_steps must be positive, got {t.max_steps}")
    if t.eval_every <= 0:
        raise ValueError(f"trainer.eval_every must be positive, got {t.eval_every}")
    if tk.rounds < 0:
        raise ValueError(f"ticket.rounds must be >= 0, got {tk.rounds}")
    if tk.rewind_step < 0 or tk.rewind_epoch < 0:
        raise ValueError("ticket.rewind_step and ticket.rewind_epoch must be >= 0")
    if tk.rewind_step > 0 and tk.rewind_epoch > 0:
        raise ValueError("set ticket.rewind_step or ticket.rewind_epoch, not both")
    if tk.rewind_step >= t.max_steps:
        raise ValueError(
            f"ticket.rewind_step={tk.rewind_step} must be smaller than the round's length trainer.max_steps={t.max_steps}"
        )
    _validate_branch(cfg.branch)


def _validate_branch(branch: Any) -> None:
    unknown = sorted(set(branch) - set(BRANCH_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown branch key(s) {unknown}; valid: {', '.join(BRANCH_DEFAULTS)}")
    if branch.get("from") is None:
        if branch.get("round") is not None or branch.get("random_mask"):
            raise ValueError("branch.round / branch.random_mask need branch.from=<a finished run's folder>")
        return
    src = Path(branch["from"])
    if not (src / "rounds.jsonl").exists():
        raise ValueError(f"branch.from={src} is not a run folder (no rounds.jsonl)")
    if branch.get("round") is None:
        raise ValueError("branch.from needs branch.round=<K>, the round whose mask to train")
