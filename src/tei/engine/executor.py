"""One inference thread per device, shared by the queues of every model placed on it.

All tensor work of a device belongs on one thread: libgomp gives each thread that opens an OpenMP
region a worker pool of its own, and with two pools alive it counts more threads than cores and
parks workers between regions (a one-sentence forward ran 2.4x slower). So models served side by
side take turns on their device's thread instead of each owning one. Each model keeps its own
token-budget queue; the thread serves the non-empty queues round-robin, one batch per turn, so a
busy model cannot starve an idle one (tests/test_multi_executor.py measures it).
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import logging
import threading
import time
from collections import deque

from .errors import BackendError

log = logging.getLogger(__name__)

TRIM_EVERY_S = 2.0
# Idle work (Batcher.when_idle) starts only after this long without a request (or since it was
# handed over): a steady stream of requests never waits on it, nor the readiness probes that follow
# start-up (a step of a large model's kernels takes 0.2-0.3 s on a quiet 2-core machine, and several
# seconds on a busy one, longer than a probe's timeout).
IDLE_AFTER_S = 2.0


def _malloc_trim():
    """glibc keeps freed activation buffers of every batch shape; trimming keeps RSS flat (TEI does too)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class DeviceExecutor:
    """The inference thread of one device. Queues (Batchers) attach to it; it stops when the last
    one detaches. `cond` guards every attached queue as well as the executor's own state."""

    def __init__(self, device: str):
        self.device = device
        self.cond = threading.Condition()
        self._queues: list = []  # attached Batchers, in attach order
        self._turn = 0  # index of the queue that gets the next batch if it has one
        self._calls: deque = deque()  # (fn, args, concurrent.futures.Future)
        self._idle: deque = deque()  # callables run only while nothing else waits (Batcher.when_idle)
        self.last_submit = time.monotonic()  # of a request to any attached queue (under `cond`)
        self._stopping = False
        self._trim = _malloc_trim()
        self._last_trim = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"inference-{device}", daemon=True)
        self._thread.start()

    def attach(self, queue) -> None:
        with self.cond:
            self._queues.append(queue)

    def detach(self, queue) -> bool:
        """Remove a queue once its sequences have run; True when it was the last one (the thread then stops)."""
        with self.cond:
            while queue.queue_size and self._thread.is_alive():
                self.cond.wait(0.05)
            self._queues.remove(queue)
            last = not self._queues
            if last:
                self._stopping = True
                self.cond.notify()
        if last:
            self._thread.join(timeout=10)
        return last

    def call(self, fn, *args):
        """Run fn(*args) on the inference thread and return its result (start-up warm-up)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.cond:
            if self._stopping:
                raise BackendError("the inference thread has stopped")
            self._calls.append((fn, args, future))
            self.cond.notify()
        return future.result()

    def when_idle(self, steps) -> None:
        with self.cond:
            self._idle.extend(steps)
            self.last_submit = time.monotonic()
            self.cond.notify()

    @property
    def idle_work(self) -> int:
        return len(self._idle)

    def _run_idle_step(self, step) -> None:
        """A failing step is logged and the rest are dropped: they only save first-use latency."""
        try:
            step()
        except Exception:
            log.exception("Start-up work after ready failed; skipping the rest of it")
            with self.cond:
                self._idle.clear()

    def _next(self):
        """Under `cond`: a call, or (queue, batch) from the next non-empty queue in turn, or None."""
        if self._calls:
            return self._calls.popleft()
        count = len(self._queues)
        for step in range(count):
            queue = self._queues[(self._turn + step) % count]
            batch = queue.next_batch()
            if batch:
                self._turn = (self._turn + step + 1) % count
                return queue, batch
        return None

    def _run(self) -> None:
        while True:
            with self.cond:
                work = self._next()
                while work is None:
                    if self._stopping:
                        for _fn, _args, future in self._calls:
                            future.set_exception(BackendError("the inference thread has stopped"))
                        return
                    quiet = self.last_submit + IDLE_AFTER_S - time.monotonic() if self._idle else None
                    if quiet is not None and quiet <= 0:
                        work = (self._idle.popleft(),)
                        break
                    self.cond.wait(quiet)
                    work = self._next()
            if len(work) == 1:
                self._run_idle_step(work[0])
                continue
            if len(work) == 3:
                fn, args, future = work
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
                continue
            queue, batch = work
            try:
                queue.execute(batch)
            except Exception as exc:  # this thread must outlive any batch, or later requests would hang
                queue.fail(batch, exc)
            if self._trim is not None and time.monotonic() - self._last_trim > TRIM_EVERY_S:
                self._trim(0)
                self._last_trim = time.monotonic()


_executors: dict[str, DeviceExecutor] = {}
_lock = threading.Lock()


def attach(device: str, queue) -> DeviceExecutor:
    """The executor of `device` (started on first use), with `queue` attached. One per process and
    device, because the OpenMP pool it protects is one per process."""
    with _lock:
        executor = _executors.get(device)
        if executor is None or executor._stopping:
            executor = _executors[device] = DeviceExecutor(device)
        executor.attach(queue)
        return executor


def detach(executor: DeviceExecutor, queue) -> None:
    with _lock:
        if executor.detach(queue) and _executors.get(executor.device) is executor:
            del _executors[executor.device]
