"""The masking invariant under Lightning: pruned weights stay at their mask-0 value after every optimizer step."""

import functools
import types

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lth.lit import LastCheckpoint, MaskingCallback, TicketModule
from lth.masks import MaskManager


class Batches:
    """A fixed in-memory sequence of batches (a plain list would read as several dataloaders)."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def batches(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batches([(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)])


def make(seed=0, mask0="zero"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    mm = MaskManager(model, mask0=mask0)
    g = torch.Generator().manual_seed(1)
    mm.set_masks({n: torch.rand(m.shape, generator=g) > 0.6 for n, m in mm.masks.items()})
    return model, mm


class CheckEveryStep(pl.Callback):
    """Asserts the invariant after every batch (so after every optimizer step)."""

    def __init__(self, mm, expected, init):
        self.mm, self.expected, self.init, self.checked = mm, expected, init, 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        for n, p in zip(self.mm.names, self.mm.params):
            m = self.mm.masks[n]
            assert torch.equal(p.detach()[~m], self.expected[n][~m]), f"{n} moved at step {trainer.global_step}"
            if trainer.global_step > 0:  # training does move the kept weights
                assert torch.any(p.detach()[m] != self.init[n][m])
        self.checked += 1


def trainer(callbacks, tmp_path, **kw):
    return pl.Trainer(
        max_steps=kw.pop("max_steps", 10), logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path, accelerator="cpu", **kw,
    )


OPTIMIZERS = {
    "sgd_momentum_wd": functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9, weight_decay=0.1),
    "sgd_nesterov": functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9, nesterov=True),
    "adam": functools.partial(torch.optim.Adam, lr=0.05),
    "adamw": functools.partial(torch.optim.AdamW, lr=0.05, weight_decay=0.5),
}


@pytest.mark.parametrize("mask0", ["zero", "freeze_init"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("extra", [{}, {"gradient_clip_val": 0.01}, {"accumulate_grad_batches": 3}])
def test_pruned_weights_stay_at_mask0_value(tmp_path, opt, mask0, extra):
    model, mm = make(mask0=mask0)
    init = {n: w.clone() for n, w in mm.weights("init").items()}
    expected = {n: (torch.zeros_like(w) if mask0 == "zero" else w) for n, w in init.items()}
    check = CheckEveryStep(mm, expected, init)
    module = TicketModule(model, OPTIMIZERS[opt], num_classes=3)
    trainer([MaskingCallback(mm), check], tmp_path, max_steps=6, **extra).fit(module, batches(18))
    assert check.checked == 18 if "accumulate_grad_batches" in extra else check.checked == 6


def test_clipping_sees_masked_gradients(tmp_path):
    """Pruned gradients are zeroed before clipping, so the clip norm counts only kept weights."""
    model, mm = make()
    seen = {}

    class Spy(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen["pruned_grad_max"] = max(float(p.grad[~mm.masks[n]].abs().max()) for n, p in zip(mm.names, mm.params))

    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    trainer([MaskingCallback(mm), Spy()], tmp_path, max_steps=1).fit(module, batches(1))
    assert seen["pruned_grad_max"] == 0.0


def test_single_process_grads_are_masked_as_backward_accumulates_them_and_the_hooks_leave_with_the_fit(tmp_path):
    model, mm = make()
    seen = {}

    class Spy(pl.Callback):
        def on_after_backward(self, trainer, pl_module):  # before any optimizer-step hook
            seen.setdefault("pruned", []).append(
                max(float(p.grad[~mm.masks[n]].abs().max()) for n, p in zip(mm.names, mm.params)))
            seen.setdefault("kept", []).append(
                min(float(p.grad[mm.masks[n]].abs().sum()) for n, p in zip(mm.names, mm.params)))

    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    callback = MaskingCallback(mm)
    trainer([callback, Spy()], tmp_path, max_steps=3, accumulate_grad_batches=2).fit(module, batches(6))
    assert seen["pruned"] == [0.0] * 6 and min(seen["kept"]) > 0  # every micro-batch, kept gradients untouched
    assert all(not p._post_accumulate_grad_hooks for p in mm.params)  # gone after the fit
    assert "on_before_optimizer_step" not in vars(callback) and "on_before_backward" not in vars(callback)
    assert all(float(p.detach()[~mm.masks[n]].abs().max()) == 0.0 for n, p in zip(mm.names, mm.params))


def test_masks_travel_in_lightning_checkpoints(tmp_path):
    model, mm = make()
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    ck = LastCheckpoint(tmp_path / "ck", every_n_steps=4)
    trainer([MaskingCallback(mm), ck], tmp_path, max_steps=4).fit(module, batches(4))
    state = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    assert not any("mask" in k for k in state["state_dict"])  # not a buffer
    model2, mm2 = make(seed=5)
    mm2.set_masks({n: torch.ones_like(m) for n, m in mm2.masks.items()})
    module2 = TicketModule(model2, OPTIMIZERS["adam"], num_classes=3)
    trainer([MaskingCallback(mm2)], tmp_path, max_steps=5).fit(module2, batches(5), ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert all(torch.equal(mm2.masks[n], mm.masks[n]) for n in mm.names)
    assert torch.equal(mm2.weights("init")["0.weight"], mm.weights("init")["0.weight"])


def test_last_checkpoint_skips_the_crc_pass_and_restores_torchs_option(tmp_path):
    import zipfile

    model, mm = make()
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    ck = LastCheckpoint(tmp_path / "ck", every_n_steps=2)
    assert torch.serialization.get_crc32_options()
    trainer([MaskingCallback(mm), ck], tmp_path, max_steps=2).fit(module, batches(2))
    assert torch.serialization.get_crc32_options()  # other torch.save calls keep their CRCs
    path = tmp_path / "ck" / "last.ckpt"
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is not None  # records carry no CRC32: zip's own check fails, torch.load does not
    state = torch.load(path, weights_only=False)
    assert state["global_step"] == 2
    assert torch.equal(state["state_dict"]["model.0.weight"], model[0].weight.detach())


def test_periodic_checkpoints_keep_their_minimum_interval(tmp_path, monkeypatch):
    """Due every 2 steps, written only once 10 s (a fake clock: 3 s per step) have passed since the last one."""
    from lth import lit

    now = [0.0]
    monkeypatch.setattr(lit.time, "monotonic", lambda: now[0])

    class Tick(pl.Callback):
        def on_train_batch_start(self, *args):
            now[0] += 3.0

    model, mm = make()
    saved = []
    ck = LastCheckpoint(tmp_path / "ck", every_n_steps=2, min_interval_s=10.0)
    real_save = ck.save
    ck.save = lambda trainer: (saved.append(trainer.global_step), real_save(trainer))
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    trainer([MaskingCallback(mm), Tick(), ck], tmp_path, max_steps=12).fit(module, batches(12))
    # due at 2, 4, 6, ...; 12 s at step 4 (written), 12 s later at step 8, at step 12
    assert saved == [4, 8, 12]
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)["global_step"] == 12
    # 0 s: every due step
    saved.clear()
    ck0 = LastCheckpoint(tmp_path / "ck0", every_n_steps=2)
    real0 = ck0.save
    ck0.save = lambda trainer: (saved.append(trainer.global_step), real0(trainer))
    model, mm = make()
    trainer([MaskingCallback(mm), Tick(), ck0], tmp_path, max_steps=6).fit(TicketModule(model, OPTIMIZERS["adam"], 3),
                                                                            batches(6))
    assert saved == [2, 4, 6]


def test_under_ddp_rank0s_clock_decides_a_periodic_checkpoint_for_every_rank(tmp_path, monkeypatch):
    """The save is collective: a rank whose own clock says "not yet" follows rank 0's broadcast decision."""
    from types import SimpleNamespace

    from lth import lit

    monkeypatch.setattr(lit.time, "monotonic", lambda: 5.0)  # this rank: 5 s since the fit started, under 10 s
    sent = []
    strategy = SimpleNamespace(broadcast=lambda obj, src=0: (sent.append((obj, src)), True)[1])  # rank 0: "ready"
    ck = LastCheckpoint(tmp_path, every_n_steps=2, min_interval_s=10.0)
    ck._saved_time = 0.0
    rank1 = SimpleNamespace(global_step=4, world_size=2, strategy=strategy)
    assert ck._due(rank1) and sent == [(False, 0)]
    assert not ck._due(SimpleNamespace(global_step=5, world_size=2, strategy=strategy)) and len(sent) == 1  # not due
    single = SimpleNamespace(global_step=4, world_size=1, strategy=strategy)
    assert not ck._due(single) and len(sent) == 1  # one process: its own clock, no collective


