"""The names of what a lineage logs (per-round metrics, training curves, the density axis, the round table) and the
rule that groups lineages into lines: one place for the W&B logger, `lth-dashboard` and `lth.analysis`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lth.flat import flatten

# ----- per-round metrics (a record's fields; in W&B against the ROUND step metric)
ROUND = "round"
DENSITY = "density"  # fraction of prunable weights kept: the x axis of every ticket plot
# 1 / density, logged beside it: on a log axis it is the density axis reversed (densest on the left, as the papers
# plot weights remaining), for plotting tools that cannot reverse an axis (W&B line plots)
COMPRESSION = "compression"
TEST_ACC = "test_acc"
EARLY_STOP_TEST_ACC = "early_stop_test_acc"
EARLY_STOP_STEP = "early_stop_step"
ROUND_METRICS = (
    DENSITY,
    TEST_ACC,
    "test_loss",
    "val_acc",
    "val_loss",
    EARLY_STOP_STEP,
    EARLY_STOP_TEST_ACC,
    "early_stop_val_loss",
    # the early-stop point under each rule (lth.early_stop), whichever trainer.early_stop_metric chose
    "early_stop_by_val_loss_step",
    "early_stop_by_val_loss_test_acc",
    "early_stop_by_val_acc_step",
    "early_stop_by_val_acc_test_acc",
    "train_steps",
    "wall_seconds",
    # train.distill (lth.distill): the teacher's test accuracy, the student's top-1 agreement and KL to it
    "teacher_test_acc",
    "teacher_agreement",
    "teacher_kl",
    # stability.every_round / the instability kind (lth.stability): the error barriers on test and train data
    "instability_test",
    "instability_train",
)
TICKET_METRICS = (TEST_ACC, EARLY_STOP_TEST_ACC, EARLY_STOP_STEP)  # what lottery-ticket papers plot against density
LAYER_DENSITY = "layer_density"  # a record's per-layer densities: {prunable name: density}
# fraction of a round's kept weights that the mask it came from also keeps (a branch: its source round's mask);
# logged only for rounds that have such a source
MASK_OVERLAP = "mask_overlap"

# ----- training curves (Lightning's logged values, in W&B against the cumulative CURVE_STEP)
CURVE_STEP = "train/global_step"  # cumulative over rounds, so the curves of all rounds share one axis


def curve(split: str, quantity: str) -> str:
    """The logged name of a training curve: `<split>/<quantity>` (split train, val or test; quantity loss or acc)."""
    return f"{split}/{quantity}"


TRAIN_LOSS, TRAIN_ACC = curve("train", "loss"), curve("train", "acc")
CURVES = tuple(curve(split, q) for split in ("train", "val", "test") for q in ("loss", "acc"))
CURVE_PREFIXES = ("train/", "val/", "test/")

# ----- the round table (one row per round, logged incrementally)
ROUND_TABLE = "rounds"
TABLE_COLUMNS = (ROUND, DENSITY, TEST_ACC, EARLY_STOP_STEP, EARLY_STOP_TEST_ACC, "status")


def layer_density_key(layer: str) -> str:
    """A prunable's density as a logged W&B metric (`layer_density/<name>`)."""
    return f"{LAYER_DENSITY}/{layer}"


def compression(density: float) -> float | None:
    """1 / density (None for a density of 0 or less)."""
    return 1.0 / density if density > 0 else None


# ----- W&B run names: a lineage's run is named by these, then its folder's other overrides
NAMED_KEYS = ("ticket.reset", "pruning.criterion", "seed")


def run_name(reset: str, criterion: str, seed: int, folder_name: str = "defaults") -> str:
    """A lineage's readable run name, `reset/criterion/seed=N`, then the other overrides its folder name holds (e.g.
    `random_reinit/large_final/seed=1 pruning.fraction=0.1`)."""
    items: list[str] = []
    for piece in ("" if folder_name == "defaults" else folder_name).split(","):
        if "=" in piece or not items:
            items.append(piece)
        else:  # a comma inside a value (`hidden=[64,64]`)
            items[-1] += "," + piece
    extra = [i for i in items if i and i.split("=", 1)[0] not in NAMED_KEYS]
    head = f"{reset}/{criterion}/seed={seed}"
    return f"{head} {','.join(extra)}" if extra else head


# ----- grouping: which config keys tell lines apart (seeds are averaged)
# config keys (and key prefixes) that never tell groups apart: seeds, names, output folders, logging and launching
NOT_GROUPING = ("seed", "name", "out_dir", "logger", "launcher", "hydra", "data.root", "data.download",
                "trainer.threads", "trainer.checkpoint_every", "trainer.checkpoint_min_interval_s",
                "trainer.log_every_n_steps")
# a key whose last part is one of these, or ends with one of the suffixes, is a seed or a path: never a group
SEED_OR_PATH = ("seed", "from", "root", "dir", "path", "file")
SEED_OR_PATH_SUFFIXES = ("_seed", "_dir", "_path", "_file", "_root")
# the lines of a ticket plot when nothing says which keys vary (e.g. a workspace built before any run exists)
DEFAULT_GROUPING = ("ticket.reset", "pruning.criterion")


def is_grouping_key(key: str, exclude: Sequence[str] = NOT_GROUPING) -> bool:
    """Whether a dotted config key may tell lines apart (not a seed, name, path, logging or launching key)."""
    last = key.rsplit(".", 1)[-1]
    return not (any(key == e or key.startswith(e + ".") for e in exclude) or last in SEED_OR_PATH
                or last.endswith(SEED_OR_PATH_SUFFIXES))


def varying_keys(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The dotted config keys whose values differ between the given (nested) configs, sorted."""
    flat = [flatten(c) for c in configs]
    keys = sorted({k for c in flat for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in flat}) > 1]


def grouping_keys(configs: Iterable[Mapping[str, Any]], exclude: Sequence[str] = NOT_GROUPING) -> list[str]:
    """The config keys that vary between lineages and tell lines apart: one line per value, seeds averaged."""
    return [k for k in varying_keys(configs) if is_grouping_key(k, exclude)]
