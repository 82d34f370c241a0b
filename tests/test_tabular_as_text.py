"""tabular_as_text: columns rendered into the text, read by the text encoder, optionally dropped
from the tabular tower; identical rendering at train and predict time (bundle)."""
import numpy as np
import pandas as pd
import pytest
import torch

from mmsearch.config import TrialConfig
from mmsearch.data.dataset import RowDataset
from mmsearch.errors import ConfigError
from mmsearch.models.model import build_model, trial_view


def _cfg(tiny, **trick):
    return TrialConfig.from_flat({**tiny, "tricks.tabular_as_text.enabled": True,
                                  **{f"tricks.tabular_as_text.{k}": v for k, v in trick.items()}})


def test_rendered_text_holds_each_value_with_its_column_name(small_prepared, tiny):
    view = trial_view(_cfg(tiny, template="{column} = {value}"), small_prepared)
    rows = small_prepared.rows("train")
    texts = view.texts(rows)
    assert view.rendered == ("size", "weight", "kind")  # numeric and categorical, in table order
    for text, (_, row) in zip(texts, rows.iterrows()):
        for col in view.rendered:
            value = row[col]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                assert f"{col} = " not in text  # a missing value gets no line
            else:
                shown = format(float(value), ".6g") if col != "kind" else value
                assert f"{col} = {shown}\n" in text + "\n"
        free = row["description"]
        if isinstance(free, str) and free:
            assert text.startswith(free.strip() + "\n")  # the free text first, then the fields
    assert trial_view(_cfg(tiny, columns="categorical"), small_prepared).rendered == ("kind",)
    before = trial_view(_cfg(tiny, columns="categorical", position="before"), small_prepared).texts(rows)
    for text, kind, free in zip(before, rows["kind"], rows["description"]):
        if isinstance(kind, str) and isinstance(free, str) and free:
            assert text == f"kind: {kind}\n{free.strip()}"  # position before: the fields first
    assert trial_view(TrialConfig.from_flat(tiny), small_prepared).rendered == ()  # off: the table as prepared


def test_drop_from_tabular_shrinks_the_tabular_tower(small_prepared, tiny):
    kept = build_model(_cfg(tiny, columns="numeric"), small_prepared)
    dropped = build_model(_cfg(tiny, columns="numeric", drop_from_tabular=True), small_prepared)
    assert kept.view.tabular.numeric == ["size", "weight"] and dropped.view.tabular.numeric == []
    assert dropped.view.tabular.categorical == ["kind"] and "tabular" in dropped.encoders
    gone = build_model(_cfg(tiny, drop_from_tabular=True), small_prepared)
    assert "tabular" not in gone.encoders and "tabular" not in gone.fusion.modalities  # nothing left to read
    ds = RowDataset(small_prepared, "train", view=dropped.view, image_size=dropped.image_size, tokenize=dropped.tokenize)
    assert ds.num.shape[1] == 0 and ds.cat.shape[1] == 1


@pytest.fixture(scope="module")
def no_text_table(tmp_path_factory):
    """The synthetic table without its text column: only the rendering gives it text."""
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("no_text")
    table = make_synthetic(root / "table", n=96, missing=0.2, seed=5)
    df = pd.read_csv(table).drop(columns=["description"])
    df.to_csv(table, index=False)
    return table, prepare(table, "label", root / "exp" / "data")


def test_a_table_without_text_gets_a_text_tower_that_reads_the_values(no_text_table, tiny):
    _, data = no_text_table
    assert "text" not in build_model(TrialConfig.from_flat(tiny), data).encoders
    torch.manual_seed(0)
    model = build_model(_cfg(tiny, columns="categorical", drop_from_tabular=True), data).eval()
    assert "text" in model.encoders and model.view.tabular.categorical == []
    rows = data.rows("val")
    scrambled = rows.assign(kind=rows["kind"].map({"k0": "k2", "k1": "k0", "k2": "k1"}))

    def outputs(frame):
        ds = RowDataset.from_rows(frame, model.view, image_size=model.image_size, tokenize=model.tokenize)
        batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
        assert bool(batch["text_mask"][torch.tensor(frame["kind"].notna().to_numpy())].all())  # rendered rows have text
        with torch.no_grad():
            return model(batch).logits

    changed = (outputs(rows) - outputs(scrambled)).abs().amax(1) > 1e-6
    has_kind = torch.tensor(rows["kind"].notna().to_numpy())
    # the categorical column reaches the model only through the text: changing it changes exactly
    # the predictions of the rows that have it
    assert bool(changed[has_kind].all()) and not bool(changed[~has_kind].any())


def test_the_bundle_renders_rows_as_training_did(no_text_table, tiny, tmp_path):
    from mmsearch.bundle.export import export_bundle
    from mmsearch.bundle.predictor import Predictor
    from mmsearch.ensemble.build import build_ensemble
    from mmsearch.layout.checkpoint_dir import TrialRunDir
    from mmsearch.train.run import run_local

    table, data = no_text_table
    exp = data.dir.parent
    trial = {**_cfg(tiny, drop_from_tabular=True).to_flat(), "train.epochs": 1, "train.max_steps_per_epoch": 3}
    run_local(trial, data.dir, exp / "train" / "t_text")
    build_ensemble(exp)
    predictor = Predictor.load(export_bundle(exp, tmp_path / "bundle", log=lambda *_: None), device="cpu")
    saved = TrialRunDir(exp / "train" / "t_text").final.predictions("holdout")
    rows = pd.read_csv(table).iloc[data.split["holdout"]]
    (preds,) = predictor.member_predictions(rows, base_dir=table.parent).values()
    assert np.array_equal(preds, saved)  # bit for bit: the same text, tokens and tabular inputs


@pytest.mark.parametrize("template", ["{column}", "{col}: {value}", "{value", "{0}"])
def test_a_bad_template_is_refused_naming_the_key(tiny, template):
    with pytest.raises(ConfigError, match="tricks.tabular_as_text.template"):
        _cfg(tiny, template=template)
