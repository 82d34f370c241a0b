"""The real-towers pair `clip_lite0_minilm` (the packaged Lite0 and MiniLM inside one open_clip
model; its gradients under every fusion are in test_models, its bundle in test_bundle), and the
one offline-testable path of the hub pair `open_clip`."""
from dataclasses import replace

import pytest
import torch
from conftest import make_state
from torch.utils.data import default_collate
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from mmsearch.config import TrialConfig
from mmsearch.data import batch as inputs
from mmsearch.data.dataset import RowDataset
from mmsearch.models.encoders import BuildContext
from mmsearch.models.encoders.hf_text import minilm_dir
from mmsearch.models.model import build_model
from mmsearch.registry import ENCODERS
from mmsearch.tricks import build_tricks
from mmsearch.train.optim import make_optimizer, param_specs

CTX = BuildContext(n_num=2, cat_cardinalities=(5,), n_image_columns=1, image_size=32, max_text_len=12)
# random towers (nothing read) at 32 px: what the model-level tests need, in about 2 s a build
PAIR = {"model.pair": "clip_lite0_minilm", "encoder.clip_lite0_minilm.embed_dim": 32,
        "encoder.clip_lite0_minilm.pretrained": False}


def pair(ctx=CTX, pretrained=False):
    return ENCODERS.get("clip_lite0_minilm")(ctx, embed_dim=32, pretrained=pretrained)


def trick(name, **cfg):
    flat = {f"tricks.{name}.enabled": True, **{f"tricks.{name}.{k}": v for k, v in cfg.items()}}
    return build_tricks(TrialConfig.from_flat(flat).enabled_tricks())[0]


@pytest.fixture(scope="module")
def packaged():
    """(MiniLM's packaged state dict without its pooler, the packaged Lite0 trunk's state dict)."""
    minilm = AutoModel.from_pretrained(minilm_dir()).state_dict()
    lite0 = ENCODERS.get("lite0")(CTX, pretrained=True).trunk.state_dict()
    return {k: v for k, v in minilm.items() if not k.startswith("pooler.")}, lite0


def _same(state: dict, reference: dict) -> bool:
    assert state.keys() == reference.keys()
    return all(torch.equal(state[k], reference[k]) for k in reference)


def test_towers_carry_the_packaged_weights(packaged):
    minilm, lite0 = packaged
    enc = pair(pretrained=True)
    assert _same(enc.model.text.transformer.state_dict(), minilm)  # BERT's pooler is not built
    assert _same(enc.model.visual.trunk.state_dict(), lite0)
    assert enc.model.visual.head.proj.out_features == enc.model.text.proj.out_features == 32 == enc.out_dim
    assert enc.mean.flatten().tolist() == enc.std.flatten().tolist() == [0.5] * 3  # Lite0 is TF-ported


@pytest.mark.parametrize("ctx_pretrained,pretrained", [(False, True), (True, False)], ids=["bundle", "config_off"])
def test_no_weights_are_read_without_pretrained(packaged, monkeypatch, ctx_pretrained, pretrained):
    """A bundle (ctx.pretrained False) or encoder.clip_lite0_minilm.pretrained False reads only
    configs and the tokenizer: every weight loader fails here, and the towers are random."""
    def refuse(*args, **kwargs):
        raise AssertionError("pretrained weights were read")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(torch, "load", refuse)
    enc = pair(replace(CTX, pretrained=ctx_pretrained), pretrained=pretrained)
    minilm, lite0 = packaged
    assert not torch.equal(enc.model.text.transformer.state_dict()["encoder.layer.0.output.dense.weight"],
                           minilm["encoder.layer.0.output.dense.weight"])
    assert not torch.equal(enc.model.visual.trunk.conv_stem.weight, lite0["conv_stem.weight"])


def test_tokenizer_and_attention_mask_are_minilm_s():
    """open_clip's HFTokenizer over the MiniLM folder, padded to max_text_len with BERT's pad id
    (0): the mask is the one MiniLM's own tokenizer gives."""
    enc = pair()
    texts = ["a red apple", "the quiet river and a stone, far away from here today", ""]
    ids, attn = enc.tokenize(texts)
    reference = AutoTokenizer.from_pretrained(minilm_dir())(texts, padding="max_length", truncation=True,
                                                            max_length=CTX.max_text_len, return_tensors="pt")
    assert torch.equal(ids, reference["input_ids"]) and torch.equal(attn, reference["attention_mask"])


def test_text_tower_runs_only_up_to_the_longest_text():
    torch.manual_seed(0)
    enc = pair(replace(CTX, max_text_len=48)).eval()
    ids, attn = enc.tokenize(["a red apple", "the quiet river and a stone"])
    lengths = []
    enc.model.text.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    out = enc({"text_ids": ids, "text_attn": attn, "text_mask": torch.ones(2, dtype=torch.bool)})["text"].pooled
    assert lengths == [int(attn.sum(1).max())] and lengths[0] < 48
    with torch.no_grad():
        torch.testing.assert_close(out, enc.model.encode_text(ids), rtol=1e-5, atol=1e-5)  # untrimmed: same


