"""Early-stop rules: which evaluation of a round is its early-stop point (`trainer.early_stop_metric`), and the
record fields that carry it under the chosen rule and under every rule."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lth.registry import Registry

# the values of the chosen evaluation a record carries as early_stop_<value>
EARLY_STOP_VALUES = ("test_acc", "val_loss", "val_acc")
DEFAULT_RULE = "val_loss"  # Frankle & Carbin's: the iteration of minimum validation loss


@dataclass(frozen=True)
class EarlyStopRule:
    """The evaluation whose `metric` is lowest (`highest=False`) or highest; ties go to the earliest step."""

    metric: str
    highest: bool = False
    words: str = ""  # the rule in words, for titles ("lowest validation loss")

    def best(self, history: Sequence[Mapping[str, float]], after: int | None = None) -> dict[str, float]:
        """The chosen evaluation among those with a finite `metric` (and a step after `after`); {} if none."""
        finite = [h for h in history if math.isfinite(h.get(self.metric, math.nan))
                  and (after is None or h["step"] > after)]
        if not finite:
            return {}
        sign = -1.0 if self.highest else 1.0
        return dict(min(finite, key=lambda h: (sign * h[self.metric], h["step"])))


EARLY_STOP_RULES: Registry[EarlyStopRule] = Registry("early-stop metric")
EARLY_STOP_RULES.register("val_loss")(EarlyStopRule("val_loss", words="lowest validation loss"))
EARLY_STOP_RULES.register("val_acc")(EarlyStopRule("val_acc", highest=True, words="highest validation accuracy"))


def by_rule_fields(name: str) -> tuple[str, str]:
    """The record fields of the early-stop step and test accuracy under rule `name`, whichever rule was chosen."""
    return f"early_stop_by_{name}_step", f"early_stop_by_{name}_test_acc"


def early_stop_fields(history: Sequence[Mapping[str, float]], metric: str = DEFAULT_RULE,
                      after: int | None = None) -> dict[str, Any]:
    """A round's early-stop fields from its evaluations: `early_stop_metric`, the chosen rule's `early_stop_step` and
    `early_stop_<value>`, and every rule's step and test accuracy (`early_stop_by_<rule>_step`, `..._test_acc`);
    `after`: only evaluations after that step count."""
    chosen = EARLY_STOP_RULES[metric].best(history, after)
    out: dict[str, Any] = {"early_stop_metric": metric, "early_stop_step": chosen.get("step"),
                           **{f"early_stop_{k}": chosen.get(k) for k in EARLY_STOP_VALUES}}
    for name in EARLY_STOP_RULES:
        best = chosen if name == metric else EARLY_STOP_RULES[name].best(history, after)
        step, acc = by_rule_fields(name)
        out[step], out[acc] = best.get("step"), best.get("test_acc")
    return out


def no_early_stop(metric: str = DEFAULT_RULE) -> dict[str, Any]:
    """The early-stop fields of a round without evaluations during training (all None but the rule's name)."""
    return early_stop_fields([], metric)
