"""Where a run reports to: a local directory (in-process runs, tests), Tune (a one-worker trial)
or Ray Train (workers).

The loop only talks to this interface, so the same code runs in-process and in a DDP worker group.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..layout.checkpoint_dir import TrialRunDir


class LocalContext:
    """One process. Checkpoints go to the run directory out_dir (layout.checkpoint_dir.TrialRunDir:
    the newest `keep` epoch checkpoints are kept); a later run with the same out_dir resumes from
    the newest one."""
    rank, world_size = 0, 1

    def __init__(self, out_dir: str | Path, *, keep: int = 1, device: str | None = None):
        self.run = TrialRunDir(out_dir)
        self.keep = keep
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def latest_checkpoint(self) -> Path | None:
        found = self.run.resume_point()
        return found.path if found else None

    def resumed(self, trainer: dict) -> None:
        """The run continues from a checkpoint with this trainer state: its log follows suit."""
        self.run.realign_metrics(trainer)

    def prepare_model(self, model):
        return model.to(self.device)

    def prepare_loader(self, loader):
        return loader

    def report(self, metrics: dict, checkpoint: Path | None, *, again: bool = False) -> None:
        """again: a finished run restarted says its final result once more (Tune had not heard
        it before a crash); the log already holds it. The checkpoint is committed before the log
        line is written, so the log never shows an epoch a restart would train again."""
        if checkpoint is not None:
            self.run.commit(checkpoint, epoch=metrics["epoch"], final=bool(metrics.get("final")), keep=self.keep)
        if not again:
            self.run.append_metrics(metrics)

    def scratch_dir(self) -> Path:
        return self.run.scratch()


class TuneContext(LocalContext):
    """A Tune trial that is its own (only) worker: checkpoints as LocalContext under the trial's
    run dir (written, and sent to the experiment's storage, before Tune hears of the epoch, so a
    scheduler's stop never loses one), and every report goes to Tune for the scheduler and the
    searcher. send: the run directory to the storage (mmsearch.layout.location.trial_run)."""

    def __init__(self, out_dir: str | Path, *, send=None, **kw):
        super().__init__(out_dir, **kw)
        self.send = send or (lambda: None)

    def report(self, metrics: dict, checkpoint: Path | None, *, again: bool = False) -> None:
        import ray.tune

        super().report(metrics, checkpoint, again=again)
        self.send()
        ray.tune.report(metrics)


class RayContext:
    """Inside a Ray Train worker: DDP via ray.train.torch, checkpoints registered with Ray."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._restored: Path | None = None

    def latest_checkpoint(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        if self._restored is None:
            self._restored = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix="mmsearch-restore-")))
        return self._restored

    def resumed(self, trainer: dict) -> None:
        pass  # Ray keeps a Ray Train run's reports: there is no log of ours to bring in line

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_loader(self, loader):
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader)

    def report(self, metrics: dict, checkpoint: Path | None, *, again: bool = False) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint is not None else None
        ray.train.report(metrics, checkpoint=ckpt)  # every rank calls it: it is a barrier
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)  # SYNC upload has copied it

    def scratch_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="mmsearch-ckpt-"))
