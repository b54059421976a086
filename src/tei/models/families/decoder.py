"""Decoder embedders and rerankers: Qwen2, Qwen3, Mistral, Llama (and NVIDIA's `llama_bidirec`).

One pre-norm stack for all of them: RMSNorm, self-attention with grouped k/v heads and rotary
positions, a SwiGLU MLP, a final RMSNorm. What differs is read from the config: Qwen2's q/k/v bias,
Qwen3's per-head q/k RMSNorm before rotary, an explicit `head_dim`, Llama's `attention_bias` and
`mlp_bias`, the attention direction (`is_causal`, `use_bidirectional_attention`) and sliding windows
(`sliding_window` with `layer_types`, or Qwen's `use_sliding_window` + `max_window_layers`).

Rerankers: `Qwen3ForSequenceClassification` with one label scores the last token with `score`;
`Qwen3ForCausalLM` Qwen3-Reranker checkpoints score it with two rows of the LM head (models/yes_no.py).
Both read pairs rendered through PROMPT_TEMPLATE (engine/tokenization.py renders it).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import Encoder, GatedMLP, PreNormLayer, RMSNorm, Rotary, SelfAttention, TokenEmbeddings, fused_linear
from ..layers import linear, rope_parameters
from ..weights import Weights
from ..yes_no import YesNoHead

PREFIXES = ("model",)
# An embedder saved from a *ForCausalLM keeps its LM head: only rerankers read (two rows of) it.
IGNORED = ("lm_head.*", "*.rotary_emb.inv_freq")
BIDIRECTIONAL_TYPES = ("llama_bidirec",)

# Qwen3-Reranker's yes/no prompt (its model card and vLLM's qwen3_reranker.jinja), in three parts: the
# fixed prefix and suffix are never cut; the middle, ending with the document, is cut from its end.
PROMPT_TEMPLATE = {
    "prefix": "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    "middle": "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    "suffix": "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "instruction": "Given a web search query, retrieve relevant passages that answer the query",
}
YES_NO_TOKENS = ("yes", "no")
RERANKER_TYPES = ("qwen3",)  # the only decoder whose reranker prompt and scoring are verified


def prompt_template(cfg: dict) -> dict[str, str] | None:
    """The template a reranker of this family renders its (query, document) pairs through."""
    return PROMPT_TEMPLATE if cfg.get("model_type") in RERANKER_TYPES else None


def appended_token(cfg: dict) -> str | None:
    """Old gte-Qwen2 repos relied on their remote tokenizer code to end every text with <|endoftext|>
    (the token they pool); TEI adds that post-processor for `modeling_qwen.Qwen2Model`, and so do we."""
    auto_model = (cfg.get("auto_map") or {}).get("AutoModel") or ""
    return "<|endoftext|>" if auto_model.endswith("modeling_qwen.Qwen2Model") else None


def causal(cfg: dict) -> bool:
    """Decoders attend causally unless the config says otherwise (gte-Qwen2 ships `is_causal: false`)."""
    if cfg.get("model_type") in BIDIRECTIONAL_TYPES or cfg.get("use_bidirectional_attention"):
        return False
    return bool(cfg.get("is_causal", True))


def head_dim(cfg: dict) -> int:
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def layer_windows(cfg: dict, is_causal: bool) -> list[tuple[int, int] | None]:
    """Per layer, the (left, right) window of a sliding-attention layer, None for full attention.
    transformers keeps keys with q - k < sliding_window (causal) or |q - k| <= sliding_window (bidirectional)."""
    n = cfg["num_hidden_layers"]
    size = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if types:
        sliding = [t == "sliding_attention" for t in types]
    elif cfg.get("model_type") in ("qwen2", "qwen3"):
        first = cfg.get("max_window_layers", n)
        sliding = [bool(cfg.get("use_sliding_window")) and i >= first for i in range(n)]
    else:
        sliding = [size is not None] * n
    if any(sliding) and not size:
        raise ValueError("config.json has sliding-attention layers but no `sliding_window`")
    window = ((int(size) - 1, 0) if is_causal else (int(size), int(size))) if size else None
    return [window if s else None for s in sliding]


def _check(cfg: dict) -> None:
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key):
            raise ValueError(f"`{key}` is not supported for {cfg.get('model_type')} models")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"Activation `{cfg.get('hidden_act')}` is not supported for {cfg.get('model_type')} models")


def _layer(w: Weights, p: str, cfg: dict, rotary: Rotary, is_causal: bool, window) -> PreNormLayer:
    model_type = cfg.get("model_type")
    eps = cfg.get("rms_norm_eps", 1e-6)
    dim = head_dim(cfg)
    a = f"{p}.self_attn"
    # Qwen2 always has q/k/v biases and no o bias; Llama and Qwen3 follow `attention_bias` for all four.
    qkv_bias = model_type == "qwen2" or bool(cfg.get("attention_bias"))
    out_bias = model_type != "qwen2" and bool(cfg.get("attention_bias"))
    qkv = fused_linear(w, [f"{a}.{n}" for n in ("q_proj", "k_proj", "v_proj")], bias=qkv_bias)
    q_norm = k_norm = None
    if w.has(f"{a}.q_norm.weight"):
        q_norm, k_norm = (RMSNorm(w.get(f"{a}.{n}.weight"), eps) for n in ("q_norm", "k_norm"))
    attn = SelfAttention(
        qkv, linear(w, f"{a}.o_proj", bias=out_bias), cfg["num_attention_heads"],
        cfg.get("num_key_value_heads") or cfg["num_attention_heads"], dim,
        q_norm=q_norm, k_norm=k_norm, rotary=rotary, causal=is_causal, window=window,
    )
    m = f"{p}.mlp"
    mlp_bias = bool(cfg.get("mlp_bias"))
    gate_up = fused_linear(w, [f"{m}.{n}" for n in ("gate_proj", "up_proj")], bias=mlp_bias)
    mlp = GatedMLP(gate_up, linear(w, f"{m}.down_proj", bias=mlp_bias), cfg.get("hidden_act", "silu"))
    return PreNormLayer(RMSNorm(w.get(f"{p}.input_layernorm.weight"), eps), attn,
                        RMSNorm(w.get(f"{p}.post_attention_layernorm.weight"), eps), mlp)


def encoder(w: Weights, cfg: dict) -> Encoder:
    _check(cfg)
    is_causal = causal(cfg)
    params = rope_parameters(cfg, "full_attention")
    rotary = Rotary(head_dim(cfg), params, int(cfg.get("max_position_embeddings", 32768)),
                    partial=float(params.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or 1.0))
    windows = layer_windows(cfg, is_causal)
    layers = [_layer(w, f"layers.{i}", cfg, rotary, is_causal, windows[i]) for i in range(cfg["num_hidden_layers"])]
    final = RMSNorm(w.get("norm.weight"), cfg.get("rms_norm_eps", 1e-6))
    return Encoder(TokenEmbeddings(w.get("embed_tokens.weight")), layers, cfg["hidden_size"], final_norm=final)


class LastTokenScore(nn.Module):
    """`*ForSequenceClassification` of a decoder: `score` (no bias) on the last token's state. transformers
    finds that token by comparing ids with the pad token; the packed batch knows it by position."""

    pooling = "last_token"

    def __init__(self, w: Weights):
        super().__init__()
        self.score = linear(w, "score", bias=w.has("score.bias"))

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        return self.score(last)


def classifier(w: Weights, cfg: dict) -> nn.Module:
    return LastTokenScore(w)


def yes_no_head(w: Weights, cfg: dict, token_ids: tuple[int, int]) -> YesNoHead:
    """Qwen3-Reranker: the LM head's `yes` and `no` rows (the tied embedding when there is no lm_head)."""
    name = "lm_head.weight" if w.has("lm_head.weight") else "embed_tokens.weight"
    return YesNoHead(w.raw(name), token_ids)
