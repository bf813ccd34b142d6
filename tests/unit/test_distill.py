"""lth.distill: the soft-target loss by hand, ensembles of probabilities, cached teacher outputs, a frozen teacher,
α = 0 bit for bit the plain run, and the refusals."""

import json
import math

import pytest
import torch
from torch import nn

from lth import masks as masks_lib
from lth.data.memory import TensorBatches
from lth.distill import (
    CACHE_CHUNK,
    Distillation,
    Distiller,
    Teacher,
    distillation_loss,
    ensemble_log_probs,
    load_teacher,
)
from lth.lit import TicketModule
from lth.runner import Lineage, run


class Fixed(nn.Module):
    """A 'network' whose logits are a fixed linear map of its input."""

    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(w)

    def forward(self, x):
        return self.lin(x)


def test_loss_equals_a_hand_computation_with_t_squared_and_alpha():
    zs = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    zt = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 4.0]])
    y = torch.tensor([1, 2])
    alpha, t = 0.3, 2.0

    def softmax(row, temp):
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for s_row, t_row, label in zip(zs.tolist(), zt.tolist(), y.tolist()):
        pt, ps = softmax(t_row, t), softmax(s_row, t)
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
        ce += -math.log(softmax(s_row, 1.0)[label])
    expected = alpha * t * t * kl / 2 + (1 - alpha) * ce / 2
    got = distillation_loss(zs, torch.log_softmax(zt / t, dim=1), y, alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # α = 1: the soft term alone (T² included); α = 0: the cross-entropy alone
    assert distillation_loss(zs, torch.log_softmax(zt / t, dim=1), y, 1.0, t).item() == pytest.approx(t * t * kl / 2, rel=1e-6)
    assert distillation_loss(zs, torch.log_softmax(zt / t, dim=1), y, 0.0, t).item() == pytest.approx(ce / 2, rel=1e-6)


def test_an_ensemble_averages_probabilities_not_logits():
    z1 = torch.tensor([[4.0, 0.0, 0.0]])
    z2 = torch.tensor([[0.0, 0.0, 1.0]])
    t = 2.0
    got = ensemble_log_probs([z1, z2], t).exp()
    by_hand = (torch.softmax(z1 / t, 1) + torch.softmax(z2 / t, 1)) / 2
    torch.testing.assert_close(got, by_hand, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got, torch.softmax((z1 + z2) / 2 / t, 1), atol=1e-3)  # averaged logits differ
    teacher = Teacher([Fixed(torch.eye(3) * 4), Fixed(torch.eye(3).flip(0))])
    x = torch.tensor([[1.0, 0.0, 0.0]])
    torch.testing.assert_close(teacher.log_probs(x, t).exp(),
                               (torch.softmax(torch.tensor([[4.0, 0, 0]]) / t, 1)
                                + torch.softmax(torch.tensor([[0.0, 0, 1]]) / t, 1)) / 2)


def _teacher(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Teacher([nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))]), g


