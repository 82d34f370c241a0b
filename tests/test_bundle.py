"""Export and predict: a bundle reproduces the search's predictions exactly (CPU), refuses changed
files, names missing columns, handles bad cells by the training's missing-value paths, and runs in
a process where Ray cannot even be imported."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from mmsearch.bundle import BundleError
from mmsearch.bundle.export import export_bundle
from mmsearch.bundle.predictor import Predictor
from mmsearch.ensemble.build import build_ensemble
from mmsearch.errors import DataError


@pytest.fixture(scope="module")
def exported(trained_experiment, tmp_path_factory):
    """(experiment copy with a learned-weights ensemble of all three trials, bundle, table)."""
    src, table = trained_experiment
    root = tmp_path_factory.mktemp("bundle")
    exp = root / "exp"
    shutil.copytree(src, exp)
    ensemble = build_ensemble(exp, method="learned")
    assert len(ensemble["members"]) >= 2  # the blend itself is under test, not one model
    return exp, export_bundle(exp, root / "bundle", log=lambda *_: None), table


@pytest.fixture(scope="module")
def predictor(exported):
    return Predictor.load(exported[1], device="cpu")


def _holdout_rows(exp, table) -> pd.DataFrame:
    """The holdout rows as the user has them: from the original table file, not the prepared copy."""
    split = json.loads((exp / "data" / "split.json").read_text())
    return pd.read_csv(table).iloc[split["holdout"]]


def _search_blend(exp):
    """The ensemble's holdout predictions from the members' saved in-search predictions."""
    ensemble = json.loads((exp / "ensemble" / "ensemble.json").read_text())
    saved = {m["trial_id"]: np.load(exp / m["checkpoint"] / "preds_holdout.npy") for m in ensemble["members"]}
    blend = np.zeros(next(iter(saved.values())).shape)
    for m in ensemble["members"]:  # member order, float64: the order and precision the ensemble uses
        blend += m["weight"] * saved[m["trial_id"]].astype(np.float64)
    return blend, saved


def test_bundle_layout_and_manifest(exported):
    exp, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == files and all(len(h) == 64 for h in manifest["files"].values())
    assert {f.rsplit("/", 1)[1] for f in files} == {"model.safetensors", "config.json"}
    assert manifest["problem_type"] == "multiclass" and manifest["metric"] == "accuracy"
    assert manifest["classes"] == ["class_0", "class_1", "class_2"]
    assert manifest["preprocess"]["tabular"]["vocab"]["kind"] and manifest["schema"]["columns"]["image"] == "image"
    assert set(manifest["ensemble"]["scores"]) == {"ensemble", "best_single", "uniform"}
    assert manifest["ensemble"]["selection"] == {"method": "learned", "size": None}  # how members were picked
    assert manifest["versions"]["torch"] and manifest["versions"]["safetensors"] and manifest["versions"]["mmsearch"]
    for m in manifest["members"]:
        assert m["weight"] > 0 and m["config"]["model.image"] == "timm" and m["eval_batch_size"] >= 2
    assert not list(bundle.parent.glob(".bundle.*"))  # no temporary directory left behind


def test_an_ensemble_file_from_before_the_selection_options_still_exports(exported, tmp_path):
    exp, _, _ = exported
    old = tmp_path / "exp"
    shutil.copytree(exp, old)
    ensemble = json.loads((old / "ensemble" / "ensemble.json").read_text())
    del ensemble["selection"]
    (old / "ensemble" / "ensemble.json").write_text(json.dumps(ensemble))
    manifest = json.loads((export_bundle(old, tmp_path / "bundle", log=lambda *_: None) / "manifest.json").read_text())
    assert "selection" not in manifest["ensemble"] and manifest["ensemble"]["method"] == "learned"


def test_predictions_equal_the_in_search_predictions(exported, predictor):
    exp, _, table = exported
    rows = _holdout_rows(exp, table)
    blend, saved = _search_blend(exp)
    for tid, preds in predictor.member_predictions(rows, base_dir=table.parent).items():
        assert np.array_equal(preds, saved[tid]), tid  # each member alone, bit for bit
    proba = predictor.predict_proba(rows, base_dir=table.parent)
    assert list(proba.columns) == ["class_0", "class_1", "class_2"] and list(proba.index) == list(rows.index)
    assert np.array_equal(proba.to_numpy(), blend)
    labels = predictor.predict(table.parent / "table.csv").iloc[rows.index]  # from the file: same rows, same labels
    assert list(labels) == list(np.array(predictor.classes)[blend.argmax(1)])
    scores = predictor.evaluate(rows, base_dir=table.parent)
    recorded = json.loads((exp / "ensemble" / "ensemble.json").read_text())["scores"]["ensemble"]["holdout"]
    assert scores["rows"] == len(rows) and scores["accuracy"] == recorded


def test_cli_predict_in_a_process_where_ray_cannot_be_imported(exported, tmp_path):
    exp, bundle, table = exported
    rows = _holdout_rows(exp, table).assign(extra_column="ignored")
    data = table.parent / "holdout_rows.csv"  # next to the table: relative image paths still resolve
    rows.to_csv(data, index=False)
    out = tmp_path / "pred.csv"
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # any `import ray` now fails\n"
        "from mmsearch.cli import main\n"
        f"rc = main(['predict', {str(bundle)!r}, '--data', {str(data)!r}, '--out', {str(out)!r}, '--proba', '--device', 'cpu'])\n"
        "assert sys.modules['ray'] is None and not [m for m in sys.modules if m.startswith('ray.')]\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {len(rows)} predictions" in r.stdout and "missing-value paths" in r.stdout
    written = pd.read_csv(out, dtype=str)  # parsed below by Python's float(): exact round trip on any pandas
    blend, _ = _search_blend(exp)
    proba = written[["proba_class_0", "proba_class_1", "proba_class_2"]].map(float).to_numpy()
    assert np.array_equal(proba, blend)
    assert list(written["prediction"]) == [f"class_{i}" for i in blend.argmax(1)]


def _tampered(bundle, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    return copy


def test_a_changed_weights_file_is_refused_naming_it(exported, tmp_path):
    bundle = _tampered(exported[1], tmp_path)
    weights = sorted(bundle.glob("members/*/model.safetensors"))[0]
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # one bit in the last tensor
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=str(weights)):
        Predictor.load(bundle, device="cpu")
    r = subprocess.run([sys.executable, "-m", "mmsearch.cli", "predict", str(bundle), "--data", str(exported[2]),
                        "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and str(weights) in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_changed_manifest_or_a_missing_file_is_refused(exported, tmp_path):
    bundle = _tampered(exported[1], tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["members"][0]["weight"] = 0.99
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    with pytest.raises(BundleError, match="manifest.json does not match its checksum"):
        Predictor.load(bundle, device="cpu")
    shutil.copyfile(exported[1] / "manifest.json", bundle / "manifest.json")
    config = sorted(bundle.glob("members/*/config.json"))[0]
    config.unlink()
    with pytest.raises(BundleError, match=f"{config} is missing"):
        Predictor.load(bundle, device="cpu")


def test_missing_columns_are_named_and_extra_ones_ignored(exported, predictor):
    exp, _, table = exported
    rows = _holdout_rows(exp, table)
    with pytest.raises(DataError, match="lacks 2 column.*'description', 'size'"):
        predictor.predict(rows.drop(columns=["description", "size", "label"]), base_dir=table.parent)
    base = predictor.predict_proba(rows, base_dir=table.parent)
    extra = predictor.predict_proba(rows.assign(other=1.5, notes="x").drop(columns=["label"]), base_dir=table.parent)
    assert np.array_equal(base.to_numpy(), extra.to_numpy())


def test_bad_cells_take_the_missing_paths_and_are_counted(exported, predictor, tmp_path):
    exp, _, table = exported
    rows = pd.read_csv(table).dropna().head(4).reset_index(drop=True)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    rows.loc[0, "kind"] = "never_seen"
    rows.loc[1, "image"] = "images/does_not_exist.png"
    rows.loc[2, "image"] = str(broken)
    rows.loc[3, "description"] = "   "
    proba = predictor.predict_proba(rows, base_dir=table.parent).to_numpy()
    report = predictor.last_report
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    assert report.rows == 4 and report.unseen_categories == {"kind": 1}
    assert report.missing_images == {"image": 2} and report.unreadable_images == {"image": 2}
    assert report.empty_text == 1 and report.missing_numeric == {"size": 0, "weight": 0}
    assert any("unseen category" in line for line in report.lines())
    # an unusable image is exactly an absent one; whitespace text exactly an empty one
    absent = rows.copy()
    absent.loc[[1, 2], "image"] = None
    absent.loc[3, "description"] = None
    assert np.array_equal(predictor.predict_proba(absent, base_dir=table.parent).to_numpy(), proba)
    # a repeated index (pd.concat) is the caller's business: each bad cell still counts once
    twice = predictor.predict_proba(pd.concat([rows, rows]), base_dir=table.parent)
    assert len(twice) == 8 and predictor.last_report.missing_images == {"image": 4}


def test_export_refuses_a_non_empty_out_and_builds_a_missing_ensemble(trained_experiment, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(trained_experiment[0], exp)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(BundleError, match="exists and is not empty"):
        export_bundle(exp, tmp_path / "taken")
    said = []
    export_bundle(exp, tmp_path / "b", log=said.append)
    assert "no ensemble yet" in said[0] and (exp / "ensemble" / "ensemble.json").is_file()
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_a_lite0_minilm_pair_bundle_predicts_offline_as_its_trial_did(tmp_path, monkeypatch):
    """The real-towers pair (LF-Aligned offline): its bundle is built from configs and the
    tokenizer only (every pretrained-weight loader fails here; the hub is off in every test) and
    reproduces the trial's holdout predictions bit for bit."""
    from conftest import TINY
    from transformers import PreTrainedModel

    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.run import run_local

    table = make_synthetic(tmp_path / "table", n=64, missing=0.2, seed=5)
    exp = tmp_path / "exp"
    prepare(table, "label", exp / "data")
    trial = {**TINY, "model.pair": "clip_lite0_minilm", "encoder.clip_lite0_minilm.embed_dim": 32,
             "optim.batch_size": 8, "train.epochs": 1, "train.max_steps_per_epoch": 2}  # TINY's 32 px, 16 tokens
    run_local(trial, exp / "data", exp / "train" / "t_pair")
    bundle = export_bundle(exp, tmp_path / "bundle", log=lambda *_: None)

    def refuse(*args, **kwargs):
        raise AssertionError("pretrained weights were read")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(torch, "load", refuse)
    predictor = Predictor.load(bundle, device="cpu")
    assert set(predictor.members[0].model.encoders) == {"pair", "tabular"}
    preds = predictor.member_predictions(_holdout_rows(exp, table), base_dir=table.parent)
    _, saved = _search_blend(exp)
    assert np.array_equal(preds["t_pair"], saved["t_pair"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_on_gpu_matches_cpu_up_to_bf16(exported, predictor):
    exp, bundle, table = exported
    rows = _holdout_rows(exp, table)
    gpu = Predictor.load(bundle, device="cuda").predict_proba(rows, base_dir=table.parent).to_numpy()
    cpu = predictor.predict_proba(rows, base_dir=table.parent).to_numpy()
    assert np.abs(gpu - cpu).max() < 0.05  # bf16 autocast on CUDA, as in the search's own GPU evaluation


def test_a_text_only_member_predicts_from_its_text_alone(tmp_path):
    """model.modalities [text]: the bundle rebuilds a text-only model, reproduces the trial's
    holdout predictions bit for bit, and they do not move when the image and tabular columns are
    scrambled."""
    from conftest import TINY

    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.run import run_local

    table = make_synthetic(tmp_path / "table", n=64, missing=0.2, seed=6)
    exp = tmp_path / "exp"
    prepare(table, "label", exp / "data")
    trial = {**TINY, "model.modalities": ["text"], "train.epochs": 1, "train.max_steps_per_epoch": 2}
    run_local(trial, exp / "data", exp / "train" / "t_text")
    predictor = Predictor.load(export_bundle(exp, tmp_path / "bundle", log=lambda *_: None), device="cpu")
    assert set(predictor.members[0].model.encoders) == {"text"}
    rows = _holdout_rows(exp, table)
    _, saved = _search_blend(exp)
    assert np.array_equal(predictor.member_predictions(rows, base_dir=table.parent)["t_text"], saved["t_text"])
    scrambled = rows.copy()
    for col in scrambled.columns:
        if col not in ("description", "label"):
            scrambled[col] = scrambled[col].sample(frac=1.0, random_state=0).to_numpy()
    assert not scrambled.drop(columns=["description"]).equals(rows.drop(columns=["description"]))
    assert np.array_equal(predictor.member_predictions(scrambled, base_dir=table.parent)["t_text"], saved["t_text"])


def test_a_frozen_member_predicts_from_raw_rows_as_its_cached_trial_did(tmp_path):
    """model.finetune frozen trains on cached encodings; its bundle runs the frozen towers on raw
    rows and gets the trial's holdout predictions (up to float summation order)."""
    from conftest import TINY

    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.run import run_local

    table = make_synthetic(tmp_path / "table", n=64, missing=0.2, seed=7)
    exp = tmp_path / "exp"
    prepare(table, "label", exp / "data")
    run_local({**TINY, "model.finetune": "frozen", "model.missing": "learnable", "train.epochs": 1},
              exp / "data", exp / "train" / "t_frozen")
    assert list((exp / "data" / "features").glob("image-*/image.npy"))  # it did train on the cache
    predictor = Predictor.load(export_bundle(exp, tmp_path / "bundle", log=lambda *_: None), device="cpu")
    _, saved = _search_blend(exp)
    preds = predictor.member_predictions(_holdout_rows(exp, table), base_dir=table.parent)["t_frozen"]
    np.testing.assert_allclose(preds, saved["t_frozen"], rtol=1e-4, atol=1e-5)
