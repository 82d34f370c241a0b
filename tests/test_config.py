import pytest
import yaml

from mmsearch.config import TrialConfig, valid_keys
from mmsearch.errors import ConfigError


def test_defaults_round_trip_through_flat():
    cfg = TrialConfig.from_flat({})
    assert TrialConfig.from_flat(cfg.to_flat(relevant_only=False)) == cfg
    assert TrialConfig.from_flat(cfg.to_flat()) == cfg


def test_flat_keys_set_nested_fields(tiny):
    cfg = TrialConfig.from_flat({**tiny, "tricks.grad_clip.enabled": True, "tricks.grad_clip.max_norm": 2})
    assert cfg.model.image == "timm" and cfg.encoder["timm"].model_name == "test_efficientnet"
    assert cfg.enabled_tricks()["grad_clip"].max_norm == 2.0  # int widened to float
    assert "soup" not in cfg.enabled_tricks()


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        TrialConfig.from_flat({"optim.lrr": 1e-3})
    msg = str(e.value)
    assert "optim.lrr" in msg and "did you mean 'optim.lr'" in msg and "train.epochs" in msg


@pytest.mark.parametrize("key,value", [("optim.lr", "fast"), ("train.epochs", 2.5), ("tricks.soup.enabled", "yes"),
                                       ("optim.schedule", "linear"), ("tricks.soup.method", "average")])
def test_mistyped_value_is_an_error(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrialConfig.from_flat({key: value})


@pytest.mark.parametrize("key,value,words", [("model.image", "resnet9000", "unknown encoder"),
                                             ("model.image", "minilm", "is a text encoder"),
                                             ("model.fusion", "late", "unknown fusion")])
def test_unknown_backbone_or_fusion(key, value, words):
    with pytest.raises(ConfigError, match=words):
        TrialConfig.from_flat({key: value})


def test_unknown_trick_is_an_unknown_key():
    with pytest.raises(ConfigError, match="tricks.mixupp.enabled"):
        TrialConfig.from_flat({"tricks.mixupp.enabled": True})


def test_yaml_nested_and_dotted(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": "1e-4"}, "tricks": {"soup": {"enabled": True}}, "train.epochs": 3}))
    cfg = TrialConfig.load(path)
    assert cfg.optim.lr == 1e-4 and cfg.tricks["soup"].enabled and cfg.train.epochs == 3


def test_resolved_config_is_written(tmp_path, tiny):
    cfg = TrialConfig.from_flat(tiny)
    cfg.save(tmp_path / "c.json")
    assert TrialConfig.load(tmp_path / "c.json") == cfg


def test_every_trick_key_is_valid():
    keys = valid_keys()
    for name in ("soup", "grad_clip", "lr_warmup", "layerwise_lr_decay", "modality_dropout", "align_kl"):
        assert f"tricks.{name}.enabled" in keys
