"""The loop calls every hook of the contract (tricks/_base.py) at its cadence and uses what it
returns. A recording trick, registered for these tests only, logs each call and, with `effect`,
makes one hook's return value visible in the run's outputs: removing a hook call from the loop,
or ignoring what a hook returns, fails a test here."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmsearch.registry import TRICKS
from conftest import CrashAfterFirstEpoch

from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.tricks import Trick

CALLS: list[tuple] = []  # (hook, detail) in call order, across the trick instances of one run
EPOCHS, STEPS, LR = 2, 3, 3e-3


class Recorder(Trick):
    """Records hook calls; `effect` turns on one visible use of a hook's return value."""
    name = "recorder"

    @dataclass(frozen=True)
    class Config:
        effect: str = "none"  # none | replace_model | freeze_head | lr_quarter | zero_loss | zero_fused_weight | half_rows | zero_head_after_fit

    def __init__(self, config):
        super().__init__(config)
        self.epochs_seen = 0

    def configure_model(self, model, state):
        CALLS.append(("configure_model", None))
        CALLS.append(("initial_weights", {k: v.detach().clone() for k, v in model.named_parameters()}))
        if self.config.effect == "replace_model":  # another object: only the return value has the marker
            model = copy.deepcopy(model)
            model.register_buffer("recorder_marker", torch.ones(1))
        return model

    def training_rows(self, rows, state):
        CALLS.append(("training_rows", len(rows)))
        return rows[::2] if self.config.effect == "half_rows" else rows

    def param_groups(self, params, state):
        CALLS.append(("param_groups", len(params)))
        if self.config.effect == "freeze_head":  # new specs, not edits: only the return value has them
            return [replace(p, lr_scale=0.0) if p.name.startswith("fusion.head.") else p for p in params]
        return params

    def lr_schedule(self, schedule, total_steps):
        CALLS.append(("lr_schedule", total_steps))
        if self.config.effect == "lr_quarter":
            return lambda step: 0.25 * schedule(step)
        return schedule

    def on_batch(self, batch, state):
        CALLS.append(("on_batch", state.epoch))
        CALLS.append(("batch_rows", batch["index"].tolist()))
        if self.config.effect == "zero_fused_weight":
            state.fused_loss_weight = 0.0
        return {**batch, "recorder_seen": torch.ones(1)}

    def on_loss(self, loss, out, batch, state):
        CALLS.append(("on_loss", "recorder_seen" in batch))  # the batch on_batch returned
        return loss * 0.0 if self.config.effect == "zero_loss" else loss

    def before_step(self, model, state):
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        CALLS.append(("before_step", all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)))

    def on_epoch_end(self, model, state):
        self.epochs_seen += 1
        CALLS.append(("on_epoch_end", (state.epoch, state.val_score)))

    def after_fit(self, model, state):
        CALLS.append(("after_fit", None))
        if self.config.effect == "zero_head_after_fit":  # another object with a constant output
            model = copy.deepcopy(model)
            last = model.fusion.head[-1]
            torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)
        return model

    def state_dict(self):
        return {"epochs_seen": self.epochs_seen}

    def load_state_dict(self, state):
        CALLS.append(("load_state_dict", state["epochs_seen"]))
        self.epochs_seen = state["epochs_seen"]


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setitem(TRICKS._entries, Recorder.name, Recorder)
    CALLS.clear()
    yield
    CALLS.clear()


def _run(prepared, tiny, out, effect="none", ctx=None, **extra):
    trial = {**tiny, "train.epochs": EPOCHS, "train.max_steps_per_epoch": STEPS, "optim.lr": LR, "optim.schedule": "constant",
             "optim.weight_decay": 0.0, "tricks.recorder.enabled": True, "tricks.recorder.effect": effect, **extra}
    return train(trial, prepared.dir, ctx or LocalContext(out))


def _calls(hook):
    return [d for h, d in CALLS if h == hook]


def _trained_params(out):
    return load_file(str(out / "final" / "model.safetensors"))


