"""Gradual magnitude pruning: the cubic schedule and its exact counts, selection to a density, and the callback that
prunes while a Trainer trains (masks only shrink; pruned weights stay 0 under every optimizer, across pruning steps)."""

import itertools
from fractions import Fraction

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lth.config import GradualConfig
from lth.gradual import (
    GradualPruning,
    Schedule,
    check_reachable,
    early_stop_after,
    kept_count,
    prune_to_density,
)
from lth.lit import MaskingCallback, TicketModule
from lth.masks import MaskManager, unpack

# s_i = 1, s_f = 0.1, t0 = 10, Δt = 5, n = 4: s_t = 0.1 + 0.9 (1 − (t − 10)/20)³ at t = 15, 20, 25, 30
SCHEDULE = Schedule(initial=1.0, final=0.1, start=10, every=5, prunings=4)
# 0.1 + 0.9·27/64, 0.1 + 0.9/8, 0.1 + 0.9/64, 0.1
DENSITIES = {15: 0.4796875, 20: 0.2125, 25: 0.1140625, 30: 0.1}


def test_the_schedule_follows_the_cubic_formula_at_its_steps():
    assert SCHEDULE.steps() == [15, 20, 25, 30]  # s_i = 1: t0 itself removes nothing and is no pruning step
    assert SCHEDULE.end == 30
    assert {t: SCHEDULE.density(t) for t in SCHEDULE.steps()} == DENSITIES
    assert SCHEDULE.exact(15) == Fraction(1, 10) + Fraction(9, 10) * Fraction(27, 64)
    assert SCHEDULE.density(0) == SCHEDULE.density(10) == 1.0 and SCHEDULE.density(99) == 0.1  # clamped
    # s_i < 1: the schedule prunes to s_i at t0 first
    s = Schedule(initial=0.8, final=0.2, start=0, every=10, prunings=2)
    assert s.steps() == [0, 10, 20]
    assert [s.density(t) for t in s.steps()] == [0.8, 0.2 + 0.6 / 8, 0.2]


def test_from_config_reads_the_gradual_section():
    g = GradualConfig(final_density=0.05, initial_density=0.9, start_step=7, every=3, prunings=2)
    assert Schedule.from_config(g) == Schedule(0.9, 0.05, 7, 3, 2)
    with pytest.raises(ValueError, match="gradual.final_density is not set"):
        Schedule.from_config(GradualConfig())


def test_kept_count_rounds_half_to_even_on_the_exact_product():
    assert kept_count(0.1, 45) == 4  # 4.5 → 4
    assert kept_count(0.1, 55) == 6  # 5.5 → 6
    assert kept_count(0.7, 45) == 32  # exact 31.5 → 32 (the float product 31.499999999999996 would give 31)
    assert kept_count(Fraction(1, 3), 3) == 1


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"final": 1.0}, r"gradual.final_density must be in \(0, 1\), got 1.0"),
        ({"final": 0.0}, r"gradual.final_density must be in \(0, 1\), got 0.0"),
        ({"initial": 1.5}, r"gradual.initial_density must be in \(0, 1\], got 1.5"),
        ({"initial": 0.05}, "gradual.final_density=0.1 must be below gradual.initial_density=0.05"),
        ({"initial": 0.1}, "gradual.final_density=0.1 must be below gradual.initial_density=0.1"),
        ({"prunings": 0}, r"gradual.prunings \(n, the number of pruning steps\) must be >= 1, got 0"),
        ({"every": 0}, r"gradual.every \(Δt, steps between pruning steps\) must be >= 1, got 0"),
        ({"start": -1}, r"gradual.start_step \(t0\) must be >= 0, got -1"),
        ({"start": 20}, (r"gradual schedule ends at step 40 = gradual.start_step 20 \+ gradual.prunings 4 × "
                         r"gradual.every 5, not before the end of training trainer.max_steps=40")),
    ],
)
def test_bad_schedules_are_refused_naming_the_option(changes, message):
    fields = {"initial": 1.0, "final": 0.1, "start": 10, "every": 5, "prunings": 4, **changes}
    with pytest.raises(ValueError, match=message):
        Schedule(**fields).check(max_steps=40)


