#!/usr/bin/env bash
# One GPU session, in one device call, from the repository root:
#
#     bash benchmarks/gpu_session.sh
#
# Needs python with torch (CUDA), transformers, sentence-transformers, tokenizers, safetensors,
# huggingface_hub and pytest; not our package, fastapi or the network (PYTHONPATH=src).
# Steps, most important first, each with its own time limit inside a total budget
# (SESSION_BUDGET seconds, default 480, so the call ends well inside 10 minutes):
#   1. environment facts: torch, GPU, varlen attention APIs, what `--device auto` picks;
#   2. the GPU tests (pytest -m gpu);
#   3. the benchmark, float16: transformers vs our model (every kernel) and engine;
#   4. the CPU parity tests rerun on CUDA in float32 (TEI_TEST_DEVICE=cuda);
#   5. torch.compile'd layers vs plain, float16;
#   6. the benchmark in bfloat16.
# Full logs go to $OUT (set on the GPU box; else benchmarks/results/gpu-session); stdout gets a summary.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu-session}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TORCH_DEVICE_BACKEND_AUTOLOAD=0
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET="${SESSION_BUDGET:-480}"
START=$SECONDS

# step NAME LIMIT COMMAND...: run with min(LIMIT, what is left of the budget); log to $OUT/NAME.log
step() {
    local name=$1 limit=$2 left
    shift 2
    left=$((BUDGET - (SECONDS - START) - 5))
    if [ "$left" -lt 20 ]; then
        echo "=== $name: skipped, budget spent"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit}s, started at $((SECONDS - START))s)"
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "--- $name: exit $rc$([ $rc -eq 124 ] && echo ' (timed out)') after $((SECONDS - START))s"
    [ $rc -ne 0 ] && tail -n 12 "$OUT/$name.log"
    return 0
}

summary_pytest() { grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|error)" "$OUT/$1.log" | tail -n 30; }
summary_bench() { grep -E "^(#|\||  \()" "$OUT/$1.log"; }

step env 60 "$PY" - <<'EOF'
import importlib.util, platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
for mod in ("transformers", "sentence_transformers", "tokenizers", "flash_attn"):
    spec = importlib.util.find_spec(mod)
    version = getattr(importlib.import_module(mod), "__version__", "?") if spec else "not installed"
    print(f"{mod}: {version}")
print("torch.nn.attention.varlen:", importlib.util.find_spec("torch.nn.attention.varlen") is not None)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "count", torch.cuda.device_count(), "bf16", torch.cuda.is_bf16_supported())
    print("flash sdpa:", torch.backends.cuda.is_flash_attention_available(),
          "matmul tf32:", torch.backends.cuda.matmul.allow_tf32)
    from tei.devices import CUDA_KERNELS, place
    from tei.models.attention.cuda import self_test
    for dtype in ("float16", "bfloat16"):
        for kernel in CUDA_KERNELS[:-1]:
            try:
                verdict = self_test(kernel, torch.device("cuda", 0), getattr(torch, dtype))
            except Exception as exc:
                verdict = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"self_test {kernel} {dtype}: {verdict}")
    for dtype in (None, "float16", "bfloat16", "float32"):
        p = place("cuda", dtype)
        print(f"place(cuda, {dtype}) -> {p.device} {p.dtype_name} attention={p.attention} ({p.name})")
EOF
cat "$OUT/env.log"

step gpu_tests 150 "$PY" -m pytest -m gpu tests/test_gpu.py -q -rfEs -p no:cacheprovider
summary_pytest gpu_tests

step bench_fp16 120 "$PY" benchmarks/gpu_compare.py --device cuda --dtype float16 --json "$OUT/bench_fp16.json"
summary_bench bench_fp16

TEI_TEST_DEVICE=cuda step parity_on_cuda 100 "$PY" -m pytest tests/test_parity_embeddings.py -q -rfEs -p no:cacheprovider
summary_pytest parity_on_cuda

step bench_compile 120 "$PY" benchmarks/gpu_compare.py --device cuda --dtype float16 --kernels auto --compile \
    --no-engine --json "$OUT/bench_compile.json"
summary_bench bench_compile

step bench_bf16 60 "$PY" benchmarks/gpu_compare.py --device cuda --dtype bfloat16 --kernels auto --no-engine \
    --json "$OUT/bench_bf16.json"
summary_bench bench_bf16

echo "=== done in $((SECONDS - START))s; logs in $OUT"
