"""Feature-level augmentation tricks (tricks.md "Augmentation"): manifold mixup on the fused
vector and the LeMDA augmenter. Each test fails if its feature silently does nothing."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import CrashAfterFirstEpoch, make_state
from torch import nn

from mmsearch.config import TrialConfig
from mmsearch.losses import task_loss
from mmsearch.models.fusion import ModelOutput
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.tricks import build_tricks
from mmsearch.tricks.lemda import Augmenter, _consistency


def trick(name, **cfg):
    return build_tricks(TrialConfig.from_flat({f"tricks.{name}.enabled": True, **{f"tricks.{name}.{k}": v for k, v in cfg.items()}}).enabled_tricks())[0]


def _record_head_inputs(model) -> list[torch.Tensor]:
    """The head's input at each call, as the head saw it (after any pre-hook)."""
    seen = []
    model.fusion.head.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    return seen


# -- manifold mixup ------------------------------------------------------------------------------------
def test_mixup_head_sees_mixed_features_in_training_only_once_per_step(tiny_model):
    model, batch = copy.deepcopy(tiny_model)
    t, state = trick("manifold_mixup"), make_state()
    model = t.configure_model(model, state)
    seen = _record_head_inputs(model)
    model.train()
    t.on_batch(batch, state)
    out = model(batch)
    lam, perm = t._mixed
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(len(perm)))
    torch.testing.assert_close(seen[-1], lam * out.fused.detach() + (1 - lam) * out.fused.detach()[perm])
    assert not torch.allclose(seen[-1], out.fused.detach())  # out.fused stays the unmixed vector
    model.fusion.head(out.fused)  # a second call in the same step (lemda's) is not mixed
    assert torch.equal(seen[-1], out.fused.detach())


def test_mixup_never_mixes_at_eval(tiny_model):
    model, batch = copy.deepcopy(tiny_model)
    model.eval()
    with torch.no_grad():
        plain = model(batch).logits
    t, state = trick("manifold_mixup"), make_state()
    model = t.configure_model(model, state)
    t.on_batch(batch, state)  # armed, as if a training step had begun: eval mode still wins
    with torch.no_grad():
        assert torch.equal(model(batch).logits, plain)
    assert t._mixed is None


def test_mixup_loss_is_the_soft_target_cross_entropy(tiny_model):
    model, batch = copy.deepcopy(tiny_model)
    t, state = trick("manifold_mixup"), make_state(fused_loss_weight=0.5)
    model = t.configure_model(model, state).train()
    t.on_batch(batch, state)
    out = model(batch)
    lam, perm = t._mixed
    y = batch["label"]
    other = torch.tensor(0.25)  # another trick's term: left as it is
    loss = t.on_loss(0.5 * F.cross_entropy(out.logits, y) + other, out, batch, state)
    soft = lam * F.one_hot(y, 3).float() + (1 - lam) * F.one_hot(y[perm], 3).float()
    expected = 0.5 * (lam * F.cross_entropy(out.logits, y) + (1 - lam) * F.cross_entropy(out.logits, y[perm])) + other
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, 0.5 * F.cross_entropy(out.logits, soft) + other)
    assert state.pop_logs()["mixup_lambda"] == pytest.approx(lam)
    assert t.on_loss(torch.tensor(1.0), out, batch, state) == 1.0  # used once: the next step re-arms


def test_mixup_regression_has_the_gradients_of_the_linearly_mixed_target():
    torch.manual_seed(0)
    head = nn.Linear(4, 1)
    t, state = trick("manifold_mixup"), make_state(problem_type="regression")
    t.configure_model(SimpleNamespace(fusion=SimpleNamespace(head=head)), state)
    x, y = torch.randn(8, 4), torch.randn(8)
    batch = {"label": y}
    t.on_batch(batch, state)
    logits = head(x)
    lam, perm = t._mixed
    loss = t.on_loss(task_loss(logits, y, "regression"), ModelOutput(logits=logits, features={}), batch, state)
    grads = torch.autograd.grad(loss, list(head.parameters()), retain_graph=True)
    target = lam * y + (1 - lam) * y[perm]
    mixed_target = F.mse_loss(logits.squeeze(-1), target)
    expected = torch.autograd.grad(mixed_target, list(head.parameters()))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
    # the two losses differ by lam (1 - lam) mean((y - y[perm])^2), which no parameter moves
    torch.testing.assert_close(loss - mixed_target, lam * (1 - lam) * ((y - y[perm]) ** 2).mean())