def test_eval_history_and_early_stop(tmp_path):
    model, mm = make()
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    t = pl.Trainer(max_steps=12, val_check_interval=4, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                   logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   callbacks=[MaskingCallback(mm)])
    evals = [batches(2, seed=1), batches(3, seed=2)]
    t.fit(module, batches(12), evals)
    assert [h["step"] for h in module.history] == [4, 8, 12]
    model.eval()
    with torch.no_grad():
        x, y = torch.cat([b[0] for b in evals[1].items]), torch.cat([b[1] for b in evals[1].items])
        logits = model(x)
    assert module.history[-1]["test_acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert module.history[-1]["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    best = min(module.history, key=lambda h: h["val_loss"])
    assert module.early_stop() == best


class _Optimizers:
    """The Trainer attributes MaskingCallback reads: its optimizers and world size."""

    def __init__(self, *optimizers, world_size=1):
        self.optimizers = list(optimizers)
        self.world_size = world_size


def test_after_step_pass_only_where_masked_gradients_do_not_suffice():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    for mask0, optimizer, hooked in (
        ("zero", torch.optim.Adam(model.parameters()), 0),
        ("zero", torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 0),
        ("zero", torch.optim.RMSprop(model.parameters()), 1),  # not known to keep zero weights at zero
        ("freeze_init", torch.optim.Adam(model.parameters()), 1),  # pruned weights sit at θ0: decay would move them
    ):
        cb = MaskingCallback(MaskManager(model, mask0=mask0))
        cb.on_fit_start(_Optimizers(optimizer), None)
        assert len(cb._hooks) == hooked, (mask0, type(optimizer).__name__)
        cb.on_fit_end(_Optimizers(optimizer), None)


@pytest.mark.parametrize("world_size", [1, 2])  # gradients masked in backward's hooks / before the step (DDP)
def test_masks_replaced_mid_fit_keep_newly_pruned_weights_at_zero(world_size):
    """Momentum of a weight pruned mid-fit is not zero: the after-step pass turns on and holds it at 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    mm = MaskManager(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cb = MaskingCallback(mm)
    cb.on_fit_start(_Optimizers(optimizer, world_size=world_size), None)
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    assert bool(cb._grad_hooks) == (world_size == 1)

    def step():  # the hooks Lightning calls: those that are callable
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if callable(cb.on_before_backward):
            cb.on_before_backward(_Optimizers(optimizer), None, loss)
        loss.backward()
        if callable(cb.on_before_optimizer_step):
            cb.on_before_optimizer_step(None, None, optimizer)
        optimizer.step()

    for _ in range(3):
        step()
    assert not cb._hooks  # SGD, mask-0 zero, masks of the fit's start: gradients masking suffices
    masks = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) > 0.5 for n, m in mm.masks.items()}
    mm.set_masks(masks)
    for _ in range(3):
        step()
        for n, p in zip(mm.names, mm.params):
            assert torch.all(p.detach()[~masks[n]] == 0), n
    assert len(cb._hooks) == 1
    cb.on_fit_end(_Optimizers(optimizer), None)


@pytest.mark.parametrize("world_size", [1, 2])
def test_masks_replaced_mid_fit_zero_the_pruned_weights_optimizer_state_and_leave_kept_weights_bit_identical(
        world_size, monkeypatch):
    """A decaying moment of a pruned weight reaches denormal floats (~10x slower arithmetic on a CPU); zeroing it moves
    no kept weight by a single bit (Adam is elementwise)."""

    def train(zero_state: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        mm = MaskManager(model)
        if not zero_state:
            monkeypatch.setattr(mm, "mask_state", lambda optimizer: None)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        cb = MaskingCallback(mm)
        cb.on_fit_start(_Optimizers(optimizer, world_size=world_size), None)
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        masks = {n: torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) > 0.5 for n, m in mm.masks.items()}
        for i in range(8):
            if i == 3:
                mm.set_masks(masks)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if callable(cb.on_before_backward):
                cb.on_before_backward(types.SimpleNamespace(optimizers=[optimizer]), None, loss)
            loss.backward()
            if callable(cb.on_before_optimizer_step):
                cb.on_before_optimizer_step(None, None, optimizer)
            optimizer.step()
        cb.on_fit_end(_Optimizers(optimizer), None)
        return mm, optimizer, masks

    mm, optimizer, masks = train(zero_state=True)
    ref, _, _ = train(zero_state=False)
    for n, p, q in zip(mm.names, mm.params, ref.params):
        assert torch.equal(p.detach(), q.detach()), n  # kept weights bit for bit, pruned ones 0 in both
        state = optimizer.state[p]
        assert float(state["exp_avg"][~masks[n]].abs().max()) == 0.0
        assert float(state["exp_avg_sq"][~masks[n]].abs().max()) == 0.0
        assert float(state["exp_avg_sq"][masks[n]].abs().min()) > 0.0


class _FakeStrategy:
    def __init__(self, anyone: bool) -> None:
        self.anyone, self.calls = anyone, 0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        self.calls += 1
        return decision or self.anyone


class _FakeTrainer:
    def __init__(self, step: int, world_size: int = 1, anyone: bool = False) -> None:
        self.global_step, self.max_steps, self.world_size = step, 100, world_size
        self.strategy = _FakeStrategy(anyone)
        self.is_global_zero = True


def test_a_stop_request_is_agreed_across_ranks_only_every_few_steps_and_after_evaluations(tmp_path):
    from lth.preempt import AGREE_EVERY, Interrupted, StopSignals

    stop = StopSignals()
    ck = LastCheckpoint(tmp_path, every_n_steps=0, stop=stop, r=1)
    saved = []
    ck.save = lambda trainer: saved.append(trainer.global_step)
    quiet = _FakeTrainer(AGREE_EVERY + 1, world_size=2)
    ck._boundary(quiet, evaluated=False)  # not an agreement step: no collective at all
    assert quiet.strategy.calls == 0 and saved == []
    other = _FakeTrainer(2 * AGREE_EVERY, world_size=2, anyone=True)  # another rank got the signal
    with pytest.raises(Interrupted) as e:
        ck._boundary(other, evaluated=False)
    assert other.strategy.calls == 1 and saved == [2 * AGREE_EVERY]
    assert (e.value.round, e.value.step, e.value.code) == (1, 2 * AGREE_EVERY, 143)
    evaluated = _FakeTrainer(AGREE_EVERY + 3, world_size=2)
    ck._boundary(evaluated, evaluated=True)  # every rank evaluates at the same step: agreed there too
    assert evaluated.strategy.calls == 1
    single = _FakeTrainer(7)
    stop.signum = 10  # SIGUSR1 in this process
    with pytest.raises(Interrupted) as e:
        ck._boundary(single, evaluated=False)  # one process: at the very next step, no collective
    assert single.strategy.calls == 0 and saved[-1] == 7 and e.value.code == 138
    last = _FakeTrainer(100)
    ck._boundary(last, evaluated=False)  # the round's last step: it finishes; the next round's start stops the run
    assert saved[-1] == 7


def test_lean_callbacks_keep_their_own_hooks_and_drop_the_inherited_no_ops(tmp_path):
    from lth.lit import lean

    class Counter(pl.Callback):
        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            self.steps += 1

    counter, ck = Counter(), LastCheckpoint(tmp_path / "ck", every_n_steps=2)
    lean([counter, ck])
    assert counter.on_before_backward is None and counter.on_fit_start is None and counter.setup is None
    assert counter.on_save_checkpoint is not None  # called directly by Lightning: kept
    assert callable(ck.on_train_batch_end) and callable(ck.on_validation_end) and ck.on_after_backward is None
    model, mm = make()
    trainer([MaskingCallback(mm), counter, ck], tmp_path, max_steps=4).fit(
        TicketModule(model, OPTIMIZERS["adam"], num_classes=3), batches(4))
    assert counter.steps == 4 and (tmp_path / "ck" / "last.ckpt").exists()


def _lrs(optimizer_factory, scheduler_factory, steps):
    """The lr of each of `steps` optimizer steps, the scheduler stepped after each (Lightning's interval=step)."""
    opt = optimizer_factory([nn.Parameter(torch.zeros(2))])
    sched = scheduler_factory(opt) if scheduler_factory is not None else None
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return seen, opt


STEP_DECAY = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3, gamma=0.5)
WARMUP = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda s: min(1.0, (s + 1) / 4))


