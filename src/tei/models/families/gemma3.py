"""Gemma3 text (`gemma3_text`): EmbeddingGemma-300m and other Gemma3 text stacks.

Differences from the Llama-style decoders: embeddings scaled by √hidden (in the model's dtype, as
transformers casts it), Gemma's `(1 + w)` RMSNorm, four norms per layer (SandwichLayer), q/k norms
before rotary, a score scale of `query_pre_attn_scalar`^-½, GeGLU, and two kinds of layers: sliding
(a local window, rotary base `rope_local_base_freq`) and full (`rope_theta`).

The window is read from config.json as written: transformers turns a bidirectional model's 512 into
257 in memory (`file // 2 + 1`, masking |i − j| < 257) and back on save, so a bidirectional sliding
layer sees |i − j| <= sliding_window // 2, a causal one the `sliding_window - 1` tokens before.
"""
from __future__ import annotations

from ..layers import Encoder, GatedMLP, RMSNorm, Rotary, SandwichLayer, SelfAttention, TokenEmbeddings
from ..layers import concatenated, fused_linear, linear, rope_parameters
from ..weights import Weights

PREFIXES = ("model",)
IGNORED = ("lm_head.*",)
DEFAULT_PATTERN = 6  # every sixth layer is full attention when the config has no layer_types


def _norm(w: Weights, name: str, eps: float) -> RMSNorm:
    return RMSNorm(w.get(name), eps, offset=1.0)


def layer_types(cfg: dict) -> list[str]:
    n = cfg["num_hidden_layers"]
    if cfg.get("layer_types"):
        return list(cfg["layer_types"])
    pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or DEFAULT_PATTERN)
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


def _rotary(cfg: dict, kind: str, head_dim: int) -> Rotary:
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get(kind), dict):
        p = rope_parameters(cfg, kind)
    elif kind == "sliding_attention":  # legacy keys: local layers never take the global scaling
        p = {"rope_type": "default", "rope_theta": cfg.get("rope_local_base_freq", 10000.0)}
    else:
        p = rope_parameters(cfg, kind, default_theta=1e6)
    return Rotary(head_dim, p, int(cfg.get("max_position_embeddings", 2048)))


def encoder(w: Weights, cfg: dict) -> Encoder:
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key):
            raise ValueError(f"`{key}` is not supported for gemma3_text models")
    causal = not cfg.get("use_bidirectional_attention", False)
    eps = cfg.get("rms_norm_eps", 1e-6)
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    scale = float(cfg.get("query_pre_attn_scalar") or head_dim) ** -0.5
    size = int(cfg.get("sliding_window") or 0)
    window = (size // 2, size // 2) if not causal else (size - 1, 0)
    types = layer_types(cfg)
    if "sliding_attention" in types and not size:
        raise ValueError("config.json has sliding-attention layers but no `sliding_window`")
    rotary = {kind: _rotary(cfg, kind, head_dim) for kind in set(types)}
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    bias = bool(cfg.get("attention_bias"))
    layers = []
    for i, kind in enumerate(types):
        p, a, m = f"layers.{i}", f"layers.{i}.self_attn", f"layers.{i}.mlp"
        qkv = fused_linear(w, [f"{a}.{n}" for n in ("q_proj", "k_proj", "v_proj")], bias=bias)
        attn = SelfAttention(
            qkv, linear(w, f"{a}.o_proj", bias=bias), heads, kv_heads, head_dim,
            q_norm=_norm(w, f"{a}.q_norm.weight", eps), k_norm=_norm(w, f"{a}.k_norm.weight", eps),
            rotary=rotary[kind], causal=causal, window=window if kind == "sliding_attention" else None, scale=scale,
        )
        gate_up = concatenated((w.get(f"{m}.gate_proj.weight"), None), (w.get(f"{m}.up_proj.weight"), None))
        mlp = GatedMLP(gate_up, linear(w, f"{m}.down_proj", bias=False), act)
        layers.append(SandwichLayer(
            _norm(w, f"{p}.input_layernorm.weight", eps), attn, _norm(w, f"{p}.post_attention_layernorm.weight", eps),
            _norm(w, f"{p}.pre_feedforward_layernorm.weight", eps), mlp,
            _norm(w, f"{p}.post_feedforward_layernorm.weight", eps),
        ))
    embeddings = TokenEmbeddings(w.get("embed_tokens.weight"), scale=cfg["hidden_size"] ** 0.5)
    return Encoder(embeddings, layers, cfg["hidden_size"], final_norm=_norm(w, "norm.weight", eps))
