"""The gradient-free path of a trial: a fusion that fits itself (fusion.lightgbm: trees;
fusion.linear: a probe) gets the features of every training and val row once, fits on them
(early-stopped or regularized on val), and is reported and checkpointed like a neural trial's
final epoch, so the pool, the ensemble and the bundle take it as any other member."""
from __future__ import annotations

import time

import numpy as np
import torch

from ..layout.checkpoint_dir import CheckpointDir
from . import checkpoint
from .evaluate import to_device


def fit_once(model, cfg, ctx, *, evaluate, train_loader, val_loader, problem: str, metric: str, say) -> dict:
    """Fit, evaluate on val and holdout, write the final checkpoint; return the final report. A
    trial that finished before (a restart) reports its checkpoint's result again."""
    resume = ctx.latest_checkpoint()
    if resume is not None and (trainer := CheckpointDir(resume).trainer()).get("finished"):
        ctx.resumed(trainer)
        ctx.report(trainer["final_metrics"], None, again=True)
        return trainer["final_metrics"]
    t0 = time.perf_counter()
    train, val = _inputs(model, train_loader, ctx.device), _inputs(model, val_loader, ctx.device)
    # input transforms (the trees' PCA of each tower, the probe's one-hot widths): training rows only
    model.fusion.fit_inputs(train["pooled"], train["num"], train["num_mask"], train["cat"])
    x, y = model.fusion.features(train["pooled"], train["num"], train["num_mask"], train["cat"]), train["label"]
    x_val, y_val = model.fusion.features(val["pooled"], val["num"], val["num_mask"], val["cat"]), val["label"]
    n_cat = train["cat"].shape[1]  # the categorical columns come last
    # one thread below ~20k rows: LightGBM's OpenMP threads spin-wait, and on a busy machine 2 threads
    # took 29 s where 1 took 1.1 s (210 rows x 291 features, 200 rounds, 2 loaded cores)
    threads = 1 if len(y) < 20_000 else torch.get_num_threads()
    fitted = model.fusion.fit(x, y, x_val, y_val, n_cat=n_cat, problem_type=problem, seed=cfg.train.seed, threads=threads)
    preds, final = {}, {}
    for part in ("val", "holdout"):
        preds[part], final[f"{part}_loss"], final[f"{part}_{metric}"], final[f"{part}_score"] = evaluate(model, part)
    row = {"epoch": 1, "metric": metric, "val_score": final["val_score"], f"val_{metric}": final[f"val_{metric}"],
           "val_loss": final["val_loss"], f"holdout_{metric}": final[f"holdout_{metric}"], "train_loss": float("nan"),
           "epoch_time_s": time.perf_counter() - t0, **{f"{model.fusion.name}_{k}": v for k, v in fitted.items()}}
    report = {**row, **final, "final": True, "world_size": ctx.world_size}
    say(f"fitted {model.fusion.name} ({', '.join(f'{k} {v}' for k, v in fitted.items())}) on {len(y)} rows in "
        f"{row['epoch_time_s']:.1f} s  val_{metric} {report[f'val_{metric}']:.4f}  holdout_{metric} {report[f'holdout_{metric}']:.4f}")
    trainer = {"epoch": 1, "step": 0, "history": [row], "finished": True, "final_metrics": report}
    ckpt = None
    if ctx.rank == 0:
        ckpt = checkpoint.write(ctx.scratch_dir(), model=model, preds=preds, trainer=trainer, config=cfg.to_flat())
    ctx.report(report, ckpt)
    return report


@torch.no_grad()
def _inputs(model, loader, device) -> dict:
    """Every row's fusion inputs, encoded once: {"pooled": modality -> [N, d], "num", "num_mask",
    "cat", "label"}."""
    model.eval()
    pooled: dict[str, list] = {}
    rest: dict[str, list] = {k: [] for k in ("num", "num_mask", "cat", "label")}
    for batch in loader:
        batch = to_device(batch, device)
        encoded, num, num_mask, cat = model.fusion.inputs(model.encode(batch), batch)
        for m, value in encoded.items():
            pooled.setdefault(m, []).append(value)
        for k, value in zip(rest, (num, num_mask, cat, batch["label"].cpu().numpy())):
            rest[k].append(value)
    return {"pooled": {m: np.concatenate(v) for m, v in pooled.items()}, **{k: np.concatenate(v) for k, v in rest.items()}}
