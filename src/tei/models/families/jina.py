"""Jina's XLM-RoBERTa "flash" code: jina-embeddings-v3 (rotary, task LoRA adapters) and
jina-reranker-v2-base-multilingual (absolute positions). Both are the rope_bert block with the
names `emb_ln`, `encoder.layers`, `mixer.Wqkv`, `mixer.out_proj`, `norm1`/`norm2`, `mlp.fc1`/`fc2`
and biases everywhere; transformers' JinaEmbeddingsV3Model holds the native names (rope_bert.NATIVE).

LoRA (v3): each adapted weight is stored as `X.parametrizations.weight.original` next to
`...weight.0.lora_A` / `lora_B`, stacked over the tasks of `lora_adaptations`. One adapter is
merged into the weights at load (`adapt`): the task named by --default-prompt-name, or none (the
base weights, which is what the original code runs when no task is given). A request naming
another task's prompt is refused by the engine (ModelSpec.adapter): one merged copy cannot serve it.
"""
from __future__ import annotations

from torch import nn

from ..layers import Encoder, Rotary, rope_parameters
from ..weights import Weights
from . import rope_bert
from .bert import RobertaClassifierHead

PREFIXES = ("roberta", "model")
IGNORED = rope_bert.IGNORED

HUB = rope_bert.Layout(
    layer="encoder.layers.{i}", qkv=("mixer.Wqkv",), out="mixer.out_proj", attn_norm="norm1", mlp_norm="norm2",
    emb_norm="emb_ln",
)
_ORIGINAL = ".parametrizations.weight.original"


def rotary_positions(cfg: dict) -> bool:
    return cfg.get("position_embedding_type", "absolute") == "rotary" or cfg.get("model_type") == "jina_embeddings_v3"


def adapt(w: Weights, spec) -> None:
    """Fold every LoRA-parametrized weight into a plain `X.weight`: W + s·B[t]·A[t] for linear
    layers, W + s·A[t]·B[t] for embeddings (their factors are stored the other way round), with
    s = lora_alpha / lora_rank; the bare W when no task is selected."""
    cfg = spec.config
    task = None if spec.adapter is None else list(cfg["lora_adaptations"]).index(spec.adapter)
    scale = float(cfg.get("lora_alpha", 1)) / float(cfg.get("lora_rank", 4))
    keys = [k for k in w.state if k.endswith(_ORIGINAL)]
    if task is not None and not keys:
        raise ValueError(f"Task adapter `{spec.adapter}` was asked for, but the checkpoint has no LoRA weights")
    for key in keys:
        base = key[: -len(".original")]
        weight = w.raw(key)
        a, b = w.raw(f"{base}.0.lora_A"), w.raw(f"{base}.0.lora_B")
        if task is not None:
            first, second = (a[task], b[task]) if ".embeddings." in f".{base}" else (b[task], a[task])
            weight = (weight.float() + scale * (first.float() @ second.float())).to(weight.dtype)
        w.state[key[: -len(_ORIGINAL)] + ".weight"] = weight


def encoder(w: Weights, cfg: dict) -> Encoder:
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    rotary = None
    if rotary_positions(cfg):
        # A base the config does not name is its class's default: transformers' JinaEmbeddingsV3Config
        # says 20000, Jina's remote XLMRobertaFlashConfig 10000 (jina-embeddings-v3 writes 20000 out).
        default = 20000.0 if cfg.get("model_type") == "jina_embeddings_v3" else 10000.0
        rotary = Rotary(hidden // heads, rope_parameters(cfg, theta_key="rotary_emb_base", default_theta=default),
                        max_positions=int(cfg.get("max_position_embeddings", 8194)))
    return rope_bert.build(
        w, cfg, rope_bert.layout(w, HUB), heads=heads, layers=int(cfg["num_hidden_layers"]), hidden=hidden,
        eps=float(cfg.get("layer_norm_eps", 1e-5)), activation=cfg.get("hidden_act", "gelu"), gated=False,
        rotary=rotary, position_table=rotary is None,
    )


def classifier(w: Weights, cfg: dict) -> nn.Module:
    """jina-reranker-v2: RoBERTa's head (dense + tanh + out_proj on <s>)."""
    return RobertaClassifierHead(w)

