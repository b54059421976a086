"""Token-budget dynamic batching: one queue per model, one future per request.

Sequences are taken in arrival order until `max_batch_tokens` or `max_batch_requests` would be
exceeded, then run as one packed forward pass. There is no batching window: an idle server runs a
lone request at once, and under load batches grow with the backlog. While the model computes, the
event loop and tokenizer threads keep queueing the next requests (torch releases the GIL). The
forward passes run on the device's shared inference thread (executor.py).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import Any

import numpy as np

from ..models.loader import Model
from . import executor
from .errors import BackendError

log = logging.getLogger(__name__)

EMBED, EMBED_ALL, PREDICT = "embed", "embed_all", "predict"


@dataclasses.dataclass(eq=False)
class Job:
    """One caller's request: its sequences may be spread over several batches."""

    kind: str
    n: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    output: Any = None  # np.ndarray [n, D] / [n, C], or list of [len, H] arrays for EMBED_ALL
    remaining: int = 0
    queued_at: float = 0.0
    queue_time: float = 0.0  # summed over sequences; callers report the mean
    inference_time: float = 0.0
    done: bool = False

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self.loop.call_soon_threadsafe(_set_exception, self.future, exc)


def _set_result(future: asyncio.Future, job: Job) -> None:
    if not future.done():
        future.set_result(job)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _Item:
    __slots__ = ("job", "slot", "ids", "type_ids", "attend")

    def __init__(self, job: Job, slot: int, ids: np.ndarray, type_ids: np.ndarray, attend=None):
        self.job, self.slot, self.ids, self.type_ids, self.attend = job, slot, ids, type_ids, attend


class Batcher:
    """One model's token-budget queue. Its batches run on its device's shared inference thread
    (executor.py), in turns with the other models on that device."""

    def __init__(self, model: Model, max_batch_tokens: int, max_batch_requests: int | None, observer=None):
        self.model = model
        # The device may run best below the client-visible budget (CPU caches): never above it.
        preferred = model.placement.preferred_batch_tokens
        self.max_batch_tokens = min(max_batch_tokens, preferred) if preferred else max_batch_tokens
        self.max_batch_requests = max_batch_requests or 1 << 30
        self.observer = observer  # optional: observer.batch(size, tokens)
        self._queue: collections.deque[_Item] = collections.deque()
        self._executor = executor.attach(str(model.placement.device), self)
        self._cond = self._executor.cond

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    def submit(self, job: Job, encoded) -> None:
        """Called on the event loop thread. `encoded` is a list of tokenization.Encoded."""
        job.remaining = len(encoded)
        job.queued_at = time.perf_counter()
        items = [_Item(job, i, e.ids, e.type_ids, getattr(e, "attend", None)) for i, e in enumerate(encoded)]
        with self._cond:
            self._queue.extend(items)
            self._executor.last_submit = time.monotonic()
            self._cond.notify()

    def call(self, fn, *args):
        """Run fn(*args) on the device's inference thread and return its result (start-up warm-up)."""
        return self._executor.call(fn, *args)

    def when_idle(self, steps) -> None:
        """Run these callables on the device's thread, one at a time, only while no request and no
        call waits there and none came for executor.IDLE_AFTER_S (start-up work that can finish after
        the server is ready: kernels for the larger batch sizes). A request that arrives waits for at
        most the step under way."""
        self._executor.when_idle(steps)

    @property
    def idle_work(self) -> int:
        return self._executor.idle_work

    def stop(self) -> None:
        """Let the queued sequences run, then leave the device's thread (the last one out stops it)."""
        executor.detach(self._executor, self)

    def next_batch(self) -> list[_Item]:
        """Called by the executor, under `_cond`."""
        batch: list[_Item] = []
        tokens = 0
        queue = self._queue
        while queue and len(batch) < self.max_batch_requests:
            item = queue[0]
            if item.job.done or item.job.future.cancelled():
                queue.popleft()  # the caller failed or went away: don't spend compute on it
                continue
            if batch and tokens + len(item.ids) > self.max_batch_tokens:
                break
            queue.popleft()
            batch.append(item)
            tokens += len(item.ids)
        return batch

    def fail(self, batch: list[_Item], exc: Exception) -> None:
        log.exception("Inference failed for a batch of %d sequences", len(batch))
        error = BackendError(f"inference failed: {exc}")
        for it in batch:
            it.job.fail(error)

    def execute(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        # Equal lengths side by side: CPU attention runs each length as one call (models/attention/plan.py).
        batch.sort(key=lambda it: len(it.ids))
        lengths = [len(it.ids) for it in batch]
        if self.observer is not None:
            self.observer.batch(len(batch), sum(lengths))
        packed = self.model.make_batch(
            np.concatenate([it.ids for it in batch]),
            np.concatenate([it.type_ids for it in batch]),
            lengths,
            attend=[it.attend for it in batch],
        )
        kinds = {it.job.kind for it in batch}
        # `kinds` only when a batch asks for more than TEI's outputs (models/late.py): the plain call stays as it was.
        extra = {"kinds": kinds} if kinds - {EMBED, EMBED_ALL, PREDICT} else {}
        out = self.model.forward(packed, want_hidden=EMBED_ALL in kinds, **extra)  # a failure fails this batch (executor)
        elapsed = time.perf_counter() - start
        offset = 0
        for row, it in enumerate(batch):
            job = it.job
            n_tokens = lengths[row]
            if not job.done:
                if job.kind == EMBED:
                    job.output[it.slot] = out.pooled[row]
                elif job.kind == PREDICT:
                    job.output[it.slot] = out.logits[row]
                elif job.kind in out.per_seq:  # models/late.py: sparse and multi-vector outputs
                    job.output[it.slot] = out.per_seq[job.kind][row]
                else:
                    job.output[it.slot] = out.hidden[offset : offset + n_tokens]
                job.queue_time += start - job.queued_at
                job.inference_time += elapsed
                job.remaining -= 1
                if job.remaining == 0:
                    job.done = True
                    job.loop.call_soon_threadsafe(_set_result, job.future, job)
            offset += n_tokens