@pytest.mark.parametrize("scheduler, round0", [
    (STEP_DECAY, [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2]),
    (WARMUP, [0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8]),
])
def test_windowed_schedule_resumes_at_start_and_holds_the_last_lr(scheduler, round0):
    from lth.lit import windowed

    sgd = functools.partial(torch.optim.SGD, lr=0.8)
    seen = _lrs(sgd, scheduler, 8)[0]
    assert seen == pytest.approx(round0, abs=1e-15)
    for start in (0, 2, 5):
        opt, sched = windowed(sgd, scheduler, start)
        assert _lrs(opt, sched, 8 - start)[0] == seen[start:]  # bit for bit: the same float operations
    opt, sched = windowed(sgd, scheduler, 7, hold=True)
    assert sched is None
    assert _lrs(opt, sched, 5)[0] == [seen[7]] * 5


def test_windowed_leaves_a_round_without_window_or_schedule_unchanged():
    from lth.lit import windowed

    sgd = functools.partial(torch.optim.SGD, lr=0.8)
    assert windowed(sgd, STEP_DECAY, 0) == (sgd, STEP_DECAY)
    assert windowed(sgd, None, 5) == (sgd, None)
    assert windowed(sgd, None, 5, hold=True) == (sgd, None)


def test_windowed_adam_starts_with_fresh_moments_and_step_count():
    from lth.lit import windowed

    adam = functools.partial(torch.optim.Adam, lr=0.8)
    opt, _ = windowed(adam, STEP_DECAY, 5)
    optimizer = opt([nn.Parameter(torch.zeros(2))])
    assert optimizer.state_dict()["state"] == {}  # no moments, step 0: bias correction starts at step 1


