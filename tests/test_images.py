"""The images' install step (docker/install.sh, which every Dockerfile runs), run for real in a
clean venv on the CPU image's arguments. No base image can be pulled here, so this is the part of
`docker build` that can run: it proves the package, its extras and the entry points install from
what the Dockerfile copies (pyproject.toml, README.md, src/). Torch comes from pip's configured
index instead of download.pytorch.org, which this machine cannot reach."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _arg(dockerfile: Path, name: str) -> str:
    return re.search(rf"^ARG {name}=(\S*)", dockerfile.read_text(), re.M).group(1).strip('"')


def test_cpu_image_install_step(tmp_path):
    dockerfile = ROOT / "docker" / "Dockerfile.cpu"
    copied = re.findall(r"^COPY (\S+(?: \S+)*) \./?\S*$", dockerfile.read_text(), re.M)
    src = tmp_path / "src-copy"
    src.mkdir()
    for line in copied:  # what the Dockerfile's COPY lines bring into the image
        for name in line.split():
            target = src / name
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PIP": str(venv / "bin" / "pip"), "TORCH_VERSION": _arg(dockerfile, "TORCH_VERSION"),
           "TORCH_INDEX": "", "TEI_EXTRAS": _arg(dockerfile, "TEI_EXTRAS"), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_QUIET": "1"}
    proc = subprocess.run(["sh", str(ROOT / "docker" / "install.sh")], cwd=src, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bin_ = venv / "bin"
    version = subprocess.run([str(bin_ / "text-embeddings-router"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("text-embeddings-router")
    helped = subprocess.run([str(bin_ / "text-embeddings-batch"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--ray" in helped.stdout
    check = ("import ray, torch, tei.ray.serve; from tei.models.hub import default_model_path; "
             "import os; assert os.path.isfile(os.path.join(default_model_path(), 'model.safetensors')); "
             "print(torch.__version__)")
    probe = subprocess.run([str(bin_ / "python"), "-c", check], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip().startswith(_arg(dockerfile, "TORCH_VERSION"))


def _resolve_on_pypi(requirement: str, platform: str, python: str, tmp_path: Path) -> dict | None:
    """pip's resolution of one requirement for another platform, from PyPI's metadata only (nothing
    is installed or, where PyPI serves the metadata apart, downloaded). None when PyPI is out of reach."""
    import json

    report = tmp_path / f"{platform}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
         "--target", str(tmp_path / "never"), "--platform", platform, "--python-version", python,
         "--only-binary=:all:", "--index-url", "https://pypi.org/simple", "--report", str(report), requirement],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if proc.returncode != 0:
        if re.search(r"No matching distribution|Could not find a version", proc.stderr):
            pytest.fail(f"{requirement} does not exist for {platform} / Python {python}: {proc.stderr[-500:]}")
        return None
    return json.loads(report.read_text())["install"][0]["metadata"]


def test_ascend_image_pins_resolve_on_pypi(tmp_path):
    """The Ascend image's torch-npu pin exists for its Python on both CANN platforms, and asks for the
    very torch the image installs first (a mismatch would make pip replace torch in the image)."""
    dockerfile = ROOT / "docker" / "Dockerfile.ascend"
    torch_version, npu_version = _arg(dockerfile, "TORCH_VERSION"), _arg(dockerfile, "TORCH_NPU_VERSION")
    python = re.search(r"-py(3\.\d+)", dockerfile.read_text()).group(1)  # the CANN base image's Python
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64"):
        meta = _resolve_on_pypi(f"torch-npu=={npu_version}", platform, python, tmp_path)
        if meta is None:
            pytest.skip("PyPI is out of reach")
        assert meta["version"] == npu_version
        torch_req = [Requirement(r) for r in meta.get("requires_dist", []) if Requirement(r).name == "torch"]
        assert torch_req and all(torch_version in r.specifier for r in torch_req), (platform, torch_req)
