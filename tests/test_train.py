"""The training loop end to end: learning, resume, failures, DDP on Ray Train, the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from mmsearch.train import loop
from conftest import CrashAfterFirstEpoch

from mmsearch.train.context import LocalContext
from mmsearch.train.loop import NonFiniteLoss, train


def test_two_epochs_beat_chance_clearly(prepared, tiny, tmp_path):
    trial = {**tiny, "tricks.soup.enabled": True, "tricks.grad_clip.enabled": True, "tricks.lr_warmup.enabled": True}
    final = train(trial, prepared.dir, LocalContext(tmp_path))
    assert final["val_accuracy"] > 0.6 and final["holdout_accuracy"] > 0.6  # chance: 1/3
    out = tmp_path / "final"
    val = np.load(out / "preds_val.npy")
    assert val.shape == (len(prepared.split["val"]), 3) and np.allclose(val.sum(1), 1, atol=1e-5)
    assert np.load(out / "preds_holdout.npy").shape == (len(prepared.split["holdout"]), 3)
    assert json.loads((out / "config.json").read_text())["tricks.soup.enabled"] is True
    assert (out / "model.safetensors").is_file() and not (tmp_path / "checkpoints").exists()


def test_regression_run(tmp_path, tiny):
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic

    data = prepare(make_synthetic(tmp_path / "t", n=160, regression=True), "label", tmp_path / "d")
    assert data.schema.problem_type == "regression"
    final = train({**tiny, "train.epochs": 2}, data.dir, LocalContext(tmp_path / "run"))
    preds = np.load(tmp_path / "run" / "final" / "preds_val.npy")
    assert preds.shape == (len(data.split["val"]),) and final["metric"] == "r2"
    assert abs(preds.mean() - data.rows("val")["label"].mean()) < 1.0  # on the label's scale



def test_resume_continues_from_the_last_checkpoint(small_prepared, tiny, tmp_path):
    trial = {**tiny, "train.epochs": 3, "train.max_steps_per_epoch": 3, "tricks.soup.enabled": True, "tricks.modality_dropout.enabled": True}
    with pytest.raises(KeyboardInterrupt):
        train(trial, small_prepared.dir, CrashAfterFirstEpoch(tmp_path / "crashed"))
    assert (tmp_path / "crashed" / "checkpoints" / "epoch_001").is_dir()
    # the log lost epoch 1's line (a crash right after the commit; a node lost between the two
    # uploads to object storage) and holds one for an epoch 2 whose checkpoint never landed
    log = tmp_path / "crashed" / "metrics.jsonl"
    log.write_text(json.dumps({"epoch": 2, "val_score": 0.0}) + "\n")
    resumed = train(trial, small_prepared.dir, LocalContext(tmp_path / "crashed"))
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # epoch 1 not retrained, its line back from the checkpoint; the last report is the final one
    assert json.loads(log.read_text().splitlines()[1])["val_score"] != 0.0  # epoch 2 trained again, its stale line gone
    straight = train(trial, small_prepared.dir, LocalContext(tmp_path / "straight"))
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], rel=1e-5)  # same run, interrupted or not
    np.testing.assert_allclose(np.load(tmp_path / "crashed/final/preds_val.npy"), np.load(tmp_path / "straight/final/preds_val.npy"), rtol=1e-4, atol=1e-6)
    # a finished run asked to run again reports its final result instead of training more
    again = train(trial, small_prepared.dir, LocalContext(tmp_path / "crashed"))
    assert again == resumed
    log = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in log] == [1, 2, 3]  # said again to Tune, not logged twice


def test_nan_loss_is_an_error_with_its_cause(small_prepared, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "task_loss", lambda logits, labels, problem: logits.sum() * float("nan"))
    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 1"):
        train({**tiny, "train.epochs": 1}, small_prepared.dir, LocalContext(tmp_path))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmsearch.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_train_prints_val_and_holdout(synthetic_table, tiny, tmp_path):
    import yaml

    (tmp_path / "trial.yaml").write_text(yaml.safe_dump({**tiny, "train.epochs": 1, "tricks.grad_clip.enabled": True}))
    r = _cli("train", "--data", str(synthetic_table), "--label", "label", "--config", str(tmp_path / "trial.yaml"), "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "val accuracy:" in r.stdout and "holdout accuracy:" in r.stdout
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert resolved["tricks.grad_clip.enabled"] and resolved["model.image"] == "timm"
    # with a config, the size-aware defaults of a config-less run stay out of it
    assert "no --config" not in r.stdout and resolved["optim.head_lr_mult"] == 1.0 and resolved["train.patience"] == 0


@pytest.mark.parametrize("args,message", [
    (["--label", "nope"], "label column 'nope' not found"),
    (["--label", "label", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["--label", "label", "--set", "model.text=bert9"], "unknown encoder 'bert9'"),
    (["--label", "label", "--set", "tricks.mixup.enabled=true"], "unknown config key 'tricks.mixup.enabled'"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(synthetic_table, tmp_path, args, message):
    r = _cli("train", "--data", str(synthetic_table), "--out", str(tmp_path / "run"), *args)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_cli_tricks_lists_keys_and_dimensions():
    r = _cli("tricks")
    assert r.returncode == 0
    assert "tricks.layerwise_lr_decay.decay = 0.9" in r.stdout and '"uniform": [0.7, 0.95]' in r.stdout


def test_cli_help_imports_neither_torch_nor_ray():
    code = "import sys; from mmsearch import cli\ntry: cli.main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'ray' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "False False"
