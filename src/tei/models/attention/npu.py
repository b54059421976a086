"""Packed attention on Huawei Ascend NPUs, through torch_npu's fused kernels.

Same contract as attention.cuda: built once per batch, called per layer with q `[T, Hq, D]` and k,
v `[T, Hkv, D]`, returns `[T, Hq, D]`.

- `npu_fusion` (Atlas A2/A3, 910B/910_93): `torch_npu.npu_fusion_attention` in the TND (varlen)
  layout. `actual_seq_qlen`/`actual_seq_kvlen` are *cumulative* sequence ends, i.e. our cu_seqlens
  without the leading 0. No mask: attention stays inside each sequence. Causal models (decoders) use
  `sparse_mode=3` with the compressed 2048x2048 upper-triangular mask that mode takes (True = masked
  out, the opposite of SDPA's bool). k/v may have fewer heads than q (GQA).
- `npu_prompt` (Atlas 300I/310P, fp16 only): `torch_npu.npu_prompt_flash_attention` on a padded
  BNSD batch. Its bool mask means True = masked out (the opposite of SDPA's), and 310P takes no
  per-sequence lengths, so padding keys are masked; rows and length are padded to gears so the
  kernel sees few distinct shapes.
"""
from __future__ import annotations

import itertools

import torch

from ...devices import gear
from ..batch import PackedBatch

MAX_VARLEN_SEQS = 1024  # npu_fusion_attention takes at most this many sequences per TND call
PFA_MAX_ROWS = 128  # prompt-flash on 310P: batch axis at most 128
PFA_LEN_FLOOR = 32  # pad the key axis to 32 bytes or more, as the PFA docs advise for speed
NO_WINDOW = 2147483647  # pre/next_tokens: every key is in range (bidirectional encoder attention)
CAUSAL_SPARSE_MODE = 3  # bottom-right causal, the default of transformers' NPU flash-attention path
CAUSAL_MASK_SIZE = 2048  # sparse modes 2/3 take the mask compressed to this square


class NpuFusion:
    def __init__(self, batch: PackedBatch):
        ends = list(itertools.accumulate(batch.lengths))
        # (first token, end token, cumulative ends relative to the first token) per chunk of sequences
        self.chunks: list[tuple[int, int, list[int]]] = []
        for i in range(0, len(ends), MAX_VARLEN_SEQS):
            first = ends[i - 1] if i else 0
            part = ends[i : i + MAX_VARLEN_SEQS]
            self.chunks.append((first, part[-1], [e - first for e in part]))

    def __call__(self, q, k, v, *, causal=False, window=None, scale=None) -> torch.Tensor:
        import torch_npu

        heads, head_dim = q.shape[1], q.shape[2]
        q, k, v = (t.contiguous() for t in (q, k, v))  # fused ops reject strided inputs
        extra = {}
        if causal:
            mask = torch.ones(CAUSAL_MASK_SIZE, CAUSAL_MASK_SIZE, dtype=torch.bool, device=q.device).triu_(1)
            extra = {"atten_mask": mask, "sparse_mode": CAUSAL_SPARSE_MODE}
        outs = [
            torch_npu.npu_fusion_attention(
                q[a:b], k[a:b], v[a:b], heads, "TND",
                scale=head_dim**-0.5 if scale is None else scale, actual_seq_qlen=ends, actual_seq_kvlen=ends,
                **extra,
            )[0]
            for a, b, ends in self.chunks
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class NpuPrompt:
    def __init__(self, batch: PackedBatch):
        device = batch.cu_seqlens.device
        self.rows = batch.num_seqs
        rows = gear(self.rows, floor=1)
        length = gear(batch.max_len, floor=PFA_LEN_FLOOR)
        starts = [0, *itertools.accumulate(batch.lengths)][:-1]
        # Filler rows see one real key, so no row is fully masked (that would give NaN).
        row_starts = torch.tensor(starts + [0] * (rows - self.rows), device=device)
        row_lengths = torch.tensor(batch.lengths + [1] * (rows - self.rows), device=device)
        pos = torch.arange(length, device=device)
        valid = pos[None, :] < row_lengths[:, None]  # [rows, L]
        self.gather = (row_starts[:, None] + pos[None, :]).clamp_(max=sum(batch.lengths) - 1)
        self.mask = (~valid)[:, None, None, :].expand(rows, 1, length, length).contiguous()
        self.keep = valid[: self.rows].flatten().nonzero().squeeze(1)  # real tokens, in packed order

    def __call__(self, q, k, v, *, causal=False, window=None, scale=None) -> torch.Tensor:
        import torch_npu

        heads, head_dim = q.shape[1], q.shape[2]
        rows, length = self.gather.shape
        # [rows, L, heads, d] → [rows, heads, L, d]
        q, k, v = (t[self.gather].transpose(1, 2).contiguous() for t in (q, k, v))
        outs = [
            torch_npu.npu_prompt_flash_attention(
                q[i : i + PFA_MAX_ROWS], k[i : i + PFA_MAX_ROWS], v[i : i + PFA_MAX_ROWS],
                atten_mask=self.mask[i : i + PFA_MAX_ROWS], num_heads=heads,
                scale_value=head_dim**-0.5 if scale is None else scale,
                pre_tokens=NO_WINDOW, next_tokens=NO_WINDOW, input_layout="BNSD",
            )
            for i in range(0, rows, PFA_MAX_ROWS)
        ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        out = out[: self.rows].transpose(1, 2).reshape(self.rows * length, heads, head_dim)
        return out[self.keep]


KERNELS = {"npu_fusion": NpuFusion, "npu_prompt": NpuPrompt}
