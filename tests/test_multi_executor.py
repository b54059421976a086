"""The shared inference thread: models on one device take turns (a busy one does not starve an idle
one), a failing forward fails only its own model's batch, and the thread ends with its last model.

Fake models stand in for real ones: each forward sleeps a fixed time and notes whose batch it was,
so the order of batches on the thread is what is measured."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest

from tei.engine import executor
from tei.engine.batcher import EMBED, Batcher, Job
from tei.engine.tokenization import Encoded

FORWARD_S = 0.01


@dataclasses.dataclass
class _Placement:
    device: str
    preferred_batch_tokens: int | None = None


@dataclasses.dataclass
class _Output:
    pooled: np.ndarray


class FakeModel:
    output_size = 2

    def __init__(self, name: str, device: str, log: list, fail_on: int | None = None):
        self.name, self.log, self.fail_on = name, log, fail_on
        self.placement = _Placement(device)
        self.threads: set[str] = set()

    def make_batch(self, ids, type_ids, lengths, attend=None):
        return ids, lengths

    def forward(self, batch, want_hidden=False, kinds=None):
        ids, lengths = batch
        self.threads.add(threading.current_thread().name)
        self.log.append(self.name)
        time.sleep(FORWARD_S)
        if self.fail_on is not None and self.fail_on in ids:
            raise RuntimeError(f"{self.name} broke")
        return _Output(np.zeros((len(lengths), self.output_size), dtype=np.float32))


def _submit(batcher: Batcher, token: int = 7, n: int = 1) -> Job:
    loop = asyncio.get_running_loop()
    job = Job(kind=EMBED, n=n, loop=loop, future=loop.create_future())
    job.output = np.empty((n, 2), dtype=np.float32)
    ids = np.array([101, token, 102], dtype=np.int32)
    batcher.submit(job, [Encoded(ids, np.zeros_like(ids), 0) for _ in range(n)])
    return job


@pytest.fixture
def device(request):
    """A device key of this test's own, so no other engine in the process shares its thread."""
    return f"fake:{request.node.name}"


def test_a_busy_model_does_not_starve_an_idle_one(device):
    log: list[str] = []
    busy = Batcher(FakeModel("busy", device, log), 4096, max_batch_requests=1)
    idle = Batcher(FakeModel("idle", device, log), 4096, max_batch_requests=1)

    async def scenario():
        backlog = [_submit(busy) for _ in range(60)]  # 60 one-sequence batches queued
        await asyncio.sleep(5 * FORWARD_S)
        started = len(log)
        await asyncio.wait_for(_submit(idle).future, 30)
        waited = log[started:].count("busy") - 1  # the busy batch running when `idle` arrived
        await asyncio.gather(*(job.future for job in backlog))
        return waited

    try:
        waited = asyncio.run(scenario())
        # Round-robin: the idle model's batch runs next, not after the backlog (which would be ~55).
        assert waited <= 1, log
        assert log.count("busy") == 60 and log.count("idle") == 1
        assert busy.model.threads == idle.model.threads and len(busy.model.threads) == 1  # one OpenMP pool
    finally:
        busy.stop()
        idle.stop()


def test_turns_alternate_between_two_busy_models(device):
    log: list[str] = []
    a = Batcher(FakeModel("a", device, log), 4096, max_batch_requests=1)
    b = Batcher(FakeModel("b", device, log), 4096, max_batch_requests=1)

    async def scenario():
        jobs = [_submit(a) for _ in range(20)] + [_submit(b) for _ in range(20)]
        await asyncio.gather(*(job.future for job in jobs))

    try:
        asyncio.run(scenario())
        first_b = log.index("b")
        # Once both queues hold work, no model gets two turns in a row while the other waits.
        both = log[first_b - 1: first_b - 1 + 38]
        assert all(x != y for x, y in zip(both, both[1:])), log
    finally:
        a.stop()
        b.stop()


def test_a_failing_forward_fails_only_its_own_models_batch(device):
    log: list[str] = []
    broken = Batcher(FakeModel("broken", device, log, fail_on=666), 4096, max_batch_requests=None)
    fine = Batcher(FakeModel("fine", device, log), 4096, max_batch_requests=None)

    async def scenario():
        bad = _submit(broken, token=666, n=3)
        good = [_submit(fine, n=3) for _ in range(3)]
        results = await asyncio.gather(bad.future, *(j.future for j in good), return_exceptions=True)
        later = await asyncio.wait_for(_submit(broken, token=5).future, 30)  # the broken model's next batch
        return [*results, later]

    try:
        bad, *good, later = asyncio.run(scenario())
        assert isinstance(bad, Exception) and "broken broke" in str(bad)
        assert all(isinstance(r, Job) for r in good) and isinstance(later, Job)  # the thread serves on
    finally:
        broken.stop()
        fine.stop()


def test_the_thread_ends_with_the_last_model_on_its_device(device):
    log: list[str] = []
    first = Batcher(FakeModel("first", device, log), 4096, None)
    second = Batcher(FakeModel("second", device, log), 4096, None)
    shared = first._executor
    assert second._executor is shared and executor._executors[device] is shared
    first.stop()
    assert shared._thread.is_alive()
    assert asyncio.run(_wait(second)) is not None  # still served after the other model left
    second.stop()
    assert not shared._thread.is_alive() and device not in executor._executors


async def _wait(batcher):
    return await asyncio.wait_for(_submit(batcher).future, 30)
