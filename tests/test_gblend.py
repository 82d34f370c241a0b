"""Per-modality heads and Gradient Blending (tricks/modality_heads.py, tricks/gblend.py): the
weights follow the overfitting-to-generalization ratio (a pure-noise modality that overfits gets
less than the informative one), the slice V never trains, the weights are in the metrics and
survive a resume, and the heads never reach the exported model."""
from __future__ import annotations

import json
import string

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, CrashAfterFirstEpoch
from mmsearch.data.prepare import prepare
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.train.run import run_local
from mmsearch.tricks import build_tricks
from mmsearch.tricks.gblend import MIN_WEIGHT, GradientBlending, blend_weights

HEADS = ("fused", "tabular", "text")


@pytest.fixture(scope="module")
def noise_text(tmp_path_factory):
    """Binary label from two numbers (+ noise); the text is random letters, unique per row: a
    high-capacity modality with no signal, which the text encoder can only memorise."""
    rng = np.random.default_rng(0)
    n = 320
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + x[:, 1] + 0.7 * rng.normal(size=n) > 0).astype(int)
    words = [" ".join("".join(rng.choice(list(string.ascii_lowercase), 5)) for _ in range(6)) for _ in range(n)]
    root = tmp_path_factory.mktemp("noise_text")
    pd.DataFrame({"text": words, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "label": y}).to_csv(root / "t.csv", index=False)
    return prepare(root / "t.csv", "label", root / "data")


NOISE_TRIAL = {**TINY, "model.image": "none", "train.epochs": 4}


def _metrics_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_blend_weights_follow_the_ratio_with_clamps():
    w = blend_weights({"a": 0.2, "b": 0.1, "c": -0.05}, {"a": 0.1, "b": 0.1, "c": 0.3})
    assert w["a"] > w["b"] > w["c"]
    assert w["a"] / w["b"] == pytest.approx(2.0)            # G / O^2 with the same O
    assert w["c"] == pytest.approx(MIN_WEIGHT / (1 + MIN_WEIGHT))  # G <= 0: the floor share
    assert sum(w.values()) == pytest.approx(1.0)
    # O ~ 0 or negative counts as MIN_OVERFIT (no division by ~0)
    assert blend_weights({"a": 0.1, "b": 0.1}, {"a": -0.2, "b": 0.0}) == pytest.approx({"a": 0.5, "b": 0.5})
    assert blend_weights({"a": -0.1, "b": 0.0}, {"a": 0.1, "b": 0.1}) == {"a": 0.5, "b": 0.5}  # nothing gained: uniform


def test_gblend_supersedes_modality_heads():
    from mmsearch.config import TrialConfig

    cfg = TrialConfig.from_flat({"tricks.gblend.enabled": True, "tricks.modality_heads.enabled": True})
    assert [t.name for t in build_tricks(cfg.enabled_tricks())] == ["gblend"]


@pytest.mark.parametrize("bad", [{"holdout": 0.0}, {"holdout": 1.0}, {"super_epoch": 0}])
def test_bad_settings_are_config_errors(bad):
    from mmsearch.config import TrialConfig
    from mmsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="tricks.gblend"):
        TrialConfig.from_flat({"tricks.gblend.enabled": True, **{f"tricks.gblend.{k}": v for k, v in bad.items()}})


@pytest.fixture(scope="module")
def unweighted_heads(noise_text, tmp_path_factory):
    """The final metrics of the unweighted multi-head loss (modality_heads) on the noise table."""
    return run_local({**NOISE_TRIAL, "tricks.modality_heads.enabled": True}, noise_text.dir, tmp_path_factory.mktemp("heads"))


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_the_noise_modality_gets_less_weight_and_holdout_is_no_worse(noise_text, unweighted_heads, tmp_path, mode):
    heads = unweighted_heads
    blended = run_local({**NOISE_TRIAL, "tricks.gblend.enabled": True, "tricks.gblend.mode": mode}, noise_text.dir, tmp_path / "gb")
    assert blended["gblend_w_text"] < 0.5 * blended["gblend_w_tabular"]
    assert blended["holdout_roc_auc"] >= heads["holdout_roc_auc"]


def test_the_weights_scale_each_heads_loss(tiny_model):
    """loss = n_heads * (w_fused * L_fused [through state.fused_loss_weight, which the loop
    applies] + sum_m w_m * L_m); uniform (1 each) before an estimate."""
    from conftest import make_state
    from mmsearch.losses import task_loss

    model, batch = tiny_model
    trick, state = GradientBlending(GradientBlending.Config()), make_state(steps_per_epoch=10)
    trick.configure_model(model, state)
    with torch.no_grad():
        out = model(batch)
        own = {m: task_loss(h(out.features[m]), batch["label"], "multiclass") for m, h in trick.heads.heads.items()}
        trick.on_batch(batch, state)
        assert state.fused_loss_weight == 1.0
        assert float(trick.on_loss(torch.zeros(()), out, batch, state)) == pytest.approx(float(sum(own.values())))
        trick.weights = {"fused": 0.4, "image": 0.3, "tabular": 0.2, "text": 0.1}
        trick.on_batch(batch, state)
        assert state.fused_loss_weight == pytest.approx(1.6)
        expected = sum(4 * trick.weights[m] * own[m] for m in own)
        assert float(trick.on_loss(torch.zeros(()), out, batch, state)) == pytest.approx(float(expected))


