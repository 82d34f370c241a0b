"""FT-Transformer (rtdl_revisiting_models) over the numeric and categorical columns."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import BuildContext, Encoder, EncoderOutput, fill_missing, register_encoder


@register_encoder
class FTTransformerEncoder(Encoder):
    """Pooled (late fusion) = the backbone's [CLS] output (rtdl prepends CLS at index 0).
    Tokens (early fusion) = the [CLS] and per-feature embeddings: the shared fusion transformer
    takes the blocks' role, so they are not built (n_blocks is then unused).
    Missing numbers arrive imputed (train mean = 0 after scaling), missing categories as id 0.
    model.missing learnable: a missing number's feature token is a learned parameter per column,
    `missing_num_embedding`, starting as the imputed 0's token (the column's embedding bias).
    A missing category is id 0 under both strategies: rtdl gives id 0 an embedding row of its
    own, trained like any other category's, which already is a learned missing category."""
    name = "ft_transformer"
    modality = "tabular"
    from_scratch = True  # no pretrained weights: the whole tower is fresh (optim.head_lr_mult)

    @dataclass(frozen=True)
    class Config:  # rtdl's defaults for 3 blocks
        n_blocks: int = 3
        d_block: int = 192
        attention_n_heads: int = 8
        attention_dropout: float = 0.2
        ffn_d_hidden_multiplier: float = 4 / 3
        ffn_dropout: float = 0.1
        residual_dropout: float = 0.0

    def __init__(self, ctx: BuildContext, **kwargs):
        from rtdl_revisiting_models import FTTransformer

        super().__init__()
        self.has_num, self.has_cat = ctx.n_num > 0, len(ctx.cat_cardinalities) > 0
        self.reads = ctx.fusion_reads
        if self.reads == "tokens":
            kwargs["n_blocks"] = 0
        self.ft = FTTransformer(n_cont_features=ctx.n_num, cat_cardinalities=list(ctx.cat_cardinalities), d_out=None, **kwargs)
        self.out_dim = self.token_dim = kwargs["d_block"]
        self.missing_num_embedding = None
        if ctx.missing == "learnable" and self.has_num:  # the token of 0 is 0 * weight + bias
            self.missing_num_embedding = torch.nn.Parameter(self.ft.cont_embeddings.bias.detach().clone())

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        # FTTransformer.forward, written out: its feature tokens, then its backbone
        x_num = torch.where(batch["num_mask"], batch["num"], 0.0) if self.has_num else None
        x_cat = batch["cat"] if self.has_cat else None
        lead = (x_num if x_num is not None else x_cat).shape[:-1]
        tokens = [self.ft.cls_embedding(lead)]
        if self.has_num:
            num_tokens = self.ft.cont_embeddings(x_num)
            if self.missing_num_embedding is not None:
                num_tokens = fill_missing(num_tokens, batch["num_mask"], self.missing_num_embedding)
            tokens.append(num_tokens)
        if self.has_cat:
            tokens.append(self.ft.cat_embeddings(x_cat))
        tokens = torch.cat(tokens, dim=1)
        if self.reads == "pooled":
            return {"tabular": EncoderOutput(pooled=self.ft.backbone(tokens))}
        return {"tabular": EncoderOutput(tokens=tokens)}