@pytest.mark.parametrize("with_validation", [True, False])
def test_checkpoints_at_evaluation_steps_come_after_the_evaluation(tmp_path, with_validation):
    from lth.lit import validation_interval

    model, mm = make()
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    ck = LastCheckpoint(tmp_path / "ck", every_n_steps=2)
    saves: list[tuple[int, int]] = []  # (step, evaluations done when it was saved)
    ck.save = lambda t: (saves.append((t.global_step, len(module.history))), setattr(ck, "_saved_step", t.global_step))
    seen: list[int] = []

    class Interval(pl.Callback):
        def on_train_start(self, t, pl_module):
            seen.append(validation_interval(t))

    fit = trainer([MaskingCallback(mm), ck, Interval()], tmp_path, max_steps=8, val_check_interval=4,
                  check_val_every_n_epoch=None, num_sanity_val_steps=0)
    fit.fit(module, batches(8), [batches(2, seed=3), batches(2, seed=4)] if with_validation else None)
    if with_validation:  # steps 4 and 8 are evaluation steps: their checkpoint holds that evaluation
        assert seen == [4] and saves == [(2, 0), (4, 1), (6, 1), (8, 2)]
    else:
        assert seen == [0] and saves == [(2, 0), (4, 0), (6, 0), (8, 0)]