# -- LeMDA -------------------------------------------------------------------------------------------------
def _configured_lemda(tiny_model, **cfg):
    model, batch = copy.deepcopy(tiny_model)
    t, state = trick("lemda", **cfg), make_state()
    keys = set(model.state_dict())
    model = t.configure_model(model, state)
    assert set(model.state_dict()) == keys  # the augmenter is not the model's (not exported)
    return model, batch, t, state


def test_lemda_augmenter_starts_as_the_identity():
    torch.manual_seed(0)
    aug = Augmenter(16, 32, 4)
    x = torch.randn(8, 16)
    out, mu, logvar = aug(x)
    assert torch.equal(out, x) and mu.shape == logvar.shape == (8, 4)
    assert mu.abs().sum() > 0  # the encoder is live: only the decoder's last layer starts at zero


def _step(model, batch, t, state):
    out = model(batch)
    loss = t.on_loss(task_loss(out.logits, batch["label"], state.problem_type), out, batch, state)
    model.zero_grad()
    loss.backward()
    t.before_step(model, state)
    return out


def test_lemda_augmenter_weights_move(tiny_model):
    model, batch, t, state = _configured_lemda(tiny_model)
    before = {k: v.clone() for k, v in t.augmenter.state_dict().items()}
    x = model(batch).fused.detach()
    for _ in range(3):
        _step(model.train(), batch, t, state)
    moved = {k for k, v in t.augmenter.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {k for k, _ in t.augmenter.named_parameters()}  # every parameter, the zero-initialised ones too
    assert not torch.allclose(t.augmenter(x)[0], x)  # it no longer returns its input
    assert all(p.grad is None for p in t.augmenter.parameters())  # stepped and cleared
    logs = state.pop_logs()
    assert math.isfinite(logs["lemda_augmenter_loss"]) and math.isfinite(logs["lemda_augmented_loss"])


def test_lemda_model_gradients_are_the_task_and_augmented_sample_losses_only(tiny_model):
    """The augmenter's own loss (made large here) reaches the augmenter alone: the model's
    gradients are those of L(x) + L(head(aug)) with aug fixed."""
    model, batch, t, state = _configured_lemda(tiny_model, adv_weight=1.0, consist_weight=1.0, mse_weight=1.0, kl_weight=1.0)
    model = copy.deepcopy(model)  # another trick's configure_model may return a copy: the trick follows it
    model.eval()  # no dropout: the two passes below see the same network
    _step(model, batch, t, state)  # one step first: the augmenter is no longer the identity
    y = batch["label"]

    torch.manual_seed(5)
    out = model(batch)
    loss = t.on_loss(F.cross_entropy(out.logits, y), out, batch, state)
    own = [p.grad.clone() for p in t.augmenter.parameters()]
    model.zero_grad()
    loss.backward()
    with_trick = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.equal(p.grad, g) for p, g in zip(t.augmenter.parameters(), own))  # untouched by the model's backward
    assert any(g.abs().sum() > 0 for g in own)

    torch.manual_seed(5)  # the same reparameterisation noise
    out = model(batch)
    aug = t.augmenter(out.fused.detach())[0].detach()
    model.zero_grad()
    (F.cross_entropy(out.logits, y) + F.cross_entropy(model.fusion.head(aug), y)).backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(with_trick) == set(expected)
    for n in expected:
        torch.testing.assert_close(with_trick[n], expected[n], msg=n)
    assert not torch.allclose(aug, out.fused)  # the augmented-sample term was a real one


def test_lemda_leaves_evaluation_alone(tiny_model):
    model, batch, t, state = _configured_lemda(tiny_model)
    model.eval()
    with torch.no_grad():
        plain = model(batch).logits
    _step(model, batch, t, state)  # the augmenter moves; the model's weights are not stepped here
    with torch.no_grad():
        assert torch.equal(model(batch).logits, plain)


