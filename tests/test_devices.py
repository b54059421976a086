"""The device layer: selection order, dtypes, kernels and start-up refusals, with fake hardware.

No test here needs a GPU or an NPU. CUDA and MPS are faked by patching torch's probes; Ascend by a
fake `torch_npu` module and `torch.npu` namespace (tests/npu_fakes.py), whose attention kernels are
emulated on CPU from the torch_npu docs, so the argument mapping (layout, cumulative lengths, mask
polarity, padding gears) is checked numerically against SDPA and against sentence-transformers.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_util import cosine, run
from attention_util import packed_batch as _batch, reference_attention, split_qkv
from npu_fakes import FakeNpu, make_torch_npu
from texts import TEXTS
from tiny_models import build_classifier, build_embedding_model

from tei import devices
from tei.devices import DeviceError, Placement, gear, place, select_device, visible_npus
from tei.engine.engine import Engine, EngineConfig
from tei.models.loader import Model
from tei.models.attention import AttentionPlan
from tei.models.spec import read_spec

ROUTER = Path(sys.executable).parent / "text-embeddings-router"
COS_BAR = 0.99999


@pytest.fixture(autouse=True)
def bare_machine(monkeypatch):
    """No CUDA, no MPS and no NPU masking, whatever the machine running the tests has (torch_npu is
    never installed where tests run: see the `npu` extra in pyproject.toml)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def npu(monkeypatch):
    """Install a fake Ascend stack; returns a factory taking the SoC name and bf16 support."""
    calls: list = []

    def install(name: str = "Ascend910B3", bf16: bool = True) -> FakeNpu:
        fake = FakeNpu(name, bf16)
        fake.kernel_calls = calls
        monkeypatch.setitem(sys.modules, "torch_npu", make_torch_npu(calls))
        monkeypatch.setattr(torch, "npu", fake, raising=False)
        return fake

    return install


@pytest.fixture
def cuda(monkeypatch):
    """A fake two-GPU CUDA machine; `cuda.bf16` sets bf16 support."""
    state = {"bf16": True, "name": "NVIDIA H100 80GB HBM3"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: state["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    return state


# ---- selection order ------------------------------------------------------------------------------


def test_auto_is_cpu_on_a_bare_machine():
    p = place(None, None)
    assert (p.device.type, p.dtype, p.attention, p.token_gears) == ("cpu", torch.float32, "sdpa", False)
    assert place("auto", None).device.type == "cpu"


def test_auto_order_is_cuda_then_npu_then_mps(monkeypatch, npu, cuda):
    npu()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device(None) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(None) == torch.device("npu", 0)
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # plugin gone: `import torch_npu` fails
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


def test_auto_skips_an_npu_stack_that_is_installed_but_has_no_card(npu, monkeypatch):
    npu()
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "")
    assert select_device(None).type == "cpu"


# ---- refusals: one sentence that says what to do --------------------------------------------------


@pytest.mark.parametrize(
    "device, hint",
    [
        ("npu", "pip install -e .[npu]"),
        ("npu:1", "pip install -e .[npu]"),
        ("cuda", "CUDA"),
        ("cuda:1", "CUDA"),
        ("mps", "Apple MPS is not available"),
        ("tpu", "use auto, cpu, cuda, cuda:N, npu, npu:N or mps"),
        ("cuda:x", "use auto, cpu, cuda, cuda:N, npu, npu:N or mps"),
    ],
)
def test_missing_devices_are_refused_with_what_to_do(device, hint):
    with pytest.raises(DeviceError) as err:
        place(device, None)
    message = str(err.value)
    assert hint in message and "\n" not in message and message.endswith(".")


def test_broken_torch_npu_is_reported_with_the_cann_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", None)
    with pytest.raises(DeviceError, match="torch_npu failed to import.*set_env.sh"):
        place("npu", None)
    assert place(None, None).device.type == "cpu"  # auto falls back


def test_unsupported_dtypes_are_refused():
    with pytest.raises(DeviceError, match="Unsupported --dtype 'float64': use float32, float16 or bfloat16"):
        place("cpu", "float64")


# ---- Ascend ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "soc, dtype, kernel",
    [
        ("Ascend910B3", torch.float16, "npu_fusion"),
        ("Ascend910B3", torch.bfloat16, "npu_fusion"),
        ("Ascend910B3", torch.float32, "npu_fusion"),
        ("Ascend910_9391", torch.float16, "npu_fusion"),
        ("Ascend310P3", torch.float16, "npu_prompt"),
        ("Ascend310P3", torch.float32, "sdpa"),
        ("Ascend910A", torch.float16, "sdpa"),
    ],
)
def test_npu_kernel_follows_the_soc(npu, soc, dtype, kernel):
    npu(soc, bf16=not soc.startswith("Ascend310"))
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    p = place("npu", name)
    assert (p.device, p.dtype, p.attention, p.token_gears) == (torch.device("npu", 0), dtype, kernel, True)
    assert soc in p.name


