"""Running one trial outside any search: in-process, or on a Ray Train worker group (DDP)."""
from __future__ import annotations

import shutil
from pathlib import Path

from .._local_ray import DASHBOARD_HOST, local_ray_address
from ..layout.checkpoint_dir import TrialRunDir
from .context import LocalContext
from .loop import train


def run_local(trial: dict, data_dir: str | Path, out_dir: str | Path, *, device: str | None = None) -> dict:
    """Train in this process; out_dir/final holds the result (resumes if out_dir has checkpoints)."""
    ctx = LocalContext(out_dir, device=device)
    return train(trial, data_dir, ctx)


def run_ray(trial: dict, data_dir: str | Path, out_dir: str | Path, *, workers: int = 2, use_gpu: bool = False,
            cpus_per_worker: float = 1, address: str | None = None) -> dict:
    """Train with a Ray Train TorchTrainer (DDP over `workers`); copies the final checkpoint to
    out_dir/final."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .loop import ray_worker

    out = Path(out_dir).resolve()
    if not ray.is_initialized():
        local = {} if address else {"num_cpus": max(2, int(workers * cpus_per_worker)), "dashboard_host": DASHBOARD_HOST}
        ray.init(address=address or local_ray_address(), log_to_driver=True, **local)
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"trial": trial, "data_dir": str(Path(data_dir).resolve())},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name="train", storage_path=str(out / "ray")),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        shutil.copytree(d, TrialRunDir(out).final.path, dirs_exist_ok=True)
    return result.metrics
