"""Round records → pandas DataFrame, and the tables and plots drawn from it (notebooks, `lth-plot`, reproductions)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lth.early_stop import DEFAULT_RULE, EARLY_STOP_RULES, by_rule_fields
from lth.flat import flatten
from lth.metrics import DENSITY, EARLY_STOP_STEP, EARLY_STOP_TEST_ACC, NOT_GROUPING, TEST_ACC, is_grouping_key
from lth.stats import fmt, interval, paired, t_quantile, verdict

KEY_COLUMNS = ("seed", "criterion", "reset", "fraction", "scope")
# the ticket plots' names and the grouping rule (`group_columns`) come from lth.metrics, as the W&B workspace's do


# ----- records → frames

def config_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config as flat dotted columns, list and mapping leaves as JSON text (so that they compare and hash)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(config).items()}


def lineage_folders(path: str | os.PathLike) -> list[Path]:
    """Every lineage folder (one holding rounds.jsonl) at or under `path`, sorted."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no results at {root}")
    return sorted(p.parent for p in root.rglob("rounds.jsonl"))


def results_folder(default: str = "runs/lth_mnist1d", env: str = "LTH_RESULTS") -> Path:
    """The results folder a notebook reads: `$LTH_RESULTS` (else `default`), a relative path taken from the folder the
    command was typed in (the shell's `$PWD`; Jupyter runs kernels in the notebook's folder), else from here."""
    path = Path(os.path.expanduser(os.environ.get(env) or default))
    if path.is_absolute():
        return path
    bases = [Path(os.environ["PWD"])] if os.path.isdir(os.environ.get("PWD", "")) else []
    for base in [*bases, Path.cwd()]:
        if (base / path).exists():
            return (base / path).resolve()
    raise FileNotFoundError(f"no results at {path} (looked in {', '.join(str(b) for b in [*bases, Path.cwd()])})")


def records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The finished rounds of one lineage folder as flat rows, `layer_density` spread into `layer_density.<name>`."""
    from lth.record import RunFolder

    rows = []
    for rec in RunFolder(folder, writer=False).rounds():
        row = {k: rec[k] for k in rec if k != "layer_density"}
        row.update({f"layer_density.{n}": d for n, d in (rec.get("layer_density") or {}).items()})
        rows.append(row)
    return rows


def load(path: str | os.PathLike) -> Any:
    """One row per lineage × round, with the config columns that vary between lineages (pandas.DataFrame)."""
    import pandas as pd

    rows, configs = [], []
    for folder in lineage_folders(path):
        cfg_path = folder / "config.yaml"
        configs.append(config_columns(yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.exists() else {})
        lineage = str(folder.relative_to(path)) if folder != Path(path) else "."
        rows += [{"lineage": lineage, **row, "_cfg": len(configs) - 1} for row in records(folder)]
    if not rows:
        return pd.DataFrame()
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    df = pd.DataFrame(rows)
    for k in varying:
        df[f"cfg.{k}"] = [configs[i].get(k) for i in df["_cfg"]]
    return df.drop(columns="_cfg")


def group_columns(df: Any, exclude: Sequence[str] = NOT_GROUPING) -> list[str]:
    """The config columns that tell lines apart: those that vary, except seeds, names, paths, logging and launching."""
    return [c for c in df.columns if c.startswith("cfg.") and is_grouping_key(c.split(".", 1)[1], exclude)]


def _by(df: Any, by: str | Sequence[str] | None) -> list[str]:
    return group_columns(df) if by is None else [by] if isinstance(by, str) else list(by)


# ----- tables

def summarize(df: Any, metric: str = "test_acc", by: str | Sequence[str] | None = None, at: str = "round",
              scale: float = 1.0, confidence: float = 0.95) -> Any:
    """Mean, std, count and the `confidence` t interval (`lo`, `hi`) of `metric` (× `scale`) per group × `at` value,
    with the mean density of each (`at` = "density": density rounded to 6 digits); `by` defaults to
    `group_columns`."""
    import numpy as np

    by = _by(df, by)
    if at == "density":
        df, agg = df.assign(density=df["density"].round(6)), {}
    else:
        agg = {"density": ("density", "mean")} if "density" in df else {}
    out = df.groupby([*by, at], dropna=False).agg(**agg, mean=(metric, "mean"), std=(metric, "std"),
                                                   n=(metric, "count")).reset_index()
    out["mean"], out["std"] = out["mean"] * scale, out["std"] * scale
    q = np.array([t_quantile(0.5 + confidence / 2, n - 1) if n > 1 else math.nan for n in out["n"]])
    half = q * out["std"].to_numpy(float) / np.sqrt(out["n"].to_numpy(float).clip(1))
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


CELL_SEP = "<br>"  # a table cell's interval goes on a second line: narrow columns on a rendered page


def mean_std(xs: Iterable[float], scale: float = 100.0, digits: int = 1, sep: str = " ") -> str:
    """'m ± s [lo, hi]' of the finite values: sample std and 95% t interval for the mean (a lone value alone; '–' for
    none), times `scale`."""
    return fmt(interval(xs), scale, digits, sep=sep)


def markdown(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, first column left-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def grid(df: Any, row: str, col: str, metric: str, row_fmt: Callable[[Any], str] = str,
         cols: Sequence[Any] | None = None, scale: float = 100.0, digits: int = 1, sep: str = CELL_SEP) -> str:
    """Markdown table of `metric` (mean ± std, then the 95% interval for the mean after `sep`, over the rows sharing a
    cell) with `row` values down (largest first) and `col` values across."""
    cols = list(cols) if cols is not None else list(dict.fromkeys(df[col]))
    out = []
    for r in _row_values(df, row):
        sub = df[df[row] == r]
        out.append([row_fmt(r), *(mean_std(sub[sub[col] == c][metric], scale, digits, sep) for c in cols)])
    return markdown([row, *map(str, cols)], out)


def _row_values(df: Any, row: str) -> list[Any]:
    """A table's row values: numbers largest first (densest), others in text order."""
    return sorted(set(df[row]), key=lambda x: (-x) if isinstance(x, (int, float)) else str(x))


