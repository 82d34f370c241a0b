"""DDP trials with the packaged backbones (lite0, minilm, ft_transformer) through the real path:
run_ray -> a Ray Train TorchTrainer with 2 CPU (gloo) workers. DDP fails on the second step if
any parameter gets no gradient (a BERT pooler, FT-Transformer blocks under early fusion), so two
steps per fusion show that every parameter of the default model is trained."""
import numpy as np
import pytest

pytestmark = pytest.mark.ray  # they share one Ray (the fixture below)

PACKAGED = {  # the default config's encoders, small inputs
    "model.image": "lite0", "model.text": "minilm", "model.tabular": "ft_transformer",
    "model.image_size": 32, "model.max_text_len": 16, "optim.batch_size": 8,
    "train.epochs": 1, "train.max_steps_per_epoch": 2,
}


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    # address "local": a Ray of its own, never one that another process runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# lf_mlp also carries Gradient Blending (offline): its heads live outside the DDP-wrapped model, so
# their gradients are averaged by the trick, and rank 0's weights are broadcast
@pytest.mark.slow
@pytest.mark.parametrize("fusion, tricks", [("lf_mlp", {"tricks.gblend.enabled": True, "tricks.gblend.mode": "offline"}),
                                            ("early", {})])
def test_two_worker_ddp_trains_the_packaged_backbones(ray_two_cpus, small_prepared, tmp_path, fusion, tricks):
    from mmsearch.train.run import run_ray

    metrics = run_ray({**PACKAGED, "model.fusion": fusion, **tricks}, small_prepared.dir, tmp_path, workers=2)
    assert metrics["final"] and metrics["world_size"] == 2 and np.isfinite(metrics["val_loss"])
    if tricks:
        assert sum(metrics[f"gblend_w_{k}"] for k in ("fused", "image", "text", "tabular")) == pytest.approx(1.0)
    assert np.load(tmp_path / "final" / "preds_val.npy").shape == (len(small_prepared.split["val"]), 3)


@pytest.mark.slow
def test_ray_train_ddp_workers_stop_early_together(ray_two_cpus, small_prepared, tiny, tmp_path):
    """test_defaults' frozen run (val never improves after epoch 1, patience 2, a soup after fit)
    on 2 Ray Train workers: both take rank 0's decision and stop at epoch 3, none waits forever."""
    from mmsearch.train.run import run_ray

    from test_defaults import FROZEN

    metrics = run_ray({**tiny, **FROZEN}, small_prepared.dir, tmp_path, workers=2)
    assert metrics["final"] and metrics["stopped_early"] and metrics["epoch"] == 3 and metrics["world_size"] == 2
