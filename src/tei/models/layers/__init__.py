"""Layers every family builds on: linear layers with fused epilogues, norms, MLPs, rotary and ALiBi
positions, token embeddings and self-attention over the packed layout."""
from .alibi import SymmetricAlibi, alibi_slopes
from .attention import SelfAttention
from .blocks import Encoder, PostNormLayer, PreNormLayer, SandwichLayer
from .embeddings import TokenEmbeddings
from .linear import ACTIVATIONS, Linear, check_activation, concatenated, fused_linear, linear, use_int8, use_onednn
from .mlp import MLP, GatedMLP
from .norms import AcrossHeads, LayerNorm, RMSNorm, layer_norm
from .relative_bias import RelativePositionBias
from .rotary import Rotary, apply_rotary, rope_parameters

__all__ = [
    "ACTIVATIONS", "AcrossHeads", "Encoder", "GatedMLP", "PostNormLayer", "PreNormLayer", "SandwichLayer", "LayerNorm", "Linear", "MLP", "RMSNorm", "RelativePositionBias", "Rotary",
    "SelfAttention", "SymmetricAlibi", "TokenEmbeddings", "alibi_slopes", "apply_rotary", "check_activation",
    "concatenated", "fused_linear", "layer_norm", "linear", "rope_parameters", "use_int8", "use_onednn",
]