def test_npu_defaults_to_float16_and_310p_refuses_bfloat16(npu):
    npu("Ascend910B3")
    assert place("npu", None).dtype == torch.float16
    assert place(None, None).device == torch.device("npu", 0)  # auto picks the NPU when present
    npu("Ascend310P3", bf16=False)
    with pytest.raises(DeviceError, match="Ascend310P3 has no bfloat16.*--dtype float16"):
        place("npu", "bfloat16")


def test_npu_card_index_and_ascend_rt_visible_devices(npu, monkeypatch):
    npu()
    assert place("npu:7", None).device == torch.device("npu", 7)
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "2,3")
    p = place("npu:1", None)
    assert p.device == torch.device("npu", 1) and "exposes [2, 3]" in p.name
    with pytest.raises(DeviceError, match=r"only 2 NPU.*ASCEND_RT_VISIBLE_DEVICES='2,3'"):
        place("npu:2", None)
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceError, match="no Ascend NPU is visible.*ASCEND_RT_VISIBLE_DEVICES=''"):
        place("npu", None)


@pytest.mark.parametrize(
    "value, ids", [(None, None), ("0,1", [0, 1]), ("1, 2", [1]), ("3,1", [3]), ("", []), ("2,x,3", [2])]
)
def test_visible_npus_reads_the_variable_like_cann(value, ids):
    assert visible_npus(value) == ids


def test_activate_selects_the_card_and_binary_kernels_before_loading(npu):
    fake = npu()
    place("npu:1", None).activate()
    assert fake.calls == [("set_device", 1), ("set_compile_mode", False)]


# ---- CUDA and MPS ---------------------------------------------------------------------------------


def test_cuda_card_dtype_and_kernel(cuda, monkeypatch):
    monkeypatch.setattr(devices, "_cuda_kernel_works", lambda kernel, *a: kernel == "torch_varlen")
    p = place("cuda:1", None)
    assert (p.device, p.dtype, p.attention, p.token_gears) == (torch.device("cuda", 1), torch.float16,
                                                               "torch_varlen", False)
    assert place("cuda", "bfloat16").dtype == torch.bfloat16
    with pytest.raises(DeviceError, match="only 2 CUDA"):
        place("cuda:2", None)
    monkeypatch.setattr(devices, "_cuda_kernel_works", lambda *a: False)
    assert place("cuda", None).attention == "sdpa"
    cuda["bf16"], cuda["name"] = False, "Tesla T4"
    with pytest.raises(DeviceError, match="Tesla T4 has no native bfloat16.*use --dtype float16"):
        place("cuda", "bfloat16")


def test_cuda_float32_keeps_sdpa_without_probing_kernels(cuda):
    assert place("cuda", "float32").attention == "sdpa"  # the varlen kernels are half precision only


