"""Token-budget dynamic batching: one queue, one inference thread, one future per request.

Sequences are taken in arrival order until `max_batch_tokens` or `max_batch_requests` would be
exceeded, then run as one packed forward pass. There is no batching window: an idle server runs a
lone request at once, and under load batches grow with the backlog. While the model computes, the
event loop and tokenizer threads keep queueing the next requests (torch releases the GIL).
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import logging
import threading
import time
from typing import Any

import numpy as np

from ..models.loader import Model
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


def _malloc_trim():
    """glibc keeps freed activation buffers of every batch shape; trimming keeps RSS flat (TEI does too)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


TRIM_EVERY_S = 2.0


class _Item:
    __slots__ = ("job", "slot", "ids", "type_ids", "attend")

    def __init__(self, job: Job, slot: int, ids: np.ndarray, type_ids: np.ndarray, attend=None):
        self.job, self.slot, self.ids, self.type_ids, self.attend = job, slot, ids, type_ids, attend


class Batcher:
    def __init__(self, model: Model, max_batch_tokens: int, max_batch_requests: int | None, observer=None):
        self.model = model
        # The device may run best below the client-visible budget (CPU caches): never above it.
        preferred = model.placement.preferred_batch_tokens
        self.max_batch_tokens = min(max_batch_tokens, preferred) if preferred else max_batch_tokens
        self.max_batch_requests = max_batch_requests or 1 << 30
        self.observer = observer  # optional: observer.batch(size, tokens, queue_len)
        self.healthy = True
        self._queue: collections.deque[_Item] = collections.deque()
        self._calls: collections.deque = collections.deque()  # (fn, args, concurrent.futures.Future)
        self._cond = threading.Condition()
        self._stopping = False
        self._trim = _malloc_trim()
        self._last_trim = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

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
            self._cond.notify()

    def call(self, fn, *args):
        """Run fn(*args) on the inference thread and return its result (start-up warm-up).

        All tensor work belongs on that one thread: libgomp gives each thread that opens an OpenMP
        region a worker pool of its own, and with two pools alive it counts more threads than
        cores and parks workers between regions (a one-sentence forward ran 2.4x slower)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._calls.append((fn, args, future))
            self._cond.notify()
        return future.result()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _next_batch(self) -> list[_Item]:
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

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._calls and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    for _fn, _args, future in self._calls:
                        future.set_exception(BackendError("the inference thread has stopped"))
                    return
                call = self._calls.popleft() if self._calls else None
                batch = self._next_batch() if call is None else None
            if call is not None:
                fn, args, future = call
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
                continue
            if batch:
                try:
                    self._execute(batch)
                except Exception as exc:  # this thread must outlive any batch, or later requests would hang
                    self._fail(batch, exc)
                if self._trim is not None and time.monotonic() - self._last_trim > TRIM_EVERY_S:
                    self._trim(0)
                    self._last_trim = time.monotonic()

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        log.exception("Inference failed for a batch of %d sequences", len(batch))
        self.healthy = False
        error = BackendError(f"inference failed: {exc}")
        for it in batch:
            it.job.fail(error)

    def _execute(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        # Equal lengths side by side: CPU attention runs each length as one call (models/attention/plan.py).
        batch.sort(key=lambda it: len(it.ids))
        lengths = [len(it.ids) for it in batch]
        if self.observer is not None:
            self.observer.batch(len(batch), sum(lengths), len(self._queue))
        packed = self.model.make_batch(
            np.concatenate([it.ids for it in batch]),
            np.concatenate([it.type_ids for it in batch]),
            lengths,
            attend=[it.attend for it in batch],
        )
        kinds = {it.job.kind for it in batch}
        # `kinds` only when a batch asks for more than TEI's outputs (models/late.py): the plain call stays as it was.
        extra = {"kinds": kinds} if kinds - {EMBED, EMBED_ALL, PREDICT} else {}
        out = self.model.forward(packed, want_hidden=EMBED_ALL in kinds, **extra)  # a failure fails this batch (_run)
        self.healthy = True
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
