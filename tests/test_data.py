import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsearch.data.prepare import PreparedData, prepare
from mmsearch.data.schema import infer_problem_type, infer_role
from mmsearch.data.split import split_rows
from mmsearch.data.tabular import MISSING_ID, UNKNOWN_ID, TabularPreprocessor
from mmsearch.errors import DataError


def test_roles_are_inferred(prepared):
    assert prepared.schema.columns == {"image": "image", "description": "text", "size": "numeric",
                                       "weight": "numeric", "kind": "categorical"}
    assert prepared.schema.problem_type == "multiclass"
    assert prepared.schema.classes == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize("values,role", [
    ([1.5, 2.0, None], "numeric"), (["a", "b", "a"], "categorical"), ([True, False, True], "categorical"),
    (["x.png", "y.JPG", None], "image"), (["a long sentence about things", "another one here too", "more words in it"], "text"),
    (["1", "2", "3.5"], "numeric"),
])
def test_infer_role(values, role):
    assert infer_role(pd.Series(values)) == role


@pytest.mark.parametrize("values,ptype", [
    (["a", "b", "a"], "binary"), ([0, 1, 1], "binary"), ([1, 2, 3, 2], "multiclass"),
    (np.linspace(0, 1, 50), "regression"), (list(range(100)), "regression"),
])
def test_infer_problem_type(values, ptype):
    assert infer_problem_type(pd.Series(values)) == ptype


def test_split_is_deterministic_stratified_and_disjoint():
    y = np.repeat([0, 1, 2], [100, 50, 3])
    a = split_rows(len(y), y, val_frac=0.2, holdout_frac=0.2, seed=7)
    b = split_rows(len(y), y, val_frac=0.2, holdout_frac=0.2, seed=7)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(y)))
    assert np.bincount(y[a["val"]]).tolist()[:2] == [20, 10]  # proportional per class
    assert (y[a["train"]] == 2).sum() >= 1  # a tiny class keeps rows in train


def test_split_saved_and_reloaded(prepared):
    again = PreparedData.load(prepared.dir)
    assert all(np.array_equal(again.split[p], prepared.split[p]) for p in prepared.split)
    assert again.schema == prepared.schema


def test_tabular_fitted_on_train_only():
    train = pd.DataFrame({"x": [1.0, 3.0, np.nan], "c": ["a", "b", None]})
    other = pd.DataFrame({"x": [100.0, np.nan], "c": ["zzz", None]})
    tp = TabularPreprocessor(["x"], ["c"]).fit(train)
    assert tp.means == [2.0] and tp.vocab == {"c": ["a", "b"]}
    num, mask, cat = tp.transform(other)
    assert mask.tolist() == [[True], [False]] and num[1, 0] == 0.0  # missing -> train mean (0 after scaling)
    assert cat[:, 0].tolist() == [UNKNOWN_ID, MISSING_ID]
    assert tp.cardinalities == [4]


def _write(tmp_path, df, name="t.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _check_error(tmp_path, source, label, match, **kw):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare(source, label, out, **kw)
    assert not out.exists()  # nothing half-written


def test_missing_label_column(tmp_path):
    _check_error(tmp_path, pd.DataFrame({"a": [1, 2]}), "y", "label column 'y' not found; columns: a")


def test_single_class_label(tmp_path):
    _check_error(tmp_path, pd.DataFrame({"a": [1, 2, 3], "y": ["k", "k", None]}), "y", "single value")


def test_all_nan_label(tmp_path):
    _check_error(tmp_path, pd.DataFrame({"a": [1, 2], "y": [np.nan, np.nan]}), "y", "empty .NaN. in all 2 rows")


def test_empty_table(tmp_path):
    _check_error(tmp_path, _write(tmp_path, pd.DataFrame({"a": [], "y": []})), "y", "no rows")


def test_duplicate_columns_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,a,y\n1,2,3,x\n4,5,6,z\n")
    _check_error(tmp_path, path, "y", "duplicate column names: 'a'")


def test_duplicate_columns_dataframe(tmp_path):
    df = pd.DataFrame([[1, 2, "x"], [3, 4, "y"]], columns=["a", "a", "y"])
    _check_error(tmp_path, df, "y", "duplicate column names")


def _image_table(tmp_path, n_bad=4):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_text("not an image")
    paths = ["ok.png"] * 6 + ["missing.png"] * (n_bad - 1) + ["broken.png"]
    return pd.DataFrame({"img": paths, "y": ["a", "b"] * (len(paths) // 2)})


def test_bad_image_paths_error_counts_and_shows_first(tmp_path):
    path = _write(tmp_path, _image_table(tmp_path))
    _check_error(tmp_path, path, "y", r"image column 'img': 4 of 10 paths are unusable \(row 6: .*missing.png does not exist.*--missing-images")


def test_bad_image_paths_as_missing(tmp_path):
    path = _write(tmp_path, _image_table(tmp_path))
    data = prepare(path, "y", tmp_path / "out", missing_images=True)
    assert data.table["img"].isna().sum() == 4
    assert data.table["img"].dropna().iloc[0] == str((tmp_path / "ok.png").resolve())  # relative to the table


def test_labelless_rows_are_dropped(tmp_path, capsys):
    df = pd.DataFrame({"a": range(12), "y": ["p", "q", None] * 4})
    data = prepare(df, "y", tmp_path / "out")
    assert len(data.table) == 8 and "dropping 4 rows" in capsys.readouterr().out


def test_out_dir_must_be_new(tmp_path, prepared):
    with pytest.raises(DataError, match="not empty"):
        prepare(pd.DataFrame({"a": [1, 2, 3, 4], "y": [0, 1, 0, 1]}), "y", prepared.dir)


def test_dataset_items_carry_masks(prepared):
    from mmsearch.data.dataset import RowDataset

    ds = RowDataset(prepared, "train", image_size=16, tokenize=lambda t: (np.zeros((len(t), 4)), np.ones((len(t), 4))))
    missing_image = prepared.rows("train")["image"].isna().to_numpy()
    assert missing_image.any()
    i = int(np.flatnonzero(missing_image)[0])
    item = ds[i]
    assert item["image"].shape == (1, 3, 16, 16) and not item["image_mask"][0] and item["image"].sum() == 0
    j = int(np.flatnonzero(~missing_image)[0])
    assert ds[j]["image_mask"][0] and ds[j]["image"].float().mean() > 0
    texts_missing = prepared.rows("train")["description"].isna().to_numpy()
    assert (~ds.text_mask.numpy() == texts_missing).all()


def test_parquet_and_dataframe_give_the_same_schema(tmp_path, synthetic_table):
    df = pd.read_csv(synthetic_table)
    df.to_parquet(synthetic_table.parent / "table.parquet")
    a = prepare(synthetic_table.parent / "table.parquet", "label", tmp_path / "a")
    assert a.table["image"].notna().sum() == df["image"].notna().sum()  # relative paths resolved from the parquet's folder
    b = prepare(df.assign(image=[str(synthetic_table.parent / p) if isinstance(p, str) else None for p in df["image"]]), "label", tmp_path / "b")
    assert a.schema == b.schema and all(np.array_equal(a.split[p], b.split[p]) for p in a.split)
