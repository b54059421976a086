"""Rotary position embeddings (rotate-half form, as every RoPE family here uses), with the scaling
variants of `rope_parameters` (transformers 5) and of the older `rope_theta` / `rope_scaling` keys.

Frequencies follow transformers' `modeling_rope_utils` formulas; cos/sin are built in float32 for a
table of positions and gathered once per batch by position (AttentionPlan.rope), then every layer
reuses them.
"""
from __future__ import annotations

import math

import torch

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "ntk", "proportional")


def rope_parameters(cfg: dict, layer_type: str | None = None, theta_key: str = "rope_theta",
                    default_theta: float = 10000.0) -> dict:
    """The rope settings of a config, whichever form it is written in: `rope_parameters` (possibly
    keyed by layer type, as ModernBERT and Gemma3 write it in transformers 5), or the legacy
    `rope_theta` + `rope_scaling` keys (`theta_key` names the family's legacy base key)."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    if isinstance(params, dict) and not any(isinstance(v, dict) for v in params.values()):
        out = dict(params)
    else:
        out = dict(cfg.get("rope_scaling") or {})
        out["rope_theta"] = cfg.get(theta_key, default_theta)
    out["rope_type"] = out.get("rope_type") or out.get("type") or "default"
    if out.get("rope_theta") is None:
        out["rope_theta"] = cfg.get(theta_key, default_theta)
    if out["rope_type"] not in ROPE_TYPES:
        raise ValueError(f"RoPE scaling `{out['rope_type']}` is not supported: {', '.join(ROPE_TYPES)} are.")
    return out


def _yarn(inv_freq: torch.Tensor, base: float, dim: int, p: dict, max_positions: int) -> tuple[torch.Tensor, float]:
    factor = float(p["factor"])
    original = p.get("original_max_position_embeddings") or max_positions

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(p.get("beta_fast") or 32), correction_dim(p.get("beta_slow") or 1)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    inv = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
    return inv, float(attention_factor)


def _llama3(inv_freq: torch.Tensor, p: dict) -> torch.Tensor:
    factor, low, high = float(p["factor"]), float(p["low_freq_factor"]), float(p["high_freq_factor"])
    old = float(p["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) * ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


class Rotary:
    """cos/sin tables for one head size and one set of rope parameters."""

    def __init__(self, head_dim: int, params: dict, max_positions: int, partial: float = 1.0):
        self.kind = params["rope_type"]
        # Proportional rope (Gemma 4, EmbeddingGemma 2) spans the whole head: its unrotated angles are zeros.
        self.dim = head_dim if self.kind == "proportional" else int(head_dim * partial)
        self.params = params
        self.max_positions = max_positions
        self.base = float(params["rope_theta"])
        self.inv_freq, self.scaling = self._frequencies(self.base)
        self._cos = self._sin = None

    def _frequencies(self, base: float) -> tuple[torch.Tensor, float]:
        p, dim = self.params, self.dim
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        if self.kind == "linear":
            return inv / float(p["factor"]), 1.0
        if self.kind == "ntk":  # GTE's static NTK: the base times the factor, frequencies over f^(2/d)
            f = float(p["factor"])
            return 1.0 / ((base * f) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)) / f ** (2 / dim), 1.0
        if self.kind == "yarn":
            return _yarn(inv, base, dim, p, self.max_positions)
        if self.kind == "llama3":
            return _llama3(inv, p), 1.0
        if self.kind == "proportional":
            # The first ⌊f·D/2⌋ angles at base^(-2i/D) of the whole head size D, the others 0 (cos 1, sin 0).
            angles = int(float(p.get("partial_rotary_factor") or 1.0) * dim // 2)
            rotated = 1.0 / (base ** (torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / dim))
            return torch.cat([rotated, torch.zeros(dim // 2 - angles)]) / float(p.get("factor") or 1.0), 1.0
        return inv, 1.0

    def _table(self, inv_freq: torch.Tensor, positions: torch.Tensor, scaling: float):
        freqs = positions.float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * scaling, emb.sin() * scaling

    def cos_sin(self, position_ids: torch.Tensor, lengths: list[int], dtype: torch.dtype):
        """[T, 1, dim] cos and sin for a packed batch. Dynamic NTK rescales per sequence by its own
        length (a padded reference would use the batch's longest; one sequence alone agrees)."""
        device = position_ids.device
        top = int(max(lengths)) + int(position_ids.min().item() if position_ids.numel() else 0)
        if self._cos is None or self._cos.shape[0] < top + 1:
            size = max(top + 1, 512)
            cos, sin = self._table(self.inv_freq, torch.arange(size), self.scaling)
            self._cos, self._sin = cos.to(device), sin.to(device)
        cos, sin = self._cos[position_ids], self._sin[position_ids]
        if self.kind == "dynamic" and max(lengths) > self.max_positions:
            cos, sin = cos.clone(), sin.clone()
            start = 0
            factor = float(self.params["factor"])
            for n in lengths:
                if n > self.max_positions:
                    base = self.base * ((factor * n / self.max_positions) - (factor - 1)) ** (self.dim / (self.dim - 2))
                    inv = 1.0 / (base ** (torch.arange(0, self.dim, 2, dtype=torch.int64).float() / self.dim))
                    c, s = self._table(inv, position_ids[start:start + n].cpu(), 1.0)
                    cos[start:start + n], sin[start:start + n] = c.to(device), s.to(device)
                start += n
        return cos.to(dtype)[:, None, :], sin.to(dtype)[:, None, :]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D]; rotates the first cos.shape[-1] dims (partial rotary leaves the rest)."""
    dim = cos.shape[-1]
    if dim == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, rest = x[..., :dim], x[..., dim:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)
