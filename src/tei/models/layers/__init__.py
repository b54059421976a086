"""Layers every family builds on: linear layers with fused epilogues, norms, MLPs, rotary and ALiBi
positions, token embeddings and self-attention over the packed layout."""
from .alibi import SymmetricAlibi, alibi_slopes
from .attention import SelfAttention
from .blocks import Encoder, PostNormLayer, PreNormLayer
from .embeddings import TokenEmbeddings
from .linear import ACTIVATIONS, Linear, check_activation, concatenated, linear, use_int8, use_onednn
from .mlp import MLP, GatedMLP
from .norms import LayerNorm, RMSNorm, layer_norm
from .rotary import Rotary, apply_rotary, rope_parameters

__all__ = [
    "ACTIVATIONS", "Encoder", "GatedMLP", "PostNormLayer", "PreNormLayer", "LayerNorm", "Linear", "MLP", "RMSNorm", "Rotary",
    "SelfAttention", "SymmetricAlibi", "TokenEmbeddings", "alibi_slopes", "apply_rotary", "check_activation",
    "concatenated", "layer_norm", "linear", "rope_parameters", "use_int8", "use_onednn",
]
