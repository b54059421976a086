"""The local runner: the Engine in this process, no Ray, no HTTP.

Two chunks are in flight: while the model finishes one, the next is read and tokenized, so the
model is never waiting on the file or the tokenizer."""
from __future__ import annotations

import asyncio

from .job import Worker
from .plan import Plan

IN_FLIGHT = 2


def run(plan: Plan) -> str:
    worker = Worker(plan.engine_settings, plan.options)
    try:
        return asyncio.run(_run(plan, worker))
    finally:
        worker.close()


async def _run(plan: Plan, worker: Worker) -> str:
    parts, progress = plan.parts, plan.progress()
    pending: set[asyncio.Task] = set()

    async def one(index: int, chunk) -> None:
        result = await worker.process(chunk)
        parts.write(index, result)
        progress.advance(chunk.num_rows)

    for index, chunk in enumerate(plan.source.chunks(plan.chunk_rows)):
        if index in parts.done:
            progress.skip(chunk.num_rows)
            continue
        pending.add(asyncio.create_task(one(index, chunk)))
        if len(pending) >= IN_FLIGHT:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    if pending:
        for task in (await asyncio.wait(pending))[0]:
            task.result()
    return plan.finish(progress)
