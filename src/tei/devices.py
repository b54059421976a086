"""Device, dtype and attention-kernel selection: the one place that knows which hardware we run on.

Everything else asks this module for a `Placement` and never checks `device.type` itself.

`--device auto` tries cuda, then npu (Huawei Ascend through `torch_npu`), then mps, then cpu. An
explicit device that is missing stops start-up with a `DeviceError`: one sentence saying what to
install or change. Only `auto` falls back.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
import re
import sys

import torch

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """A start-up problem with the requested device or dtype, worded as one sentence for the user."""


CPU_BATCH_TOKENS = 4096
CPU_THREADS = torch.get_num_threads()  # torch's default: the cores this process may use

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

AUTO_ORDER = ("cuda", "npu", "mps", "cpu")
DEVICE_HELP = "use auto, cpu, cuda, cuda:N, npu, npu:N or mps"
_DEVICE_RE = re.compile(r"^(cpu|cuda|npu|mps)(?::(\d+))?$")

# Packed-attention kernels, fastest first per device; the first whose probe passes wins. Whether a
# model can use it (head size, GQA, causal, windows, biases) is decided at load time from the
# kernel's declared capabilities (models/attention); "sdpa" (one call per run of equal-length
# sequences) runs everything and is the fallback.
CUDA_KERNELS = ("flash_attn", "torch_varlen", "torch_nested", "sdpa")

# Shape gears for graph-compiling backends (Ascend): every forward pass is padded up to one of a
# few token counts, so kernels compile once per gear instead of once per batch shape.
GEAR_FLOOR = 16
GEAR_STEP = 1024  # powers of two up to this, then multiples of it


def gear(n: int, floor: int = GEAR_FLOOR) -> int:
    """Smallest gear >= n: powers of two from `floor` up to GEAR_STEP, then multiples of GEAR_STEP."""
    if n <= GEAR_STEP:
        return max(floor, 1 << max(0, n - 1).bit_length())
    return _round_up(n, GEAR_STEP)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


# oneDNN builds a kernel for every new row count it meets and caches it: a server's batches have a new
# token count almost every time, so on CPU they are padded up to a multiple of a small step (few
# shapes, all cached after a while). With a fresh shape every batch, a 2000-token all-MiniLM-L6-v2
# forward took 204 ms in float32 instead of 166, 113 ms in bfloat16 instead of 51.
CPU_GEAR_STEP_SMALL, CPU_GEAR_SMALL_UNTIL, CPU_GEAR_STEP = 16, 256, 64


# Attention warm-up on CPU in half precision: every length up to this one (short texts are the
# common case), a ladder of lengths above it.
ATTENTION_WARM_ALL = 512


def cpu_gear(n: int) -> int:
    return _round_up(n, CPU_GEAR_STEP_SMALL if n <= CPU_GEAR_SMALL_UNTIL else CPU_GEAR_STEP)


def chunks(total: int, size: int) -> list[int]:
    """`total` tokens as sequences of `size`, the last one shorter."""
    return [size] * (total // size) + ([total % size] if total % size else [])


@dataclasses.dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    attention: str  # "sdpa" | "flash_attn" | "torch_varlen" | "torch_nested" | "npu_fusion" | "npu_prompt"
    token_gears: bool = False  # pad batches to shape gears (backends that compile per shape)
    compile: bool = False  # torch.compile the encoder layers (off unless measured faster)
    name: str = ""  # the hardware, for logs
    int8: bool = False  # --dtype int8: float32 model, int8 dynamic quantization of the encoder's linear layers

    @property
    def kind(self) -> str:
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return "int8" if self.int8 else next(k for k, v in DTYPES.items() if v == self.dtype)

    @property
    def onednn_linear(self) -> bool:
        """Linear layers through oneDNN with fused epilogues (models/layers/linear.py); torch.compile fuses
        on its own and cannot trace oneDNN's packed weights."""
        return not self.compile and onednn_linear(self.device, self.dtype)

    @property
    def preferred_batch_tokens(self) -> int | None:
        """Largest forward pass worth running: on CPU, bigger batches spill the caches and run slower
        (all-MiniLM-L6-v2, 2 cores: flat from 512 to 4096 tokens, 14% slower at 8192)."""
        return CPU_BATCH_TOKENS if self.device.type == "cpu" else None

    def prepare_forward(self, tokens: int) -> None:
        """On CPU, every forward pass uses CPU_THREADS, one short text too: with a single OpenMP pool
        (Placement.build) two threads run a one-sentence all-MiniLM-L6-v2 forward in 4.2 ms, one
        thread in 6.6. The count is per thread in OpenMP, so the inference thread sets its own."""
        if self.device.type == "cpu" and torch.get_num_threads() != CPU_THREADS:
            torch.set_num_threads(CPU_THREADS)

    def activate(self) -> None:
        """Process-wide setup before any weight reaches the device."""
        if self.kind == "cpu":
            configure_cpu_threads()
        elif self.kind == "cuda":
            torch.cuda.set_device(self.device)
        elif self.kind == "npu":
            npu = torch.npu  # type: ignore[attr-defined]
            npu.set_device(self.device.index or 0)
            if hasattr(npu, "set_compile_mode"):
                # Precompiled binary kernels: the default on A2/A3 but not on 310P/910A, where every
                # new input shape would otherwise compile online for tens of seconds.
                npu.set_compile_mode(jit_compile=False)

    def build(self, fn, *args):
        """Run start-up tensor work (weight conversion and reordering) where it leaves no trace.

        On CPU, on a thread that then exits: libgomp gives each thread that opens an OpenMP region a
        worker pool of its own, kept until that thread exits, and a pool left on the main thread next
        to the inference thread's makes it count more threads than cores and park its workers between
        regions (a one-sentence forward then took 9.8 ms instead of 4.1; all-MiniLM-L6-v2, 2 cores)."""
        if self.kind != "cpu":
            return fn(*args)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="startup") as pool:
            return pool.submit(fn, *args).result()

    def synchronize(self) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.kind == "npu":
            torch.npu.synchronize(self.device)  # type: ignore[attr-defined]
        elif self.kind == "mps":
            torch.mps.synchronize()

    def gear(self, tokens: int) -> int:
        """Token count a forward pass of `tokens` tokens is padded up to (see pad_lengths)."""
        if self.token_gears:
            return gear(tokens)
        if self.onednn_linear:
            return cpu_gear(tokens)
        return tokens

    def pad_lengths(self, lengths: list[int], max_len: int) -> list[int]:
        """Sequence lengths of the forward pass: the real ones, then (with gears) padding sequences of
        at most `max_len` tokens that fill the batch up to its gear. Callers drop their outputs."""
        total = sum(lengths)
        target = self.gear(total)
        return lengths if target == total else lengths + chunks(target - total, max_len)

    def warmup_lengths(self, max_tokens: int, max_len: int) -> list[list[int]]:
        """One batch per token gear up to `max_tokens`, so no request compiles a kernel (gears only)."""
        if not self.token_gears:
            return []
        batches, n, top = [], GEAR_FLOOR, gear(max_tokens)
        while n <= top:
            batches.append(chunks(n, max_len))
            n = gear(n + 1)
        return batches

    @property
    def head_dtype(self) -> torch.dtype:
        """Dtype of the small per-sequence layers (classifier heads, Dense). float32 on CPU: there an
        eager bfloat16 linear builds a oneDNN kernel for every row count it meets (+260 MB over 400
        counts, for a 64x64 layer), and these layers see one row per sequence."""
        return torch.float32 if self.kind == "cpu" else self.dtype

    def attention_lengths(self, max_len: int) -> list[int]:
        """Sequence lengths whose attention kernels are built at start-up (Model.warm_kernels): on CPU
        in bfloat16 / float16, where torch's SDPA builds one per length (+115 MB over 1..512). Every
        length up to ATTENTION_WARM_ALL, then a fixed ladder (powers of two and their midpoints): an
        8k-context model would otherwise build 8192 kernels at start-up."""
        if self.kind != "cpu" or self.dtype == torch.float32:
            return []
        lengths = set(range(1, min(max_len, ATTENTION_WARM_ALL) + 1))
        n = ATTENTION_WARM_ALL
        while n < max_len:
            lengths.update(x for x in (n + n // 2, 2 * n) if x <= max_len)
            n *= 2
        lengths.add(max_len)
        return sorted(lengths)

    def warmup_pass(self, length: int, count: int) -> list[int]:
        """Sequence lengths of the warm-up's one forward pass through the whole model. At full batch
        size, as TEI does, so an out-of-memory shows up at start-up; on CPU with kernel gears, one
        short sequence: there the first layer runs at the full token budget anyway (the top gear,
        built before ready), which reaches the same activation peak (layers free theirs in turn),
        while a whole forward pass of that size takes tens of seconds for an 8k-context model."""
        if self.onednn_linear:
            return [min(length, CPU_GEAR_STEP_SMALL)]
        return [length] * count

    def before_ready(self, token_counts: list[int], lengths: list[int]) -> tuple[list[int], list[int]]:
        """Which of the kernels (kernel_gears, attention_lengths) to build before the server reports
        ready; the engine builds the others when idle (Batcher.when_idle), smallest first. Before: the
        gears of up to CPU_GEAR_SMALL_UNTIL tokens (single requests and light load) and the top one
        (the memory peak, see warmup_pass), and every attention length up to ATTENTION_WARM_ALL.
        all-MiniLM-L6-v2 on 2 cores spends 0.5 s on the small gears and 3 s on the 60 others."""
        now = [n for n in token_counts if n <= CPU_GEAR_SMALL_UNTIL or n == token_counts[-1]]
        return now, [n for n in lengths if n <= ATTENTION_WARM_ALL]

    def kernel_gears(self, max_tokens: int) -> list[int]:
        """Token counts whose oneDNN kernels are built at start-up (Model.warm_kernels): every CPU
        gear up to `max_tokens`. Built on first use instead, each costs a few ms of one request's
        latency, and memory would grow for the first minutes of load (the kernels take 2-4 MB each)."""
        if not self.onednn_linear:
            return []
        return sorted({cpu_gear(n) for n in range(1, max_tokens + 1)})


# ---- device probes: each never raises; `None` means available, a string says why not --------------


def _first_line(exc: BaseException) -> str:
    """Keeps refusals on one line: import errors can carry multi-line messages."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _cuda_problem() -> str | None:
    try:
        if torch.cuda.is_available():
            return None
    except Exception as exc:  # a broken driver raises from inside torch
        return f"CUDA failed to initialise ({_first_line(exc)})"
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
    return "no NVIDIA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"


def _import_torch_npu() -> str | None:
    """Import the Ascend plugin, only where it is installed (the import is slow and can't be undone).
    Any exception counts: without CANN it fails with ImportError or OSError (libhccl.so, undefined
    symbols), not only ModuleNotFoundError."""
    if not _torch_npu_installed():
        return (
            "the Ascend plugin torch_npu is not installed: install CANN, then `pip install -e .[npu]` "
            f"(torch-npu {torch.__version__.split('+')[0]}, matching this torch)"
        )
    try:
        importlib.import_module("torch_npu")
    except Exception as exc:
        return (
            f"torch_npu failed to import ({_first_line(exc)}): install the CANN toolkit and kernels "
            "that match torch-npu, then `source /usr/local/Ascend/ascend-toolkit/set_env.sh`"
        )
    return None


def visible_npus(value: str | None) -> list[int] | None:
    """The NPU ids `ASCEND_RT_VISIBLE_DEVICES` exposes, read as CANN reads it: ascending, comma-separated
    logical ids, and parsing stops at the first entry that breaks the rule (so "1, 2" is just [1]).
    None when the variable is unset: every NPU is visible."""
    if value is None:
        return None
    ids: list[int] = []
    for part in value.split(","):
        if not part.isdigit() or (ids and int(part) <= ids[-1]):
            break
        ids.append(int(part))
    return ids


def _npu_visibility(template: str = " ({})") -> str:
    value = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if value is None:
        return ""
    return template.format(f"ASCEND_RT_VISIBLE_DEVICES={value!r} exposes {visible_npus(value)}")


def _npu_problem() -> str | None:
    problem = _import_torch_npu()
    if problem:
        return problem
    npu = getattr(torch, "npu", None)
    try:
        if npu is not None and npu.is_available() and npu.device_count() > 0:
            return None
    except Exception as exc:
        return f"the Ascend runtime failed ({_first_line(exc)}): check the driver with `npu-smi info`"
    return "no Ascend NPU is visible: check `npu-smi info` and ASCEND_RT_VISIBLE_DEVICES" + _npu_visibility()


def _mps_problem() -> str | None:
    mps = getattr(torch.backends, "mps", None)
    try:
        if mps is not None and mps.is_available():
            return None
    except Exception:
        pass
    return "Apple MPS is not available (it needs an Apple-silicon Mac with macOS 12.3+ and a torch build with MPS)"


_PROBES = {"cuda": _cuda_problem, "npu": _npu_problem, "mps": _mps_problem, "cpu": lambda: None}


def _count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    if kind == "npu":
        return torch.npu.device_count()  # type: ignore[attr-defined]
    return 1


def _torch_npu_installed() -> bool:
    return "torch_npu" in sys.modules or importlib.util.find_spec("torch_npu") is not None


def select_device(requested: str | None) -> torch.device:
    """Resolve `--device`: None/"auto" → the first available of cuda, npu, mps, cpu."""
    spec = (requested or "auto").strip().lower()
    if spec == "auto":
        for kind in AUTO_ORDER:
            if _PROBES[kind]() is None:
                return _device(kind, None)
        return torch.device("cpu")
    match = _DEVICE_RE.match(spec)
    if match is None:
        raise DeviceError(f"Unknown device '{requested}': {DEVICE_HELP}.")
    kind, index = match.group(1), match.group(2)
    problem = _PROBES[kind]()
    if problem:
        raise DeviceError(f"--device {requested} cannot be used: {problem}.")
    index = None if index is None else int(index)
    if index is not None and kind in ("cpu", "mps") and index != 0:
        raise DeviceError(f"--device {requested}: {kind} has only device 0.")
    if index is not None and kind in ("cuda", "npu") and index >= _count(kind):
        where = _npu_visibility() if kind == "npu" else ""
        raise DeviceError(
            f"--device {requested} cannot be used: only {_count(kind)} {kind.upper()} device(s) are visible{where}."
        )
    return _device(kind, index)


def _device(kind: str, index: int | None) -> torch.device:
    if kind == "cuda":
        return torch.device("cuda", torch.cuda.current_device() if index is None else index)
    if kind == "npu":
        _register_npu_name()
        return torch.device("npu", index or 0)
    return torch.device(kind)


def _register_npu_name() -> None:
    """torch_npu names PyTorch's PrivateUse1 backend "npu"; make sure the name parses either way."""
    if torch._C._get_privateuse1_backend_name() != "npu":
        torch.utils.rename_privateuse1_backend("npu")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a model's weights: MemAvailable (capped by a cgroup limit) on CPU, free memory on
    a GPU or NPU; None where it cannot be told."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        if device.type == "npu":
            return torch.npu.mem_get_info(device)[0]  # type: ignore[attr-defined]
        if device.type != "cpu":
            return None
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        free = info.get("MemAvailable")
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                limit = open(path).read().strip()
                used_path = path.replace("memory.max", "memory.current").replace("limit_in_bytes", "usage_in_bytes")
                if limit.isdigit() and int(limit) < (1 << 60):
                    free = min(free, int(limit) - int(open(used_path).read().strip())) if free else None
                break
            except OSError:
                continue
        return free
    except Exception:  # memory probes vary by platform: an unknown answer must not stop start-up
        return None


# ---- dtype ----------------------------------------------------------------------------------------


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "npu") else torch.float32


def _bf16_problem(device: torch.device) -> str | None:
    if device.type == "mps":
        return "Apple MPS does not support bfloat16 here: use --dtype float16 or float32"
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(device)
            return f"{name} has no native bfloat16 (it needs compute capability 8.0+): use --dtype float16"
    if device.type == "npu":
        npu = torch.npu  # type: ignore[attr-defined]
        supported = npu.is_bf16_supported() if hasattr(npu, "is_bf16_supported") else not _is_310(device)
        if not supported:
            return f"{_npu_name(device)} has no bfloat16 (Atlas 300I/310P cards): use --dtype float16"
    return None


def resolve_dtype(device: torch.device, requested: str | None) -> torch.dtype:
    if requested in (None, "", "auto"):
        return default_dtype(device)
    if requested == INT8:
        problem = _int8_problem(device)
        if problem:
            raise DeviceError(f"--dtype int8 cannot be used: {problem}.")
        return torch.float32  # the model computes in float32 around its int8 linear layers
    if requested not in DTYPES:
        raise DeviceError(f"Unsupported --dtype '{requested}': use float32, float16 or bfloat16 (or int8 on CPU).")
    dtype = DTYPES[requested]
    if dtype == torch.bfloat16:
        problem = _bf16_problem(device)
        if problem:
            raise DeviceError(f"--dtype bfloat16 cannot be used: {problem}.")
    if device.type == "cpu" and dtype != torch.float32 and requested not in cpu_fast_dtypes():
        log.warning("This CPU has no %s instructions: --dtype %s runs slower than float32 here "
                    "(it saves memory, not time)", "AMX-BF16" if dtype == torch.bfloat16 else "AMX-FP16", requested)
    return dtype


# ---- attention kernel -----------------------------------------------------------------------------


def _npu_name(device: torch.device) -> str:
    try:
        return str(torch.npu.get_device_name(device.index or 0))  # type: ignore[attr-defined]
    except Exception:
        return "Ascend NPU"


def _is_310(device: torch.device) -> bool:
    return _npu_name(device).startswith("Ascend310")


def _npu_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """By SoC: 910B (A2) and 910_93 (A3) have the varlen FlashAttentionScore op; 310P cards only the
    prompt-flash op, in fp16; other chips (910A, unknown) run SDPA."""
    import torch_npu

    name = _npu_name(device)
    if name.startswith(("Ascend910B", "Ascend910_93")) and hasattr(torch_npu, "npu_fusion_attention"):
        return "npu_fusion"
    if name.startswith("Ascend310P") and dtype == torch.float16 and hasattr(torch_npu, "npu_prompt_flash_attention"):
        return "npu_prompt"
    return "sdpa"


def _cuda_kernel_works(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Run the kernel once on a tiny ragged batch and check it against per-sequence SDPA."""
    if dtype not in (torch.float16, torch.bfloat16):
        return False  # the varlen flash kernels are half-precision only
    try:
        from .models.attention.cuda import self_test

        return self_test(kernel, device, dtype)
    except Exception as exc:
        log.debug("Attention kernel %s unavailable: %s", kernel, exc)
        return False


def select_attention(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda":
        return next(k for k in CUDA_KERNELS if k == "sdpa" or _cuda_kernel_works(k, device, dtype))
    if device.type == "npu":
        return _npu_kernel(device, dtype)
    return "sdpa"


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)}, sm{major}{minor}, CUDA {torch.version.cuda}"
    if device.type == "npu":
        return _npu_name(device) + _npu_visibility(", {}")
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU, {CPU_THREADS} threads"


def place(requested_device: str | None, requested_dtype: str | None, compile: bool = False) -> Placement:
    device = select_device(requested_device)
    dtype = resolve_dtype(device, requested_dtype)
    if requested_dtype == INT8 and compile:
        raise DeviceError("--dtype int8 cannot be combined with --torch-compile: use one or the other.")
    if device.type == "cpu" and requested_dtype in (None, "", "auto", "float32"):
        faster = [d for d in ("bfloat16", INT8) if d in cpu_fast_dtypes()]
        if faster:
            log.info("This CPU also runs --dtype %s (faster, slightly less exact; see benchmarks/README.md)",
                     " or --dtype ".join(faster))
    return Placement(
        device=device,
        dtype=dtype,
        attention=select_attention(device, dtype),
        token_gears=device.type == "npu",
        compile=compile,
        name=_describe(device),
        int8=requested_dtype == INT8,
    )


# ---- CPU: dtypes it runs natively, oneDNN, threads ------------------------------------------------


INT8 = "int8"


@functools.cache  # the CPU does not change; /proc/cpuinfo and the int8 probe are read once
def cpu_fast_dtypes() -> frozenset[str]:
    """Dtypes this CPU runs faster than float32: bfloat16 and float16 with AMX only, int8 where
    oneDNN's quantized linear layers are available. Measured (torch 2.13, a 734 x 1024 x 4096 linear
    on 2 vCPUs of a Xeon with AVX512-BF16 and AVX512-FP16 but no AMX): bfloat16 0.62x float32,
    float16 1.06x; with AMX-BF16 the same layer ran 6-10x faster than float32."""
    cpu = torch.cpu
    fast = set()
    if cpu._is_amx_tile_supported() and _has_cpu_flag("amx_bf16"):
        fast.add("bfloat16")
    if getattr(cpu, "_is_amx_fp16_supported", lambda: False)():
        fast.add("float16")
    if _int8_problem(torch.device("cpu")) is None:
        fast.add(INT8)
    return frozenset(fast)


def _has_cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def _int8_problem(device: torch.device) -> str | None:
    if device.type != "cpu":
        return f"it is a CPU dtype (dynamic int8 quantization through oneDNN), not for {device.type}: use float16 or bfloat16"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "this PyTorch build has no oneDNN quantized linear kernels (torch.ops.onednn.qlinear_pointwise)"
    return None


def onednn_linear(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether linear layers run through oneDNN with fused epilogues (models/layers/linear.py): x86 CPUs,
    in float32 always, in bfloat16 / float16 where the CPU has those instructions."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def configure_cpu_threads(num_threads: int | None = None) -> None:
    """Use every core for intra-op work; inter-op parallelism only adds contention here."""
    global CPU_THREADS
    if num_threads:
        CPU_THREADS = num_threads
    torch.set_num_threads(CPU_THREADS)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process
