"""Device and dtype selection: the one place that knows which hardware we run on.

Everything else asks this module for a `Placement` and never checks `device.type` itself.
"""
from __future__ import annotations

import dataclasses
import os

import torch


class DeviceError(RuntimeError):
    """A start-up problem with the requested device or dtype, worded as one sentence for the user."""


CPU_BATCH_TOKENS = 4096
CPU_SINGLE_THREAD_TOKENS = 64
CPU_THREADS = torch.get_num_threads()  # torch's default: the cores this process may use

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclasses.dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    attention: str  # "sdpa" | "flash_varlen" | "npu_fusion"

    @property
    def kind(self) -> str:
        return self.device.type

    @property
    def dtype_name(self) -> str:
        return next(k for k, v in DTYPES.items() if v == self.dtype)

    @property
    def preferred_batch_tokens(self) -> int | None:
        """Largest forward pass worth running: on CPU, bigger batches spill the caches and run slower
        (all-MiniLM-L6-v2, 2 cores: flat from 512 to 4096 tokens, 14% slower at 8192)."""
        return CPU_BATCH_TOKENS if self.device.type == "cpu" else None

    def prepare_forward(self, tokens: int) -> None:
        """Per-batch thread count on CPU. A tiny batch runs on one thread: its GEMMs are too small to
        split, and a second OpenMP worker started from the inference thread sometimes lands on the same
        core (one short text: 6.3-6.9 ms on one thread, 6.4-9.2 ms bimodal on two)."""
        if self.device.type != "cpu":
            return
        want = 1 if tokens < CPU_SINGLE_THREAD_TOKENS else CPU_THREADS
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def synchronize(self) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.kind == "npu":
            torch.npu.synchronize(self.device)  # type: ignore[attr-defined]
        elif self.kind == "mps":
            torch.mps.synchronize()


def _npu_available() -> bool:
    # torch_npu is optional: importing it without CANN breaks torch, so only try when asked for or
    # when the environment looks like an Ascend host.
    if getattr(torch, "npu", None) is not None and hasattr(torch.npu, "is_available"):
        try:
            return bool(torch.npu.is_available())
        except Exception:
            return False
    return False


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(requested: str | None) -> torch.device:
    """Resolve `--device` (None/"auto" → cuda, then npu, then mps, then cpu)."""
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if os.environ.get("ASCEND_RT_VISIBLE_DEVICES") or os.path.isdir("/usr/local/Ascend"):
            if _import_torch_npu(quiet=True) and _npu_available():
                return torch.device("npu", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError):
        # torch only knows "npu" once torch_npu registered it.
        if requested.split(":")[0] == "npu":
            _import_torch_npu(quiet=False)
            dev = torch.device(requested)
        else:
            raise DeviceError(
                f"Unknown device '{requested}': use auto, cpu, cuda, cuda:N, npu, npu:N or mps."
            ) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "--device cuda was requested but this PyTorch build has no CUDA device available: "
                "install a CUDA build of torch on a machine with an NVIDIA GPU, or use --device cpu."
            )
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {requested} was requested but only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
        return torch.device("cuda", index)
    if dev.type == "npu":
        _import_torch_npu(quiet=False)
        if not _npu_available():
            raise DeviceError(
                "--device npu was requested but no Ascend NPU is visible: check the CANN driver, "
                "`npu-smi info` and ASCEND_RT_VISIBLE_DEVICES, or use --device cpu."
            )
        index = 0 if dev.index is None else dev.index
        count = torch.npu.device_count()  # type: ignore[attr-defined]
        if index >= count:
            raise DeviceError(f"--device {requested} was requested but only {count} NPU(s) are visible.")
        return torch.device("npu", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceError("--device mps was requested but Apple MPS is not available on this machine.")
        return dev
    raise DeviceError(f"Unsupported device '{requested}': use auto, cpu, cuda, cuda:N, npu, npu:N or mps.")


def _import_torch_npu(quiet: bool) -> bool:
    try:
        import torch_npu  # noqa: F401
    except Exception as exc:  # ImportError, or CANN libraries missing
        if quiet:
            return False
        raise DeviceError(
            "--device npu needs the Ascend PyTorch plugin: install CANN, then `pip install -e .[npu]` "
            f"(torch-npu matching torch {torch.__version__.split('+')[0]}); import failed with: {exc}"
        ) from None
    return True


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "npu") else torch.float32


def resolve_dtype(device: torch.device, requested: str | None) -> torch.dtype:
    if requested in (None, "", "auto"):
        return default_dtype(device)
    if requested not in DTYPES:
        raise DeviceError(f"Unsupported --dtype '{requested}': use float32, float16 or bfloat16.")
    dtype = DTYPES[requested]
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("--dtype bfloat16 is not supported by this GPU: use --dtype float16.")
    if dtype == torch.bfloat16 and device.type == "mps":
        raise DeviceError("--dtype bfloat16 is not supported on Apple MPS: use float32 or float16.")
    return dtype


def _flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def select_attention(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and _flash_attn_available():
        return "flash_varlen"
    if device.type == "npu":
        return "npu_fusion"
    return "sdpa"


def onednn_linear(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether linear layers run through oneDNN with fused epilogues (models/linear.py): x86 CPUs,
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


def place(requested_device: str | None, requested_dtype: str | None) -> Placement:
    device = select_device(requested_device)
    dtype = resolve_dtype(device, requested_dtype)
    return Placement(device=device, dtype=dtype, attention=select_attention(device, dtype))


def on_fresh_thread(fn, *args):
    """Run start-up tensor work (weight conversion and reordering) on a thread that then exits.

    libgomp gives each thread that opens an OpenMP region a worker pool of its own and keeps it until
    that thread exits. A pool left on the main thread next to the inference thread's makes libgomp
    count more threads than cores and park its workers between regions: a one-sentence forward on
    the inference thread then took 9.8 ms instead of 4.1 (all-MiniLM-L6-v2, 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="startup") as pool:
        return pool.submit(fn, *args).result()


def configure_cpu_threads(num_threads: int | None = None) -> None:
    """Use every physical core for intra-op work; inter-op parallelism only adds contention here."""
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set once in this process
