"""Defaults that work on small tables: the head-lr multiplier (optim.head_lr_mult), early stopping
on val (train.patience) and the size-aware defaults of `mmsearch train` without --config."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CrashAfterFirstEpoch, make_state

from mmsearch import defaults
from mmsearch.config import TrialConfig
from mmsearch.errors import ConfigError
from mmsearch.models.model import build_model
from mmsearch.train import loop, stopping
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.train.optim import make_optimizer, param_specs
from mmsearch.tricks import build_tricks


def _llrd(decay):
    flat = {"tricks.layerwise_lr_decay.enabled": True, "tricks.layerwise_lr_decay.decay": decay}
    return build_tricks(TrialConfig.from_flat(flat).enabled_tricks())[0]


def _lr_of(optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


# -- the head-lr multiplier ------------------------------------------------------------------------
def _expected_fresh(name: str) -> bool:
    """Fresh: outside the encoders (fusion, adapters, heads), the FT-Transformer (trained from
    scratch) and the learned missing inputs; the packaged Lite0 and MiniLM are pretrained."""
    return (name.startswith(("fusion.", "encoders.tabular.")) or name.rsplit(".", 1)[-1].startswith("missing_"))


@pytest.fixture(scope="module")
def pretrained_model(small_prepared, tiny):
    cfg = {**tiny, "model.image": "lite0", "model.text": "minilm", "model.missing": "learnable"}
    return build_model(TrialConfig.from_flat(cfg), small_prepared)


def test_head_lr_mult_scales_exactly_the_fresh_parameters(pretrained_model):
    specs = param_specs(pretrained_model, 0.01)
    names = {s.name for s in specs}
    assert {n for n in names if n.endswith((".missing_image", ".missing_text", ".missing_num_embedding"))} == {
        "encoders.image.missing_image", "encoders.text.missing_text", "encoders.tabular.missing_num_embedding"}
    assert {s.name for s in specs if s.fresh} == {n for n in names if _expected_fresh(n)}
    assert any(n.startswith("encoders.image.trunk.") for n in names) and any(n.startswith("encoders.text.model.") for n in names)
    optimizer = make_optimizer(specs, lr=1e-4, head_lr_mult=10.0)
    lr = _lr_of(optimizer)
    for s in specs:
        assert lr[id(s.param)] == pytest.approx(1e-3 if _expected_fresh(s.name) else 1e-4), s.name


def test_head_lr_mult_composes_with_layerwise_decay(pretrained_model):
    specs = _llrd(0.5).param_groups(param_specs(pretrained_model, 0.01), make_state())
    lr = _lr_of(make_optimizer(specs, lr=1e-4, head_lr_mult=10.0))
    for s in specs:
        assert lr[id(s.param)] == pytest.approx(1e-4 * 0.5 ** s.depth * (10.0 if s.fresh else 1.0)), s.name
    depths = {s.depth for s in specs if s.name.startswith("encoders.tabular.ft.")}
    assert len(depths) > 1  # the FT-Transformer: fresh, and still decayed by depth within its tower


def test_random_backbones_are_fresh_as_a_whole(tiny_model):
    """tiny_text and a timm model without pretrained weights train from scratch."""
    model, _ = tiny_model
    assert all(s.fresh for s in param_specs(model, 0.01))


def test_the_loop_builds_its_optimizer_with_the_multiplier(small_prepared, tiny, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(loop, "make_optimizer", lambda *a, **kw: built.append(make_optimizer(*a, **kw)) or built[-1])
    trial = {**tiny, "model.image": "none", "model.text": "minilm", "optim.head_lr_mult": 5.0, "optim.schedule": "constant",
             "train.epochs": 1, "train.max_steps_per_epoch": 1}
    train(trial, small_prepared.dir, LocalContext(tmp_path))
    lrs = sorted({g["lr"] for g in built[0].param_groups})
    assert lrs == pytest.approx([tiny["optim.lr"], 5.0 * tiny["optim.lr"]])  # the pretrained MiniLM, fresh parameters


@pytest.mark.parametrize("key, value, message", [("optim.head_lr_mult", 0, "must be > 0"),
                                                 ("train.patience", -1, "use 0")])
def test_bad_values_are_config_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_flat({key: value})


# -- early stopping ------------------------------------------------------------------------------
def _rows(*pairs):
    return [{"epoch": i + 1, "val_score": s, "val_loss": l} for i, (s, l) in enumerate(pairs)]


def test_improvement_is_the_val_score_then_the_val_loss():
    assert stopping.best_epoch(_rows((0.5, 1.0), (0.6, 2.0), (0.6, 1.5))) == 3  # a tie on score: the lower loss
    assert stopping.best_epoch(_rows((0.5, 1.0), (0.5, 1.0))) == 1  # equal is no improvement
    assert stopping.best_epoch(_rows((0.7, 1.0), (float("nan"), 0.1))) == 1
    history = _rows((0.5, 1.0), (0.7, 0.9), (0.6, 0.8), (0.7, 0.95))
    assert stopping.epochs_without_improvement(history) == 2
    cpu = torch.device("cpu")
    assert stopping.stop_early(history, 2, cpu) and not stopping.stop_early(history, 3, cpu)
    assert not stopping.stop_early(history, 0, cpu)  # patience 0: never


# lr 0, no weight decay and no image tower (batch norm statistics would move): the weights never
# change, so val never improves after epoch 1 and patience 2 stops the run at epoch 3 (the same
# under Ray Train's DDP workers: test_ddp)
FROZEN = {"model.image": "none", "optim.lr": 0.0, "optim.weight_decay": 0.0, "train.epochs": 6, "train.patience": 2,
          "train.max_steps_per_epoch": 2, "tricks.soup.enabled": True}


def _reports(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_early_stop_ends_with_the_final_report_and_after_fit(small_prepared, tiny, tmp_path):
    final = train({**tiny, **FROZEN}, small_prepared.dir, LocalContext(tmp_path))
    reports = _reports(tmp_path)
    assert [r["epoch"] for r in reports] == [1, 2, 3] and [r["final"] for r in reports] == [False, False, True]
    assert final["final"] and final["stopped_early"] and final["epoch"] == 3
    assert set(final["soup_epochs"]) <= {1, 2, 3}  # after_fit ran: the soup chose among the epochs it kept
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "final" / "trainer.json").read_text())["finished"]


def test_reaching_train_epochs_is_not_an_early_stop(small_prepared, tiny, tmp_path):
    final = train({**tiny, **FROZEN, "train.epochs": 3}, small_prepared.dir, LocalContext(tmp_path))
    assert final["epoch"] == 3 and not final["stopped_early"]


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(small_prepared, tiny, tmp_path):
    trial = {**tiny, **FROZEN}
    with pytest.raises(KeyboardInterrupt):
        train(trial, small_prepared.dir, CrashAfterFirstEpoch(tmp_path / "crashed"))
    resumed = train(trial, small_prepared.dir, LocalContext(tmp_path / "crashed"))
    assert [r["epoch"] for r in _reports(tmp_path / "crashed")] == [1, 2, 3]  # the count spans the interruption
    assert resumed["stopped_early"] and resumed["epoch"] == 3


def _rank_decides(rank, init_file, results):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        # the ranks' histories disagree: rank 0 saw no improvement for 2 epochs, rank 1 did
        history = _rows((0.5, 1.0), (0.5, 1.0), (0.5, 1.0)) if rank == 0 else _rows((0.5, 1.0), (0.5, 1.0), (0.9, 0.1))
        results[rank] = stopping.stop_early(history, 2, torch.device("cpu"))
    finally:
        torch.distributed.destroy_process_group()


def test_every_ddp_rank_takes_rank_0s_decision(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_rank_decides, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    assert dict(results) == {0: True, 1: True}


# -- size-aware defaults -------------------------------------------------------------------------
def _chosen(choices):
    return defaults.as_overrides(choices)


@pytest.mark.parametrize("rows, train_rows, epochs, patience, size", [
    (550, 385, 10, 3, 96),      # the small tri-modal table of issue 15: 6,000 / 385 = 15.6, capped at 10
    (1906, 1334, 5, 2, 64),     # emoji: ceil(6,000 / 1,334) = 5
    (1000, 700, 9, 3, 64),      # a cloth-sized sample: 96 px would be 1,000 x 96^2 > 2,048 x 64^2
    (120, 84, 10, 3, 224),      # tiny: the backbone's size fits the budget
    (23486, 16440, 3, 2, 64),   # the whole cloth table: at least 3 epochs, the smallest size
])
def test_choices_follow_the_table_size(rows, train_rows, epochs, patience, size):
    chosen = _chosen(defaults.choose(rows, train_rows, has_images=True))
    assert (chosen["train.epochs"], chosen["train.patience"], chosen["model.image_size"]) == (epochs, patience, size)
    assert chosen["optim.head_lr_mult"] == defaults.HEAD_LR_MULT and chosen["tricks.soup.enabled"]


@pytest.mark.parametrize("rows", [50, 300, 700, 1500, 2048, 2049, 5000, 10**5])
def test_the_image_size_is_the_largest_within_the_budget(rows):
    size = _chosen(defaults.choose(rows, rows, has_images=True))["model.image_size"]
    larger = [s for s in defaults.IMAGE_SIZES if s > size]
    assert rows * size**2 <= defaults.PIXEL_ROWS or size == min(defaults.IMAGE_SIZES)
    assert all(rows * s**2 > defaults.PIXEL_ROWS for s in larger)


def test_no_image_size_without_images_and_the_native_size_on_gpu():
    assert "model.image_size" not in _chosen(defaults.choose(500, 350, has_images=False))
    assert _chosen(defaults.choose(500, 350, has_images=True, gpu=True))["model.image_size"] == 0


def test_explicit_settings_are_never_chosen(small_prepared):
    explicit = {"train.epochs": 1, "model.image_size": 32, "optim.head_lr_mult": 2.0}
    chosen = _chosen(defaults.for_table(small_prepared, explicit))
    assert not set(explicit) & set(chosen) and "train.patience" in chosen
    every = _chosen(defaults.for_table(small_prepared))
    assert set(every) == set(chosen) | set(explicit)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_without_config_trains_with_the_defaults_and_keeps_set_keys(synthetic_table, tiny, tmp_path):
    sets = [f"--set={k}={v}" for k, v in {**tiny, "train.epochs": 1, "train.max_steps_per_epoch": 2}.items()]
    r = _cli("train", "--data", str(synthetic_table), "--label", "label", "--out", str(tmp_path / "run"), *sets)
    assert r.returncode == 0, r.stderr
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = _chosen(defaults.choose(480, 336, has_images=True))  # the synthetic table: 480 rows, 70 % train
    assert f"no --config: defaults for 480 rows: train.patience={expected['train.patience']}" in r.stdout
    assert resolved["train.epochs"] == 1 and resolved["model.image_size"] == tiny["model.image_size"]  # as set
    assert resolved["optim.lr"] == tiny["optim.lr"]
    for key in ("train.patience", "optim.head_lr_mult", "tricks.soup.enabled", "tricks.lr_warmup.enabled"):
        assert resolved[key] == expected[key], key  # chosen, and kept in the resolved config
    assert np.load(tmp_path / "run" / "final" / "preds_val.npy").shape[1] == 3


@pytest.mark.parametrize("name", ["bag_of_tricks", "demo"])
def test_shipped_spaces_search_the_multiplier_from_1(name):
    from mmsearch.search.space import SearchSpace

    dim = next(d for d in SearchSpace.load(f"search_spaces/{name}.yaml").dims if d.key == "optim.head_lr_mult")
    assert dim.kind == "loguniform" and dim.args[0] == 1.0  # 1: the one-lr setting stays in reach
