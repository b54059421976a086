"""CPU batches are padded to a few token counts ("gears"), so oneDNN builds each kernel once."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from engine_util import cosine, engine_for, run
from texts import TEXTS

from tei.devices import CPU_GEAR_SMALL_UNTIL, CPU_GEAR_STEP, CPU_GEAR_STEP_SMALL, Placement, cpu_gear

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this build")


def test_gears_are_few_and_waste_little():
    gears = {cpu_gear(n) for n in range(1, 4097)}
    assert len(gears) == CPU_GEAR_SMALL_UNTIL // CPU_GEAR_STEP_SMALL + (4096 - CPU_GEAR_SMALL_UNTIL) // CPU_GEAR_STEP
    for n in range(1, 4097):
        step = CPU_GEAR_STEP_SMALL if n <= CPU_GEAR_SMALL_UNTIL else CPU_GEAR_STEP
        assert n <= cpu_gear(n) < n + step and cpu_gear(n) % step == 0


def test_cpu_batches_are_padded_with_short_filler():
    p = Placement(torch.device("cpu"), torch.float32, "sdpa")
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 256) for _ in range(rng.randint(1, 60))]
        padded = p.pad_lengths(lengths, max(lengths))
        assert padded[: len(lengths)] == lengths and sum(padded) == cpu_gear(sum(lengths))
        assert max(padded) == max(lengths)
    # torch.compile fuses on its own, without oneDNN's per-shape kernels: no padding there
    assert Placement(torch.device("cpu"), torch.float32, "sdpa", compile=True).pad_lengths([3, 5], 5) == [3, 5]


def test_start_up_builds_a_kernel_for_every_gear_a_batch_can_land_on():
    p = Placement(torch.device("cpu"), torch.float32, "sdpa")
    gears = p.kernel_gears(4096)
    assert gears == sorted(set(gears)) and gears[-1] == 4096
    assert {cpu_gear(n) for n in range(1, 4097)} == set(gears)
    assert p.warmup_lengths(4096, 256) == []  # no full forward passes per gear on CPU
    assert Placement(torch.device("cpu"), torch.float32, "sdpa", compile=True).kernel_gears(4096) == []


def test_padding_changes_no_result(minilm_path):
    """Filler sequences are computed and dropped: every text's vector is the one it gets alone."""
    engine = engine_for(minilm_path)
    try:
        together = run(engine.embed(TEXTS)).values
        alone = np.concatenate([run(engine.embed([t])).values for t in TEXTS])
    finally:
        engine.close()
    assert cosine(together, alone).min() >= 0.99999