def by_key(df: Any, metric: str, on: str = "seed") -> dict[Any, float]:
    """`metric` of each row keyed by its `on` value (a seed), refusing two rows with one key (nothing to pair)."""
    dup = sorted({str(k) for k in df[on][df[on].duplicated()]})
    if dup:
        raise ValueError(f"more than one row per {on} ({', '.join(dup)}) in a cell to pair: split the rows further")
    return dict(zip(df[on], df[metric]))


def paired_cell(a: Any, b: Any, metric: str, on: str = "seed", direction: int | None = None, scale: float = 100.0,
                digits: int = 1, sep: str = CELL_SEP) -> str:
    """The rows `a` minus the rows `b` paired by `on` (seed): '+m ± s', the 95% interval after `sep`, and with a
    `direction` (+1: a > b expected, −1: a < b) the verdict after another `sep`; '–' when no seed is shared."""
    ka, kb = by_key(a, metric, on), by_key(b, metric, on)
    if not set(ka) & set(kb):
        return "–"
    diff = paired(ka, kb)
    cell = fmt(diff, scale, digits, sign=True, sep=sep)
    return cell if direction is None else f"{cell}{sep}{verdict(diff, direction)}"


def paired_grid(df: Any, row: str, col: str, metric: str, control: Any, direction: int | Mapping[Any, int] = 1,
                on: str = "seed", row_fmt: Callable[[Any], str] = str, cols: Sequence[Any] | None = None,
                scale: float = 100.0, digits: int = 1, sep: str = CELL_SEP) -> str:
    """Markdown table of each `col` value minus `control` in `metric`, paired by `on` (seed) within each `row` value:
    the mean difference ± std, its 95% interval and the verdict ("agree" only where the interval excludes 0 on the
    side of `direction`: +1 when the column is expected above the control, −1 below; a mapping gives it per column,
    no verdict for a column it leaves out)."""
    cols = [c for c in (list(cols) if cols is not None else list(dict.fromkeys(df[col]))) if c != control]
    dirs = direction if isinstance(direction, Mapping) else dict.fromkeys(cols, direction)
    out = []
    for r in _row_values(df, row):
        sub = df[df[row] == r]
        ref = sub[sub[col] == control]
        out.append([row_fmt(r), *(paired_cell(sub[sub[col] == c], ref, metric, on, dirs.get(c), scale, digits, sep)
                                  for c in cols)])
    return markdown([row, *(f"{c} − {control}" for c in cols)], out)


