"""The packed (unpadded) batch layout shared by every model, and the attention kernels that consume it.

A batch is one `[total_tokens]` row of ids plus `cu_seqlens` (sequence boundaries). Linear layers
then do no work on padding; only attention needs to know where sequences start and end.
"""
from __future__ import annotations

import dataclasses
import importlib

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [T] int64
    token_type_ids: torch.Tensor  # [T] int64
    position_ids: torch.Tensor  # [T] int64
    cu_seqlens: torch.Tensor  # [B + 1] int32, on the model's device
    lengths: list[int]  # host copy: avoids device syncs when shaping
    max_len: int
    pad_seqs: int = 0  # trailing filler sequences that only round the shape up (devices.Placement.pad_lengths)

    @property
    def num_seqs(self) -> int:
        return len(self.lengths)


# A bucket may pad at most this much more than the real tokens it holds; more buckets cost more calls.
PAD_SLACK = 1.25


class _Bucket:
    """Sequences of similar length, run as one padded SDPA call: [b, L] gather in, real rows out."""

    def __init__(self, rows: list[int], batch: PackedBatch, starts: list[int], device):
        lengths = [batch.lengths[r] for r in rows]
        self.b, self.l = len(rows), max(lengths)
        pos = torch.arange(self.l, device=device)
        row_starts = torch.tensor([starts[r] for r in rows], device=device)
        row_lengths = torch.tensor(lengths, device=device)
        valid = pos[None, :] < row_lengths[:, None]  # [b, L]
        self.gather = (row_starts[:, None] + pos[None, :]).clamp_(max=sum(batch.lengths) - 1)
        uniform = len(set(lengths)) == 1
        self.mask = None if uniform else valid[:, None, None, :]  # True = attend
        self.keep = None if uniform else valid.flatten().nonzero().squeeze(1)
        self.dest = self.gather[valid]  # packed rows that receive this bucket's output


def _buckets(batch: PackedBatch, device) -> list[_Bucket]:
    order = sorted(range(batch.num_seqs), key=batch.lengths.__getitem__)
    starts = [0] * batch.num_seqs
    acc = 0
    for i, n in enumerate(batch.lengths):
        starts[i] = acc
        acc += n
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for r in order:
        n = batch.lengths[r]
        if group and n * (len(group) + 1) > PAD_SLACK * (real + n):
            groups.append(group)
            group, real = [], 0
        group.append(r)
        real += n
    groups.append(group)
    return [_Bucket(g, batch, starts, device) for g in groups]


class AttentionPlan:
    """Per-batch index work done once and reused by every layer.

    On SDPA the packed tokens are sorted into length buckets and gathered into `[b, L]` only inside
    attention, so padding stays under PAD_SLACK; when every sequence has the same length the packed
    tensor is viewed as `[B, L]` directly, with no gather and no mask.
    """

    def __init__(self, batch: PackedBatch, kernel: str):
        self.kernel = kernel
        self.batch = batch
        self.uniform = len(set(batch.lengths)) == 1
        self.buckets: list[_Bucket] = []
        self.varlen = None if kernel == "sdpa" else varlen_kernel(kernel, batch)
        if kernel == "sdpa" and not self.uniform:
            self.buckets = _buckets(batch, batch.cu_seqlens.device)

    def attend(self, qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
        """qkv: [T, 3 * H] → context [T, H]."""
        total, three_h = qkv.shape
        hidden = three_h // 3
        head_dim = hidden // num_heads
        qkv = qkv.view(total, 3, num_heads, head_dim)
        if self.varlen is not None:
            return self.varlen(qkv).reshape(total, hidden)
        b, l = self.batch.num_seqs, self.batch.max_len
        if self.uniform:
            # [B, L, 3, nh, hd] → q, k, v as [B, nh, L, hd]
            q, k, v = qkv.view(b, l, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v)
            return out.transpose(1, 2).reshape(total, hidden)
        out = qkv.new_empty(total, hidden)
        for bucket in self.buckets:
            padded = qkv[bucket.gather]  # [b, L, 3, nh, hd]
            q, k, v = padded.permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bucket.mask)
            o = o.transpose(1, 2).reshape(bucket.b * bucket.l, hidden)
            out.index_copy_(0, bucket.dest, o if bucket.keep is None else o[bucket.keep])
        return out


def varlen_kernel(name: str, batch: PackedBatch):
    """A device kernel over the packed batch (attention_cuda / attention_npu), set up once per batch."""
    module = importlib.import_module(".attention_npu" if name.startswith("npu_") else ".attention_cuda", __package__)
    return module.KERNELS[name](batch)


def activation(name: str):
    name = (name or "gelu").lower()
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_approximate"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name in ("silu", "swish"):
        return F.silu
    raise ValueError(f"Activation `{name}` is not supported")


def pool(hidden: torch.Tensor, batch: PackedBatch, mode: str) -> torch.Tensor:
    """hidden [T, H] → [B, H]."""
    cu = batch.cu_seqlens.to(torch.int64)
    if mode == "cls":
        return hidden.index_select(0, cu[:-1])
    if mode == "last_token":
        return hidden.index_select(0, cu[1:] - 1)
    if mode == "mean":
        lengths = torch.tensor(batch.lengths, device=hidden.device)
        seq_ids = torch.repeat_interleave(torch.arange(batch.num_seqs, device=hidden.device), lengths)
        sums = torch.zeros(batch.num_seqs, hidden.shape[1], device=hidden.device, dtype=torch.float32)
        sums.index_add_(0, seq_ids, hidden.float())
        return sums / lengths[:, None].to(torch.float32)
    raise ValueError(f"Pooling `{mode}` is not supported")


def fused_linear(*parts: tuple[torch.Tensor, torch.Tensor | None]) -> torch.nn.Linear:
    """One Linear whose output is the concatenation of several (q, k, v → qkv)."""
    weight = torch.cat([w for w, _ in parts], 0)
    bias = None if parts[0][1] is None else torch.cat([b for _, b in parts], 0)
    return make_linear(weight, bias)


def make_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = torch.nn.Parameter(bias, requires_grad=False)
    return layer


def make_layer_norm(weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.nn.LayerNorm:
    norm = torch.nn.LayerNorm(weight.shape[0], eps=eps, device="meta")
    norm.weight = torch.nn.Parameter(weight, requires_grad=False)
    norm.bias = torch.nn.Parameter(bias, requires_grad=False)
    return norm

