"""Invariants, property-tested: pruned weights stay at their mask-0 value through any training; masks never revive;
selection removes exactly `removal_count`; resets touch only kept weights."""

import functools
import itertools

import pytorch_lightning as pl
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lth.lit import MaskingCallback, TicketModule
from lth.masks import MaskManager
from lth.pruning import removal_count, select
from lth.reset import RESETS, ResetContext, reset_weights

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OPTIMIZERS = {
    "sgd": lambda p, wd: torch.optim.SGD(p, lr=0.1, weight_decay=wd),
    "sgd_momentum": lambda p, wd: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=wd),
    "sgd_nesterov": lambda p, wd: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=wd),
    "adam": lambda p, wd: torch.optim.Adam(p, lr=0.05, weight_decay=wd),
    "adamw": lambda p, wd: torch.optim.AdamW(p, lr=0.05, weight_decay=wd),
    "adam_fused_amsgrad": lambda p, wd: torch.optim.Adam(p, lr=0.05, weight_decay=wd, fused=True, amsgrad=True),
    "adamw_fused": lambda p, wd: torch.optim.AdamW(p, lr=0.05, weight_decay=wd, fused=True),
    "rmsprop_momentum": lambda p, wd: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=wd),  # re-masked
}


class Conv(nn.Module):
    """A tiny conv net on (N, 2, 6, 6) inputs."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, channels, 3)
        self.head = nn.Linear(channels * 16, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


@st.composite
def networks(draw):
    """(model, example inputs, number of classes) of a random small MLP or conv net."""
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    classes = draw(st.integers(2, 4))
    if draw(st.booleans()):
        widths = draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))
        dims = [5, *widths]
        layers = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b, bias=draw(st.booleans())), nn.Tanh()]
        model = nn.Sequential(*layers, nn.Linear(dims[-1], classes))
        x = torch.randn(12, 5)
    else:
        model = Conv(draw(st.integers(1, 4)), classes)
        x = torch.randn(12, 2, 6, 6)
    return model, x, torch.randint(0, classes, (12,)), seed


def random_masks(manager, seed, density):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=g) < density for n, m in manager.masks.items()}


def pruned_values(manager):
    """What every pruned weight must equal: 0, or its θ0 value with freeze_init."""
    init = manager.weights("init")
    return {n: (torch.zeros_like(p) if manager.mask0 == "zero" else init[n]).detach().clone()
            for n, p in zip(manager.names, manager.params)}


def assert_pruned_at_mask0(manager, expected, where):
    for n, p in zip(manager.names, manager.params):
        off = ~manager.masks[n]
        assert torch.equal(p.detach()[off], expected[n][off]), f"{n}: a pruned weight moved ({where})"


class _Stub:
    """The part of a Trainer the masking callback reads."""

    def __init__(self, optimizer, world_size=1):
        self.optimizers = [optimizer]
        self.world_size = world_size


@FAST
@given(
    net=networks(),
    density=st.floats(0.05, 0.95),
    mask0=st.sampled_from(["zero", "freeze_init"]),
    opt=st.sampled_from(sorted(OPTIMIZERS)),
    wd=st.sampled_from([0.0, 0.01, 0.5]),
    clip=st.sampled_from([None, ("norm", 0.05), ("value", 0.01)]),
    accumulate=st.integers(1, 3),
    steps=st.integers(1, 6),
    world_size=st.sampled_from([1, 2]),  # gradients masked in backward's hooks (one process) / before the step (DDP)
)
def test_pruned_weights_stay_at_their_mask0_value_after_every_step(net, density, mask0, opt, wd, clip, accumulate,
                                                                    steps, world_size):
    model, x, y, seed = net
    manager = MaskManager(model, mask0=mask0)
    manager.set_masks(random_masks(manager, seed, density))
    expected = pruned_values(manager)
    optimizer = OPTIMIZERS[opt](model.parameters(), wd)
    callback = MaskingCallback(manager)
    stub = _Stub(optimizer, world_size)
    callback.on_fit_start(stub, None)  # applies the masks, hooks the re-masking after each optimizer step
    assert_pruned_at_mask0(manager, expected, "fit start")
    for step in range(steps):  # Lightning's order: backward (accumulated) → mask grads → clip → step → re-mask
        for micro in range(accumulate):
            part = slice(micro * 4, micro * 4 + 4)
            loss = nn.functional.cross_entropy(model(x[part]), y[part]) / accumulate
            if callable(callback.on_before_backward):  # the hooks Lightning calls: those that are callable
                callback.on_before_backward(stub, None, loss)
            loss.backward()
        if callable(callback.on_before_optimizer_step):
            callback.on_before_optimizer_step(stub, None, optimizer)
        for n, p in zip(manager.names, manager.params):
            if p.grad is not None:
                assert torch.all(p.grad[~manager.masks[n]] == 0), f"{n}: a pruned gradient reached the optimizer"
        if clip is not None and clip[0] == "norm":
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip[1])
        elif clip is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip[1])
        optimizer.step()
        optimizer.zero_grad()
        assert_pruned_at_mask0(manager, expected, f"after step {step}")
    callback.on_fit_end(stub, None)


def test_without_the_masking_callback_pruned_weights_do_move():
    """The property above is not vacuous: the same loop without grad masking and re-masking breaks it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    manager = MaskManager(model)
    manager.set_masks(random_masks(manager, 0, 0.5))
    expected = pruned_values(manager)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    moved = sum(int((p.detach()[~manager.masks[n]] != expected[n][~manager.masks[n]]).sum())
                for n, p in zip(manager.names, manager.params))
    assert moved == sum(int((~m).sum()) for m in manager.masks.values())  # Adam moves every weight with a gradient


