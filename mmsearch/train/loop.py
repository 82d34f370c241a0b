"""The training loop: what one trial runs, in-process or in each Ray Train (DDP) worker.

train(trial, data_dir, ctx): build the model from the flat trial config, apply the trial's
tricks at their hooks, train with validation + a checkpoint every epoch, continue from the
context's latest checkpoint if there is one, apply after-fit tricks (the soup), and report the
final weights with their predictions on val and holdout.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from .. import metrics as metric_fns
from ..config import TrialConfig
from ..data import feature_cache
from ..data.dataset import RowDataset
from ..data.prepare import PreparedData
from ..losses import task_loss
from ..models.model import build_model
from ..tricks import TrainState, build_tricks, row_hooks
from . import checkpoint, stopping
from .evaluate import autocast, predict, to_device
from .fit_once import fit_once
from .optim import base_schedule, make_optimizer, param_specs

EVAL_PARTS = ("val", "holdout")


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite: the trial is recorded as errored with this cause."""


def train(trial: dict, data_dir: str | Path, ctx) -> dict:
    cfg = TrialConfig.from_flat(trial)
    data = PreparedData.load(data_dir)
    problem = data.schema.problem_type
    metric = metric_fns.default_metric(problem)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank

    # -- model, tricks, data -----------------------------------------------------------------
    model = build_model(cfg, data)
    tricks = [] if model.fusion.fits_itself else build_tricks(cfg.enabled_tricks())  # trees: no trick applies

    encodings: dict = {}  # frozen encoders' cached encodings, when the trial can use them (below)

    def dataset(part: str, **kw) -> RowDataset:
        return RowDataset(data, part, view=model.view, image_size=model.image_size, tokenize=model.tokenize,
                          encodings=encodings, **kw)

    def evaluate(m, part="val"):
        """(predictions, loss, metric value, score = the value signed so that higher is better)."""
        preds, _, loss = predict(m, eval_loaders[part], ctx.device, cfg.train.precision, problem)
        preds = _decoded(data, preds)
        value = metric_fns.score(metric, truth[part], preds)
        return preds, loss, value, value if metric_fns.higher_is_better(metric) else -value

    batch = cfg.optim.worker_batch(ctx.world_size)
    loader_args = dict(num_workers=cfg.train.loader_workers, persistent_workers=cfg.train.loader_workers > 0)

    def rows_loader(rows, shuffle: torch.Generator | None = None) -> DataLoader:
        """TrainState.loader: training rows in evaluation batches, no augmentation."""
        ds = dataset("train", rows=rows)
        return DataLoader(ds, batch_size=cfg.optim.eval_batch(ctx.world_size),
                          sampler=None if shuffle is None else RandomSampler(ds, generator=shuffle), **loader_args)
    state = TrainState(problem_type=problem, device=ctx.device, generator=torch.Generator(),
                       evaluate=lambda m: evaluate(m)[3], modalities=tuple(model.fusion.modalities),
                       rank=ctx.rank, world_size=ctx.world_size, seed=cfg.train.seed,
                       lr=cfg.optim.lr, loader=rows_loader, autocast=lambda: autocast(ctx.device, cfg.train.precision))
    for t in tricks:
        model = t.configure_model(model, state)
    model.to(ctx.device)
    if model.frozen and not row_hooks(tricks):  # (a trick that changes rows' inputs needs them encoded live)
        encodings, imputed = feature_cache.encodings(model, data, batch_size=cfg.optim.eval_batch(1), device=ctx.device,
                                                     say=lambda message: _say(ctx, message))
        model.use_encodings({m: v.to(ctx.device) for m, v in imputed.items()})
    train_rows = np.arange(len(data.split["train"]))
    for t in tricks:
        train_rows = t.training_rows(train_rows, state)

    # the tricks' per-row hooks run on training rows only, seeded from (seed, epoch, row)
    sets = {"train": dataset("train", rows=train_rows, augment=row_hooks(tricks), seed=cfg.train.seed),
            **{part: dataset(part) for part in EVAL_PARTS}}
    truth = {part: _decoded(data, sets[part].labels.numpy()) for part in EVAL_PARTS}
    shuffle = torch.Generator()  # the rows' order, reseeded every epoch
    # the loader draws its workers' base seed from its own generator when it starts workers: once
    # per epoch, or once per run with persistent workers. Kept apart from the order, so that a
    # resumed run (whose loader starts in a later epoch) shuffles as an uninterrupted one did
    worker_seeds = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(sets["train"], batch_size=batch, sampler=RandomSampler(sets["train"], generator=shuffle),
                              drop_last=len(sets["train"]) > batch, generator=worker_seeds, **loader_args)
    eval_loaders = {part: DataLoader(sets[part], batch_size=cfg.optim.eval_batch(ctx.world_size), **loader_args) for part in EVAL_PARTS}
    if model.fusion.fits_itself:  # trees: one fit instead of epochs
        # (no trick: the training set has no augmentation, so it is read as it is, in eval batches)
        train_rows_loader = DataLoader(sets["train"], batch_size=cfg.optim.eval_batch(ctx.world_size), **loader_args)
        return fit_once(model, cfg, ctx, evaluate=evaluate, train_loader=train_rows_loader, val_loader=eval_loaders["val"],
                        problem=problem, metric=metric, say=lambda message: _say(ctx, message))

    train_loader = ctx.prepare_loader(train_loader)  # under DDP: this worker's shard
    steps_per_epoch = len(train_loader)
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    state.steps_per_epoch = steps_per_epoch
    state.total_steps = max(1, steps_per_epoch * cfg.train.epochs)

    # -- optimizer and schedule (tricks adjust both) ------------------------------------------
    specs = param_specs(model, cfg.optim.weight_decay)
    for t in tricks:
        specs = t.param_groups(specs, state)
    optimizer = make_optimizer(specs, cfg.optim.lr, cfg.optim.head_lr_mult)
    schedule = base_schedule(cfg.optim.schedule, state.total_steps)
    for t in tricks:
        schedule = t.lr_schedule(schedule, state.total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    # -- resume -------------------------------------------------------------------------------
    history: list[dict] = []
    start_epoch = 0
    if (resume := ctx.latest_checkpoint()) is not None:
        trainer = checkpoint.restore(resume, model=model, optimizer=optimizer, scheduler=scheduler, tricks=tricks)
        history, start_epoch, state.step = trainer["history"], trainer["epoch"], trainer["step"]
        ctx.resumed(trainer)
        if trainer.get("finished"):  # Train got ahead of Tune before a crash: say it again
            ctx.report(trainer["final_metrics"], None, again=True)
            return trainer["final_metrics"]
        _say(ctx, f"resuming after epoch {start_epoch} from {resume}")

    ddp_model = ctx.prepare_model(model)

    # -- epochs: one report each; the last one (train.epochs, or an early stop), after after_fit,
    # is the final report --------------------------------------------------------------------------
    for epoch in range(start_epoch + 1, cfg.train.epochs + 1):
        state.epoch = epoch
        t0 = time.perf_counter()
        # every random stream is seeded from (seed, epoch, rank): a resumed run repeats the epochs
        # an uninterrupted run would have trained, exactly
        epoch_seed = cfg.train.seed * 100_003 + epoch * 1_009
        shuffle.manual_seed(epoch_seed)
        state.generator.manual_seed(epoch_seed + ctx.rank)
        torch.manual_seed(epoch_seed + ctx.rank)  # dropout inside the model
        sets["train"].set_epoch(epoch)  # the rows' augmentation (seen by the loader's workers)
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        train_loss = _train_epoch(ddp_model, train_loader, optimizer, scheduler, tricks, state, cfg, steps_per_epoch)

        preds, losses, values, scores = {}, {}, {}, {}
        for part in EVAL_PARTS:
            preds[part], losses[part], values[part], scores[part] = evaluate(model, part)
        state.val_score = scores["val"]
        for t in tricks:
            t.on_epoch_end(model, state)
        row = {
            "epoch": epoch, "metric": metric, "val_score": scores["val"], f"val_{metric}": values["val"], "val_loss": losses["val"],
            f"holdout_{metric}": values["holdout"], "train_loss": train_loss,
            "lr": optimizer.param_groups[-1]["lr"], "epoch_time_s": time.perf_counter() - t0, **state.pop_logs(),
        }
        history.append(row)  # the epoch's own weights: the learning curve
        _say(ctx, f"epoch {epoch}/{cfg.train.epochs}  train_loss {train_loss:.4f}  val_{metric} {row[f'val_{metric}']:.4f}  "
                  f"val_loss {losses['val']:.4f}  ({row['epoch_time_s']:.1f} s)")
        stopped = epoch < cfg.train.epochs and stopping.stop_early(history, cfg.train.patience, ctx.device)
        if stopped:
            _say(ctx, f"early stop: no val improvement in {cfg.train.patience} epochs (best: epoch {stopping.best_epoch(history)})")
        if epoch < cfg.train.epochs and not stopped:
            report = {**row, "final": False}
            trainer = {"epoch": epoch, "step": state.step, "history": history, "finished": False}
            resume_state = dict(optimizer=optimizer, scheduler=scheduler, tricks=tricks)
        else:  # after fit (soup etc.): the final model's scores replace the epoch's in the report
            for t in tricks:
                model = t.after_fit(model, state)
            final = {}
            for part in EVAL_PARTS:
                preds[part], final[f"{part}_loss"], final[f"{part}_{metric}"], final[f"{part}_score"] = evaluate(model, part)
            report = {**row, **final, "final": True, "stopped_early": stopped, "world_size": ctx.world_size, **state.info}
            _say(ctx, f"final  val_{metric} {report[f'val_{metric}']:.4f}  holdout_{metric} {report[f'holdout_{metric}']:.4f}")
            trainer = {"epoch": epoch, "step": state.step, "history": history, "finished": True, "final_metrics": report}
            resume_state = {}  # a finished run is never trained further
        ckpt = None
        if ctx.rank == 0:
            ckpt = checkpoint.write(ctx.scratch_dir(), model=model, preds=preds, trainer=trainer,
                                    config=cfg.to_flat(), **resume_state)
        ctx.report(report, ckpt)
        if report["final"]:
            break
    return report


def _train_epoch(model, loader, optimizer, scheduler, tricks, state, cfg, max_steps: int) -> float:
    model.train()
    total, n = 0.0, 0
    bar = tqdm(total=max_steps, desc=f"epoch {state.epoch}", leave=False, disable=state.rank != 0 or not sys.stderr.isatty())
    for i, batch in enumerate(loader):
        if i >= max_steps:
            break
        batch = to_device(batch, state.device)
        for t in tricks:
            batch = t.on_batch(batch, state)
        with autocast(state.device, cfg.train.precision):
            out = model(batch)
            loss = state.fused_loss_weight * task_loss(out.logits, batch["label"], state.problem_type)
            for t in tricks:
                loss = t.on_loss(loss, out, batch, state)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss became {float(loss)} at epoch {state.epoch}, step {state.step}; try a lower optim.lr or tricks.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for t in tricks:
            t.before_step(model, state)
        optimizer.step()
        scheduler.step()
        state.step += 1
        total, n = total + loss.item(), n + 1
        bar.update()
    bar.close()
    return total / max(1, n)


def _decoded(data: PreparedData, values: np.ndarray) -> np.ndarray:
    """Regression values back on the label's scale; class probabilities unchanged."""
    return data.target.decode_regression(values) if data.schema.problem_type == "regression" else values


def _say(ctx, message: str) -> None:
    if ctx.rank == 0:
        print(f"[mmsearch] {message}", flush=True)


def ray_worker(config: dict) -> None:
    """Entry point of each Ray Train worker: config = {"trial": flat dict, and "data_dir": the
    prepared table's path, or "experiment": a search's path or URI, whose table each worker finds
    on its own node (pulled there once when the experiment is on object storage)."""
    from ..layout.location import Location
    from .context import RayContext

    data_dir = config["data_dir"] if "data_dir" in config else Location.of(config["experiment"]).trial_data()
    train(config["trial"], data_dir, RayContext())
