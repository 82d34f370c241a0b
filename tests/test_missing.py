"""model.missing: `impute` (zero image, empty text, mean number, the missing category) against
`learnable` (a missing image's / text's encoder output and a missing number's token are learned
parameters, `missing_*`). Effect tests: a missing input's representation IS the learned tensor and
its gradient is non-zero; nothing missing still gives it a (zero) gradient, as DDP needs; the
bundle carries the learned tensors and its predictions use them."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import GRADIENT_FUSIONS, TINY, make_state
from safetensors import safe_open
from test_models import CTX, TINY_ARGS, _batch, _unreached_after_one_backward
from torch.utils.data import default_collate

from mmsearch.config import TrialConfig
from mmsearch.data import batch as inputs
from mmsearch.data.dataset import RowDataset
from mmsearch.models.model import build_model
from mmsearch.registry import ENCODERS, FUSIONS
from mmsearch.search.space import SearchSpace
from mmsearch.train.optim import param_specs

LEARNABLE = replace(CTX, missing="learnable")
TINY_ENCODERS = ["timm", "tiny_text", "ft_transformer", "clip_tiny"]
COVERS = {"timm": ["image"], "tiny_text": ["text"], "ft_transformer": ["tabular"], "clip_tiny": ["image", "text"]}


def _encoder(name, reads, ctx=LEARNABLE, **over):
    torch.manual_seed(0)
    return ENCODERS.get(name)(replace(ctx, fusion_reads=reads), **{**TINY_ARGS[name], **over})


def _with_missing(enc):
    """_batch's 3 rows with: row 1's image, row 0's text, row 0's 2nd number and both of row 2's
    numbers missing."""
    batch = _batch(enc)
    batch["image_mask"] = torch.tensor([[True], [False], [True]])
    batch["num_mask"] = torch.tensor([[True, False], [True, True], [False, False]])
    if "text_mask" in batch:
        batch["text_mask"] = torch.tensor([False, True, True])
    return batch


def _representations(enc, batch) -> dict[str, torch.Tensor]:
    """What stands for each missing input in the encoder's output: row 1's image (pooled vector
    or tokens), row 0's text (pooled vector, or its CLS + SEP tokens), and the numeric feature
    tokens [B, n_num, d] (what the FT-Transformer's blocks read, under late fusion too)."""
    seen = {}
    if hasattr(enc, "ft"):
        enc.ft.backbone.register_forward_pre_hook(lambda m, args: seen.update(tokens=args[0]))
    out = enc(batch)
    found = {}
    if "image" in out:
        o = out["image"]  # the pair's one token is its pooled vector
        found["image"] = o.pooled[1] if o.pooled is not None else o.tokens.view(3, 1, -1, o.tokens.shape[-1])[1, 0]
    if "text" in out:
        o = out["text"]
        if getattr(enc, "reads", "pooled") == "pooled" or o.tokens.shape[1] == 1:  # or the pair's one token
            found["text"] = o.pooled[0]
        else:
            found["text"] = o.tokens[0, :int(o.token_mask[0].sum())]
    if "tabular" in out:
        tokens = seen.get("tokens", out["tabular"].tokens)
        found["tabular"] = tokens[:, 1:3]  # after [CLS]: the 2 numbers, then the category
    return found


def _learned(enc) -> dict[str, torch.nn.Parameter]:
    named = {"image": "missing_image", "text": "missing_text", "tabular": "missing_num_embedding"}
    return {m: getattr(enc, p) for m, p in named.items() if getattr(enc, p, None) is not None}


@pytest.mark.parametrize("reads", ["pooled", "tokens"])
@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_a_missing_input_is_its_learned_parameter_and_gets_a_gradient(name, reads):
    enc = _encoder(name, reads)
    learned = _learned(enc)
    assert set(learned) == set(COVERS[name])
    with torch.no_grad():  # values no encoding could give: equality below is identity, not chance
        for p in learned.values():
            p.copy_(torch.randn_like(p) * 3)
    batch = _with_missing(enc)
    found = _representations(enc, batch)
    for modality, p in learned.items():
        if modality == "tabular":
            missing = ~batch["num_mask"]
            assert torch.equal(found["tabular"][missing], p.expand(3, -1, -1)[missing])
            assert not torch.isclose(found["tabular"][~missing], p.expand(3, -1, -1)[~missing]).all(-1).any()
        else:
            assert torch.equal(found[modality], p[0] if modality == "image" else p)
    loss = sum((t * torch.randn_like(t)).sum() for t in found.values())
    loss.backward()
    for modality, p in learned.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, modality
    if "tabular" in learned:  # each number missing somewhere gets its own gradient
        assert (learned["tabular"].grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("reads", ["pooled", "tokens"])
@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_learnable_starts_as_the_imputed_representation(name, reads):
    """Same seed, same weights: in eval mode the two strategies give the same outputs before any
    training (the learned tensors start as the imputation), and impute builds no such tensor."""
    # a ViT: a fresh CNN (no conv biases, batch norm at identity) encodes the zero image as 0
    over = {"model_name": "test_vit2"} if name == "timm" else {}
    imputed, learnable = _encoder(name, reads, CTX, **over).eval(), _encoder(name, reads, **over).eval()
    assert not [n for n, _ in imputed.named_parameters() if "missing_" in n]
    only_learnable = learnable.load_state_dict(imputed.state_dict(), strict=False).missing_keys
    assert set(only_learnable) == {n for n, _ in learnable.named_parameters() if "missing_" in n}
    batch = _with_missing(imputed)
    with torch.no_grad():
        a, b = _representations(imputed, batch), _representations(learnable, batch)
    for modality in a:
        assert a[modality].abs().max() > 1e-2  # a start that is not trivially 0
        torch.testing.assert_close(b[modality], a[modality], rtol=1e-5, atol=1e-5)


# the real-towers pair once: a pair's missing vectors are the same under every fusion
@pytest.mark.parametrize("name,fusion", [(n, f) for n in TINY_ENCODERS for f in GRADIENT_FUSIONS] + [("clip_lite0_minilm", "lf_mlp")])
def test_nothing_missing_still_gives_every_parameter_a_gradient(name, fusion):
    """A batch without a missing input: the learned tensors get a zero gradient, not None (DDP
    fails on a parameter without one), and every trainable parameter has an LLRD depth."""
    enc = _encoder(name, FUSIONS.get(fusion).reads)
    assert _unreached_after_one_backward(enc, fusion) == []
    for p in _learned(enc).values():
        assert torch.count_nonzero(p.grad) == 0
    depths = enc.layer_depths()
    assert set(depths) == {k for k, p in enc.named_parameters() if p.requires_grad}
    for modality, p in _learned(enc).items():  # image / text stand in for the tower's output
        name_ = next(n for n, q in enc.named_parameters() if q is p)
        assert depths[name_] == (max(depths.values()) if modality == "tabular" else 1)


def _tiny_model(small_prepared, **over):
    torch.manual_seed(0)
    return build_model(TrialConfig.from_flat({**TINY, "model.missing": "learnable", **over}), small_prepared)


def test_the_fused_loss_trains_the_learned_tensors_without_weight_decay(small_prepared):
    """On training rows with missing cells (20 %), the model's own loss reaches every learned
    tensor; none of them is weight-decayed (decay would only shrink it, as for embeddings)."""
    model = _tiny_model(small_prepared)
    ds = RowDataset(small_prepared, "train", view=model.view, image_size=model.image_size, tokenize=model.tokenize)
    batch = default_collate([ds[i] for i in range(len(ds))])
    for modality in ("image", "text"):
        assert not inputs.present(batch, modality).all()
    assert not batch["num_mask"].all()
    torch.nn.functional.cross_entropy(model(batch).logits, batch["label"]).backward()
    learned = {n: p for n, p in model.named_parameters() if ".missing_" in n}
    assert set(learned) == {"encoders.image.missing_image", "encoders.text.missing_text",
                            "encoders.tabular.missing_num_embedding"}
    for n, p in learned.items():
        assert p.grad.abs().sum() > 0, n
    assert all(s.weight_decay == 0 for s in param_specs(model, 1e-3) if s.name in learned)


def test_modality_dropout_gives_dropped_rows_the_learned_representation(small_prepared):
    from test_tricks import trick

    model = _tiny_model(small_prepared, **{"model.fusion": "early"}).eval()  # eval: batch norm per row
    ds = RowDataset(small_prepared, "train", view=model.view, image_size=model.image_size, tokenize=model.tokenize)
    batch = default_collate([ds[i] for i in range(32)])
    dropped = trick("modality_dropout", p=1.0, keep_one=False).on_batch(batch, make_state())
    encoders = model.encoders
    with torch.no_grad():
        before = {m: encoders[m](batch)[m].tokens for m in ("image", "text", "tabular")}
        after = {m: encoders[m](dropped)[m].tokens for m in ("image", "text", "tabular")}
    n = len(after["image"])
    image = encoders["image"].missing_image  # [1 column, positions, d]
    assert torch.equal(after["image"], image.reshape(1, -1, image.shape[-1]).expand(n, -1, -1))
    text = encoders["text"].missing_text  # CLS + SEP
    assert torch.equal(after["text"][:, :len(text)], text.expand(n, -1, -1))
    num = encoders["tabular"].missing_num_embedding
    assert torch.equal(after["tabular"][:, 1:1 + len(num)], num.expand(n, -1, -1))
    for m in after:  # rows that had the input were represented otherwise
        had, length = inputs.present(batch, m), min(before[m].shape[1], after[m].shape[1])
        assert had.any() and not torch.equal(before[m][had, :length], after[m][had, :length])


def test_bag_of_tricks_searches_impute_against_learnable():
    space = SearchSpace.load("search_spaces/bag_of_tricks.yaml")
    assert next(d for d in space.dims if d.key == "model.missing").values() == ["impute", "learnable"]


def test_a_learnable_trial_s_bundle_predicts_as_its_trial_did_with_the_learned_tensors(tmp_path):
    """The bundle's weights hold the learned tensors (build_model builds them from the member's
    config, so the strict load takes them); its holdout predictions equal the trial's bit for bit
    (CPU), and rows with a missing image are predicted from the learned tensor, the others not."""
    from mmsearch.bundle.export import export_bundle
    from mmsearch.bundle.predictor import Predictor
    from mmsearch.data.prepare import prepare
    from mmsearch.data.synthetic import make_synthetic
    from mmsearch.train.run import run_local

    table = make_synthetic(tmp_path / "table", n=64, missing=0.2, seed=8)  # 9 holdout rows, each input missing in some
    exp = tmp_path / "exp"
    prepare(table, "label", exp / "data")
    run_local({**TINY, "model.missing": "learnable", "train.epochs": 1, "train.max_steps_per_epoch": 2},
              exp / "data", exp / "train" / "t_learn")
    bundle = export_bundle(exp, tmp_path / "bundle", log=lambda *_: None)

    member = next((bundle / "members").iterdir())
    assert json.loads((member / "config.json").read_text())["model.missing"] == "learnable"
    with safe_open(member / "model.safetensors", "pt") as f:
        exported = {k: f.get_tensor(k) for k in f.keys() if ".missing_" in k}
    assert set(exported) == {"encoders.image.missing_image", "encoders.text.missing_text",
                             "encoders.tabular.missing_num_embedding"}
    predictor = Predictor.load(bundle, device="cpu")
    model = predictor.members[0].model
    for k, v in exported.items():
        assert torch.equal(model.get_parameter(k).detach(), v)

    split = json.loads((exp / "data" / "split.json").read_text())
    rows = pd.read_csv(table).iloc[split["holdout"]]
    saved = np.load(exp / "train" / "t_learn" / "final" / "preds_holdout.npy")
    preds = predictor.member_predictions(rows, base_dir=table.parent)["t_learn"]
    assert np.array_equal(preds, saved)

    lacking = {"image": rows["image"].isna(), "text": rows["description"].isna(),
               "tabular": rows["size"].isna() | rows["weight"].isna()}
    for modality, rows_without in lacking.items():
        assert rows_without.any() and not rows_without.all(), modality
        learned = _learned(model.encoders[modality])[modality]
        trained = learned.detach().clone()
        with torch.no_grad():
            learned.add_(1.0)
        changed = predictor.member_predictions(rows, base_dir=table.parent)["t_learn"]
        with torch.no_grad():
            learned.copy_(trained)  # exactly ((x + 1) - 1 need not be x)
        assert (np.abs(changed - preds).max(1) > 0).tolist() == rows_without.tolist(), modality