def test_running_accuracy_update_keeps_the_count_the_cache_reset_and_no_graph():
    import pickle

    from lth.lit import RunningAccuracy

    acc = RunningAccuracy()
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]], requires_grad=True)
    acc.update(logits, torch.tensor([0, 1, 1]))  # two hits
    assert acc.compute() == torch.tensor(2.0) / 3
    acc.update(logits[:1], torch.tensor([1]))  # a miss: the cached value of compute() is dropped
    assert acc.update_count == 2 and float(acc.compute()) == 0.5
    assert acc.correct.grad_fn is None and not acc.correct.requires_grad
    assert "_update_count" not in acc._buffers and "_computed" not in acc._modules
    copy = pickle.loads(pickle.dumps(acc))  # a spawned process's copy counts on
    copy.update(logits, torch.tensor([0, 1, 0]))
    assert copy.update_count == 3 and (int(copy.correct), int(copy.total)) == (5, 7)


def test_no_op_module_hooks_are_skipped_unless_a_subclass_overrides_them(tmp_path):
    from lth.lit import NO_OP_MODULE_HOOKS

    module = TicketModule(nn.Linear(2, 2), lambda p: torch.optim.SGD(p, lr=0.1), num_classes=2)
    assert all(getattr(module, name) is None for name in NO_OP_MODULE_HOOKS)
    assert callable(module.on_train_batch_end) and callable(module.on_validation_batch_end)

    class Counting(TicketModule):
        calls = 0

        def on_after_backward(self):
            type(self).calls += 1

    model, mm = make()
    counting = Counting(model, OPTIMIZERS["adam"], num_classes=3)
    assert counting.on_before_backward is None and callable(counting.on_after_backward)
    trainer([MaskingCallback(mm)], tmp_path, max_steps=3).fit(counting, batches(3))
    assert Counting.calls == 3


