"""Reset strategies on hand-written tensors."""

import math

import pytest
import torch

from lth.reset import RESETS, Budget, ResetContext, Window, reset_weights

# population std: "a" mean 1, deviations ±2 → σ 2; "b" mean −2, deviations ±2 → σ 2
SOURCE = {"a": torch.tensor([3.0, -1.0, 3.0, -1.0]), "b": torch.tensor([[0.0, -4.0], [-4.0, 0.0]])}
CURRENT = {"a": torch.tensor([0.3, 0.2, 0.1, 0.0]), "b": torch.tensor([[9.0, 8.0], [7.0, 6.0]])}
FRESH = {"a": torch.tensor([-0.5, 0.25, 1.5, -2.0]), "b": torch.tensor([[-1.0, -1.0], [2.0, 3.0]])}
MASKS = {"a": torch.tensor([True, False, True, False]), "b": torch.tensor([[True, True], [False, True]])}


def make_ctx(seed=0, source=None, masks=None):
    fresh_calls = []

    def fresh():
        fresh_calls.append(1)
        return {n: w.clone() for n, w in FRESH.items()}

    ctx = ResetContext(
        source={n: w.clone() for n, w in (source or SOURCE).items()},
        current={n: w.clone() for n, w in CURRENT.items()},
        masks={n: m.clone() for n, m in (masks or MASKS).items()},
        fresh=fresh,
        generator=torch.Generator().manual_seed(seed),
    )
    return ctx, fresh_calls


def test_registered_names():
    assert set(RESETS) == {
        "rewind", "random_reinit", "reshuffle", "signed_constant", "signed_reinit", "signed_reshuffle",
        "rand_signed_constant", "continue", "scratch_e", "scratch_b", "lr_rewind", "finetune",
    }


def test_rewind_continue_random_reinit():
    ctx, calls = make_ctx()
    for name, expected in (("rewind", SOURCE), ("continue", CURRENT), ("random_reinit", FRESH), ("lr_rewind", CURRENT),
                           ("finetune", CURRENT)):
        out = reset_weights(name, ctx)
        assert list(out) == ["a", "b"]
        for n in out:
            assert torch.equal(out[n], expected[n]), (name, n)
    assert len(calls) == 1


def test_signed_constant_uses_whole_tensor_std():
    ctx, _ = make_ctx()
    out = reset_weights("signed_constant", ctx)
    # σ_a = 2 over all four values (kept-only 3, 3 would give 0); sign(0) → +1
    assert out["a"].tolist() == [2.0, -2.0, 2.0, -2.0]
    assert out["b"].tolist() == [[2.0, -2.0], [-2.0, 2.0]]


def test_signed_constant_hand_sigma():
    ctx, _ = make_ctx(source={"a": torch.tensor([1.0, -2.0, 3.0, -0.5]), "b": SOURCE["b"]})
    # mean 0.375; squared deviations 0.390625 + 5.640625 + 6.890625 + 0.765625 = 13.6875; / 4 = 3.421875
    sigma = math.sqrt(3.421875)
    out = reset_weights("signed_constant", ctx)
    torch.testing.assert_close(out["a"], torch.tensor([sigma, -sigma, sigma, -sigma]))


def test_signed_reinit():
    ctx, calls = make_ctx()
    out = reset_weights("signed_reinit", ctx)
    assert out["a"].tolist() == [0.5, -0.25, 1.5, -2.0]
    assert out["b"].tolist() == [[1.0, -1.0], [-2.0, 3.0]]
    assert len(calls) == 1


def test_reshuffle_permutes_kept_values_only():
    src = {"a": torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]), "b": torch.arange(1.0, 9.0)}
    masks = {"a": torch.tensor([True, False, True, True, False]), "b": torch.ones(8, dtype=torch.bool)}
    moved = False
    for seed in range(10):
        ctx, _ = make_ctx(seed, source=src, masks=masks)
        out = reset_weights("reshuffle", ctx)
        assert sorted(out["a"][masks["a"]].tolist()) == [10.0, 30.0, 40.0]
        assert sorted(out["b"].tolist()) == list(range(1, 9))
        moved |= out["a"][masks["a"]].tolist() != [10.0, 30.0, 40.0]
        again = reset_weights("reshuffle", make_ctx(seed, source=src, masks=masks)[0])
        assert torch.equal(out["a"], again["a"]) and torch.equal(out["b"], again["b"])
    assert moved


