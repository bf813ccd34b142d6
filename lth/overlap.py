"""Mask overlap (Jaccard and shared kept weights, per layer and overall, against the random-mask expectation) and
per-layer density diagnostics (empty and nearly empty layers), read from mask files."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

ALL = "all"  # the row of every layer together
NEARLY_EMPTY = 0.01  # a layer keeping less than this fraction of its weights is flagged "nearly empty"


@dataclass(frozen=True)
class Overlap:
    """Two masks of one layer (or of all layers): sizes, kept counts, shared kept count, and what two independent
    random masks of the same per-layer densities would share: E[shared] = Σ_layers p·q·n = Σ kept_a·kept_b / n."""

    layer: str
    numel: int
    kept_a: int
    kept_b: int
    shared: int
    expected_shared: float

    @property
    def jaccard(self) -> float:
        """|a ∩ b| / |a ∪ b| of the kept weights (nan when neither keeps any)."""
        union = self.kept_a + self.kept_b - self.shared
        return self.shared / union if union else math.nan

    @property
    def expected_jaccard(self) -> float:
        """The Jaccard of the random expectation, E[shared] / (kept_a + kept_b − E[shared])."""
        union = self.kept_a + self.kept_b - self.expected_shared
        return self.expected_shared / union if union else math.nan

    @property
    def over_chance(self) -> float:
        """shared / E[shared]: 1 is what independent random masks share, above 1 more (nan when E[shared] is 0)."""
        return self.shared / self.expected_shared if self.expected_shared else math.nan

    def row(self) -> dict[str, Any]:
        """The overlap as a flat row (`OVERLAP_COLUMNS`: the fields and the derived ratios)."""
        return {c: getattr(self, c) for c in OVERLAP_COLUMNS}


OVERLAP_COLUMNS = ("layer", "numel", "kept_a", "kept_b", "shared", "jaccard", "expected_shared", "expected_jaccard",
                   "over_chance")


def overlap(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> list[Overlap]:
    """Per-layer overlap of two masks over the layers both hold (same shapes), then the `ALL` row summing them."""
    layers = [n for n in a if n in b]
    if not layers:
        raise ValueError(f"the two masks share no layer (a: {sorted(a)[:6]}, b: {sorted(b)[:6]})")
    bad = [f"{n}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}" for n in layers if a[n].shape != b[n].shape]
    if bad:
        raise ValueError(f"the two masks are of different models: {'; '.join(bad)}")
    rows = []
    for n in layers:
        ka, kb = int(a[n].sum()), int(b[n].sum())
        rows.append(Overlap(n, a[n].numel(), ka, kb, int((a[n] & b[n]).sum()), ka * kb / a[n].numel()))
    rows.append(Overlap(ALL, *(sum(getattr(r, f) for r in rows)
                               for f in ("numel", "kept_a", "kept_b", "shared", "expected_shared"))))
    return rows


def overlap_frame(masks: Mapping[str, Mapping[str, Tensor]]) -> Any:
    """Every pair of the labelled masks (label → mask), per layer and `ALL` (pandas.DataFrame: a, b, then
    `Overlap.row`'s columns)."""
    import pandas as pd

    labels = list(masks)
    rows = [{"a": x, "b": y, **o.row()} for i, x in enumerate(labels) for y in labels[i + 1:]
            for o in overlap(masks[x], masks[y])]
    return pd.DataFrame(rows, columns=["a", "b", *OVERLAP_COLUMNS])


def jaccard_matrix(frame: Any, labels: Sequence[str], layer: str = ALL, value: str = "jaccard") -> Any:
    """The symmetric labels × labels matrix of `value` for `layer` from `overlap_frame`'s rows (diagonal 1 for
    Jaccard, nan otherwise) (numpy array)."""
    import numpy as np

    index = {x: i for i, x in enumerate(labels)}
    out = np.full((len(labels), len(labels)), np.nan)
    np.fill_diagonal(out, 1.0 if value == "jaccard" else np.nan)
    for _, r in frame[frame["layer"] == layer].iterrows():
        out[index[r["a"]], index[r["b"]]] = out[index[r["b"]], index[r["a"]]] = r[value]
    return out


def plot_overlap(ax: Any, frame: Any, labels: Sequence[str], layer: str = ALL) -> Any:
    """Heatmap of the pairwise Jaccard of `layer`'s kept weights, each cell annotated with it and, below, what two
    independent random masks of the same densities would give."""
    jac = jaccard_matrix(frame, labels, layer)
    chance = jaccard_matrix(frame, labels, layer, "expected_jaccard")
    image = ax.imshow(jac, vmin=0, vmax=1, cmap="viridis")
    n = len(labels)
    small = 8 if n <= 6 else 6
    for i in range(n):
        for j in range(n):
            if i == j or math.isnan(jac[i, j]):
                continue
            text = f"{jac[i, j]:.2f}\n(chance {chance[i, j]:.2f})"
            ax.text(j, i, text, ha="center", va="center", fontsize=small, color="white" if jac[i, j] < 0.6 else "k")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=small)
    ax.set_yticks(range(n), labels, fontsize=small)
    ax.set_title(f"Jaccard of kept weights ({'all layers' if layer == ALL else layer})", fontsize=10)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Jaccard")
    return ax


