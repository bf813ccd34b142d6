"""Knowledge distillation (Hinton et al. 2015): a frozen teacher (one network or an ensemble of saved rounds), the
soft-target loss, teacher outputs cached per dataset, and the student–teacher measures of a round.

The teacher never joins a module tree: it is held by a plain object, so it is outside the optimizer, the mask
manager, checkpoints' state and DDP, and stays in eval mode when Lightning switches the student to training.
Any kind gets distillation: `Lineage.train_round` asks `Distiller.objective` for the round's training objective and
`Distiller.fields` for its record fields; the default teacher is round 0 of `Kind.parent` (the run's own folder,
a branch's source).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CACHE_CHUNK = 1024  # examples per teacher forward when filling the cache


def ensemble_log_probs(logits: Iterable[Tensor], temperature: float) -> Tensor:
    """log of the members' average softened probabilities: log mean_i softmax(z_i / T) (probabilities averaged,
    not logits)."""
    logs = [F.log_softmax(z.float() / temperature, dim=1) for z in logits]
    if len(logs) == 1:
        return logs[0]
    return torch.logsumexp(torch.stack(logs), dim=0) - math.log(len(logs))


def soft_kl(teacher_log_probs: Tensor, student_logits: Tensor, temperature: float) -> Tensor:
    """KL(p_t ‖ softmax(z_s / T)) averaged over the batch; `teacher_log_probs` = log p_t (already at T)."""
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_ps, teacher_log_probs, log_target=True, reduction="batchmean")


def distillation_loss(student_logits: Tensor, teacher_log_probs: Tensor, target: Tensor, alpha: float,
                      temperature: float) -> Tensor:
    """α·T²·KL(p_t ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y), batch means (Hinton et al.'s T² keeps the soft term's
    gradients at the scale of the hard term's)."""
    soft = soft_kl(teacher_log_probs, student_logits, temperature) * (alpha * temperature * temperature)
    if alpha == 1.0:
        return soft
    return soft + (1.0 - alpha) * F.cross_entropy(student_logits, target)


class Teacher:
    """Frozen networks (one, or an ensemble): eval mode, no gradients, held outside any module tree."""

    def __init__(self, members: Iterable[nn.Module], sources: Iterable[str] = ()) -> None:
        self.members = list(members)
        if not self.members:
            raise ValueError("a teacher needs at least one network")
        self.sources = list(sources)
        for m in self.members:
            m.eval()
            m.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.members[0].parameters()).device

    def to(self, device: torch.device | str) -> Teacher:
        """Move every member to `device` (in eval mode)."""
        for m in self.members:
            m.to(device).eval()
        return self

    @torch.no_grad()
    def log_probs(self, x: Tensor, temperature: float = 1.0) -> Tensor:
        """log p_t of inputs `x` at temperature T (an ensemble: log of the averaged probabilities)."""
        return ensemble_log_probs([m(x) for m in self.members], temperature)


class Distillation:
    """The training objective of a distilled round (TicketModule's `objective`): `loss(logits, batch)`.

    A batch `(x, y, log p_t)` carries the teacher's cached outputs (an in-memory training loader without a transform,
    see `attach`); a batch `(x, y)` gets them from a teacher forward under no_grad.
    """

    def __init__(self, teacher: Teacher, alpha: float, temperature: float, cache: bool = True) -> None:
        self.teacher = teacher
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.cache = cache
        self._cached: dict[tuple[Any, ...], Tensor] = {}

    def attach(self, loaders: Iterable[Any], device: torch.device) -> None:
        """Move the teacher to `device`; give each in-memory loader without a transform the teacher's outputs of its
        examples (computed once per dataset and device) as per-example extras."""
        self.teacher.to(device)
        for loader in loaders:
            if self.cache and hasattr(loader, "extra") and getattr(loader, "transform", None) is None:
                loader.extra = self.cached(loader.x, device)

    def cached(self, x: Tensor, device: torch.device) -> Tensor:
        """The teacher's log-probabilities at T of every example of `x`, on `device` (computed on first use)."""
        key = (x.data_ptr(), x.device, tuple(x.shape), torch.device(device), self.temperature)
        if key not in self._cached:
            parts = [self.teacher.log_probs(x[i : i + CACHE_CHUNK].to(device), self.temperature)
                     for i in range(0, len(x), CACHE_CHUNK)]
            self._cached = {key: torch.cat(parts)}  # one dataset at a time
        return self._cached[key]

    def targets(self, batch: tuple[Tensor, ...]) -> Tensor:
        """log p_t of the batch: its cached extra, else a teacher forward (no grad)."""
        return batch[2] if len(batch) > 2 else self.teacher.log_probs(batch[0], self.temperature)

    def loss(self, logits: Tensor, batch: tuple[Tensor, ...]) -> Tensor:
        """The distillation loss of the student's `logits` on `batch`."""
        return distillation_loss(logits, self.targets(batch), batch[1], self.alpha, self.temperature)