class _Batches:
    def __init__(self, x, y, batch):
        self.items = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


class _EveryBatch(pl.Callback):
    def __init__(self, manager, expected):
        self.manager, self.expected, self.checked = manager, expected, 0

    def on_train_batch_end(self, trainer, pl_module, *args):
        assert_pruned_at_mask0(self.manager, self.expected, f"Trainer step {trainer.global_step}")
        self.checked += 1


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    net=networks(),
    density=st.floats(0.1, 0.9),
    mask0=st.sampled_from(["zero", "freeze_init"]),
    opt=st.sampled_from(sorted(OPTIMIZERS)),
    clip=st.sampled_from([None, 0.05]),
    accumulate=st.integers(1, 2),
)
def test_pruned_weights_stay_at_their_mask0_value_under_the_lightning_trainer(tmp_path_factory, net, density, mask0,
                                                                               opt, clip, accumulate):
    model, x, y, seed = net
    manager = MaskManager(model, mask0=mask0)
    manager.set_masks(random_masks(manager, seed, density))
    expected = pruned_values(manager)
    check = _EveryBatch(manager, expected)
    module = TicketModule(model, functools.partial(OPTIMIZERS[opt], wd=0.1), num_classes=4)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
                         limit_val_batches=0, gradient_clip_val=clip, accumulate_grad_batches=accumulate,
                         callbacks=[MaskingCallback(manager), check],
                         default_root_dir=tmp_path_factory.mktemp("trainer"))
    trainer.fit(module, _Batches(x, y, 3))
    assert check.checked == 4 * accumulate
    assert_pruned_at_mask0(manager, expected, "end of fit")


@st.composite
def score_sets(draw):
    """Per-layer scores (with ties) and current masks of 1-3 random layers."""
    n_layers = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    scores, masks = {}, {}
    for i in range(n_layers):
        shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=2)))
        levels = draw(st.sampled_from([3, 1000]))  # few levels: many ties
        scores[f"l{i}.weight"] = torch.randint(0, levels, shape, generator=g).float()
        masks[f"l{i}.weight"] = torch.rand(shape, generator=g) < draw(st.floats(0.2, 1.0))
    return scores, masks


@FAST
@given(
    sets=score_sets(),
    fraction=st.floats(0.01, 0.99),
    scope=st.sampled_from(["layerwise", "global"]),
    rounds=st.integers(1, 4),
    override=st.one_of(st.none(), st.floats(0.0, 0.9)),
)
def test_selection_removes_exactly_the_documented_count_and_never_revives(sets, fraction, scope, rounds, override):
    scores, masks = sets
    overrides = {"l0": override} if override is not None else None
    own = {n: fraction for n in masks}
    if override is not None:
        own["l0.weight"] = override
    # the documented groups: each layer alone (layerwise, or a layer with an override), or the global pool
    alone = list(masks) if scope == "layerwise" else [n for n in masks if override is not None and n == "l0.weight"]
    groups = [([n], own[n]) for n in alone]
    pool = [n for n in masks if n not in alone]
    if pool:
        groups.append((pool, fraction))
    for _ in range(rounds):
        new = select(scores, masks, fraction, scope=scope, overrides=overrides)
        for n in masks:
            assert new[n].shape == masks[n].shape and new[n].dtype == torch.bool
            assert not torch.any(new[n] & ~masks[n]), f"{n}: a pruned weight was revived"
        for names, frac in groups:
            kept = sum(int(masks[n].sum()) for n in names)
            removed = kept - sum(int(new[n].sum()) for n in names)
            assert removed == min(removal_count(frac, kept), kept), (names, frac, kept)
            # the lowest scores go: every removed score <= every kept score of the group
            gone = torch.cat([scores[n][masks[n] & ~new[n]] for n in names])
            stay = torch.cat([scores[n][new[n]] for n in names])
            if gone.numel() and stay.numel():
                assert gone.max() <= stay.min()
        masks = new


@FAST
@given(
    net=networks(),
    density=st.floats(0.05, 0.95),
    mask0=st.sampled_from(["zero", "freeze_init"]),
    reset=st.sampled_from(sorted(RESETS)),
)
def test_resets_touch_only_kept_weights(net, density, mask0, reset):
    model, _, _, seed = net
    manager = MaskManager(model, mask0=mask0)
    expected = pruned_values(manager)
    masks = random_masks(manager, seed, density)
    g = torch.Generator().manual_seed(seed + 1)
    current = {n: torch.randn(p.shape, generator=g) for n, p in zip(manager.names, manager.params)}
    ctx = ResetContext(
        source={n: w.clone() for n, w in manager.weights("init").items()},
        current=current,
        masks=masks,
        fresh=lambda: {n: torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + 2))
                       for n, p in zip(manager.names, manager.params)},
        generator=torch.Generator().manual_seed(seed + 3),
    )
    inputs = {k: {n: t.clone() for n, t in getattr(ctx, k).items()} for k in ("source", "current", "masks")}
    new = reset_weights(reset, ctx)
    for k, v in inputs.items():  # inputs are never modified
        assert all(torch.equal(getattr(ctx, k)[n], v[n]) for n in v), f"{reset} modified ctx.{k}"
    manager.set_masks(masks)
    manager.load_weights(new)
    for n, p in zip(manager.names, manager.params):
        m = masks[n]
        assert torch.equal(p.detach()[~m], expected[n][~m]), f"{reset}: a pruned weight of {n} is not its mask-0 value"
        assert torch.equal(p.detach()[m], new[n][m].to(p.dtype)), f"{reset}: a kept weight of {n} is not the reset's"
