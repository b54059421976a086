"""NomicBERT (nomic-embed-text-v1, v1.5): the rotary post-norm encoder with a bias-free SwiGLU MLP.

Hub checkpoints keep the contrastors names (`Wqkv`, `fc11` = up, `fc12` = gate, `norm1`/`norm2`,
`emb_ln`) and GPT-2 style config keys (`n_embd`, `rotary_emb_base`, ...); transformers'
NomicBertModel holds the native names and writes native config keys. Both load. The MoE variant (v2-moe) is refused:
no reference implementation exists offline to verify it against.
"""
from __future__ import annotations

from torch import nn

from ..layers import Encoder, Rotary, rope_parameters
from ..weights import Weights
from . import rope_bert
from .bert import BertClassifierHead

PREFIXES = ("nomic_bert", "model")
IGNORED = rope_bert.IGNORED

HUB = rope_bert.Layout(
    layer="encoder.layers.{i}", qkv=("attn.Wqkv",), out="attn.out_proj", attn_norm="norm1", mlp_norm="norm2",
    gate_up=("mlp.fc12", "mlp.fc11"), gate_first=True, down="mlp.fc2", emb_norm="emb_ln",
)


def _key(cfg: dict, legacy: str, native: str, default=None):
    """The hub config carries both key sets since nomic-embed-text-v1.5 e9b6763: the legacy one is
    what the remote code reads, so it wins."""
    return cfg.get(legacy, cfg.get(native, default))


def _rotary(cfg: dict, head_dim: int) -> Rotary:
    trained = int(_key(cfg, "max_trained_positions", "max_position_embeddings", 2048))
    if "rotary_emb_base" in cfg:
        factor = cfg.get("rotary_scaling_factor")
        params = {"rope_type": "dynamic" if factor else "default", "rope_theta": float(cfg["rotary_emb_base"])}
        if factor:
            params["factor"] = float(factor)  # dynamic NTK past the trained length, per sequence
    else:
        params = rope_parameters(cfg, default_theta=1000.0)
    return Rotary(head_dim, params, max_positions=trained)


def encoder(w: Weights, cfg: dict) -> Encoder:
    act = str(_key(cfg, "activation_function", "hidden_act", "silu")).lower()
    rope_bert.refuse(cfg, "NomicBERT", {
        f"mixture-of-experts layers (moe_every_n_layers={cfg.get('moe_every_n_layers')})":
            bool(cfg.get("moe_every_n_layers")),
        "pre-norm blocks (prenorm: true)": bool(cfg.get("prenorm")),
        "causal attention": bool(cfg.get("causal")),
        f"partial rotary (rotary_emb_fraction={cfg.get('rotary_emb_fraction')})":
            float(cfg.get("rotary_emb_fraction", 1.0)) != 1.0,
        "interleaved rotary": bool(cfg.get("rotary_emb_interleaved")),
        "xPos rotary (rotary_emb_scale_base)": cfg.get("rotary_emb_scale_base") is not None,
        f"activation `{act}`": act not in ("swiglu", "silu", "gelu"),
    })
    hidden = int(_key(cfg, "n_embd", "hidden_size"))
    heads = int(_key(cfg, "n_head", "num_attention_heads"))
    lay = rope_bert.layout(w, HUB)
    return rope_bert.build(
        w, cfg, lay, heads=heads, layers=int(_key(cfg, "n_layer", "num_hidden_layers")), hidden=hidden,
        eps=float(_key(cfg, "layer_norm_epsilon", "layer_norm_eps", 1e-12)),
        # native NomicBertModel is always gated; the hub's `gelu` layers are plain fc1/fc2
        activation="silu" if act == "swiglu" else act, gated=lay is rope_bert.NATIVE or act != "gelu",
        rotary=_rotary(cfg, hidden // heads),
    )


def classifier(w: Weights, cfg: dict) -> nn.Module:
    """NomicBertForSequenceClassification: BERT's pooler (dense + tanh on [CLS]) and classifier."""
    return BertClassifierHead(w)