@torch.no_grad()
def teacher_metrics(model: nn.Module, teacher: Teacher, batches: Iterable[tuple[Tensor, ...]]) -> dict[str, float]:
    """Over `batches` (the test split): the teacher's top-1 accuracy, the student–teacher top-1 agreement and the
    mean KL(p_teacher ‖ p_student) at T = 1."""
    device = next(model.parameters()).device
    teacher.to(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    n = 0
    try:
        for batch in batches:
            x, y = batch[0].to(device), batch[1].to(device)
            z = model(x)
            log_pt = teacher.log_probs(x, 1.0)
            top_t = log_pt.argmax(1)
            sums += torch.stack([(top_t == y).sum().double(), (top_t == z.argmax(1)).sum().double(),
                                 soft_kl(log_pt, z, 1.0).double() * len(y)])
            n += len(y)
    finally:
        model.train(was_training)
    acc, agree, kl = (sums / max(n, 1)).tolist()
    return {"teacher_test_acc": acc, "teacher_agreement": agree, "teacher_kl": kl}


def load_teacher(folders: Iterable[str | Path], round: int, data_name: str, input_shape: tuple[int, ...],
                 num_classes: int) -> Teacher:
    """The trained networks of round `round` of run folders `folders` (an ensemble if several), built from each
    folder's own model config; ValueError naming train.distill.teacher for a folder that cannot teach this run."""
    from lth.models import build_model
    from lth.record import RunFolder

    members, sources = [], []
    for path in folders:
        folder = RunFolder(path, writer=False)
        where = f"train.distill.teacher: {folder.path}"
        try:
            config = folder.existing_config()
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if config is None or folder.record(round) is None:
            done = [r["round"] for r in folder.rounds()] if config is not None else []
            raise ValueError(f"{where} has no finished round {round} (train.distill.teacher_round); "
                             f"finished rounds: {done}")
        if config.get("data", {}).get("name") != data_name:
            raise ValueError(f"{where} was trained on data.name={config.get('data', {}).get('name')}, "
                             f"this run on {data_name}")
        model_cfg = config.get("model", {})
        with torch.random.fork_rng(devices=[]):  # building draws an init: the run's random stream is left untouched
            model = build_model(model_cfg.get("name"), input_shape, num_classes, **dict(model_cfg.get("args") or {}))
        try:
            model.load_state_dict(folder.load_trained(round))
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            raise ValueError(f"{where}: round {round}'s trained.pt does not load into its model "
                             f"{model_cfg.get('name')}: {e}") from None
        members.append(model)
        sources.append(f"{folder.path}@{round}")
    return Teacher(members, sources)


class Distiller:
    """A run's `train.distill`: which teacher each round learns from, its training objective and record fields.

    With `teacher` empty the teacher is round 0 of the parent folder (`Kind.parent`): rounds trained before that
    round exists train plainly if they are dense (they are the parent), and are refused otherwise.
    """

    def __init__(self, options: Any, data: Any) -> None:
        self.options = options
        self.data = data
        self.teacher: Teacher | None = None
        self._objective: Distillation | None = None  # one per teacher: its cache serves every round
        if options.teacher:
            self.teacher = load_teacher(options.teacher, options.teacher_round, data.name, data.input_shape,
                                        data.num_classes)

    def teacher_for(self, parent: Any, masks: Mapping[str, Tensor]) -> Teacher | None:
        """The teacher of a round under `masks` (None: the round trains the dense parent itself)."""
        if self.teacher is not None:
            return self.teacher
        record = parent.record(0)
        if record is None:
            if all(bool(m.all()) for m in masks.values()):
                return None
            raise ValueError(f"train.distill.teacher=[] distils from the dense round 0 of {parent.path}, which has "
                             "none; name the teacher's run folder: train.distill.teacher=[<run folder>]")
        if record["density"] < 1.0:
            raise ValueError(f"train.distill.teacher=[] distils from round 0 of {parent.path}, which is not dense "
                             f"(density {record['density']:.4g}); name a teacher: train.distill.teacher=[<run folder>]")
        self.teacher = load_teacher([parent.path], 0, self.data.name, self.data.input_shape, self.data.num_classes)
        return self.teacher

    def objective(self, parent: Any, masks: Mapping[str, Tensor]) -> Distillation | None:
        """The round's training objective (None: the plain cross-entropy, also whenever α = 0)."""
        teacher = self.teacher_for(parent, masks)
        if teacher is None or self.options.alpha == 0:
            return None
        if self._objective is None or self._objective.teacher is not teacher:
            self._objective = Distillation(teacher, self.options.alpha, self.options.temperature, self.options.cache)
        return self._objective

    def fields(self, model: nn.Module, test_batches: Iterable[tuple[Tensor, ...]]) -> dict[str, Any]:
        """Round record fields: whether the round was distilled, the teacher and the student–teacher measures."""
        if self.teacher is None:
            return {"distilled": False}
        return {"distilled": self.options.alpha > 0, "teacher": list(self.teacher.sources),
                **teacher_metrics(model, self.teacher, test_batches)}



def check_default_teacher(options: Any, kind: Any) -> None:
    """Refuse train.distill without a named teacher for a kind that trains no dense round 0 to distil from."""
    if options.enabled and not options.teacher and not kind.dense_round0:
        raise ValueError(f"train.distill.teacher=[] distils from the run's dense round 0, which a {kind.name} run does "
                         "not train; name the teacher's run folder: train.distill.teacher=[<run folder>]")


def distiller_for(cfg: Any, data: Any) -> Distiller | None:
    """The run's Distiller under train.distill.enabled, else None."""
    return Distiller(cfg.train.distill, data) if cfg.train.distill.enabled else None