# ----- figures

def _pyplot() -> Any:
    """matplotlib.pyplot, on the Agg backend unless a backend was already chosen (a notebook's stays)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(n: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Any, list[Any]]:
    """A figure with a row of `n` axes."""
    fig, axes = _pyplot().subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110, close: bool = True) -> Path:
    """Save a figure (format from the suffix), then close it unless told not to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if close:
        _pyplot().close(fig)
    return path


def _key(key: Any) -> Any:
    """A group key with every missing value (None, NaN) as None, so that keys from a frame and from groupby match."""
    if isinstance(key, tuple):
        return tuple(_key(k) for k in key)
    return None if key is None or (isinstance(key, float) and math.isnan(key)) else key


def short_names(columns: Sequence[str]) -> dict[str, str]:
    """Each column's shortest dotted tail that no other column shares (`cfg.ticket.reset` → `reset`)."""
    parts = {c: c.removeprefix("cfg.").split(".") for c in columns}
    out = {}
    for c, p in parts.items():
        for n in range(1, len(p) + 1):
            tail = p[-n:]
            if n == len(p) or not any(q[-n:] == tail for d, q in parts.items() if d != c):
                out[c] = ".".join(tail)
                break
    return out


def _missing(value: Any) -> bool:
    """None or NaN: a key a lineage's config does not set."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label(key: Any, by: Sequence[str]) -> str:
    """A config column shows as short-name=value (missing values left out), a label column (a study's) by its value."""
    values = key if isinstance(key, tuple) else (key,)
    if len(by) == 1 and not by[0].startswith("cfg."):
        return "–" if _missing(values[0]) else str(values[0])
    names = short_names(by)
    return ", ".join(f"{names[c]}={_value(v)}" for c, v in zip(by, values) if not _missing(v)) or "defaults"


def _value(v: Any) -> Any:
    """A whole float as an int (a column with missing values holds 2 as 2.0)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def legend_below(ax: Any, fontsize: float = 8) -> Any:
    """The axes' legend under the axes and their x label, in columns (it never covers or squeezes the plot)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    below = ax.xaxis.get_tightbbox(renderer) or ax.get_window_extent(renderer)
    top = ax.transAxes.inverted().transform((0, below.y0))[1]
    ncol = max(1, min(len(labels), 3 if max(map(len, labels)) <= 28 else 2 if max(map(len, labels)) <= 45 else 1))
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, top - 0.02), ncol=ncol,
                     fontsize=fontsize, frameon=False)


def percent_log_axis(axis: Any, values: Iterable[float], max_ticks: int = 8) -> None:
    """A log axis of fractions ticked at the given values (thinned to about `max_ticks`) and labelled in percent."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    vals = sorted({round(float(v), 9) for v in values if v is not None and math.isfinite(float(v)) and v > 0},
                  reverse=True)
    if not vals:
        return
    gap = math.log10(vals[0] / vals[-1]) / max_ticks
    kept: list[float] = []
    for v in vals:
        if not kept or math.log10(kept[-1] / v) >= gap - 1e-12:
            kept.append(v)
    axis.set_major_locator(FixedLocator(kept))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_vs(ax: Any, df: Any, x: str, metric: str, by: str | Sequence[str] | None = None,
            order: Sequence[Any] | None = None, band: str | None = "std", at: str | None = None, scale: float = 1.0,
            legend: bool = False, **style: Any) -> Any:
    """One mean line of `metric` (× `scale`) per group against column `x`, with a ±1 std band (`band=None`: none);
    points per `at` value (default: per `x` value); `by` defaults to `group_columns`, `order` lists its values
    (tuples for several columns) in legend order (default: as they first appear); `ax=None`: a new figure's."""
    if band not in ("std", None):
        raise ValueError(f"band must be 'std' or None, got {band!r}")
    by = _by(df, by)
    if ax is None:
        ax = subplots(1, 6, 4)[1][0]
    s = summarize(df, metric, by, at or x, scale)
    parts = {_key(k): p for k, p in s.groupby(by if len(by) > 1 else by[0], dropna=False)} if by else {(): s}
    if order is None:
        order = list(dict.fromkeys(_key(k) for k in (zip(*(df[c] for c in by)) if len(by) > 1 else df[by[0]]))) \
            if by else [()]
    for key in order:
        part = parts.get(_key(key))
        if part is None or part.empty:
            continue
        part = part.sort_values(x)
        xs, mean = part[x].astype(float), part["mean"].astype(float)
        (line,) = ax.plot(xs, mean, marker="o", ms=3, label=_label(key, by), **style)
        if band == "std":
            std = part["std"].astype(float).fillna(0)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=line.get_color())
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        legend_below(ax)
    return ax