def test_cached_teacher_outputs_equal_per_step_ones_and_leave_the_order_alone():
    torch.manual_seed(0)
    teacher, g = _teacher()
    x, y = torch.randn(50, 5, generator=g), torch.randint(0, 3, (50,), generator=g)
    plain = TensorBatches(x, y, batch_size=8, shuffle=True, seed=3)
    cached = TensorBatches(x, y, batch_size=8, shuffle=True, seed=3)
    objective = Distillation(teacher, alpha=0.5, temperature=3.0)
    objective.attach([cached], torch.device("cpu"))
    assert cached.extra is not None and cached.extra.shape == (50, 3)
    rng = torch.get_rng_state()
    for (xb, yb), (xc, yc, tc) in zip(plain, cached):
        assert torch.equal(xb, xc) and torch.equal(yb, yc)
        torch.testing.assert_close(tc, teacher.log_probs(xb, 3.0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(objective.targets((xc, yc, tc)), objective.targets((xb, yb)), rtol=1e-6, atol=1e-6)
    assert torch.equal(torch.get_rng_state(), rng)
    # computed once per dataset: a second loader of the same tensors gets the same cache object
    again = TensorBatches(x, y, batch_size=8, shuffle=True, seed=3)
    objective.attach([again], torch.device("cpu"))
    assert again.extra is cached.extra
    # a loader with a transform (augmentation) is left alone: its teacher outputs are computed per batch
    augmented = TensorBatches(x, y, batch_size=8, shuffle=True, seed=3, transform=lambda xb, gen: xb + 1)
    objective.attach([augmented], torch.device("cpu"))
    assert augmented.extra is None
    xb, yb = next(iter(augmented))
    torch.testing.assert_close(objective.targets((xb, yb)), teacher.log_probs(xb, 3.0))


def test_the_teacher_is_frozen_and_outside_the_module_state():
    teacher, _ = _teacher()
    assert all(not p.requires_grad for m in teacher.members for p in m.parameters())
    assert all(not m.training for m in teacher.members)
    student = nn.Linear(5, 3)
    module = TicketModule(student, lambda ps: torch.optim.SGD(ps, lr=0.1), 3,
                          objective=Distillation(teacher, 0.5, 2.0))
    module.train()
    assert all(not m.training for m in teacher.members)  # train() of the student leaves the teacher in eval mode
    assert {k for k in module.state_dict() if not k.startswith(("train_acc", "eval_acc"))} == {"model.weight", "model.bias"}
    assert [id(p) for p in module.parameters()] == [id(p) for p in student.parameters()]


def rounds(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


DISTILL_FIELDS = ("wall_seconds", "distilled", "teacher", "teacher_test_acc", "teacher_agreement", "teacher_kl")
FAST = ("trainer.max_steps=12", "trainer.eval_every=6", "trainer.checkpoint_every=0")


@pytest.mark.slow
def test_alpha_zero_reproduces_the_plain_run_bit_for_bit(tmp_path, smoke_config):
    plain, zero = tmp_path / "plain", tmp_path / "zero"
    run(smoke_config(*FAST), plain, sinks=[])
    run(smoke_config(*FAST, "train.distill.enabled=true", "train.distill.alpha=0"), zero, sinks=[])
    a, b = rounds(plain), rounds(zero)
    assert [{k: v for k, v in r.items() if k not in DISTILL_FIELDS} for r in a] == \
           [{k: v for k, v in r.items() if k not in DISTILL_FIELDS} for r in b]
    assert [r["distilled"] for r in b] == [False, False] and b[1]["teacher"] == [f"{zero}@0"]
    assert b[1]["teacher_test_acc"] == pytest.approx(a[0]["test_acc"], abs=1e-6)  # the teacher is round 0
    for r in (0, 1):
        ma, mb = (masks_lib.load(p / f"round_{r:02d}" / "mask.pt") for p in (plain, zero))
        assert all(torch.equal(ma[n], mb[n]) for n in ma)
        wa, wb = (torch.load(p / f"round_{r:02d}" / "trained.pt", weights_only=True) for p in (plain, zero))
        assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.mark.slow
def test_a_distilled_round_changes_training_and_leaves_the_teacher_bit_identical(tmp_path, smoke_config,
                                                                                    monkeypatch):
    calls = []
    forward = Teacher.log_probs

    def counted(self, x, temperature=1.0):
        calls.append(len(x))
        return forward(self, x, temperature)

    monkeypatch.setattr(Teacher, "log_probs", counted)
    out = tmp_path / "distilled"
    cfg = smoke_config(*FAST, "ticket.rounds=2", "train.distill.enabled=true", "train.distill.alpha=0.8",
                       "train.distill.temperature=3")
    lineage = Lineage(cfg, out, sinks=[])
    lineage.run()
    # the training split's outputs once for the lineage (cached, both distilled rounds use them), then the test split
    # once per round for the record: no forward per step
    n_train, n_test = lineage.data.train_dataloader().num_samples, lineage.data.test_dataloader().num_samples
    assert calls == [min(CACHE_CHUNK, n_train - i) for i in range(0, n_train, CACHE_CHUNK)] + [n_test, n_test]
    teacher = lineage.distiller.teacher
    dense = torch.load(out / "round_00" / "trained.pt", weights_only=True)
    state = teacher.members[0].state_dict()
    assert set(state) == set(dense) and all(torch.equal(state[k], dense[k]) for k in dense)
    assert not teacher.members[0].training and not any(p.requires_grad for p in teacher.members[0].parameters())
    recs = rounds(out)
    assert [r["distilled"] for r in recs] == [False, True, True]
    assert 0 <= recs[1]["teacher_agreement"] <= 1 and recs[1]["teacher_kl"] > 0
    # the same run with α = 0 trains round 1 to other weights: the objective is in effect
    plain = tmp_path / "plain"
    run(smoke_config(*FAST, "train.distill.enabled=true", "train.distill.alpha=0"), plain, sinks=[])
    wa, wb = (torch.load(p / "round_01" / "trained.pt", weights_only=True) for p in (out, plain))
    assert not torch.equal(wa["hidden.0.weight"], wb["hidden.0.weight"])
    # an explicit ensemble of run folders: both lineages' round 0 (the same dense network: same seed and config)
    ens = load_teacher([out, plain], 0, "digits", lineage.data.input_shape, lineage.data.num_classes)
    assert len(ens.members) == 2 and ens.sources == [f"{out}@0", f"{plain}@0"]
    with pytest.raises(ValueError, match="train.distill.teacher.*data.name=digits"):
        load_teacher([out], 0, "mnist1d", lineage.data.input_shape, lineage.data.num_classes)
    with pytest.raises(ValueError, match="no finished round 5"):
        load_teacher([out], 5, "digits", lineage.data.input_shape, lineage.data.num_classes)


class _Folder:
    def __init__(self, path, record):
        self.path, self._record = path, record

    def record(self, r):
        return self._record


def test_the_default_teacher_is_a_dense_round_0_or_refused():
    options = type("O", (), {"teacher": [], "alpha": 0.5, "temperature": 2.0, "cache": True})()
    data = type("D", (), {"name": "digits", "input_shape": (64,), "num_classes": 10})()
    distiller = Distiller(options, data)
    ones = {"w": torch.ones(3, 3, dtype=torch.bool)}
    sparse = {"w": torch.eye(3, dtype=torch.bool)}
    assert distiller.objective(_Folder("p", None), ones) is None  # the dense parent itself trains plainly
    with pytest.raises(ValueError, match=r"train.distill.teacher=\[\].*has none"):
        distiller.objective(_Folder("p", None), sparse)
    with pytest.raises(ValueError, match="not dense"):
        distiller.objective(_Folder("p", {"density": 0.1}), sparse)


@pytest.mark.parametrize("override, message", [
    ("train.distill.alpha=1.5", r"train.distill.alpha must be in \[0, 1\]"),
    ("train.distill.temperature=0", "train.distill.temperature must be positive"),
    ("train.distill.teacher_round=-1", "train.distill.teacher_round must be >= 0"),
    ("train.distill.teacher=[/nonexistent/run]", "not a run folder"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, smoke_config, override, message):
    with pytest.raises(ValueError, match=message):
        Lineage(smoke_config("train.distill.enabled=true", override), tmp_path / "x", sinks=[])
    assert not (tmp_path / "x").exists()


def test_a_teacher_without_distillation_enabled_is_refused(tmp_path, smoke_config):
    with pytest.raises(ValueError, match="train.distill.enabled=false"):
        Lineage(smoke_config("train.distill.teacher=[/x]"), tmp_path / "x", sinks=[])


@pytest.mark.parametrize("kind_overrides, kind", [
    (("pruning.at_init=true", "pruning.criterion=snip", "pruning.target_density=0.5"), "pruning_at_init"),
    (("gradual.final_density=0.5", "gradual.start_step=4", "gradual.every=2", "gradual.prunings=3",
      "trainer.max_steps=20"), "gradual"),
])
def test_a_kind_without_a_dense_round_0_needs_a_named_teacher_before_anything_is_written(tmp_path, smoke_config,
                                                                                         kind_overrides, kind):
    with pytest.raises(ValueError, match=rf"a {kind} run does not train; name the teacher's run folder"):
        Lineage(smoke_config("train.distill.enabled=true", *kind_overrides), tmp_path / "x", sinks=[])
    assert not (tmp_path / "x").exists()
