"""A stand-in for Huawei's `torch_npu` on machines without an Ascend NPU.

`FakeNpu` is the `torch.npu` namespace torch_npu installs (device count, SoC name, bf16 support,
set_device, set_compile_mode); it honours ASCEND_RT_VISIBLE_DEVICES the way the CANN runtime does,
by counting the listed ids. The two attention kernels are emulated on CPU in plain torch from their
documented contracts (torch_npu op-plugin docs), not from our adapter, and record every call:

- `npu_fusion_attention(q, k, v, head_num, input_layout, ..., atten_mask=None, scale,
  actual_seq_qlen, actual_seq_kvlen)`: TND = [tokens, heads, dim]; the seq lists are *cumulative*
  ends; without a mask attention is full inside each sequence; returns a 7-tuple, output first.
- `npu_prompt_flash_attention(q, k, v, *, atten_mask, num_heads, scale_value, pre_tokens,
  next_tokens, input_layout)`: BNSD; bool mask True = masked out; a key j is in range of query i only
  if i - pre_tokens <= j <= i + next_tokens (defaults 2147473647 and 0, i.e. causal).
"""
from __future__ import annotations

import importlib.machinery
import os
import types

import torch

PHYSICAL_NPUS = 8


class FakeNpu:
    def __init__(self, name: str = "Ascend910B3", bf16: bool = True, physical: int = PHYSICAL_NPUS):
        self.name, self.bf16, self.physical = name, bf16, physical
        self.calls: list[tuple] = []

    def device_count(self) -> int:
        value = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
        if value is None:
            return self.physical
        return len([p for p in value.split(",") if p.isdigit() and int(p) < self.physical])

    def is_available(self) -> bool:
        return self.device_count() > 0

    def get_device_name(self, index: int = 0) -> str:
        return self.name

    def is_bf16_supported(self) -> bool:
        return self.bf16

    def current_device(self) -> int:
        return 0

    def set_device(self, index) -> None:
        self.calls.append(("set_device", index))

    def set_compile_mode(self, jit_compile: bool) -> None:
        self.calls.append(("set_compile_mode", jit_compile))

    def synchronize(self, device=None) -> None:
        self.calls.append(("synchronize", device))


def _attend(q, k, v, scale, allowed=None):
    """softmax(scale * q k^T, masked) v in float64, for [..., S, D] tensors."""
    scores = (q.double() @ k.double().transpose(-1, -2)) * scale
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v.double()).to(q.dtype)


def make_torch_npu(calls: list) -> types.ModuleType:
    mod = types.ModuleType("torch_npu")
    mod.__spec__ = importlib.machinery.ModuleSpec("torch_npu", None)

    def npu_fusion_attention(query, key, value, head_num, input_layout, pse=None, padding_mask=None,
                             atten_mask=None, scale=1.0, keep_prob=1.0, pre_tockens=2147483647,
                             next_tockens=2147483647, inner_precise=0, prefix=None, actual_seq_qlen=None,
                             actual_seq_kvlen=None, sparse_mode=0, gen_mask_parallel=True, sync=False):
        calls.append(dict(op="fusion", shape=tuple(query.shape), head_num=head_num, layout=input_layout,
                          kv_heads=key.shape[1], sparse_mode=sparse_mode,
                          scale=scale, qlen=list(actual_seq_qlen or []), kvlen=list(actual_seq_kvlen or []),
                          mask=atten_mask, keep_prob=keep_prob, dtype=query.dtype,
                          contiguous=all(t.is_contiguous() for t in (query, key, value))))
        assert input_layout == "TND" and query.dim() == 3 and query.shape[1] == head_num
        assert len(actual_seq_qlen) <= 1024 and actual_seq_qlen[-1] == query.shape[0]
        assert head_num % key.shape[1] == 0 and key.shape == value.shape  # GQA: N1 a multiple of N2
        if sparse_mode == 3:  # bottom-right causal, from the compressed 2048x2048 mask (True = masked)
            assert atten_mask is not None and atten_mask.dtype == torch.bool and atten_mask.shape == (2048, 2048)
            assert torch.equal(atten_mask, torch.ones(2048, 2048, dtype=torch.bool).triu(1))
        else:
            assert sparse_mode == 0 and atten_mask is None
        groups = head_num // key.shape[1]
        out = torch.empty_like(query)
        start = 0
        for end_q, end_kv in zip(actual_seq_qlen, actual_seq_kvlen):
            assert end_q == end_kv
            q, k, v = (t[start:end_q].transpose(0, 1) for t in (query, key, value))  # [N, S, D]
            k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
            n = end_q - start
            allowed = torch.ones(n, n, dtype=torch.bool).tril() if sparse_mode == 3 else None
            out[start:end_q] = _attend(q, k, v, scale, allowed).transpose(0, 1)
            start = end_q
        return out, None, None, None, 0, 0, 0

    def npu_prompt_flash_attention(query, key, value, *, pse_shift=None, padding_mask=None, atten_mask=None,
                                   actual_seq_lengths=None, num_heads=1, scale_value=1.0,
                                   pre_tokens=2147473647, next_tokens=0, input_layout="BSH",
                                   num_key_value_heads=0, actual_seq_lengths_kv=None, sparse_mode=0, **_):
        calls.append(dict(op="prompt", shape=tuple(query.shape), num_heads=num_heads, layout=input_layout,
                          scale=scale_value, mask=atten_mask, pre=pre_tokens, next=next_tokens,
                          dtype=query.dtype, contiguous=all(t.is_contiguous() for t in (query, key, value))))
        assert input_layout == "BNSD" and query.shape[1] == num_heads and query.shape[0] <= 128
        s_q, s_kv = query.shape[2], key.shape[2]
        i = torch.arange(s_q)[:, None]
        j = torch.arange(s_kv)[None, :]
        allowed = (j >= i - pre_tokens) & (j <= i + next_tokens)  # [Sq, Skv]
        if atten_mask is not None:
            assert atten_mask.dtype == torch.bool
            allowed = allowed & ~atten_mask
        return _attend(query, key, value, scale_value, allowed)

    mod.npu_fusion_attention = npu_fusion_attention
    mod.npu_prompt_flash_attention = npu_prompt_flash_attention
    return mod
