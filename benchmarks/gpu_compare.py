"""Our packed model and engine against plain transformers, on the same GPU in the same run.

A bge-base-sized BERT (hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30522) with random
weights is built with transformers in a temporary folder. Scenarios: batch 1 and batch 32 of 512-token
sequences (TEI's published setting), and batch 32 of mixed lengths (32-512, where packing pays).
Rows:

- `transformers sdpa`: `AutoModel` in the same dtype with `attn_implementation="sdpa"`, padded
  batch + attention mask, CLS pooling, result copied to the host: the baseline.
- `tei model [kernel]`: our `Model.forward` on the packed batch (ids in, pooled numpy out), once per
  attention kernel that runs here; `*` marks the one `--device auto` picks.
- `tei model [kernel] +compile`: the same with `Placement.compile` (torch.compile of the layers).
- `tei engine`: `Engine.embed` on 512-token texts: tokenization, batching and the forward pass.

Latency is the median wall time of one call (the host copy of the result synchronises the device);
throughput is sequences per second at that latency; `speedup` is baseline median / row median.
`cos` is the lowest cosine between the row's pooled vectors and the baseline's (a wrong kernel shows).

    python benchmarks/gpu_compare.py                      # cuda, float16
    python benchmarks/gpu_compare.py --dtype float16,bfloat16 --compile --json out.json
    python benchmarks/gpu_compare.py --device cpu --quick # smoke check anywhere
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tei.devices import CUDA_KERNELS, Placement, place  # noqa: E402
from tei.engine.engine import Engine, EngineConfig  # noqa: E402
from tei.models.loader import Model  # noqa: E402
from tei.models.spec import read_spec  # noqa: E402

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, seq=512)
QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, seq=32)
VOCAB = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def build_model(folder: Path, size: dict) -> None:
    """Random-weight BERT plus a word-level tokenizer whose words are `w<id>`, one token each."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    torch.manual_seed(0)
    config = tf.BertConfig(vocab_size=VOCAB, max_position_embeddings=max(512, size["seq"]),
                           **{k: v for k, v in size.items() if k != "seq"})
    tf.BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    vocab = {t: i for i, t in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))


def timed(fn, warmup: int, iters: int) -> tuple[list[float], object]:
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def cos_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())