def test_depths_follow_each_tower():
    """Each tower counts from its own top: its projection 1, its last block 2, ..., its input
    side deepest; the Lite0 trunk by timm's grouping (16 blocks, the last with conv_head)."""
    d = {k.removeprefix("model."): v for k, v in pair().layer_depths().items()}
    expected = {
        "visual.head.proj.weight": 1, "visual.trunk.blocks.6.0.conv_pw.weight": 2, "visual.trunk.conv_head.weight": 2,
        "visual.trunk.bn2.weight": 2, "visual.trunk.blocks.5.3.conv_dw.weight": 3, "visual.trunk.blocks.0.0.conv_dw.weight": 17,
        "visual.trunk.conv_stem.weight": 18, "visual.trunk.bn1.bias": 18,
        "text.proj.weight": 1, "text.transformer.encoder.layer.5.output.dense.weight": 2,
        "text.transformer.encoder.layer.0.attention.self.query.weight": 7,
        "text.transformer.embeddings.word_embeddings.weight": 8, "text.transformer.embeddings.LayerNorm.weight": 8,
    }
    assert {k: d[k] for k in expected} == expected
    assert "logit_scale" not in d  # frozen: not trained, so no depth


def test_llrd_gives_deeper_layers_of_each_tower_lower_lrs(small_prepared, tiny):
    model = build_model(TrialConfig.from_flat({**tiny, **PAIR}), small_prepared)
    specs = trick("layerwise_lr_decay", decay=0.5).param_groups(param_specs(model, 0.01), make_state())
    scale = {s.name: s.lr_scale for s in specs}
    p = "encoders.pair.model."
    towers = {
        "text": ["text.transformer.embeddings.word_embeddings.weight", "text.transformer.encoder.layer.0.output.dense.weight",
                 "text.transformer.encoder.layer.5.output.dense.weight", "text.proj.weight"],
        "image": ["visual.trunk.conv_stem.weight", "visual.trunk.blocks.0.0.conv_dw.weight",
                  "visual.trunk.blocks.6.0.conv_pw.weight", "visual.head.proj.weight"],
    }
    for tower, deep_to_top in towers.items():
        lrs = [scale[p + n] for n in deep_to_top]
        assert lrs == sorted(lrs) and len(set(lrs)) == len(lrs), (tower, lrs)
        assert lrs[-1] == 0.5  # the projection: one decay step below the fusion
    assert scale["fusion.head.0.weight"] == 1.0
    optimizer = make_optimizer(specs, lr=1e-3)
    for group in optimizer.param_groups:
        for param in group["params"]:
            s = next(s for s in specs if s.param is param)
            assert group["lr"] == pytest.approx(1e-3 * 0.5 ** s.depth)


def test_modality_dropout_gives_dropped_rows_the_missing_representation(small_prepared, tiny):
    """A row whose text / image modality dropout blanked is encoded by the pair exactly as a row
    whose text / image is missing in the data, and differently from its own input."""
    torch.manual_seed(0)
    model = build_model(TrialConfig.from_flat({**tiny, **PAIR}), small_prepared).eval()  # eval: BN per row
    encoder = model.encoders["pair"]
    ds = RowDataset(small_prepared, "train", image_size=model.image_size, tokenize=model.tokenize)
    batch = default_collate([ds[i] for i in range(len(ds))])
    dropped = trick("modality_dropout", p=1.0, keep_one=False).on_batch(batch, make_state())
    with torch.no_grad():
        before, after = encoder(batch), encoder(dropped)
    for modality in ("text", "image"):
        had = inputs.present(batch, modality)
        assert had.any() and (~had).any() and not inputs.present(dropped, modality).any()
        missing = before[modality].pooled[~had][0]  # a row whose input really is missing
        torch.testing.assert_close(after[modality].pooled, missing.expand_as(after[modality].pooled), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(before[modality].pooled[had], missing.expand(int(had.sum()), -1), atol=1e-4)


def test_open_clip_hub_name_builds_without_its_weights_for_a_bundle(monkeypatch):
    """open_clip by hub name with ctx.pretrained False (a bundle): the tag's weights are not
    fetched, and CLIP's own tokenizer (pad id 0) and fixed-length text tower are used as before."""
    import open_clip

    def refuse(*args, **kwargs):
        raise AssertionError("the tag's weights were fetched")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", refuse)
    enc = ENCODERS.get("open_clip")(replace(CTX, pretrained=False, image_size=0), model_name="RN50", pretrained="openai")
    assert enc.image_size == 224
    ids, attn = enc.tokenize(["a red apple"])
    assert enc.pad_id == 0 and not enc.trims_padding and ids.shape == (1, 77) and int(attn.sum()) == 5  # SOT a red apple EOT