def test_a_schedule_ending_one_step_before_the_end_is_accepted():
    SCHEDULE.check(max_steps=31)
    with pytest.raises(ValueError, match="ends at step 30"):
        SCHEDULE.check(max_steps=30)


def test_a_final_density_that_empties_a_layer_is_refused():
    check_reachable({"a": 100, "b": 4}, 0.2, "layerwise")  # 4 × 0.2 = 0.8 → 1
    with pytest.raises(ValueError, match=r"keeps no weight of layer 'b' \(4 weights, pruning.scope=layerwise\)"):
        check_reachable({"a": 100, "b": 4}, 0.1, "layerwise")  # 0.4 → 0
    check_reachable({"a": 100, "b": 4}, 0.01, "global")  # 104 × 0.01 = 1.04 → 1
    with pytest.raises(ValueError, match="keeps no weight of the global pool"):
        check_reachable({"a": 3, "b": 2}, 0.01, "global")


def test_prune_to_density_removes_the_lowest_kept_scores_to_the_exact_count():
    scores = {"a": torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), "b": torch.tensor([[0.5, 9.0], [8.0, 0.1]])}
    masks = {"a": torch.tensor([True, True, True, True, False]), "b": torch.ones(2, 2, dtype=torch.bool)}
    # layerwise at 0.5: a keeps round(2.5) = 2 of its 4 kept (5, 4 stay; 1 and 2 go; 3 was pruned before),
    # b keeps 2 (9, 8)
    new = prune_to_density(scores, masks, 0.5, "layerwise")
    assert new["a"].tolist() == [True, False, True, False, False]
    assert new["b"].tolist() == [[False, True], [True, False]]
    # global at 0.5: 9 weights → round(4.5) = 4 kept of the pool's 8: 9, 8, 5, 4
    new = prune_to_density(scores, masks, 0.5, "global")
    assert new["a"].tolist() == [True, False, True, False, False]
    assert new["b"].tolist() == [[False, True], [True, False]]
    # global at 0.7: round(6.3) = 6 kept: 9, 8, 5, 4, 2 and 1 (0.5 and 0.1 go)
    new = prune_to_density(scores, masks, 0.7, "global")
    assert new["a"].tolist() == [True, True, True, True, False]
    assert new["b"].tolist() == [[False, True], [True, False]]
    # masks only shrink: a layer already below its count keeps its mask, and the inputs are untouched
    new = prune_to_density(scores, masks, 0.9, "layerwise")
    assert torch.equal(new["a"], masks["a"]) and int(new["b"].sum()) == 4  # b: round(3.6) = 4
    assert masks["a"].tolist() == [True, True, True, True, False]
    with pytest.raises(ValueError, match="unknown scope 'sideways'; valid choices: layerwise, global"):
        prune_to_density(scores, masks, 0.5, "sideways")


def test_early_stop_is_chosen_after_the_given_step():
    history = [{"step": 10, "val_loss": 0.1, "test_acc": 0.9}, {"step": 40, "val_loss": 0.5, "test_acc": 0.7},
               {"step": 50, "val_loss": 0.3, "test_acc": 0.8}, {"step": 60, "val_loss": 0.3, "test_acc": 0.6}]
    assert early_stop_after(history, 30)["step"] == 50  # the lowest after step 30; ties: the earlier
    assert early_stop_after(history, 0)["step"] == 10
    assert early_stop_after(history, 60) == {}


# ----- the callback under a Trainer


