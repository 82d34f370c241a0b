"""Shared fixtures: a synthetic multimodal table (prepared once per session) and a tiny trial
config whose backbones are small random models (no downloads, seconds on 2 CPU cores)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mmsearch.registry import FUSIONS  # noqa: E402
from mmsearch.train.context import LocalContext  # noqa: E402  (after the environment above)

# fusions trained by gradients (the generic fusion tests: gradients reach every parameter, the head
# contract); fusions that fit themselves (trees) have tests of their own
GRADIENT_FUSIONS = [name for name, cls in FUSIONS if not cls.fits_itself]

TINY = {
    "model.image": "timm",
    "encoder.timm.model_name": "test_efficientnet",
    "encoder.timm.pretrained": False,
    "model.text": "tiny_text",
    "model.tabular": "ft_transformer",
    "encoder.ft_transformer.n_blocks": 1,
    "encoder.ft_transformer.d_block": 32,
    "encoder.ft_transformer.attention_n_heads": 4,
    "model.image_size": 32,
    "model.max_text_len": 16,
    "optim.lr": 3e-3,
    "optim.batch_size": 16,
    "train.epochs": 2,
}


@pytest.fixture(scope="session")
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def synthetic_table(tmp_path_factory):
    from mmsearch.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n=480, missing=0.1, seed=0)


@pytest.fixture(scope="session")
def prepared(synthetic_table, tmp_path_factory):
    from mmsearch.data.prepare import prepare

    return prepare(synthetic_table, "label", tmp_path_factory.mktemp("prepared") / "data")


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory):
    """96 rows: for tests that only need a few training steps."""
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic

    table = make_synthetic(tmp_path_factory.mktemp("small"), n=96, missing=0.2, seed=1)
    return prepare(table, "label", tmp_path_factory.mktemp("small_prepared") / "data")


@pytest.fixture(scope="session")
def tiny_model(small_prepared, tiny):
    """(model, a training batch) built from the tiny config on the small table."""
    import torch
    from torch.utils.data import DataLoader

    from mmsearch.config import TrialConfig
    from mmsearch.data.dataset import RowDataset
    from mmsearch.models.model import build_model

    torch.manual_seed(0)
    model = build_model(TrialConfig.from_flat(tiny), small_prepared)
    ds = RowDataset(small_prepared, "train", image_size=model.image_size, tokenize=model.tokenize)
    batch = next(iter(DataLoader(ds, batch_size=16)))
    return model, batch


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Tests marked `ray` form one xdist group: they run one at a time, in one worker (each starts
    a Ray sized to the whole machine, some a cluster, and some time their faults), while the
    other worker runs the rest."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))


def make_state(**kw):
    import torch

    from mmsearch.tricks import TrainState

    defaults = dict(problem_type="multiclass", device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                    evaluate=lambda m: 0.0)
    return TrainState(**{**defaults, **kw})


@pytest.fixture(scope="session")
def trained_experiment(tmp_path_factory):
    """(experiment dir, original table): an experiment laid out as a search leaves it (data/ and
    train/TRIAL/CHECKPOINT/ with weights, config and val/holdout predictions), from three tiny
    trials trained in-process (no Ray, ~25 s). Tests that write into it work on a copy."""
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.run import run_local

    root = tmp_path_factory.mktemp("experiment")
    table = make_synthetic(root / "table", n=96, missing=0.2, seed=4)
    exp = root / "exp"
    prepare(table, "label", exp / "data")
    trials = {  # different batch sizes: each member must be replayed in its own eval batches
        "t_lr": {},
        "t_b4": {"optim.batch_size": 4, "train.seed": 1},
        "t_early": {"model.fusion": "early", "optim.lr": 1e-3, "train.seed": 2},
    }
    for tid, over in trials.items():
        run_local({**TINY, "train.epochs": 1, "train.max_steps_per_epoch": 4, **over}, exp / "data", exp / "train" / tid)
    return exp, table


def run_importing_none_of(code: str, forbidden: tuple[str, ...]) -> None:
    """Run `code` in a fresh interpreter; fail if any module in `forbidden` got imported."""
    check = f"\nimport sys\nbad = [m for m in {forbidden!r} if m in sys.modules]\nassert not bad, bad\n"
    subprocess.run([sys.executable, "-c", code + check], check=True, timeout=300)


class CrashAfterFirstEpoch(LocalContext):
    """A run that dies (KeyboardInterrupt) right after its epoch-1 checkpoint: for resume tests."""

    def report(self, metrics, checkpoint, *, again=False):
        super().report(metrics, checkpoint, again=again)
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash after the epoch-1 checkpoint")


def rebuilt_holdout_predictions(exp, member: str):
    """(predictions on the holdout rows of a trial's final weights, rebuilt as the bundle rebuilds
    a member: from its config, no pretrained weights read, then its safetensors file; the trial's
    own saved predictions)."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import load_file
    from torch.utils.data import DataLoader

    from mmsearch.config import TrialConfig
    from mmsearch.data.dataset import RowDataset
    from mmsearch.data.prepare import PreparedData
    from mmsearch.models.model import build_model
    from mmsearch.train.evaluate import predict

    data = PreparedData.load(exp / "data")
    final = exp / "train" / member / "final"
    model = build_model(TrialConfig.from_flat(json.loads((final / "config.json").read_text())), data, pretrained=False)
    model.load_state_dict(load_file(str(final / "model.safetensors")))
    ds = RowDataset(data, "holdout", view=model.view, image_size=model.image_size, tokenize=model.tokenize)
    preds, _, _ = predict(model.eval(), DataLoader(ds, batch_size=64), torch.device("cpu"), "fp32", data.schema.problem_type)
    return preds, np.load(final / "preds_holdout.npy")


@pytest.fixture(scope="module")
def s3_server():
    """A local S3 API (moto's server, in a thread): the AWS_* variables point pyarrow, Ray and
    every process started after it at it; bucket "runs" exists."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="runs")
    yield env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.stop()
