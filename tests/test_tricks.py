"""Each trick does what tricks.md says it does; plus one contract every registered trick passes."""
import copy
import math

import numpy as np
import pytest
import torch
from conftest import CrashAfterFirstEpoch, make_state
from torch import nn

from mmsearch.config import TrialConfig
from mmsearch.data.batch import present
from mmsearch.registry import TRICKS
from mmsearch.tricks import build_tricks
from mmsearch.tricks.soup import average
from mmsearch.tricks.align_infonce import infonce_alignment_loss
from mmsearch.tricks.align_kl import kl_alignment_loss
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.train.optim import base_schedule, make_optimizer, param_specs

DIMENSIONS = {"choice", "uniform", "loguniform", "randint", "grid"}


def trick(name, **cfg):
    return build_tricks(TrialConfig.from_flat({f"tricks.{name}.enabled": True, **{f"tricks.{name}.{k}": v for k, v in cfg.items()}}).enabled_tricks())[0]


# -- the contract every registered trick passes ------------------------------------------------
@pytest.mark.parametrize("name", TRICKS.names())
def test_contract_space_and_config(name):
    cls = TRICKS.get(name)
    fields = set(cls.Config.__dataclass_fields__)
    for key, dim in cls.space.items():
        assert key in fields, f"{name}.space names {key!r}, not a Config field"
        (kind, args), = dim.items()
        assert kind in DIMENSIONS and isinstance(args, list) and args
    cfg = TrialConfig.from_flat({f"tricks.{name}.enabled": True})
    assert TrialConfig.from_flat(cfg.to_flat()) == cfg
    assert cls.__doc__, f"{name} needs a docstring saying what it does"