def test_signed_reshuffle_keeps_signs_in_place():
    src = {"a": torch.tensor([-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]), "b": torch.tensor([[1.0, -1.0], [2.0, -2.0]])}
    masks = {"a": torch.tensor([True, True, True, True, True, False]), "b": torch.ones(2, 2, dtype=torch.bool)}
    moved = False
    for seed in range(10):
        out = reset_weights("signed_reshuffle", make_ctx(seed, source=src, masks=masks)[0])
        kept = out["a"][masks["a"]]
        assert torch.equal(torch.sign(kept), torch.tensor([-1.0, 1.0, -1.0, 1.0, -1.0]))
        assert sorted(kept.abs().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
        moved |= kept.abs().tolist() != [1.0, 2.0, 3.0, 4.0, 5.0]
    assert moved


def test_rand_signed_constant():
    src = {"a": torch.tensor([3.0, -1.0] * 500), "b": SOURCE["b"]}
    masks = {"a": torch.ones(1000, dtype=torch.bool), "b": MASKS["b"]}
    out = reset_weights("rand_signed_constant", make_ctx(5, source=src, masks=masks)[0])
    assert torch.equal(out["a"].abs(), torch.full((1000,), 2.0))
    positives = int((out["a"] > 0).sum())
    assert 400 < positives < 600
    again = reset_weights("rand_signed_constant", make_ctx(5, source=src, masks=masks)[0])
    assert torch.equal(out["a"], again["a"])
    other = reset_weights("rand_signed_constant", make_ctx(6, source=src, masks=masks)[0])
    assert not torch.equal(out["a"], other["a"])


@pytest.mark.parametrize("name", sorted(RESETS))
def test_inputs_untouched_and_no_aliasing(name):
    ctx, _ = make_ctx(1)
    out = reset_weights(name, ctx)
    for n in out:
        assert out[n].shape == SOURCE[n].shape and out[n].dtype == torch.float32
        out[n].add_(100.0)
    for given, original in ((ctx.source, SOURCE), (ctx.current, CURRENT), (ctx.masks, MASKS)):
        for n in original:
            assert torch.equal(given[n], original[n]), (name, n)
    first = reset_weights(name, make_ctx(1)[0])
    second = reset_weights(name, make_ctx(1)[0])
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_errors():
    ctx, _ = make_ctx()
    with pytest.raises(ValueError, match="unknown reset 'rewnd'; valid choices: continue, finetune, lr_rewind, rand_signed_constant"):
        reset_weights("rewnd", ctx)
    ctx.source = {"a": SOURCE["a"]}
    with pytest.raises(ValueError, match=r"source lacks masked layers \['b'\]"):
        reset_weights("rewind", ctx)
    ctx.source = {"a": SOURCE["a"], "b": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"layer 'b': source shape \(3,\) != mask shape \(2, 2\)"):
        reset_weights("signed_constant", ctx)


def _budget(k=0, resume=True, finetune_steps=None, from_rewind=None):
    return Budget(max_steps=100, flops_dense=10.0, flops_pruned=4.0, finetune_steps=finetune_steps, rewind_step=k,
                  from_rewind=k > 0 if from_rewind is None else from_rewind, resume=resume)


@pytest.mark.parametrize("name", ["rewind", "random_reinit", "reshuffle", "signed_constant", "signed_reinit",
                                  "signed_reshuffle", "rand_signed_constant"])
def test_resets_from_the_source_resume_the_schedule_at_k(name):
    reset = RESETS[name]
    assert (reset.window(_budget(30)), reset.steps(_budget(30))) == (Window(30), 70)
    assert (reset.window(_budget(30, resume=False)), reset.steps(_budget(30, resume=False))) == (Window(0), 100)
    assert (reset.window(_budget(0)), reset.steps(_budget(0))) == (Window(0), 100)
    # a source of θ0 (no θk snapshot) restarts the schedule whatever k says
    assert (reset.window(_budget(30, from_rewind=False)), reset.steps(_budget(30, from_rewind=False))) == (Window(0), 100)


def test_windows_of_the_trained_state_and_scratch_resets():
    for k in (0, 30):
        for resume in (True, False):
            b = _budget(k, resume)
            assert (RESETS["continue"].window(b), RESETS["continue"].steps(b)) == (Window(0), 100)
            assert (RESETS["scratch_e"].window(b), RESETS["scratch_e"].steps(b)) == (Window(0), 100)
            assert (RESETS["scratch_b"].window(b), RESETS["scratch_b"].steps(b)) == (Window(0), 250)  # 100 × 10/4
            # lr_rewind replays from k whatever ticket.rewind_schedule says (0: the whole schedule)
            assert (RESETS["lr_rewind"].window(b), RESETS["lr_rewind"].steps(b)) == (Window(k), 100 - k)
            b = _budget(k, resume, from_rewind=False)  # lr_rewind needs no θk snapshot
            assert (RESETS["lr_rewind"].window(b), RESETS["lr_rewind"].steps(b)) == (Window(k), 100 - k)
            # finetune: the lr of round 0's last step (99), held; ticket.finetune_steps long
            assert (RESETS["finetune"].window(b), RESETS["finetune"].steps(b)) == (Window(99, hold=True), 100)
    assert RESETS["finetune"].steps(_budget(finetune_steps=25)) == 25


def test_lr_rewind_and_finetune_ignore_finetune_lr():
    factory = object()
    assert RESETS["lr_rewind"].optimizer(factory, 0.5) is factory
    assert RESETS["finetune"].optimizer(factory, 0.5) is factory