def test_lemda_consistency_counts_confident_rows_only():
    x = torch.tensor([[2.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    assert float(_consistency(x, x.clone(), "multiclass", 0.5)) == 0.0
    confident = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])  # row 0 sure of class 1, row 1 uniform
    p, log_q = x.softmax(-1), confident.log_softmax(-1)
    row0 = float((p[0] * (p[0].log() - log_q[0])).sum())
    assert float(_consistency(x, confident, "multiclass", 0.5)) == pytest.approx(row0 / 2)  # row 1 masked
    assert float(_consistency(x, confident, "multiclass", 0.99)) == 0.0
    assert float(_consistency(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [4.0]]), "regression", 0.5)) == 2.0


def test_lemda_on_regression():
    torch.manual_seed(0)
    head = nn.Linear(8, 1)
    t, state = trick("lemda"), make_state(problem_type="regression")
    t.configure_model(SimpleNamespace(fusion=SimpleNamespace(head=head, fused_dim=8)), state)
    x, y = torch.randn(6, 8, requires_grad=True), torch.randn(6)
    out = ModelOutput(logits=head(x), features={}, fused=x)
    loss = t.on_loss(task_loss(out.logits, y, "regression"), out, {"label": y}, state)
    torch.testing.assert_close(loss, 2 * task_loss(out.logits, y, "regression"))  # aug == x at first
    assert all(p.grad is not None for p in t.augmenter.parameters())


def _lemda_ddp_worker(rank, store, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial augmenter on both ranks
    t, state = trick("lemda"), make_state(rank=rank, world_size=2)
    t.configure_model(SimpleNamespace(fusion=SimpleNamespace(head=nn.Linear(8, 3), fused_dim=8)), state)
    for i, p in enumerate(t.augmenter.parameters()):
        p.grad = torch.full_like(p, float(rank + 1) * (i + 1))  # each rank its own gradient
    t.before_step(None, state)
    torch.save(t.augmenter.state_dict(), f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_lemda_augmenter_stays_identical_across_ddp_workers(tmp_path):
    torch.multiprocessing.spawn(_lemda_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    torch.manual_seed(0)  # what one process stepping the averaged gradient gives
    t = trick("lemda")
    t.configure_model(SimpleNamespace(fusion=SimpleNamespace(head=nn.Linear(8, 3), fused_dim=8)), make_state())
    for i, p in enumerate(t.augmenter.parameters()):
        p.grad = torch.full_like(p, 1.5 * (i + 1))
    t.before_step(None, make_state())
    for k, v in t.augmenter.state_dict().items():
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], v), k


# -- both, through the training loop -------------------------------------------------------------------
def test_lemda_resume_continues_the_augmenter_and_its_optimizer(small_prepared, tiny, tmp_path):
    from mmsearch.layout.checkpoint_dir import CheckpointDir
    from mmsearch.models.model import build_model
    from mmsearch.train.checkpoint import load_weights

    trial = {**tiny, "train.epochs": 2, "train.max_steps_per_epoch": 3, "tricks.lemda.enabled": True,
             "tricks.lemda.lr": 1e-2}  # a large augmenter lr: its state must matter to the outcome
    straight = train(trial, small_prepared.dir, LocalContext(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        train(trial, small_prepared.dir, CrashAfterFirstEpoch(tmp_path / "resumed"))
    resumed = train(trial, small_prepared.dir, LocalContext(tmp_path / "resumed"))
    assert resumed["lemda_augmenter_loss"] == straight["lemda_augmenter_loss"]
    assert resumed["val_loss"] == straight["val_loss"]
    # the exported weights load strictly into the model the config builds (what the bundle does)
    load_weights(build_model(TrialConfig.from_flat(trial), small_prepared), CheckpointDir(tmp_path / "straight" / "final").weights)


def test_mixup_and_lemda_act_in_the_training_loop(small_prepared, tiny, tmp_path):
    trial = {**tiny, "train.epochs": 1, "train.max_steps_per_epoch": 2, "model.fusion": "early",
             "tricks.manifold_mixup.enabled": True, "tricks.lemda.enabled": True}
    final = train(trial, small_prepared.dir, LocalContext(tmp_path))
    assert 0 < final["mixup_lambda"] < 1  # logged only when the head really mixed a training batch
    assert math.isfinite(final["lemda_augmented_loss"]) and math.isfinite(final["val_loss"])
