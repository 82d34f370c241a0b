"""model.finetune (models/frozen.py) and the frozen encoders' feature cache (data/feature_cache.py):
a frozen trial never updates its pretrained towers, reads encodings that equal what the towers
compute live, builds the cache once for all its trials (continuing an interrupted build), and its
bundle predicts from raw rows."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from conftest import TINY
from mmsearch.config import TrialConfig
from mmsearch.data import batch as inputs
from mmsearch.data import feature_cache
from mmsearch.data.dataset import RowDataset
from mmsearch.models.encoders import LEARNED_MISSING
from mmsearch.models.model import build_model
from mmsearch.registry import ENCODERS
from mmsearch.train.run import run_local
from test_models import CTX, TINY_ARGS, _batch

FROZEN = {**TINY, "model.finetune": "frozen"}


@pytest.mark.parametrize("missing", ["impute", "learnable"])
@pytest.mark.parametrize("name", ["timm", "tiny_text", "clip_tiny"])
def test_encode_then_finish_is_forward(name, missing):
    """What the cache stores (encode) and what the model does with it (finish) is the encoder."""
    torch.manual_seed(0)
    enc = ENCODERS.get(name)(replace(CTX, missing=missing), **TINY_ARGS[name]).eval()
    assert enc.splits
    batch = _batch(enc)
    batch["image_mask"][1] = False  # a missing input takes the missing path in both
    if "text_mask" in batch:
        batch["text_mask"][2] = False
    with torch.no_grad():
        live = enc(batch)
        split = {m: enc.finish(m, *e) for m, e in enc.encode(batch).items()}
    assert set(live) == set(split)
    for m in live:
        torch.testing.assert_close(split[m].pooled, live[m].pooled)


def test_frozen_and_top_k_set_what_trains(small_prepared):
    frozen = build_model(TrialConfig.from_flat({**FROZEN, "model.missing": "learnable"}), small_prepared)
    assert frozen.frozen == {"image", "text"}
    for slot, enc in frozen.encoders.items():
        trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
        if slot == "tabular":  # trained from scratch: never frozen
            assert trainable == {n for n, _ in enc.named_parameters()}
        else:
            assert trainable == {n for n in trainable if n.startswith(LEARNED_MISSING)} and trainable
    top = build_model(TrialConfig.from_flat({**TINY, "model.finetune": "top_k", "model.top_k": 1}), small_prepared)
    full = build_model(TrialConfig.from_flat(TINY), small_prepared)
    assert not top.frozen
    for slot in ("image", "text"):
        depths = full.encoders[slot].layer_depths()
        trainable = {n for n, p in top.encoders[slot].named_parameters() if p.requires_grad}
        assert trainable == {n for n, d in depths.items() if d <= 2} and 0 < len(trainable) < len(depths)


def test_a_frozen_trial_never_updates_its_towers_and_builds_the_cache_once(small_prepared, tmp_path, monkeypatch):
    builds = []
    build = feature_cache._build
    monkeypatch.setattr(feature_cache, "_build", lambda path, slot, *a, **k: (builds.append(slot), build(path, slot, *a, **k)))
    torch.manual_seed(TINY.get("train.seed", 0))
    initial = build_model(TrialConfig.from_flat(FROZEN), small_prepared).state_dict()
    for i in range(3):  # three trials (other lr): the encodings are the same rows through the same towers
        run_local({**FROZEN, "train.epochs": 1, "optim.lr": 1e-3 * (i + 1)}, small_prepared.dir, tmp_path / f"t{i}")
    assert sorted(builds) == ["image", "text"]
    # nor do trials that read fewer modalities (the image tower: the tiny text tower is random, and
    # its weights depend on what was built before it)
    run_local({**FROZEN, "train.epochs": 1, "model.modalities": "image"}, small_prepared.dir, tmp_path / "image")
    assert sorted(builds) == ["image", "text"]
    trained = load_file(str(tmp_path / "t0" / "final" / "model.safetensors"))
    towers = [k for k in initial if k.startswith(("encoders.image.", "encoders.text."))]
    assert towers and all(torch.equal(trained[k], initial[k]) for k in towers)
    assert not torch.equal(trained["fusion.adapters.text.weight"], initial["fusion.adapters.text.weight"])
    assert not any(torch.equal(trained[k], initial[k]) for k in initial if k.startswith("encoders.tabular.") and initial[k].numel() > 1)
    # a trick that changes the rows' inputs: the towers run live, in eval mode (batch-norm statistics too stay)
    run_local({**FROZEN, "train.epochs": 1, "tricks.augment.enabled": True}, small_prepared.dir, tmp_path / "live")
    assert sorted(builds) == ["image", "text"]
    trained = load_file(str(tmp_path / "live" / "final" / "model.safetensors"))
    assert all(torch.equal(trained[k], initial[k]) for k in towers)


@pytest.mark.parametrize("missing", ["impute", "learnable"])
def test_cached_encodings_give_the_live_outputs_also_for_inputs_dropped_in_training(small_prepared, missing):
    """The model on a batch that carries cached encodings == the model running its frozen towers
    on the raw batch, including rows whose modality a trick blanked (modality dropout)."""
    torch.manual_seed(0)
    model = build_model(TrialConfig.from_flat({**FROZEN, "model.missing": missing}), small_prepared).eval()
    encodings, imputed = feature_cache.encodings(model, small_prepared, batch_size=16, device=torch.device("cpu"))
    raw = next(iter(DataLoader(RowDataset(small_prepared, "val", view=model.view, image_size=model.image_size,
                                          tokenize=model.tokenize), batch_size=12)))
    with torch.no_grad():
        live = model(raw).logits
        model.use_encodings(imputed)
        cached_batch = next(iter(DataLoader(RowDataset(small_prepared, "val", view=model.view, image_size=model.image_size,
                                                       tokenize=model.tokenize, encodings=encodings), batch_size=12)))
        assert "image" not in cached_batch and "text_ids" not in cached_batch
        torch.testing.assert_close(model(cached_batch).logits, live, rtol=1e-4, atol=1e-5)
        drop = torch.arange(12) % 3 == 0
        for m in ("image", "text"):
            raw, cached_batch = inputs.without(raw, m, drop), inputs.without(cached_batch, m, drop)
        torch.testing.assert_close(model(cached_batch).logits, model(raw).logits, rtol=1e-4, atol=1e-5)


def test_an_interrupted_build_continues_where_it_stopped(small_prepared, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(TrialConfig.from_flat(FROZEN), small_prepared)
    monkeypatch.setattr(feature_cache, "CHUNK_ROWS", 32)
    data = type("D", (), {"dir": tmp_path / "data", "table": small_prepared.table})()
    saves = []
    real_save = feature_cache.atomic_write_text

    def crash_on_second_progress(path, text):
        saves.append(text)
        if len(saves) == 2:
            raise KeyboardInterrupt("killed while building")
        real_save(path, text)

    monkeypatch.setattr(feature_cache, "atomic_write_text", crash_on_second_progress)
    with pytest.raises(KeyboardInterrupt):
        feature_cache.encodings(model, data, batch_size=8, device=torch.device("cpu"))
    monkeypatch.setattr(feature_cache, "atomic_write_text", real_save)
    said = []
    resumed, _ = feature_cache.encodings(model, data, batch_size=8, device=torch.device("cpu"), say=said.append)
    assert any("continuing after row 32" in s for s in said)
    clean, _ = feature_cache.encodings(model, small_prepared, batch_size=8, device=torch.device("cpu"))
    for m in clean:
        np.testing.assert_allclose(resumed[m], clean[m], rtol=1e-5, atol=1e-6)


def test_the_key_changes_with_weights_and_inputs(small_prepared):
    torch.manual_seed(0)
    model = build_model(TrialConfig.from_flat(FROZEN), small_prepared)
    enc = model.encoders["image"]
    key = feature_cache.cache_key("image", enc, model.view, 32, 16)
    assert key == feature_cache.cache_key("image", enc, model.view, 32, 16)
    assert key != feature_cache.cache_key("image", enc, model.view, 64, 16)
    assert key == feature_cache.cache_key("image", enc, model.view, 32, 64)  # the text length is the text tower's
    text = model.encoders["text"]
    assert feature_cache.cache_key("text", text, model.view, 32, 16) == feature_cache.cache_key("text", text, model.view, 0, 16)
    with torch.no_grad():
        next(enc.parameters()).add_(1e-3)
    assert key != feature_cache.cache_key("image", enc, model.view, 32, 16)
