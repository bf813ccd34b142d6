"""Rethinking the value of pruning (Liu et al.): pruned + fine-tuned vs the pruned architecture trained from scratch.

    python scripts/scratch_baselines.py --model cnn1d --seeds 0 1 2 --steps 3000

Per seed: train the dense model for `--steps` steps; remove `--prune` of the neurons/filters of every removable layer
in one shot (L1 norm, layerwise; output layer kept; `lth.pruning.select_neurons`); then train three copies of the
pruned architecture (masked training, the same path `lth-run` takes; its outputs equal the compacted network's):
  fine-tuned  the trained survivors, `--finetune-steps` more steps at each of `--finetune-lrs` (Liu et al.: a
              quarter of the schedule at the schedule's final lr);
  scratch-E   a fresh seeded init of the compacted architecture (`lth.structured.scratch_state`), `--steps` steps;
  scratch-B   the same init, steps × FLOPs_dense / FLOPs_pruned steps (`lth.structured.scratch_steps`, `--cap`).
Prints and writes a Markdown table of test accuracy (mean ± std over seeds), final and at the best-validation step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lth.data import build_datamodule
from lth.lit import MaskingCallback, TicketModule
from lth.masks import MaskManager
from lth.models import build_model, reinitialize
from lth.pruning import alive_units, neuron_scores, select_neurons
from lth.structured import compact, flops, scratch_state, scratch_steps, unit_layout

MODEL_ARGS: dict[str, dict[str, Any]] = {"cnn1d": {}, "mlp": {"hidden": [256, 256]}}


def train(model: torch.nn.Module, manager: MaskManager, data: Any, steps: int, lr: float, eval_every: int,
          num_classes: int) -> dict[str, float]:
    """Train `model` under the manager's masks for `steps` Adam steps; final and early-stop test accuracy."""
    module = TicketModule(model, lambda p: torch.optim.Adam(p, lr=lr), num_classes)
    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, val_check_interval=eval_every, check_val_every_n_epoch=None,
                         num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, logger=False, callbacks=[MaskingCallback(manager)],
                         accelerator="cpu", deterministic=True)
    evals = [data.val_dataloader(), data.test_dataloader()]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, data.train_dataloader(), evals)
        if not module.history or module.history[-1]["step"] != trainer.global_step:
            trainer.validate(module, evals, verbose=False)
    return {"final": module.history[-1]["test_acc"], "early_stop": module.early_stop()["test_acc"],
            "steps": int(trainer.global_step)}


def evaluate(model: torch.nn.Module, data: Any) -> float:
    x, y = data.test
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    model.train()
    return acc


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    pl.seed_everything(seed, workers=True, verbose=False)
    data = build_datamodule(args.data, root=args.data_root, batch_size=args.batch_size, seed=seed)
    data.setup("fit")
    model = build_model(args.model, data.input_shape, data.num_classes, **MODEL_ARGS.get(args.model, {}))
    reinitialize(model, seed)
    manager = MaskManager(model)
    x = torch.zeros(1, *data.input_shape)
    res: dict[str, Any] = {"seed": seed}
    res["dense"] = train(model, manager, data, args.steps, args.lr, args.eval_every, data.num_classes)

    layout = unit_layout(model, x, manager.names)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    scores = neuron_scores("l1", manager.current(), manager.masks)
    masks = select_neurons(scores, manager.masks, args.prune, removable=layout.removable, consumers=layout.consumers)
    f_dense, f_pruned = flops(model, x)["flops_dense"], flops(model, x, masks)["flops_nonzero"]
    res["units"] = {n: [int(a.sum()), a.numel()] for n, a in alive_units(masks).items()}
    res["flops"] = [f_dense, f_pruned]
    manager.set_masks(masks)
    res["pruned"] = {"final": evaluate(model, data)}

    pruned_state = {k: v.clone() for k, v in model.state_dict().items()}
    for lr in args.finetune_lrs:
        model.load_state_dict(pruned_state)
        res[f"fine-tuned, lr {lr:g}"] = train(model, manager, data, args.finetune_steps, lr, args.eval_every,
                                              data.num_classes)
        small = compact(model, masks, x)
        xt = data.test[0][:64]
        assert torch.allclose(small(xt), model(xt), atol=1e-4), "compacted network differs from the masked one"

    b_steps = scratch_steps(args.steps, f_dense, f_pruned, cap=args.cap)
    for name, steps in (("scratch-E", args.steps), ("scratch-B", b_steps)):
        model.load_state_dict(trained)
        model.load_state_dict(scratch_state(model, masks, seed=10_000 + seed))
        manager.set_masks(masks)
        res[name] = train(model, manager, data, steps, args.lr, args.eval_every, data.num_classes)
    return res


def mean_std(xs: list[float]) -> str:
    m = 100 * statistics.mean(xs)
    return f"{m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{m:.1f}"


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    r0 = results[0]
    f_dense, f_pruned = r0["flops"]
    units = ", ".join(f"{k}/{n}" for k, n in r0["units"].values())
    rows = ["| network | steps | test acc. final (%) | test acc. at best val. (%) |", "|---|---:|---:|---:|"]
    names = ["dense", "pruned", *(f"fine-tuned, lr {lr:g}" for lr in args.finetune_lrs), "scratch-E", "scratch-B"]
    for name in names:
        final = mean_std([r[name]["final"] for r in results])
        es = [r[name].get("early_stop") for r in results]
        steps = {"dense": args.steps, "pruned": 0}.get(name, r0[name].get("steps"))
        rows.append(f"| {name} | {steps} | {final} | {mean_std(es) if None not in es else '–'} |")
    head = (f"{args.model} on {args.data}: {args.prune:.0%} of the units of each removable layer removed by L1 norm "
            f"(units kept per layer: {units}); FLOPs {f_dense} → {f_pruned} per example (×{f_dense / f_pruned:.2f}). "
            f"Adam lr {args.lr} (constant), batch {args.batch_size}. "
            f"Mean ± std over seeds {[r['seed'] for r in results]}.")
    return head + "\n\n" + "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn1d", choices=sorted(MODEL_ARGS))
    ap.add_argument("--data", default="mnist1d")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--prune", type=float, default=0.5, help="fraction of units removed per removable layer")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--finetune-steps", type=int, default=None, help="default: steps / 4")
    ap.add_argument("--finetune-lrs", type=float, nargs="+", default=None,
                    help="one fine-tuned row per lr (default: lr, the final lr of the constant schedule, and lr / 10)")
    ap.add_argument("--cap", type=float, default=None, help="scratch-B: at most cap × steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write per-seed results here")
    ap.add_argument("--table", default=None, help="write the Markdown table here")
    args = ap.parse_args()
    args.finetune_steps = args.finetune_steps or max(1, args.steps // 4)
    args.finetune_lrs = args.finetune_lrs or [args.lr, args.lr / 10]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = [one_seed(args, s) for s in args.seeds]
    text = table(results, args) + f"\n\n({time.perf_counter() - start:.0f} s on {args.threads} CPU thread(s).)\n"
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(text)


if __name__ == "__main__":
    main()