def test_weights_are_in_every_epochs_metrics(noise_text, tmp_path):
    run_local({**NOISE_TRIAL, "train.epochs": 2, "tricks.gblend.enabled": True, "tricks.gblend.super_epoch": 0.25},
              noise_text.dir, tmp_path)
    rows = _metrics_log(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert sum(r[f"gblend_w_{k}"] for k in HEADS) == pytest.approx(1.0)
    assert rows[0]["gblend_w_text"] != rows[-1]["gblend_w_text"]  # re-estimated (uniform before the first)
    assert all(f"gblend_G_{k}" in rows[-1] and f"gblend_O_{k}" in rows[-1] for k in HEADS)


def test_a_resumed_online_trial_continues_with_the_same_weights(noise_text, tmp_path):
    trial = {**NOISE_TRIAL, "train.epochs": 3, "tricks.gblend.enabled": True, "tricks.gblend.super_epoch": 0.4}
    straight = train(trial, noise_text.dir, LocalContext(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        train(trial, noise_text.dir, CrashAfterFirstEpoch(tmp_path / "resumed"))
    resumed = train(trial, noise_text.dir, LocalContext(tmp_path / "resumed"))
    for k in HEADS:
        assert resumed[f"gblend_w_{k}"] == straight[f"gblend_w_{k}"]
    assert resumed["holdout_roc_auc"] == straight["holdout_roc_auc"]
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-6)


def test_v_never_trains_and_the_heads_are_not_exported(noise_text, tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    on_batch = GradientBlending.on_batch

    def spy(self, batch, state):
        seen.append(batch["index"].numpy())
        return on_batch(self, batch, state)

    monkeypatch.setattr(GradientBlending, "on_batch", spy)
    trial = {**NOISE_TRIAL, "train.epochs": 1, "tricks.gblend.enabled": True}
    run_local(trial, noise_text.dir, tmp_path / "gb")
    trick = GradientBlending(GradientBlending.Config())
    train_part = noise_text.split["train"]
    rows = trick.training_rows(np.arange(len(train_part)), type("S", (), {"seed": 0})())
    v = set(train_part[trick.v_rows])
    assert len(v) == round(0.15 * len(train_part)) and not v & set(train_part[rows])
    assert not v & set(np.concatenate(seen)) and set(np.concatenate(seen)) <= set(train_part[rows])  # drop_last: nearly all

    run_local({**trial, "tricks.gblend.enabled": False}, noise_text.dir, tmp_path / "plain")
    exported, plain = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("gb", "plain"))
    assert set(exported) == set(plain)  # no head of the trick's in the model


def test_offline_estimate_leaves_the_trials_weights_and_runs_once(noise_text, tmp_path, monkeypatch):
    calls = []
    estimate = GradientBlending._estimate_offline

    def watched(self, state):
        before = {k: v.clone() for k, v in self._model.state_dict().items()}
        estimate(self, state)
        calls.append(all(torch.equal(before[k], v) for k, v in self._model.state_dict().items()))

    monkeypatch.setattr(GradientBlending, "_estimate_offline", watched)
    run_local({**NOISE_TRIAL, "train.epochs": 2, "tricks.gblend.enabled": True, "tricks.gblend.mode": "offline"},
              noise_text.dir, tmp_path)
    assert calls == [True]
    rows = _metrics_log(tmp_path)
    assert rows[0]["gblend_w_text"] == rows[1]["gblend_w_text"] != pytest.approx(1 / 3)


def test_modality_heads_change_training_and_give_each_encoder_a_gradient(noise_text, tmp_path, tiny_model):
    from conftest import make_state
    from mmsearch.tricks.modality_heads import ModalityHeads

    model, batch = tiny_model
    trick = ModalityHeads(ModalityHeads.Config())
    state = make_state()
    trick.configure_model(model, state)
    model.zero_grad()
    out = model(batch)
    loss = trick.on_loss(torch.zeros(()), out, batch, state)  # the heads' losses alone
    loss.backward()
    for m, encoder in model.encoders.items():  # each modality's own head reaches its encoder
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), m
    assert all(p.grad is not None for p in trick.heads.parameters())
    model.zero_grad()

    with_heads = run_local({**NOISE_TRIAL, "train.epochs": 1, "tricks.modality_heads.enabled": True}, noise_text.dir, tmp_path / "h")
    plain = run_local({**NOISE_TRIAL, "train.epochs": 1}, noise_text.dir, tmp_path / "p")
    assert with_heads["val_loss"] != plain["val_loss"]
    assert with_heads["modality_heads_loss_text"] > 0


def test_status_shows_the_weights_and_a_subset():
    from mmsearch.search.status import blend_weights_note, model_label

    assert blend_weights_note({"val_loss": 1.0, "gblend_w_fused": 0.25, "gblend_w_text": 0.75}) == " gblend w: fused 0.25 text 0.75"
    assert blend_weights_note({"val_loss": 1.0}) == ""
    assert model_label({"model.fusion": "lf_mlp", "model.modalities": "text"}) == "lf_mlp[text]"
    assert model_label({"model.fusion": "early", "model.modalities": "all"}) == "early"
