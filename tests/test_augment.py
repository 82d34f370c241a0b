"""Input-level augmentation (tricks/augment.py) and the per-row hook behind it (Trick.augment_row,
run by RowDataset): training rows change, evaluation rows never; a row's augmentation is a
function of (seed, epoch, row) alone; missing inputs stay missing; it runs in loader workers."""
import math
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CrashAfterFirstEpoch
from torch.utils.data import DataLoader

from mmsearch.config import TrialConfig
from mmsearch.data.dataset import RowDataset
from mmsearch.data.prepare import prepare
from mmsearch.data.synthetic import make_synthetic
from mmsearch.models.model import build_model
from mmsearch.registry import TRICKS
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train
from mmsearch.tricks import build_tricks, row_hooks
from mmsearch.tricks.augment import MIN_WORDS, Augment, edited_text

INPUTS = ("image", "text_ids", "num", "cat")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Prepared synthetic rows with missing cells; every other row's text doubled to >= 10 words
    (the synthetic texts have 5-9, too short to edit), the rest left short."""
    path = make_synthetic(tmp_path_factory.mktemp("augment"), n=64, missing=0.2, seed=2)
    df = pd.read_csv(path)
    long = (df.index % 2 == 0) & df["description"].notna()
    df.loc[long, "description"] = df.loc[long, "description"] + " " + df.loc[long, "description"]
    df.to_csv(path, index=False)
    return prepare(path, "label", path.parent / "prepared")


@pytest.fixture(scope="module")
def model_and_hooks(table, tiny):
    cfg = TrialConfig.from_flat({**tiny, "tricks.augment.enabled": True})
    return build_model(cfg, table), row_hooks(build_tricks(cfg.enabled_tricks()))


def dataset(table, model, part="train", **augment):
    return RowDataset(table, part, view=model.view, image_size=model.image_size, tokenize=model.tokenize, **augment)


def augmented(table, model_and_hooks, epoch=1, seed=0, hooks=None):
    model, default_hooks = model_and_hooks
    ds = dataset(table, model, augment=default_hooks if hooks is None else hooks, seed=seed)
    ds.set_epoch(epoch)
    return ds


def items(ds) -> list[dict]:
    return [ds[i] for i in range(len(ds))]


def changed(a: list[dict], b: list[dict], key: str) -> int:
    return sum(not torch.equal(x[key], y[key]) for x, y in zip(a, b))


def test_only_the_augment_trick_has_a_row_hook(model_and_hooks):
    _, hooks = model_and_hooks
    assert [h.__self__.name for h in hooks] == ["augment"]
    others = TrialConfig.from_flat({f"tricks.{n}.enabled": True for n in TRICKS.names() if n != "augment"})
    assert row_hooks(build_tricks(others.enabled_tricks())) == []  # their datasets build no rows


def test_training_items_change_in_every_modality(table, model_and_hooks):
    model, _ = model_and_hooks
    plain = items(dataset(table, model))
    aug = items(augmented(table, model_and_hooks))
    for key in INPUTS:
        assert changed(plain, aug, key) > 0, f"augmentation never changed {key}"
    for key in ("label", "index", "image_mask", "num_mask", "text_mask"):
        assert changed(plain, aug, key) == 0


def test_each_modality_switches_off(table, model_and_hooks):
    model, _ = model_and_hooks
    off = Augment(Augment.Config(image="none", text_rate=0.0, num_noise=0.0, swap_p=0.0))
    plain = items(dataset(table, model))
    aug = items(augmented(table, model_and_hooks, hooks=[off.augment_row]))
    assert all(changed(plain, aug, key) == 0 for key in INPUTS)


def test_the_loop_augments_training_rows_only_in_loader_workers_and_a_resume_repeats_them(table, tiny, tmp_path, monkeypatch):
    """The hook runs in the DataLoader's worker (not the training process) on training rows
    only (each call leaves a file pid-index); the trial trains; a trial interrupted after epoch 1
    and resumed trains on exactly the rows an uninterrupted one did."""
    seen = tmp_path / "seen"
    seen.mkdir()
    real = Augment.augment_row

    def recording(self, row, rng):
        (seen / f"{os.getpid()}-{row.index}").touch()
        return real(self, row, rng)

    monkeypatch.setattr(Augment, "augment_row", recording)
    trial = {**tiny, "train.epochs": 2, "train.max_steps_per_epoch": 2, "train.loader_workers": 1, "tricks.augment.enabled": True}
    straight = train(trial, table.dir, LocalContext(tmp_path / "straight"))
    assert math.isfinite(straight["val_loss"]) and math.isfinite(straight["train_loss"])
    calls = [p.name.split("-") for p in seen.iterdir()]
    pids, rows = {int(p) for p, _ in calls}, {int(i) for _, i in calls}
    assert rows and os.getpid() not in pids
    assert rows <= set(table.split["train"].tolist())
    assert not rows & set(table.split["val"].tolist()) and not rows & set(table.split["holdout"].tolist())

    with pytest.raises(KeyboardInterrupt):
        train(trial, table.dir, CrashAfterFirstEpoch(tmp_path / "resumed"))
    resumed = train(trial, table.dir, LocalContext(tmp_path / "resumed"))
    assert resumed["train_loss"] == straight["train_loss"] and resumed["val_loss"] == straight["val_loss"]


def test_evaluation_and_predict_items_are_never_augmented(table, model_and_hooks):
    """The loop gives hooks to the training set only; a set without hooks is the unaugmented one."""
    model, _ = model_and_hooks
    for part in ("val", "holdout"):
        first = items(dataset(table, model, part))
        again = items(dataset(table, model, part))
        assert all(changed(first, again, key) == 0 for key in INPUTS)
    rows = table.rows("holdout")
    predict = RowDataset.from_rows(rows, model.view, image_size=model.image_size, tokenize=model.tokenize)
    holdout = items(dataset(table, model, "holdout"))
    assert all(changed(holdout, items(predict), key) == 0 for key in INPUTS)


def test_a_rows_augmentation_depends_on_seed_epoch_and_row_only(table, model_and_hooks):
    """What a resumed trial relies on: a fresh dataset (as after a restart) reading the rows in
    another order gives identical items for the same epoch; another epoch or seed differs."""
    first = items(augmented(table, model_and_hooks, epoch=3))
    fresh = augmented(table, model_and_hooks, epoch=3)
    backwards = [fresh[i] for i in reversed(range(len(fresh)))][::-1]
    assert all(changed(first, backwards, key) == 0 for key in INPUTS)
    for other in (augmented(table, model_and_hooks, epoch=4), augmented(table, model_and_hooks, epoch=3, seed=1)):
        assert all(changed(first, items(other), key) > 0 for key in INPUTS)


def test_persistent_loader_workers_see_each_new_epoch(table, model_and_hooks):
    ds = augmented(table, model_and_hooks, epoch=1)
    loader = DataLoader(ds, batch_size=8, num_workers=1, persistent_workers=True)
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        from_worker = [b for b in loader]
        in_process = list(DataLoader(augmented(table, model_and_hooks, epoch=epoch), batch_size=8))
        assert all(changed(from_worker, in_process, key) == 0 for key in INPUTS), f"epoch {epoch}"


def test_the_training_processs_torch_generator_is_left_alone(table, model_and_hooks):
    """With loader_workers 0 the hook runs in the training process: the image policy's draws
    must not move the stream that the model's dropout reads."""
    ds = augmented(table, model_and_hooks)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    items(ds)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_missing_inputs_stay_missing(table, model_and_hooks):
    model, _ = model_and_hooks
    strong = Augment(Augment.Config(image="trivial", text_rate=1.0, num_noise=1.0, swap_p=1.0))
    plain = items(dataset(table, model))
    for epoch in (1, 2, 3):
        for p, a in zip(plain, items(augmented(table, model_and_hooks, epoch=epoch, hooks=[strong.augment_row]))):
            assert torch.equal(a["image_mask"], p["image_mask"]) and (a["image"][~p["image_mask"]] == 0).all()
            assert (a["num"][~p["num_mask"]] == 0).all() and ((a["cat"] == 0) == (p["cat"] == 0)).all()
            if not p["text_mask"]:
                assert torch.equal(a["text_ids"], p["text_ids"])


