"""BERT, RoBERTa, XLM-RoBERTa and CamemBERT (post-LayerNorm encoders), on packed tokens.

The RoBERTa family is BERT with positions shifted by `pad_token_id + 1` (handled by the engine's
position ids) and a different classification head.
"""
from __future__ import annotations

import torch
from torch import nn

from .linear import ENCODER_INT8_LINEARS, Linear, concatenated
from .packed import AttentionPlan, PackedBatch, make_layer_norm
from .splade import MaskedLMHead
from .weights import Weights

PREFIXES = ("bert", "roberta", "model")
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


class BertLayer(nn.Module):
    INT8_LINEARS = ENCODER_INT8_LINEARS

    def __init__(self, w: Weights, p: str, cfg: dict):
        super().__init__()
        self.num_heads = cfg["num_attention_heads"]
        eps = cfg.get("layer_norm_eps", 1e-12)
        a = f"{p}.attention"
        self.qkv = concatenated(
            *((w.get(f"{a}.self.{n}.weight"), w.get(f"{a}.self.{n}.bias")) for n in ("query", "key", "value"))
        )
        self.attn_out = Linear(w.get(f"{a}.output.dense.weight"), w.get(f"{a}.output.dense.bias"))
        self.attn_norm = make_layer_norm(w.get(f"{a}.output.LayerNorm.weight"), w.get(f"{a}.output.LayerNorm.bias"), eps)
        self.up = Linear(
            w.get(f"{p}.intermediate.dense.weight"), w.get(f"{p}.intermediate.dense.bias"), cfg.get("hidden_act", "gelu")
        )
        self.down = Linear(w.get(f"{p}.output.dense.weight"), w.get(f"{p}.output.dense.bias"))
        self.out_norm = make_layer_norm(w.get(f"{p}.output.LayerNorm.weight"), w.get(f"{p}.output.LayerNorm.bias"), eps)

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        ctx = plan.attend(self.qkv(x), self.num_heads)
        x = self.attn_norm(self.attn_out.add(ctx, x))
        return self.out_norm(self.down.add(self.up(x), x))


class BertModel(nn.Module):
    """Encoder: packed ids → packed hidden states [T, H]."""

    def __init__(self, w: Weights, cfg: dict, attention: str):
        super().__init__()
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("Only absolute position embeddings are supported for BERT-family models")
        self.attention = attention
        e = "embeddings"
        self.word = nn.Embedding.from_pretrained(w.get(f"{e}.word_embeddings.weight"), freeze=True)
        self.position = nn.Embedding.from_pretrained(w.get(f"{e}.position_embeddings.weight"), freeze=True)
        types = w.get(f"{e}.token_type_embeddings.weight") if w.has(f"{e}.token_type_embeddings.weight") else None
        # RoBERTa-family tables have one row: every token gets it, whatever type id a BERT-style pair
        # template hands out (indexing row 1 would fail the batch, or assert on the GPU).
        self.token_type_row = types[0] if types is not None and types.shape[0] == 1 else None
        self.token_type = (
            nn.Embedding.from_pretrained(types, freeze=True)
            if types is not None and self.token_type_row is None
            else None
        )
        self.norm = make_layer_norm(
            w.get(f"{e}.LayerNorm.weight"), w.get(f"{e}.LayerNorm.bias"), cfg.get("layer_norm_eps", 1e-12)
        )
        self.layers = nn.ModuleList(BertLayer(w, f"encoder.layer.{i}", cfg) for i in range(cfg["num_hidden_layers"]))

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.word(batch.input_ids) + self.position(batch.position_ids)
        if self.token_type is not None:
            x = x + self.token_type(batch.token_type_ids)
        elif self.token_type_row is not None:
            x = x + self.token_type_row
        x = self.norm(x)
        plan = AttentionPlan(batch, self.attention)
        for layer in self.layers:
            x = layer(x, plan)
        return x


class BertClassifierHead(nn.Module):
    """`BertForSequenceClassification`: pooler (dense + tanh on [CLS]) then a linear classifier."""

    def __init__(self, w: Weights):
        super().__init__()
        self.pooler = Linear(w.get("pooler.dense.weight"), w.get("pooler.dense.bias"))
        self.classifier = Linear(w.get("classifier.weight"), w.get("classifier.bias"))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.tanh(self.pooler(cls)))


class RobertaClassifierHead(nn.Module):
    """`RobertaClassificationHead`: dense + tanh + out_proj on the <s> token."""

    def __init__(self, w: Weights):
        super().__init__()
        self.dense = Linear(w.get("classifier.dense.weight"), w.get("classifier.dense.bias"))
        self.out_proj = Linear(w.get("classifier.out_proj.weight"), w.get("classifier.out_proj.bias"))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(cls)))


def build(w: Weights, cfg: dict, attention: str, classifier: bool):
    encoder = BertModel(w, cfg, attention)
    head = None
    if classifier:
        head = RobertaClassifierHead(w) if cfg.get("model_type") in ROBERTA_TYPES else BertClassifierHead(w)
    return encoder, head


def mlm_head(w: Weights, cfg: dict) -> MaskedLMHead:
    """The masked-LM head of `BertForMaskedLM` (`cls.predictions`) or `RobertaForMaskedLM` (`lm_head`)."""
    eps = cfg.get("layer_norm_eps", 1e-12)
    if cfg.get("model_type") in ROBERTA_TYPES:
        names = {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "decoder": "lm_head.decoder",
                 "bias": ("lm_head.bias", "lm_head.decoder.bias")}
        return MaskedLMHead(w, names, "gelu", eps)
    names = {"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
             "decoder": "cls.predictions.decoder", "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")}
    return MaskedLMHead(w, names, cfg.get("hidden_act", "gelu"), eps)