def test_lean_profiler_enters_one_shared_empty_context_and_lth_trainers_use_it(tmp_path):
    from types import SimpleNamespace

    from lth.lit import LeanProfiler, build_trainer

    profiler = LeanProfiler()
    first, second = profiler.profile("training_step"), profiler.profile("optimizer_step")
    assert first is second
    with first as entered:
        assert entered is None
    t = SimpleNamespace(eval_every=2, log_every_n_steps=1, accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                        precision="32-true", gradient_clip_val=None, accumulate_grad_batches=1, deterministic=True)
    trainer = build_trainer(t, 3, [], [], tmp_path)
    assert type(trainer.profiler) is LeanProfiler
    model, _ = make()
    module = TicketModule(model, OPTIMIZERS["adam"], num_classes=3)
    trainer.fit(module, batches(3), batches(2))
    assert trainer.global_step == 3 and [h["step"] for h in module.history] == [2]  # (the runner evaluates step 3)


def test_training_step_signature_is_cached_and_unchanged():
    import inspect

    from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

    class Own(TicketModule):
        def training_step(self, batch, batch_idx, extra=None):
            return super().training_step(batch, batch_idx)

    fresh = inspect.signature(Own.training_step)
    module = Own(nn.Linear(2, 2), lambda p: torch.optim.SGD(p, lr=0.1), num_classes=2)
    assert vars(Own.training_step)["__signature__"] == fresh  # a subclass's own method gets its own copy
    assert list(inspect.signature(module.training_step).parameters) == ["batch", "batch_idx", "extra"]
    assert is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)
    assert "__signature__" in vars(TicketModule.training_step)