def test_mps_dtypes(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert place(None, None).device.type == "mps"
    assert place("mps", None).dtype == torch.float32
    assert place("mps", "float16").dtype == torch.float16
    with pytest.raises(DeviceError, match="MPS does not support bfloat16.*float16 or float32"):
        place("mps", "bfloat16")


# ---- shape gears ----------------------------------------------------------------------------------


def test_gears():
    assert [gear(n) for n in (1, 16, 17, 100, 1024, 1025, 3000)] == [16, 16, 32, 128, 1024, 2048, 3072]
    assert [gear(n, floor=1) for n in (1, 3, 100)] == [1, 4, 128]


def test_padding_fills_a_batch_to_its_gear_with_short_sequences():
    p = Placement(torch.device("cpu"), torch.float32, "npu_fusion", token_gears=True)
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 40))]
        padded = p.pad_lengths(lengths, max(lengths))
        assert padded[: len(lengths)] == lengths and sum(padded) == gear(sum(lengths))
        assert max(padded) == max(lengths)  # filler never lengthens the longest sequence
    assert Placement(torch.device("mps"), torch.float32, "sdpa").pad_lengths([3, 5], 5) == [3, 5]


def test_warmup_covers_every_gear_a_batch_can_land_on():
    p = Placement(torch.device("cpu"), torch.float32, "npu_fusion", token_gears=True)
    warm = {sum(lengths) for lengths in p.warmup_lengths(16000, 512)}
    rng = random.Random(1)
    for _ in range(500):
        assert gear(rng.randint(1, 16000)) in warm
    assert all(max(lengths) <= 512 for lengths in p.warmup_lengths(16000, 512))
    assert Placement(torch.device("mps"), torch.float32, "sdpa").warmup_lengths(16000, 512) == []


# ---- kernels on CPU, through the emulated torch_npu ops -------------------------------------------