def scenarios(seq: int, quick: bool) -> dict[str, list[int]]:
    rng = np.random.default_rng(0)
    big = 4 if quick else 32
    return {
        f"batch 1 x {seq}": [seq],
        f"batch {big} x {seq}": [seq] * big,
        f"batch {big} mixed {seq // 16}-{seq}": sorted(rng.integers(seq // 16, seq + 1, big).tolist(), reverse=True),
    }


def load_hf(folder: Path, device: torch.device, dtype: torch.dtype):
    import transformers as tf

    try:
        model = tf.AutoModel.from_pretrained(str(folder), dtype=dtype, attn_implementation="sdpa")
    except TypeError:  # transformers 4.x spells it torch_dtype
        model = tf.AutoModel.from_pretrained(str(folder), torch_dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()


def hf_runner(model, device: torch.device, lengths: list[int], ids: np.ndarray):
    width = max(lengths)
    padded = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    start = 0
    for row, n in enumerate(lengths):
        padded[row, :n], mask[row, :n] = ids[start : start + n], 1
        start += n
    host_ids, host_mask = torch.from_numpy(padded), torch.from_numpy(mask)

    @torch.inference_mode()
    def run():
        out = model(input_ids=host_ids.to(device), attention_mask=host_mask.to(device)).last_hidden_state
        return out[:, 0].float().cpu().numpy()

    return run


def model_runner(model: Model, lengths: list[int], ids: np.ndarray):
    type_ids = np.zeros_like(ids)
    return lambda: model.forward(model.make_batch(ids, type_ids, lengths)).pooled


def engine_runner(engine: Engine, loop, lengths: list[int], ids: np.ndarray):
    texts, start = [], 0
    for n in lengths:
        texts.append(" ".join(f"w{i}" for i in ids[start + 1 : start + n - 1]))  # [CLS] and [SEP] are added
        start += n
    return lambda: loop.run_until_complete(engine.embed(texts, normalize=False)).values


def kernels_here(device: torch.device, dtype: torch.dtype) -> list[str]:
    from tei.models.attention.cuda import self_test

    usable = []
    for kernel in CUDA_KERNELS:
        if kernel == "sdpa":
            usable.append(kernel)
            continue
        try:
            if self_test(kernel, device, dtype):
                usable.append(kernel)
        except Exception as exc:
            print(f"  ({kernel} not available: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
    return usable


def print_table(label: str, tokens: int, rows: list[dict]) -> None:
    print(f"\n### {label} ({tokens} tokens)\n")
    print("| implementation | median ms | p90 ms | seq/s | tokens/s | speedup | cos vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['implementation']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['seq_per_s']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['speedup']:.2f}x | {r['cos']:.5f} |")
    sys.stdout.flush()


def bench_dtype(folder: Path, args, dtype_name: str, size: dict) -> list[dict]:
    dtype = getattr(torch, dtype_name)
    auto = place(args.device, dtype_name)
    device = auto.device
    spec = read_spec(folder, "cls")
    print(f"\n## {auto.name}, {dtype_name} (auto attention: {auto.attention})")
    contenders = {}  # name → runner factory(lengths, ids)
    hf = load_hf(folder, device, dtype)
    contenders["transformers sdpa"] = lambda lengths, ids: hf_runner(hf, device, lengths, ids)
    kernels = kernels_here(device, dtype)
    if args.kernels != "all":
        wanted = {auto.attention if k == "auto" else k for k in args.kernels.split(",")}
        kernels = [k for k in kernels if k in wanted]
    variants = [(k, False) for k in kernels] + ([(auto.attention, True)] if args.compile else [])
    for kernel, compiled in variants:
        model = Model(spec, Placement(device, dtype, kernel, compile=compiled, name=auto.name))
        name = f"tei model [{kernel}]" + ("*" if kernel == auto.attention else "") + (" +compile" if compiled else "")
        contenders[name] = lambda lengths, ids, model=model: model_runner(model, lengths, ids)
    loop = asyncio.new_event_loop()
    engine = None
    if not args.no_engine:
        engine = Engine(spec, Model(spec, auto), (folder / "tokenizer.json").read_text(),
                        EngineConfig(max_batch_tokens=16384, max_client_batch_size=64))
        contenders["tei engine (tokenize + batch + forward)"] = (
            lambda lengths, ids: engine_runner(engine, loop, lengths, ids))
    rng = np.random.default_rng(1)
    rows: list[dict] = []
    for label, lengths in scenarios(size["seq"], args.quick).items():
        ids = rng.integers(len(SPECIALS), VOCAB, sum(lengths))
        starts = np.cumsum([0] + lengths[:-1])
        ids[starts] = 2  # [CLS]
        ids[starts + np.array(lengths) - 1] = 3  # [SEP]
        tokens = sum(lengths)
        results = []
        for name, factory in contenders.items():
            start = time.perf_counter()
            times, out = timed(factory(lengths, ids), args.warmup, args.iters)
            if "+compile" in name:
                print(f"  ({name}: compile + warm-up {time.perf_counter() - start - sum(times):.1f}s)")
            results.append((name, times, out))
        base_times, base_out = results[0][1], results[0][2]
        base = statistics.median(base_times)
        scenario_rows = []
        for name, times, out in results:
            med = statistics.median(times)
            scenario_rows.append(dict(
                dtype=dtype_name, scenario=label, implementation=name, tokens=tokens, median_ms=med * 1e3,
                p90_ms=sorted(times)[int(0.9 * (len(times) - 1))] * 1e3, seq_per_s=len(lengths) / med,
                tokens_per_s=tokens / med, speedup=base / med, cos=cos_min(out, base_out)))
        print_table(label, tokens, scenario_rows)
        rows += scenario_rows
    if engine is not None:
        engine.close()
    loop.close()
    contenders.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def environment(device: str) -> dict:
    facts = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
             "device": device}
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        pass
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="comma-separated; default float16 on cuda, float32 on cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model and few iterations (smoke check)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile'd layers")
    parser.add_argument("--kernels", default="all", help="comma-separated kernels to measure, or auto; default all")
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    size = QUICK if args.quick else BASE
    args.iters = args.iters or (3 if args.quick else 30)
    args.warmup = args.warmup or (1 if args.quick else 5)
    dtypes = (args.dtype or ("float32" if args.device == "cpu" else "float16")).split(",")
    facts = environment(args.device)
    print("# " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tei-gpu-bench-") as tmp:
        folder = Path(tmp)
        build_model(folder, size)
        for dtype_name in dtypes:
            rows += bench_dtype(folder, args, dtype_name, size)
    if args.json:
        args.json.write_text(json.dumps({"environment": facts, "size": size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
