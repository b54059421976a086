"""Bounded, fast warm-up: a fixed set of shapes whatever the context length, the common kernels before
ready and the others while idle, requests first."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from engine_util import engine_for, run

from tei.devices import ATTENTION_WARM_ALL, CPU_GEAR_SMALL_UNTIL, Placement, cpu_gear
from tei.engine.batcher import EMBED, Batcher, Job
from tei.engine.tokenization import Encoded

CPU = Placement(torch.device("cpu"), torch.float32, "sdpa")
CPU_BF16 = Placement(torch.device("cpu"), torch.bfloat16, "sdpa")


def test_before_ready_is_the_small_gears_and_the_top_one():
    gears = CPU.kernel_gears(4096)
    now, lengths = CPU.before_ready(gears, CPU_BF16.attention_lengths(8192))
    assert now == [g for g in gears if g <= CPU_GEAR_SMALL_UNTIL] + [4096]
    assert lengths == list(range(1, ATTENTION_WARM_ALL + 1))


def test_the_shapes_are_bounded_for_long_contexts():
    """An 8k-context model warms a fixed ladder of lengths above ATTENTION_WARM_ALL, not every length,
    and runs its one whole-model pass on a short sequence (the first layer covers the full budget)."""
    for max_len in (8192, 32768):
        ladder = [n for n in CPU_BF16.attention_lengths(max_len) if n > ATTENTION_WARM_ALL]
        assert len(ladder) <= 2 * np.log2(max_len / ATTENTION_WARM_ALL) + 1 and ladder[-1] == max_len
    assert CPU.warmup_pass(4096, 1) == [16]
    compiled = Placement(torch.device("cpu"), torch.float32, "sdpa", compile=True)
    assert compiled.warmup_pass(256, 16) == [256] * 16  # no kernel gears there: TEI's full-size pass


class _FakeModel:
    """Records what the inference thread runs, in order."""

    def __init__(self):
        self.placement = CPU
        self.log: list = []

    def make_batch(self, ids, type_ids, lengths, attend=None):
        return lengths

    def forward(self, lengths, want_hidden=False, kinds=None):
        self.log.append(("batch", len(lengths)))
        from tei.models.loader import ModelOutput

        return ModelOutput(pooled=np.zeros((len(lengths), 4), dtype=np.float32))


def test_idle_work_yields_to_requests():
    model = _FakeModel()
    batcher = Batcher(model, 4096, None)
    started, release = threading.Event(), threading.Event()

    def step(i):
        def run_step():
            if i == 0:
                started.set()
                release.wait(10)  # a step under way when the request arrives
            model.log.append(("step", i))
        return run_step

    try:
        batcher.when_idle([step(i) for i in range(4)])
        assert started.wait(10)

        async def one_request():
            loop = asyncio.get_running_loop()
            job = Job(EMBED, 1, loop, loop.create_future())
            job.output = np.zeros((1, 4), dtype=np.float32)
            batcher.submit(job, [Encoded(ids=np.array([1, 2], dtype=np.int32), type_ids=np.zeros(2, np.int32), chars=2)])
            await asyncio.sleep(0.1)
            release.set()
            await asyncio.wait_for(job.future, 10)

        asyncio.run(one_request())
        deadline = time.monotonic() + 10
        while batcher.idle_work and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        batcher.stop()
    assert model.log == [("step", 0), ("batch", 1), ("step", 1), ("step", 2), ("step", 3)]


def test_idle_work_waits_for_a_quiet_spell():
    """Requests (health probes too) that come more often than IDLE_AFTER_S never wait on idle work."""
    from tei.engine.executor import IDLE_AFTER_S

    model = _FakeModel()
    batcher = Batcher(model, 4096, None)
    try:
        batcher.when_idle([lambda: model.log.append("step")])

        async def steady():
            loop = asyncio.get_running_loop()
            for _ in range(6):
                job = Job(EMBED, 1, loop, loop.create_future())
                job.output = np.zeros((1, 4), dtype=np.float32)
                batcher.submit(job, [Encoded(np.array([1], np.int32), np.zeros(1, np.int32), 1)])
                await asyncio.wait_for(job.future, 10)
                await asyncio.sleep(IDLE_AFTER_S / 4)

        asyncio.run(steady())
        assert "step" not in model.log
        deadline = time.monotonic() + 10
        while batcher.idle_work and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.idle_work == 0
    finally:
        batcher.stop()
    assert model.log[-1] == "step"


def test_a_failing_step_drops_the_rest_and_requests_still_run(caplog):
    model = _FakeModel()
    batcher = Batcher(model, 4096, None)
    try:
        batcher.when_idle([lambda: 1 / 0, lambda: model.log.append("never")])
        deadline = time.monotonic() + 10
        while batcher.idle_work and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.call(lambda: "alive") == "alive"
    finally:
        batcher.stop()
    assert "never" not in model.log and "Start-up work after ready failed" in caplog.text


def test_the_engine_builds_every_gear_soon_after_ready(minilm_path):
    engine = engine_for(minilm_path)
    try:
        gears = engine.model.placement.kernel_gears(engine.batcher.max_batch_tokens)
        now, _ = engine.model.placement.before_ready(gears, [])
        if not gears:
            pytest.skip("no oneDNN kernel gears on this CPU")
        assert engine.batcher.idle_work <= len(gears) - len(now)
        deadline = time.monotonic() + 120
        while engine.batcher.idle_work and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.batcher.idle_work == 0
        assert {cpu_gear(n) for n in range(1, 4097)} == set(gears)
        assert run(engine.embed(["hello"])).values.shape == (1, 384)
    finally:
        engine.close()