# ----- per-layer density diagnostics

def layer_report(masks: Mapping[str, Tensor], nearly_empty: float = NEARLY_EMPTY) -> Any:
    """One row per layer and `ALL`: weights, kept, density and `flag` ("empty": layer collapse; "nearly empty":
    density below `nearly_empty`; "" otherwise) (pandas.DataFrame)."""
    import pandas as pd

    rows = [{"layer": n, "numel": m.numel(), "kept": int(m.sum())} for n, m in masks.items()]
    rows.append({"layer": ALL, "numel": sum(r["numel"] for r in rows), "kept": sum(r["kept"] for r in rows)})
    df = pd.DataFrame(rows)
    df["density"] = df["kept"] / df["numel"]
    df["flag"] = [_flag(k, d, nearly_empty) for k, d in zip(df["kept"], df["density"])]
    return df


def _flag(kept: int, density: float, nearly_empty: float) -> str:
    return "empty" if kept == 0 else "nearly empty" if density < nearly_empty else ""


def collapsed_layers(df: Any, nearly_empty: float = NEARLY_EMPTY) -> Any:
    """From a results frame (`lth.analysis.load`): every lineage × round × layer whose density is 0 or below
    `nearly_empty`, with the round's overall density and the flag (pandas.DataFrame)."""
    import pandas as pd

    cols = [c for c in df.columns if c.startswith("layer_density.")]
    long = df.melt(id_vars=["lineage", "round", "density"], value_vars=cols, var_name="layer",
                   value_name="layer_density").dropna(subset=["layer_density"])
    long["layer"] = long["layer"].str.removeprefix("layer_density.")
    low = long[long["layer_density"] < nearly_empty].copy()
    low["flag"] = ["empty" if d == 0 else "nearly empty" for d in low["layer_density"]]
    return pd.DataFrame(low).sort_values(["lineage", "round", "layer"]).reset_index(drop=True)


# ----- which mask a path names

def mask_rounds(path: str | os.PathLike) -> dict[int, Path]:
    """A lineage folder's mask files by round (round_XX/mask.pt), in round order."""
    found = {int(d.parent.name.split("_", 1)[1]): d for d in Path(path).glob("round_*/mask.pt")
             if d.parent.name.split("_", 1)[1].isdigit()}
    return dict(sorted(found.items()))


def mask_paths(path: str | os.PathLike, at: int | str | None = None) -> list[Path]:
    """The mask files a path names: a mask file itself, a round folder's `mask.pt`, or a lineage folder's round `at`
    (default: its last round with a mask; "all": every round's)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if (p / "mask.pt").is_file():
        return [p / "mask.pt"]
    rounds = mask_rounds(p)
    if not rounds:
        raise FileNotFoundError(f"no mask at {p} (a mask file, a round_XX folder, or a lineage folder with one)")
    if at == "all":
        return list(rounds.values())
    r = list(rounds)[-1] if at is None else int(at)
    if r not in rounds:
        raise FileNotFoundError(f"{p} has no mask of round {r}; its rounds with a mask: {list(rounds)}")
    return [rounds[r]]


def labels_for(paths: Sequence[Path]) -> list[str]:
    """Short distinct labels for mask files: their paths below the folder they share, `/mask.pt` left out."""
    parts = [p.resolve().parent if p.name == "mask.pt" else p.resolve().with_suffix("") for p in paths]
    base = Path(os.path.commonpath(parts)) if len(parts) > 1 else parts[0].parent
    out = [str(q.relative_to(base)) if q != base else q.name for q in parts]
    return out if len(set(out)) == len(out) else [str(p) for p in paths]
