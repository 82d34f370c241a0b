"""The inputs users get wrong, through the CLI (and a few through the Python API): each is a
non-zero exit with one message naming the column / row / key / file and what to do, no traceback,
nothing started (no Ray, no training) and every existing experiment and bundle left byte for byte
as it was. One case per row of CASES; its count is in benchmarks/README.md."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmsearch import cli


# -- the world every case runs next to: a finished experiment, one without trials, a bundle ---
@pytest.fixture(scope="module")
def world(trained_experiment, tmp_path_factory):
    from mmsearch.bundle.export import export_bundle
    from mmsearch.ensemble.build import build_ensemble
    from mmsearch.search.experiment import Settings

    root = tmp_path_factory.mktemp("bad_inputs")
    runs = root / "runs"
    exp = runs / "exp"
    shutil.copytree(trained_experiment[0], exp)
    Settings().save(exp)
    build_ensemble(exp)
    bundle = export_bundle(exp, root / "bundle", log=lambda *_: None)
    empty = runs / "no_trials"  # an experiment whose search never finished a trial
    shutil.copytree(exp / "data", empty / "data")
    Settings().save(empty)
    (root / "tables").mkdir()
    return {"root": root, "runs": runs, "exp": exp, "empty": empty, "bundle": bundle,
            "tables": root / "tables", "source": trained_experiment[1]}


def _fingerprint(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(n=40, seed=0, label=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "num": rng.normal(size=n).round(3),
        "cat": rng.choice(["red", "green", "blue"], n),
        "note": [f"a short note number {i} about this row" for i in range(n)],
        "label": rng.choice(["yes", "no"], n) if label is None else label,
    })
    return df


def _csv(w, name: str, df: pd.DataFrame | None = None, *, text: str | bytes | None = None, **kw) -> str:
    path = w["tables"] / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    else:
        (df if df is not None else _rows()).to_csv(path, index=False, **kw)
    return str(path)


def _search(w, data: str, *extra: str, label: str = "label", name: str = "new") -> list[str]:
    return ["search", "--data", data, "--label", label, "--name", name, "--storage", str(w["runs"]), *extra]


def _space(w, name: str, content: str | dict) -> str:
    path = w["tables"] / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def _images(w, bad: str) -> str:
    """A table whose image column names files that are missing ('missing') or not images ('text')."""
    folder = w["tables"] / f"img_{bad}"
    folder.mkdir(exist_ok=True)
    df = _rows()
    df["photo"] = [f"img_{bad}/{i}.png" for i in range(len(df))]
    from PIL import Image

    for i in range(len(df)):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    if bad == "missing":
        (folder / "7.png").unlink()
    else:
        (folder / "7.png").write_text("not an image")
    return _csv(w, f"images_{bad}.csv", df)


def _predict(w, data: str, bundle: Path | None = None) -> list[str]:
    return ["predict", str(bundle or w["bundle"]), "--data", data, "--out", str(w["root"] / "out" / "pred.csv"), "--device", "cpu"]


def _copy_bundle(w, name: str, edit) -> Path:
    copy = w["root"] / name
    if not copy.exists():
        shutil.copytree(w["bundle"], copy)
        edit(copy)
    return copy


def _edit_manifest(change):
    def edit(bundle):
        manifest = json.loads((bundle / "manifest.json").read_text())
        change(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _forged_outside(bundle):
    """A manifest whose member weights leave the bundle, its checksum recomputed (an attacker)."""
    from mmsearch.bundle.manifest import _content_digest

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["members"][0]["weights"] = "../outside/model.safetensors"
    manifest["manifest_sha256"] = _content_digest(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _holdout(w, drop: str | None = None, rows: int | None = None) -> str:
    df = pd.read_csv(w["source"])
    if drop:
        df = df.drop(columns=[drop])
    if rows is not None:
        df = df.iloc[:rows]
    # the synthetic table's image paths are relative to its folder: write next to it
    path = Path(w["source"]).parent / f"predict_{drop}_{rows}.csv"
    df.to_csv(path, index=False)
    return str(path)


def _first_feature(w) -> str:
    schema = json.loads((w["bundle"] / "manifest.json").read_text())["schema"]
    return next(iter(schema["columns"]))


def _no_gpu():
    import torch

    return torch.cuda.is_available()


# (id, argv from the world, strings the message must hold); id prefixes group them
CASES = [
    # tables
    ("table-missing-label", lambda w: _search(w, _csv(w, "t.csv"), label="target"), ["'target' not found", "columns: num, cat"]),
    ("table-all-nan-label", lambda w: _search(w, _csv(w, "nan.csv", _rows(label=[None] * 40))), ["'label' is empty (NaN) in all 40 rows"]),
    ("table-single-class", lambda w: _search(w, _csv(w, "one.csv", _rows(label=["yes"] * 40))), ["'label' has a single value ('yes')", "pick another label"]),
    ("table-no-rows", lambda w: _search(w, _csv(w, "header.csv", text="num,cat,label\n")), ["the table is empty"]),
    ("table-empty-file", lambda w: _search(w, _csv(w, "zero.csv", text="")), ["zero.csv is empty"]),
    ("table-duplicate-columns", lambda w: _search(w, _csv(w, "dup.csv", text="num,num,label\n1,2,yes\n3,4,no\n")), ["duplicate column names: 'num'", "rename"]),
    ("table-wrong-delimiter", lambda w: _search(w, _csv(w, "semi.csv", _rows(), sep=";")), ["'label' not found", "separated by ';'"]),
    ("table-not-utf8", lambda w: _search(w, _csv(w, "latin.csv", text="num,cat,label\n1,caf\xe9,yes\n".encode("latin-1"))), ["is not UTF-8", "save it as UTF-8"]),
    ("table-inf-regression-label", lambda w: _search(w, _csv(w, "inf_y.csv", _rows(label=[1.5, np.inf] + [0.25] * 38))), ["'label' holds inf in row 1", "must be finite"]),
    ("table-ragged-rows", lambda w: _search(w, _csv(w, "ragged.csv", text="num,cat,label\n1,a,yes\n2,b,no,extra,cells\n")), ["ragged.csv cannot be read as csv", "delimiter"]),
    ("table-image-missing", lambda w: _search(w, _images(w, "missing")), ["image column 'photo'", "row 7", "does not exist", "--missing-images"]),
    ("table-image-not-image", lambda w: _search(w, _images(w, "text")), ["image column 'photo'", "row 7", "is not a readable image"]),
    ("table-is-a-folder", lambda w: _search(w, str(w["tables"])), ["is a folder", "give the table file"]),
    ("table-unsupported-format", lambda w: _search(w, _csv(w, "t.xlsx", text="x")), ["unsupported format '.xlsx'", ".csv, .tsv or .parquet"]),
    ("table-does-not-exist", lambda w: _search(w, str(w["tables"] / "nope.csv")), ["nope.csv does not exist"]),
    ("table-too-small-for-split", lambda w: _search(w, _csv(w, "tiny.csv", _rows(n=3, label=[1.0, 2.5, 3.25]))), ["its 3 labelled rows leave val and holdout without rows", "at least 4 rows"]),
    ("table-too-small-per-class", lambda w: _search(w, _csv(w, "tiny_cls.csv", _rows(n=6, label=["a", "a", "b", "b", "c", "c"]))), ["too small for the split", "in at least one class"]),
    ("table-regression-on-strings", lambda w: _search(w, _csv(w, "t.csv"), "--problem-type", "regression"), ["'label' is not numeric", "--problem-type multiclass"]),
    # options
    ("option-unknown-column-type-column", lambda w: _search(w, _csv(w, "t.csv"), "--column-types", "colour=categorical"), ["names 'colour', which is not a column"]),
    ("option-unknown-column-type-role", lambda w: _search(w, _csv(w, "t.csv"), "--column-types", "note=words"), ["note=words", "role must be one of"]),
    ("option-num-samples-0", lambda w: _search(w, _csv(w, "t.csv"), "--num-samples", "0"), ["--num-samples 0", "at least 1"]),
    ("option-storage-is-a-file", lambda w: ["search", "--data", _csv(w, "t.csv"), "--label", "label", "--name", "new", "--storage", _csv(w, "t.csv")], ["is a file, not a folder", "--storage"]),
    ("option-negative-time-budget", lambda w: _search(w, _csv(w, "t.csv"), "--time-budget-s", "-5"), ["--time-budget-s -5.0", ">= 0"]),
    ("option-negative-cpus-per-worker", lambda w: _search(w, _csv(w, "t.csv"), "--cpus-per-worker", "-1"), ["--cpus-per-worker -1.0", ">= 0"]),
    ("option-gpus-without-gpu", lambda w: _search(w, _csv(w, "t.csv"), "--gpus-per-worker", "1"), ["--gpus-per-worker 1.0", "no GPU", "--address"]),
    ("option-batch-size-0", lambda w: _search(w, _csv(w, "t.csv"), "--set", "optim.batch_size=0"), ["optim.batch_size=0", "at least 1"]),
    ("option-epochs-0", lambda w: _search(w, _csv(w, "t.csv"), "--set", "train.epochs=0"), ["train.epochs=0", "at least 1 epoch"]),
    ("option-unknown-set-key", lambda w: _search(w, _csv(w, "t.csv"), "--set", "optim.lrr=0.1"), ["'optim.lrr'", "did you mean", "optim.lr"]),
    ("option-bad-val-frac", lambda w: _search(w, _csv(w, "t.csv"), "--val-frac", "1.2"), ["--val-frac 1.2", "both > 0 and their sum < 1"]),
    ("option-holdout-frac-0", lambda w: _search(w, _csv(w, "t.csv"), "--holdout-frac", "0"), ["--holdout-frac 0.0", "both > 0"]),
    ("option-set-not-yaml", lambda w: _search(w, _csv(w, "t.csv"), "--set", "optim.lr=[1"), ["--set optim.lr=[1", "not valid YAML"]),
    ("option-train-epochs-0", lambda w: ["train", "--data", _csv(w, "t.csv"), "--label", "label", "--out", str(w["root"] / "out" / "train"), "--set", "train.epochs=0"], ["train.epochs=0", "at least 1 epoch"]),
    ("option-train-workers-0", lambda w: ["train", "--data", _csv(w, "t.csv"), "--label", "label", "--out", str(w["root"] / "out" / "train"), "--workers", "0"], ["--workers 0", "at least 1"]),
    ("option-train-gpus-without-gpu", lambda w: ["train", "--data", _csv(w, "t.csv"), "--label", "label", "--out", str(w["root"] / "out" / "train"), "--gpus"], ["--gpus", "no GPU"]),
    # spaces
    ("space-yaml-syntax", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "broken.yaml", "fixed: {model.fusion: [lf_mlp\n")), ["broken.yaml", "not valid YAML"]),
    ("space-unknown-trick", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "trick.yaml", {"tricks": {"grad_clipp": "search"}})), ["grad_clipp", "grad_clip"]),
    ("space-unknown-key", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "key.yaml", {"fixed": {"model.fusoin": "early"}})), ["'model.fusoin'", "model.fusion"]),
    ("space-empty-choice", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "empty.yaml", {"search": {"optim.lr": {"choice": []}}})), ["optim.lr: choice needs a non-empty list"]),
    ("space-loguniform-at-0", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "log.yaml", {"search": {"optim.lr": {"loguniform": [0, 0.1]}}})), ["optim.lr: loguniform needs low > 0"]),
    ("space-unknown-dimension-kind", lambda w: _search(w, _csv(w, "t.csv"), "--space", _space(w, "kind.yaml", {"search": {"optim.lr": {"logunifrom": [1e-4, 1e-2]}}})), ["unknown dimension kind 'logunifrom'", "loguniform"]),
    ("space-does-not-exist", lambda w: _search(w, _csv(w, "t.csv"), "--space", str(w["tables"] / "nope.yaml")), ["nope.yaml does not exist"]),
    # experiments
    ("experiment-exists", lambda w: _search(w, _csv(w, "t.csv"), name="exp"), ["already holds an experiment", "mmsearch resume"]),
    ("status-not-an-experiment", lambda w: ["status", str(w["tables"])], ["is not an mmsearch experiment"]),
    ("resume-not-an-experiment", lambda w: ["resume", str(w["tables"])], ["is not an mmsearch experiment"]),
    ("ensemble-not-an-experiment", lambda w: ["ensemble", str(w["tables"])], ["is not an mmsearch experiment"]),
    ("ensemble-no-finished-trial", lambda w: ["ensemble", str(w["empty"])], ["no trial has produced predictions yet", "run or resume the search"]),
    ("export-not-an-experiment", lambda w: ["export", str(w["tables"]), "--out", str(w["root"] / "out" / "b1")], ["is not an mmsearch experiment"]),
    ("export-onto-a-non-empty-path", lambda w: ["export", str(w["exp"]), "--out", str(w["bundle"])], ["exists and is not empty", "new --out"]),
    ("export-no-finished-trial", lambda w: ["export", str(w["empty"]), "--out", str(w["root"] / "out" / "b2")], ["no trial has produced predictions yet"]),
    # bundles
    ("bundle-without-manifest", lambda w: _predict(w, _holdout(w), _copy_bundle(w, "b_nomanifest", lambda b: (b / "manifest.json").unlink())), ["no manifest.json", "mmsearch export"]),
    ("bundle-edited-manifest", lambda w: _predict(w, _holdout(w), _copy_bundle(w, "b_edited", _edit_manifest(lambda m: m["members"][0].update(weight=0.99))))
     , ["does not match its checksum", "refusing"]),
    ("bundle-path-leaves-bundle", lambda w: _predict(w, _holdout(w), _copy_bundle(w, "b_outside", _forged_outside)), ["'../outside/model.safetensors'", "refusing to load it"]),
    ("bundle-is-not-a-folder", lambda w: _predict(w, _holdout(w), Path(_csv(w, "t.csv"))), ["is not an mmsearch bundle"]),
    ("predict-zero-rows", lambda w: _predict(w, _holdout(w, rows=0)), ["no rows to predict"]),
    ("predict-without-a-feature-column", lambda w: _predict(w, _holdout(w, drop=_first_feature(w))), ["lacks 1 column(s) the model needs"]),
    ("predict-table-does-not-exist", lambda w: _predict(w, str(w["tables"] / "nope.csv")), ["nope.csv does not exist"]),
]


@pytest.mark.parametrize("build, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(world, build, expected, capsys, request, monkeypatch):
    if "without-gpu" in request.node.callspec.id and _no_gpu():
        pytest.skip("this machine has a GPU")
    from mmsearch.search import experiment
    from mmsearch.train import run

    def started(*_, **__):
        raise AssertionError("a search or a training started: the error must come before")
    for module, name in ((experiment, "run"), (run, "run_local"), (run, "run_ray")):
        monkeypatch.setattr(module, name, started)
    argv = build(world)
    capsys.readouterr()
    before = _fingerprint(world["runs"], world["bundle"])
    try:
        code = cli.main(argv)
        message = capsys.readouterr().err
    except SystemExit as e:  # argparse and the CLI's own option checks
        code, message = (1, str(e.code)) if isinstance(e.code, str) else (e.code, capsys.readouterr().err)
    finally:
        created = (world["runs"] / "new").exists()
        shutil.rmtree(world["runs"] / "new", ignore_errors=True)  # a failing case must not fail the next ones
    assert code not in (0, None), message
    assert "Traceback" not in message
    for part in expected:
        assert part in message, (part, message)
    assert _fingerprint(world["runs"], world["bundle"]) == before  # nothing existing was touched
    assert not created  # nothing half-created
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # nothing started


def test_the_suite_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


# -- the same errors through the Python API: MMSearchError subclasses, the same messages ---------
def test_api_prepare_refuses_an_inf_regression_label(tmp_path):
    from mmsearch.data.prepare import prepare
    from mmsearch.errors import DataError

    with pytest.raises(DataError, match=r"'label' holds inf in rows 2, 5"):
        prepare(_rows(label=[0.5, 1.0, np.inf, 2.0, 3.0, -np.inf] + [1.0] * 34), "label", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_api_inf_features_are_missing_with_a_warning_naming_column_and_rows(tmp_path):
    from mmsearch.data.prepare import prepare
    from mmsearch.errors import DataWarning

    df = _rows(n=60)
    finite = df["num"].copy()
    df.loc[[4, 9], "num"] = [np.inf, -np.inf]
    with pytest.warns(DataWarning, match=r"numeric column 'num' holds inf in rows 4, 9 .*treated as missing"):
        data = prepare(df, "label", tmp_path / "data")
    train = data.split["train"]
    kept = np.setdiff1d(train, [4, 9])
    (mean,), (std,) = data.tabular.means, data.tabular.stds
    assert mean == pytest.approx(finite[kept].mean()) and std == pytest.approx(finite[kept].std(ddof=0))
    scaled, present, _ = data.tabular.transform(data.table.iloc[[4, 9]])
    assert not present.any() and (scaled == 0).all()  # the train mean, like an empty cell


def test_api_settings_and_configs_refuse_bad_numbers():
    from mmsearch.config import TrialConfig
    from mmsearch.errors import ConfigError
    from mmsearch.search.experiment import Settings

    for kw, msg in ((dict(num_samples=0), "--num-samples 0"), (dict(time_budget_s=-1.0), "--time-budget-s"),
                    (dict(cpus_per_worker=float("nan")), "--cpus-per-worker"), (dict(max_failures=-2), "--max-failures")):
        with pytest.raises(ConfigError, match=msg):
            Settings(**kw)
    for flat, msg in (({"optim.batch_size": 0}, "optim.batch_size=0"), ({"train.epochs": 0}, "train.epochs=0"),
                      ({"optim.lr": -0.1}, "optim.lr=-0.1")):
        with pytest.raises(ConfigError, match=msg):
            TrialConfig.from_flat(flat)


def test_api_load_bundle_and_build_ensemble_say_what_is_wrong(world, tmp_path):
    from mmsearch import load_bundle
    from mmsearch.bundle import BundleError
    from mmsearch.ensemble.build import build_ensemble
    from mmsearch.errors import MMSearchError

    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    with pytest.raises(MMSearchError, match="no trial has produced predictions yet"):
        build_ensemble(world["empty"])