def _reference(qkv: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    return reference_attention(*split_qkv(qkv, heads), lengths)


def _attend(kernel: str, lengths: list[int], qkv: torch.Tensor, heads: int, **kw) -> torch.Tensor:
    return AttentionPlan(_batch(lengths), kernel).attend(*split_qkv(qkv, heads), **kw)


RAGGED = [[7], [5, 5, 5], [3, 40, 9, 9, 120, 1, 64, 65, 2]]


@pytest.mark.parametrize("lengths", RAGGED)
def test_npu_fusion_passes_tnd_with_cumulative_lengths(npu, lengths):
    fake = npu()
    torch.manual_seed(0)
    qkv = torch.randn(sum(lengths), 3 * 32)
    out = _attend("npu_fusion", lengths, qkv, 4)
    assert torch.allclose(out, _reference(qkv, lengths, 4), atol=1e-5)
    (call,) = fake.kernel_calls
    assert call["layout"] == "TND" and call["shape"] == (sum(lengths), 4, 8) and call["head_num"] == 4
    assert call["qlen"] == call["kvlen"] == list(np.cumsum(lengths)) and call["mask"] is None
    assert call["scale"] == pytest.approx(8**-0.5) and call["contiguous"]


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_npu_fusion_runs_causal_gqa_models_with_the_compressed_mask(npu, kv_heads):
    fake = npu()
    lengths = RAGGED[2]
    torch.manual_seed(4)
    q, k, v = split_qkv(torch.randn(sum(lengths), (4 + 2 * kv_heads) * 8), 4, kv_heads)
    out = AttentionPlan(_batch(lengths), "npu_fusion").attend(q, k, v, causal=True)
    assert torch.allclose(out, reference_attention(q, k, v, lengths, causal=True), atol=1e-5)
    (call,) = fake.kernel_calls
    assert call["sparse_mode"] == 3 and call["kv_heads"] == kv_heads and call["head_num"] == 4


def test_npu_fusion_splits_more_than_1024_sequences(npu):
    fake = npu()
    lengths = [random.Random(s).randint(1, 4) for s in range(1100)]
    qkv = torch.randn(sum(lengths), 3 * 16)
    out = _attend("npu_fusion", lengths, qkv, 2)
    assert torch.allclose(out, _reference(qkv, lengths, 2), atol=1e-5)
    assert [len(c["qlen"]) for c in fake.kernel_calls] == [1024, 76]


@pytest.mark.parametrize("lengths", [*RAGGED, [random.Random(s).randint(1, 30) for s in range(200)]])
def test_npu_prompt_masks_padded_keys_in_gear_shapes(npu, lengths):
    fake = npu("Ascend310P3", bf16=False)
    torch.manual_seed(1)
    qkv = torch.randn(sum(lengths), 3 * 32)
    out = _attend("npu_prompt", lengths, qkv, 4)
    assert torch.allclose(out, _reference(qkv, lengths, 4), atol=1e-5)
    rows = sum(c["shape"][0] for c in fake.kernel_calls)
    for call in fake.kernel_calls:
        b, heads, length, dim = call["shape"]
        assert call["layout"] == "BNSD" and (heads, dim) == (4, 8) and b <= 128 and call["contiguous"]
        assert length == gear(max(lengths), floor=32) and call["mask"].shape == (b, 1, length, length)
        assert call["pre"] == call["next"] == 2147483647
    assert rows == gear(len(lengths), floor=1)
    first = fake.kernel_calls[0]["mask"]
    assert first[0, 0, 0].tolist() == [j >= lengths[0] for j in range(first.shape[-1])]  # True = masked


def test_torch_nested_kernel_matches_sdpa_on_cpu():
    lengths = RAGGED[2]
    torch.manual_seed(2)
    qkv = torch.randn(sum(lengths), 3 * 32)
    out = _attend("torch_nested", lengths, qkv, 4)
    assert torch.allclose(out, _reference(qkv, lengths, 4), atol=1e-5)


@pytest.mark.parametrize("lengths, varlen", [([9, 9, 9], False), ([33], False), ([9, 9, 4], True)])
def test_one_length_batches_skip_the_cuda_varlen_kernels(lengths, varlen):
    torch.manual_seed(3)
    qkv = torch.randn(sum(lengths), 3 * 32)
    plan = AttentionPlan(_batch(lengths), "torch_nested")
    assert (plan.varlen is not None) == varlen
    assert torch.allclose(plan.attend(*split_qkv(qkv, 4)), _reference(qkv, lengths, 4), atol=1e-5)


# ---- whole models through the NPU path, on CPU ----------------------------------------------------


def _engine(folder: Path, placement: Placement) -> Engine:
    spec = read_spec(folder)
    config = EngineConfig(max_batch_tokens=1024)  # fewer gears to warm up
    return Engine(spec, Model(spec, placement), (folder / "tokenizer.json").read_text(), config)


@pytest.mark.parametrize("kernel", ["npu_fusion", "npu_prompt"])
def test_embeddings_through_npu_kernels_and_gears_match_sentence_transformers(npu, models_dir, kernel):
    from sentence_transformers import SentenceTransformer

    fake = npu()
    folder = build_embedding_model(models_dir / f"npu-{kernel}", "bert", pooling="mean", dense_out=24, seed=11)
    ref = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, normalize_embeddings=False)
    engine = _engine(folder, Placement(torch.device("cpu"), torch.float32, kernel, token_gears=True))
    try:
        engine.warmup()
        fake.kernel_calls.clear()
        ours = run(engine.embed(TEXTS, normalize=False)).values
        hidden = run(engine.embed_all(TEXTS[:2])).values
    finally:
        engine.close()
    assert ours.shape == ref.shape and cosine(ours, ref).min() >= COS_BAR
    assert [h.shape[0] for h in hidden] == [len(engine.tokenizers.main.encode(t).ids) for t in TEXTS[:2]]
    assert fake.kernel_calls
    for call in fake.kernel_calls:  # every forward pass ran at gear shapes
        if kernel == "npu_fusion":
            assert call["shape"][0] == gear(call["shape"][0])
        else:
            assert call["shape"][0] == gear(call["shape"][0], floor=1) and call["shape"][2] in (32, 64, 128)


