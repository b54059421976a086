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