@pytest.mark.parametrize("name", TRICKS.names())
def test_contract_trains_with_finite_loss(name, small_prepared, tiny, tmp_path):
    trial = {**tiny, "train.epochs": 2, "train.max_steps_per_epoch": 2, f"tricks.{name}.enabled": True}
    final = train(trial, small_prepared.dir, LocalContext(tmp_path))
    assert math.isfinite(final["val_loss"]) and math.isfinite(final["holdout_loss"])
    history = [l for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2  # one report per epoch; the last is the final one


def test_contract_seeded_runs_repeat(small_prepared, tiny, tmp_path):
    trial = {**tiny, "train.epochs": 1, "train.max_steps_per_epoch": 3, **{f"tricks.{n}.enabled": True for n in TRICKS.names()}}
    train(trial, small_prepared.dir, LocalContext(tmp_path / "a"))
    train(trial, small_prepared.dir, LocalContext(tmp_path / "b"))
    a, b = (np.load(tmp_path / r / "final" / "preds_val.npy") for r in "ab")
    np.testing.assert_array_equal(a, b)


# -- layer-wise LR decay ------------------------------------------------------------------------
def test_llrd_lrs_follow_decay_power_depth(tiny_model):
    model, _ = tiny_model
    specs = trick("layerwise_lr_decay", decay=0.5).param_groups(param_specs(model, 0.01), make_state())
    by_name = {s.name: s for s in specs}
    assert by_name["fusion.head.0.weight"].depth == 0 and by_name["fusion.head.0.weight"].lr_scale == 1.0
    emb = by_name["encoders.text.model.embeddings.word_embeddings.weight"]
    top = by_name["encoders.text.model.encoder.layer.1.output.dense.weight"]
    low = by_name["encoders.text.model.encoder.layer.0.output.dense.weight"]
    assert (top.depth, low.depth, emb.depth) == (1, 2, 3)  # text tower: 2 blocks + embeddings
    tab_emb = by_name["encoders.tabular.ft.cont_embeddings.weight"]
    assert tab_emb.depth == 2  # each tower counts its own depths (FT: 1 block + embeddings)
    optimizer = make_optimizer(specs, lr=1e-3)
    for group in optimizer.param_groups:
        for p in group["params"]:
            s = next(s for s in specs if s.param is p)
            assert group["lr"] == pytest.approx(1e-3 * 0.5 ** s.depth)


def test_no_weight_decay_on_bias_norm_embedding(tiny_model):
    model, _ = tiny_model
    specs = {s.name: s for s in param_specs(model, 0.01)}
    assert specs["fusion.head.0.bias"].weight_decay == 0.0
    assert specs["encoders.text.model.embeddings.word_embeddings.weight"].weight_decay == 0.0
    assert specs["encoders.text.model.encoder.layer.0.attention.output.LayerNorm.weight"].weight_decay == 0.0
    assert specs["fusion.head.0.weight"].weight_decay == 0.01


# -- gradient clipping ----------------------------------------------------------------------------
def test_grad_clip_bounds_the_global_norm(tiny_model):
    model, batch = tiny_model
    model.train()
    model.zero_grad()
    (model(batch).logits.pow(2).sum() * 1e3).backward()
    state = make_state()
    trick("grad_clip", max_norm=0.5).before_step(model, state)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert norm <= 0.5 + 1e-4
    assert state.pop_logs()["grad_norm"] > 0.5  # it really had to clip
    model.zero_grad()


# -- warmup -----------------------------------------------------------------------------------------
def test_warmup_then_cosine_values():
    schedule = trick("lr_warmup", fraction=0.1).lr_schedule(base_schedule("cosine", 100), 100)
    assert [schedule(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert schedule(10) == pytest.approx(1.0)                       # cosine starts at its top
    assert schedule(55) == pytest.approx(0.5)                       # halfway through the rest
    assert schedule(99) < 0.01 and all(schedule(s) >= schedule(s + 1) for s in range(9, 99))
    w = nn.Linear(2, 2)
    opt = torch.optim.SGD(w.parameters(), lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)          # the optimizer really follows it
    for _ in range(9):
        opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0)


# -- greedy soup ------------------------------------------------------------------------------------
def _soup_run(method, scores, soup_scores=None):
    """Epochs with weights w_e = e (a 1-parameter model) and the given val scores. Evaluating a
    soup looks its averaged weight up in soup_scores (so a test decides what averaging gives)."""
    model = nn.Linear(1, 1, bias=False)
    soup = trick("soup", method=method, top_k=3)
    evaluate = lambda m: (soup_scores or {})[round(float(m.weight.detach()), 6)]
    state = make_state(evaluate=evaluate)
    for epoch, s in enumerate(scores, 1):
        model.weight.data.fill_(float(epoch))
        state.epoch, state.val_score = epoch, s
        soup.on_epoch_end(model, state)
    soup.after_fit(model, state)
    return float(model.weight.detach()), state.info["soup_epochs"], soup


SCORES = [0.1, 0.5, 0.2, 0.9, 0.4]  # ranked: epoch 4 (0.9), epoch 2 (0.5), epoch 5 (0.4)


def test_soup_keeps_top_k():
    _, _, soup = _soup_run("best", SCORES)
    assert [c[1] for c in soup.candidates] == [4, 2, 5]


def test_uniform_soup_is_the_average_of_top_k():
    w, epochs, _ = _soup_run("uniform", SCORES)
    assert epochs == [4, 2, 5] and w == pytest.approx((4 + 2 + 5) / 3)


def test_best_soup_is_the_best_checkpoint():
    w, epochs, _ = _soup_run("best", SCORES)
    assert (w, epochs) == (4.0, [4])


def test_greedy_soup_adds_only_what_does_not_hurt():
    # avg(4, 2) = 3 beats the best alone (0.95 > 0.9): kept; avg(4, 2, 5) = 11/3 better again: kept
    w, epochs, _ = _soup_run("greedy", SCORES, {3.0: 0.95, round(11 / 3, 6): 0.97})
    assert epochs == [4, 2, 5] and w == pytest.approx(11 / 3)
    # avg(4, 2) hurts (0.85 < 0.9): skipped; avg(4, 5) = 4.5 ties the best (0.9): "not worse", kept
    w, epochs, _ = _soup_run("greedy", SCORES, {3.0: 0.85, 4.5: 0.9})
    assert epochs == [4, 5] and w == pytest.approx(4.5)
    # nothing helps: the soup is the best checkpoint alone
    w, epochs, _ = _soup_run("greedy", SCORES, {3.0: 0.1, 4.5: 0.2})
    assert epochs == [4] and w == 4.0


def test_soup_does_not_average_integer_buffers():
    bn = [nn.BatchNorm1d(2).state_dict() for _ in range(2)]
    bn[0]["num_batches_tracked"].fill_(3), bn[1]["num_batches_tracked"].fill_(10)
    bn[0]["running_mean"].fill_(1.0), bn[1]["running_mean"].fill_(2.0)
    avg = average(bn)
    assert int(avg["num_batches_tracked"]) == 3 and avg["running_mean"].tolist() == [1.5, 1.5]


def test_soup_state_survives_a_checkpoint():
    _, _, soup = _soup_run("best", [0.3, 0.2])
    again = trick("soup")
    again.load_state_dict(soup.state_dict())
    assert [(s, e) for s, e, _ in again.candidates] == [(s, e) for s, e, _ in soup.candidates]


# -- modality dropout ----------------------------------------------------------------------------------
def test_modality_dropout_blanks_whole_modalities(tiny_model):
    _, batch = tiny_model
    out = trick("modality_dropout", p=1.0, keep_one=True).on_batch(batch, make_state())
    kept = torch.stack([out["image_mask"][:, 0], out["text_mask"], out["num_mask"].any(1) | (out["cat"] != 0).any(1)], 1)
    assert (kept.sum(1) <= 1).all()          # p=1: everything dropped except the one kept...
    survivors = torch.stack([batch["image_mask"][:, 0], batch["text_mask"], batch["num_mask"].any(1) | (batch["cat"] != 0).any(1)], 1)
    assert (kept <= survivors).all()          # ...which is only ever an input that was there
    dropped_tab = ~out["num_mask"].any(1)
    assert (out["cat"][dropped_tab] == 0).all()  # categories -> the reserved missing id


def test_modality_dropout_keep_one_keeps_a_modality_the_row_has(tiny_model):
    """Rows that have one modality only (each a different one) never lose it with keep_one; the
    same draws without keep_one blank them (p=1), so ignoring keep_one fails this test."""
    from mmsearch.data import batch as inputs

    _, batch = tiny_model
    rows = torch.arange(len(batch["index"]))
    only = {m: rows % 3 == i for i, m in enumerate(("image", "text", "tabular"))}  # row r has modality r % 3 only
    for m in ("image", "text", "tabular"):
        batch = inputs.without(batch, m, ~only[m])
    has = torch.stack([inputs.present(batch, m) for m in ("image", "text", "tabular")], 1)
    assert (has.sum(1) <= 1).all() and has.sum() >= 8  # (a row whose one input was missing anyway has none)
    for keep_one, survivors in ((True, 1), (False, 0)):
        out = trick("modality_dropout", p=1.0, keep_one=keep_one).on_batch(batch, make_state())
        kept = torch.stack([inputs.present(out, m) for m in ("image", "text", "tabular")], 1)
        assert (kept.sum(1) == survivors * has.sum(1)).all() and (kept <= has).all()


def test_modality_dropout_rate(tiny_model):
    _, batch = tiny_model
    big = {k: v.repeat(*([64] + [1] * (v.ndim - 1))) for k, v in batch.items()}
    out = trick("modality_dropout", p=0.3, keep_one=False).on_batch(big, make_state())
    rate = 1 - (out["text_mask"].float().sum() / big["text_mask"].float().sum())
    assert 0.25 < float(rate) < 0.35


def test_modality_dropout_never_acts_at_eval(small_prepared, tiny, tmp_path, monkeypatch):
    from mmsearch.tricks.modality_dropout import ModalityDropout

    calls = []
    original = ModalityDropout.on_batch
    monkeypatch.setattr(ModalityDropout, "on_batch", lambda self, b, s: calls.append(s.epoch) or original(self, b, s))
    trial = {**tiny, "train.epochs": 2, "train.max_steps_per_epoch": 3, "tricks.modality_dropout.enabled": True}
    train(trial, small_prepared.dir, LocalContext(tmp_path))
    assert calls == [1, 1, 1, 2, 2, 2]  # one call per training step; none for the val/holdout passes


# -- positive-only KL alignment --------------------------------------------------------------------------
def test_kl_zero_for_identical_features():
    f = torch.randn(8, 16)
    assert float(kl_alignment_loss({"image": f, "text": f.clone(), "tabular": f.clone()})) == pytest.approx(0.0, abs=1e-6)


def test_kl_positive_with_gradients_to_every_modality():
    feats = {m: torch.randn(8, 16, requires_grad=True) for m in ("image", "text")}
    loss = kl_alignment_loss(feats)
    loss.backward()
    assert float(loss) > 0 and all(f.grad.abs().sum() > 0 for f in feats.values())
    # symmetric mean over ordered pairs: 0.5 * (KL(P_t||P_i) + KL(P_i||P_t))
    p = {m: torch.softmax(f.detach(), -1) for m, f in feats.items()}
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1).mean()
    assert float(loss) == pytest.approx(float(0.5 * (kl(p["text"], p["image"]) + kl(p["image"], p["text"]))), rel=1e-5)


def test_kl_trick_adds_weighted_term(tiny_model):
    model, batch = tiny_model
    out = model(batch)
    base = torch.tensor(1.0)
    added = trick("align_kl", weight=2.0).on_loss(base, out, batch, make_state())
    assert float(added - base) == pytest.approx(2.0 * float(kl_alignment_loss(out.features)), rel=1e-5)


# -- InfoNCE alignment -------------------------------------------------------------------------------------
def _paired(n=32, d=16, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g)
    return a, a + noise * torch.randn(n, d, generator=g)


def _all_rows(**feats):
    return {m: (f, torch.ones(len(f), dtype=torch.bool)) for m, f in feats.items()}


def test_infonce_low_when_paired_high_when_shuffled():
    a, b = _paired()
    scale = torch.tensor(1 / 0.07)
    paired = float(infonce_alignment_loss(_all_rows(image=a, text=b), scale))
    shuffled = float(infonce_alignment_loss(_all_rows(image=a, text=b[torch.randperm(len(b), generator=torch.Generator().manual_seed(1))]), scale))
    assert paired < 0.1 < math.log(len(a)) * 0.8 < shuffled  # chance level is log(B)


def test_infonce_gradients_reach_every_modality_and_the_temperature():
    t = trick("align_infonce")
    feats = {m: torch.randn(8, 16, requires_grad=True) for m in ("image", "text", "tabular")}
    term = infonce_alignment_loss(_all_rows(**feats), t.logit_scale())
    term.backward()
    assert all(f.grad.abs().sum() > 0 for f in feats.values()) and t.log_scale.grad.abs() > 0


def test_infonce_skips_pairs_without_negatives():
    a, b = _paired(n=4)
    one_row = torch.tensor([True, False, False, False])
    assert infonce_alignment_loss({"image": (a, one_row), "text": (b, torch.ones(4, dtype=torch.bool))}, torch.tensor(10.0)) is None
    assert infonce_alignment_loss(_all_rows(image=a), torch.tensor(10.0)) is None  # a single modality: no pair
    # rows missing a modality share its "missing" feature: they take no part in that pair
    rows = torch.tensor([True, True, False, True])
    b_missing = b.clone()
    b_missing[2] = 0.0
    got = infonce_alignment_loss({"image": (a, torch.ones(4, dtype=torch.bool)), "text": (b_missing, rows)}, torch.tensor(10.0))
    assert float(got) == pytest.approx(float(infonce_alignment_loss(_all_rows(image=a[rows], text=b[rows]), torch.tensor(10.0))))


def test_infonce_trick_adds_weighted_term(tiny_model):
    model, batch = tiny_model
    out = model(batch)
    t = trick("align_infonce", weight=0.2)
    state = make_state()
    base = torch.tensor(1.0)
    added = t.on_loss(base, out, batch, state).detach()
    with torch.no_grad():
        term = infonce_alignment_loss({m: (f, present(batch, m)) for m, f in out.features.items()}, torch.tensor(1 / 0.07))
    assert len(out.features) >= 2 and float(term) > 0
    assert float(added - base) == pytest.approx(0.2 * float(term), rel=1e-5)
    assert state.pop_logs()["align_infonce"] == pytest.approx(float(term), rel=1e-5)


def test_infonce_temperature_is_trained_and_checkpointed(tiny_model):
    model, batch = copy.deepcopy(tiny_model)  # a step below changes the weights: not the shared model's
    keys = set(model.state_dict())
    t = trick("align_infonce")
    specs = t.param_groups(param_specs(model, 0.01), make_state())
    assert set(model.state_dict()) == keys  # the model (and so the exported bundle) is unchanged
    assert sum(s.param is t.log_scale for s in specs) == 1
    optimizer = make_optimizer(specs, lr=0.1)
    before = t.logit_scale().item()
    assert before == pytest.approx(1 / 0.07)
    loss = t.on_loss(torch.tensor(0.0), model(batch), batch, make_state())
    loss.backward()
    optimizer.step()
    assert t.logit_scale().item() != pytest.approx(before)
    saved = t.state_dict()
    resumed = trick("align_infonce")
    resumed.param_groups(param_specs(model, 0.01), make_state())
    resumed.load_state_dict(saved)
    assert resumed.logit_scale().item() == pytest.approx(t.logit_scale().item())


def test_infonce_temperature_is_clamped():
    t = trick("align_infonce")
    with torch.no_grad():
        t.log_scale.fill_(10.0)
    t.logit_scale().backward()
    assert t.logit_scale().item() == pytest.approx(100.0) and float(t.log_scale.grad) > 0  # at the bound it still trains


def _infonce_ddp_worker(rank, store, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    t, state = trick("align_infonce"), make_state(rank=rank, world_size=2)
    t.param_groups([], state)
    if rank == 0:  # rank 1 skipped the term (e.g. a single row): its temperature has no gradient
        a, b = _paired(seed=3)
        infonce_alignment_loss(_all_rows(image=a, text=b.flip(0)), t.logit_scale()).backward()
        torch.save(t.log_scale.grad.clone(), f"{out_dir}/own.pt")
    t.before_step(None, state)
    torch.save(t.log_scale.grad, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_infonce_temperature_gradient_is_averaged_over_ddp_workers(tmp_path):
    # the temperature lives outside the DDP-wrapped model: the trick all-reduces its gradient itself
    torch.multiprocessing.spawn(_infonce_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    own, g0, g1 = (torch.load(tmp_path / f"{n}.pt") for n in ("own", 0, 1))
    assert float(own) != 0 and float(g0) == float(g1) == pytest.approx(float(own) / 2)



def test_infonce_resume_repeats_the_run_and_the_weights_fit_a_model_without_the_trick(small_prepared, tiny, tmp_path):
    from mmsearch.layout.checkpoint_dir import CheckpointDir
    from mmsearch.models.model import build_model
    from mmsearch.train.checkpoint import load_weights

    trial = {**tiny, "train.epochs": 2, "train.max_steps_per_epoch": 3, "optim.lr": 0.05, "tricks.align_infonce.enabled": True}
    straight = train(trial, small_prepared.dir, LocalContext(tmp_path / "straight"))
    with pytest.raises(KeyboardInterrupt):
        train(trial, small_prepared.dir, CrashAfterFirstEpoch(tmp_path / "resumed"))
    resumed = train(trial, small_prepared.dir, LocalContext(tmp_path / "resumed"))  # the temperature comes back too
    assert resumed["align_infonce"] == straight["align_infonce"] and resumed["val_loss"] == straight["val_loss"]
    # the exported weights load strictly into the model the config builds (what the bundle does)
    load_weights(build_model(TrialConfig.from_flat(trial), small_prepared), CheckpointDir(tmp_path / "straight" / "final").weights)
