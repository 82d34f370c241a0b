"""model.modalities: a trial reads only some of the table's modalities; the encoders of the others
are not built and their columns are never read (the bundle side is in test_bundle.py)."""
from __future__ import annotations

import pytest

from mmsearch.config import TrialConfig
from mmsearch.data.dataset import RowDataset
from mmsearch.errors import ConfigError
from mmsearch.models.model import build_model


@pytest.mark.parametrize("given, stored", [("all", "all"), (["text"], "text"), ("text+image", "image+text"),
                                           (["tabular", "image", "image"], "image+tabular")])
def test_modalities_are_stored_as_one_canonical_string(given, stored):
    cfg = TrialConfig.from_flat({"model.modalities": given})
    assert cfg.model.modalities == stored
    assert TrialConfig.from_flat(cfg.to_flat()).model.modalities == stored  # round trip (Tune, bundles)


@pytest.mark.parametrize("bad", ["audio", [], ["text", "video"], 3])
def test_a_bad_modalities_value_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="model.modalities"):
        TrialConfig.from_flat({"model.modalities": bad})


def test_a_text_trial_builds_and_reads_only_text(small_prepared, tiny):
    model = build_model(TrialConfig.from_flat({**tiny, "model.modalities": ["text"]}), small_prepared)
    assert set(model.encoders) == {"text"} and model.fusion.modalities == ["text"]
    assert model.image_size == 0
    ds = RowDataset(small_prepared, "val", view=model.view, image_size=model.image_size, tokenize=model.tokenize)
    item = ds[0]
    assert "image" not in item and item["num"].numel() == 0 and item["cat"].numel() == 0 and "text_ids" in item

    both = build_model(TrialConfig.from_flat({**tiny, "model.modalities": "image+tabular"}), small_prepared)
    assert set(both.encoders) == {"image", "tabular"} and not both.view.has("text")


def test_a_subset_the_table_lacks_is_named(tmp_path, tiny):
    import pandas as pd

    from mmsearch.data.prepare import prepare

    pd.DataFrame({"text": [f"a review of item number {i}, which was fine" for i in range(40)], "x": range(40), "label": [0, 1] * 20}).to_csv(tmp_path / "t.csv", index=False)
    data = prepare(tmp_path / "t.csv", "label", tmp_path / "data")
    with pytest.raises(ConfigError, match=r"model.modalities=image: this table has no such input \(its modalities: tabular, text\)"):
        build_model(TrialConfig.from_flat({**tiny, "model.modalities": ["image"]}), data)
    # a subset naming a missing modality next to a present one reads the present one
    assert set(build_model(TrialConfig.from_flat({**tiny, "model.modalities": "image+text"}), data).encoders) == {"text"}


def test_the_spaces_modalities_choices_are_cut_to_the_table():
    from mmsearch.search.experiment import fit_modalities

    space = {"search": {"model.modalities": {"choice": ["all", "image", "text", "tabular", "image+text"]}}}
    fitted, note = fit_modalities(space, frozenset({"text", "tabular"}))
    assert fitted["search"]["model.modalities"]["choice"] == ["all", "text", "tabular"]  # image: no input; image+text = text
    assert "image, image+text left out" in note and space["search"]["model.modalities"]["choice"][1] == "image"  # input untouched
    assert fit_modalities(space, frozenset({"image", "text", "tabular"})) == (space, None)
    with_points = {**space, "first": [{"model.modalities": "image"}, {"model.modalities": "text"}, {"optim.lr": 1e-3}]}
    # image: no input, left out; text reads what the kept "all" reads on this table
    assert fit_modalities(with_points, frozenset({"text"}))[0]["first"] == [{"model.modalities": "all"}, {"optim.lr": 1e-3}]
    with pytest.raises(ConfigError, match="names none of this table's modalities"):
        fit_modalities({"fixed": {"model.modalities": "image"}}, frozenset({"text"}))
    with pytest.raises(ConfigError, match="none of"):
        fit_modalities({"search": {"model.modalities": {"choice": ["image"]}}}, frozenset({"text"}))