def plot_vs_density(ax: Any, df: Any, metric: str, by: str | Sequence[str] | None = None,
                    order: Sequence[Any] | None = None, band: str | None = "std", at: str = "round",
                    scale: float = 1.0, legend: bool = False, **style: Any) -> Any:
    """`plot_vs` against density on a reversed log axis (densest on the left, ticked in % of weights remaining, as
    Frankle & Carbin plot it); a point per round at its mean density (`at="density"`: per density, for rows of
    different rounds at one density: branches, one-shot pruning); the y label in words for the known metrics."""
    ax = plot_vs(ax, df, DENSITY, metric, by, order, band, at, scale, False, **style)
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    percent_log_axis(ax.xaxis, [x for line in ax.get_lines() for x in line.get_xdata()])
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(metric_label(metric, scale))
    if legend:
        legend_below(ax)
    return ax


METRIC_LABELS = {"test_acc": "test accuracy", "val_acc": "validation accuracy",
                 "early_stop_test_acc": "test accuracy at early stop", "early_stop_val_acc":
                 "validation accuracy at early stop", "test_loss": "test loss", "val_loss": "validation loss",
                 "early_stop_step": "early-stop step (iterations)", "train_steps": "training steps",
                 **{by_rule_fields(n)[1]: f"test accuracy at the {EARLY_STOP_RULES[n].words}" for n in EARLY_STOP_RULES}}


def metric_label(metric: str, scale: float = 1.0) -> str:
    """A metric's axis label in words, "(%)" when an accuracy is scaled by 100."""
    words = METRIC_LABELS.get(metric, metric)
    return f"{words} (%)" if scale == 100 and metric.endswith("acc") else words


