"""The rotary post-norm encoder that NomicBERT, GTE "new" and Jina v3 share (vLLM groups them the
same way, in bert_with_rope.py), and the absolute-position variant jina-reranker-v2 uses.

The block is BERT's: embeddings (word, optional token types, optional absolute positions) and a
LayerNorm, then per layer `x = norm1(x + out(attn(x)))`, `x = norm2(x + mlp(x))`, with rotary q/k
over the whole head. The families differ only in weight names, which MLP they use (plain or gated,
and the order of a fused gate/up), the rotary base and scaling, and which biases exist. So a family
is a `Layout` (its hub names) plus its config reading. transformers' native classes for all three
(NomicBertModel, GteModel, JinaEmbeddingsV3Model) hold one common layout, `NATIVE`: a state dict
saved as it is has those names (`save_pretrained` writes the hub names back, by the reverse of its
conversion table), and both load.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ..layers import MLP, Encoder, GatedMLP, Linear, PostNormLayer, Rotary, SelfAttention, TokenEmbeddings, concatenated
from ..layers.norms import LayerNorm
from ..weights import Weights

# Every checkpoint of these families may carry these without using them.
IGNORED = ("pooler.*", "lm_head.*", "cls.*", "embeddings.position_ids", "*.inv_freq", "*.original_inv_freq")


@dataclasses.dataclass(frozen=True)
class Layout:
    layer: str  # prefix of layer i, with `{i}`
    qkv: tuple[str, ...]  # one fused projection, or q, k, v to concatenate
    out: str
    attn_norm: str
    mlp_norm: str
    emb_norm: str
    gate_up: tuple[str, ...] = ()  # the gated MLP's projections, concatenated in this order
    gate_first: bool = True  # whether the gate is the first half of that concatenation
    down: str = ""  # the gated MLP's output projection
    fc1: str = "mlp.fc1"  # the plain MLP (Jina, Nomic's gelu layers)
    fc2: str = "mlp.fc2"

    def matches(self, w: Weights) -> bool:
        return w.has(f"{self.layer.format(i=0)}.{self.attn_norm}.weight")


NATIVE = Layout(
    layer="layers.{i}",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    out="self_attn.o_proj",
    attn_norm="post_attention_layernorm",
    mlp_norm="post_mlp_layernorm",
    gate_up=("mlp.gate_proj", "mlp.up_proj"),
    gate_first=True,
    down="mlp.down_proj",
    emb_norm="embeddings.LayerNorm",
)


def _linear(w: Weights, name: str, activation: str | None = None) -> Linear:
    """Biases are read where the checkpoint has them: which exist differs by family (Nomic: none;
    GTE: all but the gate/up; Jina: all), and every tensor must be read, so none is dropped."""
    return Linear(w.get(f"{name}.weight"), w.optional(f"{name}.bias"), activation)


def _fused(w: Weights, names: list[str]) -> Linear:
    if len(names) == 1:
        return _linear(w, names[0])
    return concatenated(*((w.get(f"{n}.weight"), w.optional(f"{n}.bias")) for n in names))


def _norm(w: Weights, name: str, eps: float) -> LayerNorm:
    return LayerNorm(w.get(f"{name}.weight"), w.optional(f"{name}.bias"), eps)


def layout(w: Weights, hub: Layout) -> Layout:
    """The family's hub layout or transformers' native one, whichever the checkpoint holds."""
    for candidate in (hub, NATIVE):
        if candidate.matches(w):
            return candidate
    raise ValueError("The checkpoint has neither the hub's nor transformers' weight names for this family")


def _mlp(w: Weights, p: str, lay: Layout, activation: str, gated: bool) -> nn.Module:
    if gated:
        gate_up = _fused(w, [f"{p}.{n}" for n in lay.gate_up])
        return GatedMLP(gate_up, _linear(w, f"{p}.{lay.down}"), activation, gate_first=lay.gate_first)
    return MLP(_linear(w, f"{p}.{lay.fc1}", activation), _linear(w, f"{p}.{lay.fc2}"))


def build(w: Weights, cfg: dict, lay: Layout, *, heads: int, layers: int, hidden: int, eps: float,
          activation: str, gated: bool, rotary: Rotary | None, position_table: bool = False) -> Encoder:
    """The encoder from a checkpoint in layout `lay`. `rotary=None` with `position_table` is the
    absolute-position variant (jina-reranker-v2)."""
    e = "embeddings"
    embeddings = TokenEmbeddings(
        w.get(f"{e}.word_embeddings.weight"),
        position=w.get(f"{e}.position_embeddings.weight") if position_table else None,
        token_type=w.optional(f"{e}.token_type_embeddings.weight"),
        norm=_norm(w, lay.emb_norm, eps),
    )
    blocks = []
    for i in range(layers):
        p = lay.layer.format(i=i)
        attn = SelfAttention(_fused(w, [f"{p}.{n}" for n in lay.qkv]), _linear(w, f"{p}.{lay.out}"), heads,
                             rotary=rotary)
        mlp = _mlp(w, p, lay, activation, gated)
        blocks.append(PostNormLayer(attn, _norm(w, f"{p}.{lay.attn_norm}", eps), mlp, _norm(w, f"{p}.{lay.mlp_norm}", eps)))
    return Encoder(embeddings, blocks, hidden)


def refuse(cfg: dict, family: str, checks: dict[str, bool]) -> None:
    """One clear start-up line for a config variant this code has not been verified against."""
    bad = [what for what, failed in checks.items() if failed]
    if bad:
        raise ValueError(f"{family} with {bad[0]} is not supported (config.json of model_type "
                         f"`{cfg.get('model_type')}`)")