class Net(nn.Module):
    """Two prunable layers small enough to count by hand: 8×6 = 48 and 3×8 = 24 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class Batches:
    def __init__(self, n_batches: int, batch: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = [(torch.randn(batch, 6, generator=g), torch.randint(0, 3, (batch,), generator=g))
                      for _ in range(n_batches)]

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


class EveryStep(pl.Callback):
    """After every optimizer step: every pruned weight is exactly 0, and masks never grow back."""

    def __init__(self, manager: MaskManager) -> None:
        self.manager = manager
        self.masks = {n: m.clone() for n, m in manager.masks.items()}
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        for n, p in zip(self.manager.names, self.manager.params):
            mask = self.manager.masks[n]
            assert not bool((mask & ~self.masks[n]).any()), f"{n}: a pruned weight came back"
            assert torch.all(p.detach()[~mask] == 0), f"{n}: a pruned weight moved at step {trainer.global_step}"
        self.masks = {n: m.clone() for n, m in self.manager.masks.items()}
        self.steps += 1


OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=0.05, fused=True),
    "adamw_fused_wd": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1, fused=True),
}


def fit(tmp_path, optimizer, schedule=SCHEDULE, scope="layerwise", steps=35, saved=None, resume=None, stop=None):
    """Train Net under gradual pruning for `steps` steps (from checkpoint `resume`; `stop`: save a checkpoint there
    and end the fit, as a killed run's last checkpoint)."""
    torch.manual_seed(0)
    model = Net()
    manager = MaskManager(model)
    pruning = GradualPruning(manager, schedule, "large_final", scope, seed=0,
                             save=None if saved is None else lambda t, m: saved.append((t, dict(m))))
    check = EveryStep(manager)
    trainer = pl.Trainer(max_steps=stop or steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=[MaskingCallback(manager), pruning, check], default_root_dir=tmp_path)
    trainer.fit(TicketModule(model, OPTIMIZERS[optimizer], num_classes=3), Batches(steps), ckpt_path=resume)
    if stop is not None:
        trainer.save_checkpoint(tmp_path / "last.ckpt")
    return manager, pruning


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_weights_stay_zero_across_pruning_steps(tmp_path, optimizer):
    manager, pruning = fit(tmp_path, optimizer)
    assert [e["step"] for e in pruning.entries] == [15, 20, 25, 30]
    assert manager.masks["fc1.weight"].sum() == 5  # 48 × 0.1 = 4.8 → 5


def test_kept_counts_at_each_step_are_the_hand_computed_ones(tmp_path):
    saved = []
    manager, pruning = fit(tmp_path, "adam_fused", saved=saved)
    # layerwise: fc1 48 × (0.4796875, 0.2125, 0.1140625, 0.1) = 23.025, 10.2, 5.475, 4.8 → 23, 10, 5, 5
    #            fc2 24 × ... = 11.5125, 5.1, 2.7375, 2.4 → 12, 5, 3, 2
    per_step = [{n: round(d * manager.masks[n].numel()) for n, d in e["layer_density"].items()}
                for e in pruning.entries]
    assert per_step == [{"fc1.weight": 23, "fc2.weight": 12}, {"fc1.weight": 10, "fc2.weight": 5},
                        {"fc1.weight": 5, "fc2.weight": 3}, {"fc1.weight": 5, "fc2.weight": 2}]
    assert [e["kept"] for e in pruning.entries] == [35, 15, 8, 7]
    assert [e["target"] for e in pruning.entries] == [0.4796875, 0.2125, 0.1140625, 0.1]
    assert [e["density"] for e in pruning.entries] == [35 / 72, 15 / 72, 8 / 72, 7 / 72]
    # each step's mask was handed to `save`, and each is contained in the one before
    assert [t for t, _ in saved] == [15, 20, 25, 30]
    for (_, before), (_, after) in itertools.pairwise(saved):
        assert all(not bool((after[n] & ~before[n]).any()) for n in after)
    assert all(torch.equal(saved[-1][1][n], manager.masks[n]) for n in manager.names)


def test_global_scope_counts_the_pool(tmp_path):
    _, pruning = fit(tmp_path, "sgd_momentum_wd", scope="global")
    # 72 × (0.4796875, 0.2125, 0.1140625, 0.1) = 34.5375, 15.3, 8.2125, 7.2 → 35, 15, 8, 7
    assert [e["kept"] for e in pruning.entries] == [35, 15, 8, 7]


def test_the_smallest_magnitudes_go_at_a_pruning_step():
    torch.manual_seed(0)
    model = Net()
    manager = MaskManager(model)
    pruning = GradualPruning(manager, SCHEDULE, "large_final", "layerwise")
    before = {n: p.detach().abs().clone() for n, p in zip(manager.names, manager.params)}
    masks = pruning.prune(15)
    for n, m in masks.items():
        assert before[n][m].min() > before[n][~m].max()  # every kept |w| above every removed one
        assert torch.all(dict(model.named_parameters())[n].detach()[~m] == 0)  # zeroed at once


@pytest.mark.parametrize("optimizer", ["sgd_momentum_wd", "adam_fused"])
def test_a_fit_resumed_between_pruning_steps_keeps_pruned_weights_at_zero(tmp_path, optimizer):
    fit(tmp_path, optimizer, stop=22)  # pruned at 15 and 20; the optimizer state of those weights is not zero
    _, pruning = fit(tmp_path, optimizer, resume=tmp_path / "last.ckpt")  # EveryStep checks steps 23..35
    assert [e["step"] for e in pruning.entries] == [15, 20, 25, 30]  # the first two came with the checkpoint
    assert [e["kept"] for e in pruning.entries] == [35, 15, 8, 7]


def test_without_re_masking_a_resumed_fit_moves_pruned_weights_under_momentum(tmp_path, monkeypatch):
    """The invariant above is not vacuous: a resumed fit can restore the masks with a non-zero momentum of weights
    pruned before it (here: `MaskManager.mask_state`, which zeroes it at each mask change, switched off), so the masking
    callback must re-mask after every step (`expect_mask_changes`) from its start."""
    monkeypatch.setattr(MaskManager, "mask_state", lambda self, optimizer: None)
    fit(tmp_path, "sgd_momentum_wd", stop=22)
    monkeypatch.setattr(MaskingCallback, "expect_mask_changes", lambda self: None)
    with pytest.raises(AssertionError, match="a pruned weight moved at step 23"):
        fit(tmp_path, "sgd_momentum_wd", resume=tmp_path / "last.ckpt")


def test_a_mask_change_zeroes_the_newly_pruned_weights_momentum(tmp_path):
    """At every pruning step the optimizer state of the weights it prunes is zeroed (a decaying moment would reach
    denormal floats, ~10x slower on a CPU); the checkpoint a resumed fit starts from holds none."""
    fit(tmp_path, "sgd_momentum_wd", stop=22)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    masks = unpack(state["callbacks"]["MaskingCallback"]["manager"]["masks"])
    momentum = state["optimizer_states"][0]["state"]
    for i, n in enumerate(("fc1.weight", "fc2.weight")):
        buf = momentum[2 * i]["momentum_buffer"]  # parameters in model order: fc1.weight, fc1.bias, fc2.weight, ...
        assert buf.shape == masks[n].shape and float(buf[~masks[n]].abs().max()) == 0.0, n
        assert float(buf[masks[n]].abs().max()) > 0.0, n


@pytest.mark.parametrize("criterion", ["random", "movement", "large_init", "magnitude_increase"])
def test_every_criterion_prunes_to_the_exact_counts_and_random_draws_are_seeded_per_step(criterion):
    def masks_at(step, seed):
        torch.manual_seed(0)
        manager = MaskManager(Net())
        with torch.no_grad():  # trained weights differ from θ0, so the init-based criteria differ from magnitude
            for p in manager.params:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
        return GradualPruning(manager, SCHEDULE, criterion, "layerwise", seed=seed).prune(step)

    a = masks_at(15, 0)
    assert {n: int(m.sum()) for n, m in a.items()} == {"fc1.weight": 23, "fc2.weight": 12}
    b = masks_at(15, 0)
    assert all(torch.equal(a[n], b[n]) for n in a)  # a resumed run draws the same
    if criterion == "random":
        c, d = masks_at(15, 1), masks_at(20, 0)
        assert not all(torch.equal(a[n], c[n]) for n in a)  # another seed, other draws
        assert {n: int(m.sum()) for n, m in d.items()} == {"fc1.weight": 10, "fc2.weight": 5}


def test_a_global_step_that_empties_a_layer_warns_of_layer_collapse():
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc2.weight.mul_(1e-6)  # every fc2 weight below every fc1 weight
    pruning = GradualPruning(MaskManager(model), SCHEDULE, "large_final", "global")
    with pytest.warns(RuntimeWarning, match=r"gradual pruning step 30: layers \['fc2.weight'\] keep no weights"):
        masks = pruning.prune(30)  # the pool keeps round(7.2) = 7, all in fc1
    assert (int(masks["fc1.weight"].sum()), int(masks["fc2.weight"].sum())) == (7, 0)
    assert pruning.entries[-1]["layer_density"]["fc2.weight"] == 0.0