def test_every_hook_is_called_at_its_cadence(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path)
    sequence = [h for h, _ in CALLS if h not in ("initial_weights", "batch_rows")]
    step = ["on_batch", "on_loss", "before_step"]
    assert sequence == ["configure_model", "training_rows", "param_groups", "lr_schedule",
                        *step * STEPS, "on_epoch_end", *step * STEPS, "on_epoch_end", "after_fit"]
    assert _calls("on_batch") == [1] * STEPS + [2] * STEPS  # training steps only: never at evaluation
    assert _calls("lr_schedule") == [EPOCHS * STEPS]
    assert all(_calls("on_loss")), "on_loss did not get the batch that on_batch returned"
    assert all(_calls("before_step")), "before_step did not see the gradients"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and [r["final"] for r in rows] == [False, True]  # one report per epoch
    assert [e for e, _ in _calls("on_epoch_end")] == [1, 2]
    assert _calls("on_epoch_end")[0][1] == rows[0]["val_score"]  # on_epoch_end sees the epoch's val score
    assert _calls("on_epoch_end")[1][1] == rows[1]["val_score"]  # (after_fit changed nothing here)


def test_configure_model_returns_the_model_that_is_trained(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "replace_model")
    assert "recorder_marker" in _trained_params(tmp_path)


def test_param_groups_sets_the_optimizer_lr(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "freeze_head")
    (initial,) = _calls("initial_weights")
    trained = _trained_params(tmp_path)
    head = [k for k in initial if k.startswith("fusion.head.")]
    assert head and all(torch.equal(trained[k], initial[k]) for k in head)  # lr scale 0: never moved
    assert not torch.equal(trained["fusion.adapters.text.weight"], initial["fusion.adapters.text.weight"])  # the rest trained


def test_lr_schedule_sets_the_lr(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "lr_quarter")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.25 * LR] * EPOCHS)


def test_on_loss_is_the_loss_that_is_backpropagated(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "zero_loss")
    (initial,) = _calls("initial_weights")
    trained = _trained_params(tmp_path)
    assert all(torch.equal(trained[k], v) for k, v in initial.items())  # zero loss, no decay: nothing moved
    assert not any(_calls("before_step"))  # and the gradients were all zero


def test_the_fused_loss_weight_scales_the_task_loss(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "zero_fused_weight")
    (initial,) = _calls("initial_weights")
    trained = _trained_params(tmp_path)
    assert all(torch.equal(trained[k], v) for k, v in initial.items())  # weight 0, no decay: nothing moved


def test_training_rows_are_the_rows_trained_on(recorder, small_prepared, tiny, tmp_path):
    _run(small_prepared, tiny, tmp_path, "half_rows", **{"train.max_steps_per_epoch": 0})
    train_part = small_prepared.split["train"]
    seen = {i for rows in _calls("batch_rows") for i in rows}
    assert _calls("training_rows") == [len(train_part)]
    assert seen <= set(train_part[::2]) and len(seen) >= len(train_part[::2]) - tiny["optim.batch_size"]  # drop_last


def test_after_fit_returns_the_model_whose_predictions_are_saved(recorder, small_prepared, tiny, tmp_path):
    final = _run(small_prepared, tiny, tmp_path, "zero_head_after_fit")
    preds = np.load(tmp_path / "final" / "preds_val.npy")
    np.testing.assert_allclose(preds, 1.0 / preds.shape[1], rtol=1e-6)  # a zero head predicts uniform
    assert final["val_loss"] == pytest.approx(np.log(preds.shape[1]), rel=1e-5)



def test_a_resumed_run_restores_the_tricks_state(recorder, small_prepared, tiny, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(small_prepared, tiny, tmp_path, ctx=CrashAfterFirstEpoch(tmp_path))
    CALLS.clear()
    _run(small_prepared, tiny, tmp_path)
    assert _calls("load_state_dict") == [1]  # what it had seen by the epoch-1 checkpoint
    assert [e for e, _ in _calls("on_epoch_end")] == [2]  # epoch 1 is not trained again