def test_rerank_scores_through_npu_fusion_match_transformers(npu, models_dir):
    import transformers as tf

    npu()
    folder = build_classifier(models_dir / "npu-rerank", "bert", num_labels=1, seed=4)
    query, docs = "What is deep learning?", TEXTS
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    hf = tf.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        enc = tok([query] * len(docs), docs, padding=True, truncation="only_second", max_length=128,
                  return_tensors="pt")
        ref = hf(**enc).logits[:, 0].numpy()
    engine = _engine(folder, Placement(torch.device("cpu"), torch.float32, "npu_fusion", token_gears=True))
    try:
        ours = run(engine.rerank(query, docs, raw_scores=True)).values
    finally:
        engine.close()
    assert np.abs(ours - ref).max() <= 1e-4


# ---- the real server process: one clean line, no traceback ----------------------------------------

needs_router = pytest.mark.skipif(not ROUTER.exists(), reason="text-embeddings-router is not installed")


def _refusal(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([str(ROUTER), "--port", "0", *args], capture_output=True, text=True, timeout=120,
                          env=env or dict(os.environ))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and len(errors) == 1, proc.stderr
    return errors[0]


@needs_router
@pytest.mark.parametrize(
    "args, hint",
    [
        (["--device", "npu"], "pip install -e .[npu]"),
        (["--device", "npu:1"], "pip install -e .[npu]"),
        (["--device", "cuda"], "CUDA"),
        (["--device", "cuda:1"], "CUDA"),
        (["--device", "mps"], "Apple MPS"),
    ],
)
def test_server_refuses_missing_hardware_in_one_line(args, hint):
    if "cuda" in args[1] and _real_cuda():
        pytest.skip("this machine has CUDA")
    assert hint in _refusal(*args)


@needs_router
def test_server_refuses_an_unsupported_dtype_in_one_line():
    assert "Unsupported --dtype 'float64'" in _refusal(env={**os.environ, "DTYPE": "float64"})


@pytest.fixture
def broken_torch_npu(tmp_path) -> dict:
    """An installed torch_npu whose import fails as it does without CANN, registered for torch's
    backend autoload (torch >= 2.5 imports it inside `import torch`). Returns the env to use it."""
    pkg = tmp_path / "torch_npu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('raise ImportError("libhccl.so: cannot open shared object file")\n')
    dist = tmp_path / "torch_npu-2.13.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch_npu\nVersion: 2.13.0\n")
    (dist / "entry_points.txt").write_text("[torch.backends]\ntorch_npu = torch_npu:_autoload\n")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    plain = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, timeout=120,
                           env=env)
    assert plain.returncode != 0 and "torch_npu" in plain.stderr  # the failure being guarded against
    return env


def test_a_broken_torch_npu_neither_breaks_import_nor_auto(broken_torch_npu):
    code = ("import sys, tei.app, tei.devices, tei.models.loader; from tei.devices import place; "
            "assert 'torch_npu' not in sys.modules; print(place(None, None).device)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=broken_torch_npu)
    assert proc.returncode == 0 and proc.stdout.strip() == "cpu", proc.stderr


@needs_router
def test_server_refuses_npu_with_a_broken_torch_npu_in_one_line(broken_torch_npu):
    message = _refusal("--device", "npu", env=broken_torch_npu)
    assert "libhccl.so" in message and "set_env.sh" in message


def _real_cuda() -> bool:
    if torch.version.cuda is None:
        return False  # a CPU-only torch build
    return subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"],
                          timeout=120).returncode == 0