def plot_layer_density(df: Any, lineage: str | None = None, ax: Any = None) -> Any:
    """Per-layer density against round for one lineage (default: the one with the most rounds), titled by it."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    if lineage is None:
        counts = df.groupby("lineage", sort=False)["round"].nunique()
        lineage = counts.index[counts.argmax()]
    part = df[df["lineage"] == lineage].sort_values("round")
    if ax is None:
        ax = subplots(1, 6, 4)[1][0]
    cols = [c for c in df.columns if c.startswith("layer_density.") and part[c].notna().any()]
    for col in cols:
        ax.plot(part["round"], part[col], marker="o", ms=3, label=col.split(".", 1)[1])
    ax.set_yscale("log")
    percent_log_axis(ax.yaxis, part[cols].to_numpy().ravel() if cols else [])
    rounds = sorted(set(part["round"]))
    ax.xaxis.set_major_locator(FixedLocator(rounds) if len(rounds) <= 12 else MaxNLocator(integer=True))
    if len(rounds) == 1:
        ax.set_xlim(rounds[0] - 1, rounds[0] + 1)
    ax.set_xlabel("round")
    ax.set_ylabel("weights remaining in the layer (%)")
    ax.set_title(f"per-layer density: {lineage}", fontsize=9)
    ax.grid(alpha=0.3)
    legend_below(ax)
    return ax


def early_stop_rule(df: Any) -> str | None:
    """The early-stop rule of the rows (`trainer.early_stop_metric`; rows written before it: val_loss), None when the
    rows mix rules."""
    rules = set(df["early_stop_metric"].fillna(DEFAULT_RULE)) if "early_stop_metric" in df else {DEFAULT_RULE}
    return rules.pop() if len(rules) == 1 else None


def early_stop_words(df: Any) -> str:
    """The rows' early-stop rule in words ("lowest validation loss"), or that each lineage's own rule applies."""
    rule = early_stop_rule(df)
    return EARLY_STOP_RULES[rule].words if rule in EARLY_STOP_RULES else "each lineage's trainer.early_stop_metric"


def density_report(df: Any, by: str, order: Sequence[Any], title: str, density_rows: str = "density %",
                   control: Any = None, direction: int | Mapping[Any, int] = 1) -> tuple[str, Any]:
    """The report of variants along a pruning trajectory: end-of-training and early-stop test accuracy tables
    (density rows × `by` columns, mean ± std and 95% interval over seeds; early stop under the rows' rule and under
    every other rule the records carry), the early-stop step, with a `control` (a `by` value) each variant minus it
    paired by seed with its verdict (`paired_grid`), and a 3-panel figure."""
    df = df.copy()
    df[density_rows] = (100 * df["density"]).round(1)
    pct = lambda d: f"{d:.1f}"
    rule = early_stop_rule(df)
    parts = ["### Test accuracy at the end of training (%)", grid(df, density_rows, by, "test_acc", pct, order),
             f"### Test accuracy at the early-stop step ({early_stop_words(df)}) (%)",
             grid(df, density_rows, by, "early_stop_test_acc", pct, order)]
    for name in EARLY_STOP_RULES:
        acc = by_rule_fields(name)[1]
        if name != rule and acc in df and df[acc].notna().any():
            parts += [f"### Test accuracy at the {EARLY_STOP_RULES[name].words} (%)",
                      grid(df, density_rows, by, acc, pct, order)]
    parts += ["### Early-stop step", grid(df, density_rows, by, "early_stop_step", pct, order, scale=1, digits=0)]
    if control is not None:
        for metric, when in (("test_acc", "end of training"), ("early_stop_test_acc", "early-stop step")):
            parts += [(f"### Minus {control} at the same density, paired by seed ({when}, percentage points; "
                       "agree: the 95% interval excludes 0 in the expected direction)"),
                      paired_grid(df, density_rows, by, metric, control, direction, row_fmt=pct, cols=order)]
    fig, axes = subplots(3, width=4.6)
    for ax, metric, label in ((axes[0], "test_acc", "test accuracy, end of training (%)"),
                              (axes[1], "early_stop_test_acc", "test accuracy at early stop (%)"),
                              (axes[2], "early_stop_step", "early-stop step")):
        plot_vs_density(ax, df, metric, by, order, at="density", scale=1 if metric == "early_stop_step" else 100)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title} (mean ± std over seeds)")
    return "\n\n".join(parts), fig


# ----- gradual pruning

def gradual_schedule(df: Any) -> Any:
    """One row per pruning step of each gradual run in `df` (`load`'s frame): lineage, step, target and reached
    density, kept weights, per-layer densities, and the run's `cfg.*` columns, final density and test accuracy."""
    import pandas as pd

    rows = []
    keep = [c for c in df.columns if c.startswith("cfg.")]
    for _, run in (df[df["gradual_schedule"].notna()] if "gradual_schedule" in df else df.iloc[:0]).iterrows():
        base = {"lineage": run["lineage"], **{c: run[c] for c in keep},
                "final_density": run["density"], "final_test_acc": run.get("test_acc")}
        for e in run["gradual_schedule"]:
            rows.append({**base, **{k: e[k] for k in ("step", "target", "density", "kept")},
                         **{f"layer_density.{n}": d for n, d in (e.get("layer_density") or {}).items()}})
    return pd.DataFrame(rows, columns=None if rows else ["lineage", "step", "target", "density", "kept"])


def plot_density_vs_step(ax: Any, df: Any, label: str | None = None) -> Any:
    """The density of each gradual run in `df` against the training step: 100% until its first pruning step, each
    pruning step's reached density until the next, the final one to the end of training (log axis in %); a line per
    lineage, labelled by `label` (a column of `df`, default the lineage)."""
    if ax is None:
        ax = subplots(1, 6, 4)[1][0]
    runs = df[df["gradual_schedule"].notna()] if "gradual_schedule" in df else df.iloc[:0]
    values = [1.0]
    for _, run in runs.iterrows():
        steps = [0] + [e["step"] for e in run["gradual_schedule"]] + [int(run["train_steps"])]
        dens = [1.0] + [e["density"] for e in run["gradual_schedule"]]
        dens.append(dens[-1])
        values += dens
        ax.step(steps, dens, where="post", label=str(run[label] if label else run["lineage"]))
    ax.set_yscale("log")
    percent_log_axis(ax.yaxis, values)
    ax.set_xlabel("training step")
    ax.set_ylabel("weights remaining (%)")
    ax.grid(alpha=0.3)
    return ax


# ----- lth-plot

def _file_name(lineage: str) -> str:
    """A lineage's folder as one file name (path separators and odd characters as `_`)."""
    name = lineage.replace(os.sep, "__").replace("/", "__")
    return "".join(ch if ch.isalnum() or ch in "._=,+-" else "_" for ch in name).strip(".") or "lineage"


def _seeds(df: Any, by: Sequence[str]) -> str:
    """'n seeds' (or 'a–b seeds'): how many lineages each line averages."""
    n = df.groupby(list(by), dropna=False)["lineage"].nunique() if by else df["lineage"].nunique()
    lo, hi = (int(n.min()), int(n.max())) if by else (int(n), int(n))
    return f"{lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def plot_all(path: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Accuracy vs density, early-stop accuracy and step vs density (one line per group of `group_columns`, mean ±
    std over seeds; early stop under the lineages' rule, and the test accuracy under every other rule the records
    carry: `early_stop_by_<rule>_acc_vs_density`), and a per-layer density figure per lineage
    (`layer_density/<lineage>.<fmt>`); with gradual runs, their density against the training step
    (`density_vs_step.<fmt>`)."""
    df = load(path)
    if df.empty:
        raise ValueError(f"no finished rounds at {path}")
    out = Path(out)
    where = Path(path).resolve().name
    band = f"mean ± std over {_seeds(df, group_columns(df))}"
    rule, words = early_stop_rule(df), early_stop_words(df)
    figures = {"accuracy_vs_density": (TEST_ACC, 100, "Test accuracy at the end of training"),
               "early_stop_acc_vs_density": (EARLY_STOP_TEST_ACC, 100, f"Test accuracy at the early-stop step ({words})"),
               "early_stop_step_vs_density": (EARLY_STOP_STEP, 1, f"Early-stop step ({words})"),
               **{f"early_stop_by_{name}_acc_vs_density": (by_rule_fields(name)[1], 100,
                                                          f"Test accuracy at the {EARLY_STOP_RULES[name].words}")
                  for name in EARLY_STOP_RULES if name != rule}}
    written = []

    def save(fig: Any, stem: Path) -> None:
        for i, ext in enumerate(formats):
            written.append(save_figure(fig, stem.with_name(f"{stem.name}.{ext}"), dpi=120,
                                       close=i == len(formats) - 1))

    for name, (metric, scale, title) in figures.items():
        if metric not in df or df[metric].isna().all():  # folders written before the metric was recorded
            continue
        fig, (ax,) = subplots(1, 6.5, 4.2)
        plot_vs_density(ax, df, metric, scale=scale, legend=True)
        ax.set_title(f"{title} — {where} ({band})", fontsize=10)
        save(fig, out / name)
    if "gradual_schedule" in df and df["gradual_schedule"].notna().any():  # gradual runs: their density schedules
        fig, (ax,) = subplots(1, 6.5, 4.2)
        plot_density_vs_step(ax, df)
        legend_below(ax)
        ax.set_title(f"Density during training — {where}", fontsize=10)
        save(fig, out / "density_vs_step")
    for lineage in dict.fromkeys(df["lineage"]):
        fig, (ax,) = subplots(1, 6.5, 4.2)
        plot_layer_density(df, lineage, ax)
        save(fig, out / "layer_density" / _file_name(lineage if lineage != "." else where))
    return written


def plot_main(argv: Sequence[str] | None = None) -> None:
    """`lth-plot <results dir> [--out DIR] [--format png svg]`."""
    ap = argparse.ArgumentParser(prog="lth-plot", description="Plot an lth results folder (a lineage or a sweep).")
    ap.add_argument("path")
    ap.add_argument("--out", default=None, help="folder for the figures (default: <path>/plots)")
    ap.add_argument("--format", nargs="+", default=["png"], choices=["png", "svg", "pdf"])
    args = ap.parse_args(argv)
    try:
        written = plot_all(args.path, args.out or Path(args.path) / "plots", args.format)
    except (FileNotFoundError, ValueError) as e:
        print(f"lth-plot: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    for p in written:
        print(p)


# ----- linear mode connectivity (lth.stability): paths, instability vs rewind point and vs density

STABILITY_THRESHOLD = 0.02  # the paper's: an instability below 2% counts as stable


def path_rows(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every linear path of one lineage folder (round_XX/stability.jsonl) as rows: `round`, `alpha`, `<split>_loss`,
    `<split>_error`."""
    from lth.io import read_jsonl

    rows = []
    for f in sorted(Path(folder).glob("round_*/stability.jsonl")):
        r = int(f.parent.name.split("_", 1)[1])
        rows += [{"round": r, **row} for row in read_jsonl(f)]
    return rows


