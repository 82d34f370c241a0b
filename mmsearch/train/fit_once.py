"""The gradient-free path of a trial: a fusion that fits itself (fusion.lightgbm: trees) gets the
features of every training and val row once, fits on them (early-stopped on val), and is reported
and checkpointed like a neural trial's final epoch, so the pool, the ensemble and the bundle take
it as any other member."""
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
        ctx.report(trainer["final_metrics"], None)
        return trainer["final_metrics"]
    t0 = time.perf_counter()
    if hasattr(model.fusion, "fit_reduction"):  # reductions of the towers' encodings, on the training rows only
        model.fusion.fit_reduction(_encodings(model, train_loader, ctx.device))
    (x, y, n_cat), (x_val, y_val, _) = _features(model, train_loader, ctx.device), _features(model, val_loader, ctx.device)
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
def _encodings(model, loader, device) -> dict[str, np.ndarray]:
    """modality -> every row's pooled encoding [N, d]."""
    model.eval()
    parts: dict[str, list] = {}
    for batch in loader:
        for m, out in model.encode(to_device(batch, device)).items():
            parts.setdefault(m, []).append(out.pooled.float().cpu().numpy().astype(np.float64))
    return {m: np.concatenate(v) for m, v in parts.items()}


@torch.no_grad()
def _features(model, loader, device) -> tuple[np.ndarray, np.ndarray, int]:
    """(features [N, F], labels [N], number of categorical columns, which come last)."""
    model.eval()
    xs, ys, n_cat = [], [], 0
    for batch in loader:
        batch = to_device(batch, device)
        xs.append(model.fusion.features(model.encode(batch), batch))
        ys.append(batch["label"].cpu().numpy())
        n_cat = model.fusion.n_categorical(batch)
    return np.concatenate(xs), np.concatenate(ys), n_cat
