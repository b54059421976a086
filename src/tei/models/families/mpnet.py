"""MPNet (all-mpnet-base-v2, multi-qa-mpnet-*): a post-norm BERT with absolute positions plus one
bucketed relative-position bias that every layer adds to its attention scores."""
from __future__ import annotations

from torch import nn

from ..layers import MLP, Encoder, PostNormLayer, RelativePositionBias, SelfAttention, TokenEmbeddings, fused_linear
from ..layers import layer_norm, linear
from ..weights import Weights
from .bert import RobertaClassifierHead

PREFIXES = ("mpnet",)
IGNORED = ("pooler.*", "lm_head.*", "embeddings.position_ids")
# transformers' MPNetEncoder.compute_position_bias always uses 32 buckets over a 128-token range,
# whatever `relative_attention_num_buckets` says (that key only sizes the table).
BUCKETS, MAX_DISTANCE = 32, 128


def encoder(w: Weights, cfg: dict) -> Encoder:
    if int(cfg.get("relative_attention_num_buckets", BUCKETS)) != BUCKETS:
        raise ValueError(
            f"MPNet with relative_attention_num_buckets={cfg['relative_attention_num_buckets']} is not supported: "
            f"transformers computes {BUCKETS} buckets whatever the config says, so only {BUCKETS} is verifiable."
        )
    eps = cfg.get("layer_norm_eps", 1e-12)
    heads = cfg["num_attention_heads"]
    bias = RelativePositionBias(w.get("encoder.relative_attention_bias.weight"), BUCKETS, MAX_DISTANCE)
    embeddings = TokenEmbeddings(
        w.get("embeddings.word_embeddings.weight"),
        position=w.get("embeddings.position_embeddings.weight"),
        norm=layer_norm(w, "embeddings.LayerNorm", eps),
    )
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention"
        qkv = fused_linear(w, [f"{a}.attn.{n}" for n in "qkv"])
        attn = SelfAttention(qkv, linear(w, f"{a}.attn.o"), heads, bias=bias)
        mlp = MLP(linear(w, f"{p}.intermediate.dense", cfg.get("hidden_act", "gelu")), linear(w, f"{p}.output.dense"))
        layers.append(PostNormLayer(attn, layer_norm(w, f"{a}.LayerNorm", eps), mlp,
                                    layer_norm(w, f"{p}.output.LayerNorm", eps)))
    return Encoder(embeddings, layers, cfg["hidden_size"])


def classifier(w: Weights, cfg: dict) -> nn.Module:
    """`MPNetForSequenceClassification`: RoBERTa's head (dense + tanh + out_proj on <s>)."""
    return RobertaClassifierHead(w)