def load_paths(path: str | os.PathLike) -> Any:
    """One row per lineage × round × α of every path under `path` (pandas.DataFrame, column `lineage` as in `load`)."""
    import pandas as pd

    rows = []
    for folder in lineage_folders(path):
        lineage = str(folder.relative_to(path)) if folder != Path(path) else "."
        rows += [{"lineage": lineage, **row} for row in path_rows(folder)]
    return pd.DataFrame(rows)


def plot_paths(ax: Any, df: Any, by: str | Sequence[str], split: str = "test", order: Sequence[Any] | None = None,
               legend: bool = False) -> Any:
    """Error (%) against α on the linear path between the two copies, mean ± std over seeds, one line per group."""
    ax = plot_vs(ax, df, "alpha", f"{split}_error", by, order, scale=100)
    ax.set_xlabel("interpolation α  ((1−α)·copy a + α·copy b)")
    ax.set_ylabel(f"{split} error (%)")
    if legend:
        legend_below(ax)
    return ax


def _threshold(ax: Any, threshold: float) -> None:
    ax.axhline(100 * threshold, color="0.4", ls="--", lw=1, label=f"stable below {100 * threshold:g}%")


def plot_instability_vs(ax: Any, df: Any, x: str = "stability_rewind_step", by: str | Sequence[str] | None = None,
                        metric: str = "instability_test", order: Sequence[Any] | None = None,
                        threshold: float = STABILITY_THRESHOLD, legend: bool = False) -> Any:
    """Instability (%) against `x` (default: the rewind point k, in steps), mean ± std over seeds, with the stability
    threshold drawn."""
    ax = plot_vs(ax, df, x, metric, by, order, scale=100)
    _threshold(ax, threshold)
    ax.set_xlabel("rewind point k (training steps)" if x == "stability_rewind_step" else x)
    ax.set_ylabel(f"instability, {metric.split('_', 1)[1]} error (%)")
    if legend:
        legend_below(ax)
    return ax


