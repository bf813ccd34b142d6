"""Results → pandas DataFrame, and the plots researchers draw from it (used by notebooks, scripts and `lth-plot`)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

KEY_COLUMNS = ("seed", "criterion", "reset", "fraction", "scope")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, (list, dict)) else json.dumps(v)
    return out


def lineage_folders(path: str | os.PathLike) -> list[Path]:
    """Every lineage folder (one holding rounds.jsonl) at or under `path`, sorted."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no results at {root}")
    return sorted(p.parent for p in root.rglob("rounds.jsonl"))


def load(path: str | os.PathLike) -> Any:
    """One row per lineage × round, with the config columns that vary between lineages (pandas.DataFrame)."""
    import pandas as pd

    rows, configs = [], []
    for folder in lineage_folders(path):
        cfg_path = folder / "config.yaml"
        cfg = _flatten(yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.exists() else {}
        configs.append(cfg)
        for line in (folder / "rounds.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            layer = rec.pop("layer_density", {}) or {}
            row = {"lineage": str(folder.relative_to(path)) if folder != Path(path) else ".", **rec}
            row.update({f"layer_density.{n}": d for n, d in layer.items()})
            row["_cfg"] = len(configs) - 1
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    df = pd.DataFrame(rows)
    for k in varying:
        col = f"cfg.{k}"
        df[col] = [configs[i].get(k) for i in df["_cfg"]]
    return df.drop(columns="_cfg")


def group_columns(df: Any, exclude: Sequence[str] = ("seed",)) -> list[str]:
    """The config columns that tell lines apart (those that vary, except the seed)."""
    return [c for c in df.columns if c.startswith("cfg.") and c.split(".", 1)[1] not in exclude]


def summarize(df: Any, metric: str = "test_acc", by: Sequence[str] | None = None) -> Any:
    """Mean, std and count of `metric` per group × round (density is the group's mean density)."""
    by = list(by) if by is not None else group_columns(df)
    keys = [*by, "round"]
    g = df.groupby(keys, dropna=False)
    out = g.agg(density=("density", "mean"), mean=(metric, "mean"), std=(metric, "std"), n=(metric, "count"))
    return out.reset_index()


def _label(row: Any, by: Sequence[str]) -> str:
    return ", ".join(f"{c.split('.')[-1]}={row[c]}" for c in by) or "all"


def plot_metric_vs_density(df: Any, metric: str = "test_acc", by: Sequence[str] | None = None, ax: Any = None) -> Any:
    """`metric` against density (log x, reversed: pruning goes right), mean ± std over seeds, one line per group."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    by = list(by) if by is not None else group_columns(df)
    s = summarize(df, metric, by)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    groups = s.groupby(by, dropna=False) if by else [((), s)]
    for _, part in groups:
        part = part.sort_values("density", ascending=False)
        ax.errorbar(part["density"] * 100, part["mean"], yerr=part["std"].fillna(0), marker="o", ms=3, capsize=2,
                    label=_label(part.iloc[0], by))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (% of weights remaining)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_layer_density(df: Any, lineage: str | None = None, ax: Any = None) -> Any:
    """Per-layer density against round for one lineage."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    part = df[df["lineage"] == (lineage or df["lineage"].iloc[0])].sort_values("round")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for col in [c for c in df.columns if c.startswith("layer_density.")]:
        ax.plot(part["round"], part[col], marker="o", ms=3, label=col.split(".", 1)[1])
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("layer density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def plot_all(path: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Accuracy vs density, early-stop step vs density and per-layer density figures for a results folder."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    df = load(path)
    if df.empty:
        raise ValueError(f"no finished rounds under {path}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = {
        "accuracy_vs_density": lambda ax: plot_metric_vs_density(df, "test_acc", ax=ax),
        "early_stop_acc_vs_density": lambda ax: plot_metric_vs_density(df, "early_stop_test_acc", ax=ax),
        "early_stop_step_vs_density": lambda ax: plot_metric_vs_density(df, "early_stop_step", ax=ax),
        "layer_density": lambda ax: plot_layer_density(df, ax=ax),
    }
    for name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax)
        fig.tight_layout()
        for fmt in formats:
            path_out = out / f"{name}.{fmt}"
            fig.savefig(path_out, dpi=120)
            written.append(path_out)
        plt.close(fig)
    return written


def plot_main(argv: Sequence[str] | None = None) -> None:
    """`lth-plot <results dir> [--out DIR] [--format png svg]`."""
    ap = argparse.ArgumentParser(prog="lth-plot", description="Plot an lth results folder (a lineage or a sweep).")
    ap.add_argument("path")
    ap.add_argument("--out", default=None, help="folder for the figures (default: <path>/plots)")
    ap.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"])
    args = ap.parse_args(argv)
    for p in plot_all(args.path, args.out or Path(args.path) / "plots", args.format):
        print(p)
