#!/bin/sh
# The one install step of every image (and of tests/test_images.py): torch from TORCH_INDEX (the
# CPU or CUDA wheel index; empty = pip's configured index), pinned torch-npu on Ascend, then this
# package with its extras. Run from the source folder.
set -eu
PIP="${PIP:-pip}"
"$PIP" install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==${TORCH_VERSION:?TORCH_VERSION}"
if [ -n "${TORCH_NPU_VERSION:-}" ]; then
    # Before the npu extra: on its own it would pick the newest torch-npu and replace torch.
    "$PIP" install "torch-npu==${TORCH_NPU_VERSION}"
fi
# shellcheck disable=SC2086  # EXTRA_PIP is a list of requirements
"$PIP" install ".[${TEI_EXTRAS:-ray}]" ${EXTRA_PIP:-}