def test_presence_is_the_datasets_whatever_a_hook_returns(table, model_and_hooks):
    """The masks an item carries are the dataset's: a hook's presence flags are never read back."""
    model, _ = model_and_hooks

    def rogue(row, rng):
        row.image_present[:] = True
        row.num_present[:] = True
        return row

    plain = items(dataset(table, model))
    aug = items(augmented(table, model_and_hooks, hooks=[rogue]))
    assert not all(p["image_mask"].all() and p["num_mask"].all() for p in plain)
    assert all(changed(plain, aug, key) == 0 for key in ("image_mask", "num_mask", "text_mask"))


def test_short_texts_are_never_edited(table, model_and_hooks):
    model, _ = model_and_hooks
    short = [len(free.split()) < MIN_WORDS for _, free in dataset(table, model)._text_parts]
    assert any(short) and not all(short)
    plain = items(dataset(table, model))
    for epoch in (1, 2, 3):
        aug = items(augmented(table, model_and_hooks, epoch=epoch))
        assert all(torch.equal(p["text_ids"], a["text_ids"]) for p, a, s in zip(plain, aug, short) if s)
        assert any(not torch.equal(p["text_ids"], a["text_ids"]) for p, a, s in zip(plain, aug, short) if not s)


def test_text_edits_are_light_and_of_each_kind():
    text = " ".join(f"w{i}" for i in range(20))
    outs = [edited_text(text, 0.1, np.random.default_rng(s)) for s in range(200)]
    short = "one two three four five six seven eight nine"
    assert all(edited_text(short, 1.0, np.random.default_rng(s)) == short for s in range(20))
    words = [o.split() for o in outs]
    assert any(o == text for o in outs)                                   # identity
    assert any(len(w) < 20 for w in words)                                # delete
    assert any(len(w) > 20 for w in words)                                # punctuation insert
    assert any(len(w) == 20 and w != text.split() for w in words)         # swap
    assert all(18 <= len(w) <= 22 for w in words)                         # at most 10 % of the words


def test_rendered_fields_are_not_edited(table, tiny):
    """With tabular_as_text the hook edits the free text only; the dataset joins the edited text
    with the field lines again and tokenizes that."""
    model = build_model(TrialConfig.from_flat({**tiny, "tricks.tabular_as_text.enabled": True}), table)
    tokenized = []

    def tokenize(texts):
        tokenized.extend(texts)
        return model.tokenize(texts)

    zebra = lambda row, rng: replace(row, text="zebra") if row.text else row  # noqa: E731
    ds = RowDataset(table, "train", view=model.view, tokenize=tokenize, augment=[zebra])
    ds.set_epoch(1)
    tokenized.clear()
    items(ds)
    expected = [f"zebra\n{fields}" if fields else "zebra" for fields, free in ds._text_parts if free]
    assert tokenized == expected and any("\n" in t for t in expected)  # the edited text, then the fields


@pytest.mark.parametrize("key, value", [("text_rate", 1.5), ("swap_p", -0.1), ("num_noise", -1.0)])
def test_out_of_range_settings_are_config_errors(key, value):
    from mmsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=f"tricks.augment.{key}"):
        TrialConfig.from_flat({"tricks.augment.enabled": True, f"tricks.augment.{key}": value})