def matching(df: Any, dense_acc: float, tolerance: float = 0.01, metric: str = "test_acc") -> Any:
    """Whether each row's `metric` is within `tolerance` of the dense network's accuracy `dense_acc` (a boolean
    Series: matching subnetworks)."""
    return df[metric] >= dense_acc - tolerance


def plot_instability_vs_density(ax: Any, df: Any, dense_acc: float, by: str | Sequence[str] | None = None,
                                metric: str = "instability_test", order: Sequence[Any] | None = None,
                                tolerance: float = 0.01, threshold: float = STABILITY_THRESHOLD,
                                legend: bool = False) -> Any:
    """Instability (%) against density (mean ± std over seeds); each point filled when the mean test accuracy there
    matches the dense network's `dense_acc` (within `tolerance`), hollow when it does not."""
    ax = plot_vs_density(ax, df, metric, by, order, at="density", scale=100)
    by = _by(df, by)
    acc = summarize(df, "test_acc", by, "density")
    ins = summarize(df, metric, by, "density", scale=100)
    colors = {line.get_label(): line.get_color() for line in ax.get_lines()}
    for (_, a), (_, i) in zip(acc.iterrows(), ins.iterrows()):
        key = tuple(a[c] for c in by) if len(by) > 1 else a[by[0]] if by else ()
        color = colors.get(_label(_key(key), by), "k")
        match = a["mean"] >= dense_acc - tolerance
        ax.plot([a["density"]], [i["mean"]], "o", ms=7, mec=color, mfc=color if match else "none")
    _threshold(ax, threshold)
    ax.set_ylabel(f"instability, {metric.split('_', 1)[1]} error (%)")
    ax.plot([], [], "o", mec="k", mfc="k", label="matching (filled)")
    ax.plot([], [], "o", mec="k", mfc="none", label="not matching (hollow)")
    if legend:
        legend_below(ax)
    return ax
