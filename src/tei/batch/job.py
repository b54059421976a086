"""The bulk job's worker: one Engine, called on one chunk (an Arrow table from inputs.py) at a time.

The local runner and the Ray Data runner (one instance per actor) both call `Worker`, so their
outputs are the same. A chunk is sorted by length and cut into sub-requests that are all submitted
at once: the batcher packs them into token-budget batches of similar lengths, and the tokenizer
threads work on later sub-requests while the model runs earlier ones.
"""
from __future__ import annotations

import asyncio
import dataclasses
import uuid

import numpy as np
import orjson
import pyarrow as pa

from ..engine.errors import EngineError
from ..settings import ModelSettings
from .inputs import DOCUMENT, ID, INVALID, QUERY, REQUEST, ROW, TEXT, InputError

# Result columns, beside ROW, ID and ERROR.
EMBEDDING, SCORE, SCORES, LABEL, RESPONSE, ERROR = "embedding", "score", "scores", "label", "__response__", "error"
SUB_REQUEST = 256  # texts per engine call: enough to fill a batch, small enough that one bad row costs little


@dataclasses.dataclass(frozen=True)
class JobOptions:
    task: str = "embed"  # embed | classify | rerank | openai
    normalize: bool = True
    dimensions: int | None = None
    prompt_name: str | None = None
    raw_scores: bool = False
    model_name: str = ""


def engine_settings(settings: ModelSettings, chunk_rows: int) -> ModelSettings:
    """The server's limits are per HTTP request; a chunk is many requests at once, never refused."""
    engine = settings.engine
    return dataclasses.replace(settings, engine=dataclasses.replace(
        engine,
        max_client_batch_size=max(engine.max_client_batch_size, SUB_REQUEST, chunk_rows),
        max_concurrent_requests=max(engine.max_concurrent_requests, 4 * chunk_rows),
    ))


class Worker:
    def __init__(self, settings: ModelSettings, options: JobOptions):
        from ..app import build_engine

        self.options = options
        self.engine = build_engine(settings)
        try:
            self._check()
        except InputError:
            self.engine.close()
            raise
        self.labels = self._labels()
        self._loop = asyncio.new_event_loop()

    def _check(self) -> None:
        """What would fail every row fails the job instead, at once, with one sentence."""
        spec, opts = self.engine.spec, self.options
        wanted = {"embed": ("embedding",), "openai": ("embedding",), "classify": ("classifier", "reranker"),
                  "rerank": ("reranker", "embedding")}[opts.task]
        if spec.kind not in wanted:
            raise InputError(f"--task {'embed' if opts.task == 'openai' else opts.task} needs a {' or '.join(wanted)}"
                             f" model; this model is `{spec.kind}`")
        size = self.engine.model.output_size
        if opts.dimensions is not None and not 0 < opts.dimensions <= size:
            raise InputError(f"--dimensions must be between 1 and the model's {size}")
        try:
            self.engine._prompt(opts.prompt_name)
        except EngineError as exc:
            raise InputError(exc.message.removeprefix("Input validation error: ")) from None

    def _labels(self) -> list[str]:
        id2label = self.engine.spec.id2label or {}
        return [id2label.get(str(i), str(i)) for i in range(max(1, self.engine.spec.num_labels))]

    def __call__(self, chunk: pa.Table) -> pa.Table:
        """Ray Data's entry point: synchronous, on the actor's own event loop."""
        return self._loop.run_until_complete(self.process(chunk))

    def close(self) -> None:
        self.engine.close()
        self._loop.close()

    async def process(self, chunk: pa.Table) -> pa.Table:
        n = chunk.num_rows
        errors: list[str | None] = chunk.column(INVALID).to_pylist()
        task = self.options.task
        if task == "openai":
            responses = await self._openai(chunk.column(REQUEST).to_pylist(), errors)
            return self._table(chunk, {RESPONSE: pa.array(responses, pa.string())}, errors)
        if task == "rerank":
            values = await self._rerank(chunk.column(QUERY).to_pylist(), chunk.column(DOCUMENT).to_pylist(), errors)
            return self._table(chunk, {SCORE: pa.array(_rows_or_null(values, errors, scalar=True), pa.float32())}, errors)
        texts = chunk.column(TEXT).to_pylist()
        for i, text in enumerate(texts):
            if errors[i] is None and not text.strip():
                errors[i] = "the text is empty"
        values = await self._map(texts, errors, self._call)
        if task == "classify":
            top = [None if e else self.labels[int(np.argmax(v))] for v, e in zip(values, errors)]
            return self._table(chunk, {
                LABEL: pa.array(top, pa.string()),
                SCORES: pa.array(_rows_or_null(values, errors), pa.list_(pa.float32())),
            }, errors)
        return self._table(chunk, {EMBEDDING: _float_lists(values, errors, n)}, errors)

    async def _call(self, texts: list[str]) -> np.ndarray:
        opts = self.options
        if opts.task == "classify":
            return (await self.engine.predict(texts, raw_scores=opts.raw_scores)).values
        result = await self.engine.embed(
            texts, prompt_name=opts.prompt_name, normalize=opts.normalize, dimensions=opts.dimensions
        )
        return result.values

    async def _map(self, texts: list, errors: list, call) -> list:
        """call(texts) -> one value per text, over the valid rows, shortest first in sub-requests. A
        sub-request that fails is retried row by row, so only the bad rows get an error."""
        todo = sorted((i for i, e in enumerate(errors) if e is None), key=lambda i: len(texts[i]))
        out: list = [None] * len(texts)
        # Sub-requests in flight stay within the engine's admission limit: Ray Data may hand one
        # call several chunks merged into one block, and the rows past the limit (the longest, last
        # in length order) were refused as "Model is overloaded" (20k texts: 3,616 rows lost).
        slots = asyncio.Semaphore(max(1, self.engine.config.max_concurrent_requests // SUB_REQUEST))

        async def run(idx: list[int]) -> None:
            try:
                async with slots:
                    values = await call([texts[i] for i in idx])
            except EngineError:
                if len(idx) == 1:
                    raise
                await asyncio.gather(*(run_one(i) for i in idx))
                return
            for i, v in zip(idx, values):
                out[i] = v

        async def run_one(i: int) -> None:
            try:
                await run([i])
            except EngineError as exc:
                errors[i] = exc.message

        await asyncio.gather(*(run_one(idx[0]) if len(idx) == 1 else run(idx)
                               for idx in _pieces(todo, SUB_REQUEST)))
        return out

    async def _rerank(self, queries: list, documents: list, errors: list) -> list:
        for i, (q, d) in enumerate(zip(queries, documents)):
            if errors[i] is None and not (q.strip() and d.strip()):
                errors[i] = "the query or the document is empty"
        # One engine call per query: its documents share the query's tokens and one response.
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(errors):
            if e is None:
                groups.setdefault(queries[i], []).append(i)
        out: list = [None] * len(queries)

        async def score(query: str, idx: list[int]) -> None:
            async def call(docs: list[str]) -> np.ndarray:
                return (await self.engine.rerank(query, docs, raw_scores=self.options.raw_scores)).values

            sub_errors = [None] * len(idx)
            values = await self._map([documents[i] for i in idx], sub_errors, call)
            for i, v, e in zip(idx, values, sub_errors):
                out[i], errors[i] = v, e

        await asyncio.gather(*(score(q, idx) for q, idx in groups.items()))
        return out

    async def _openai(self, requests: list, errors: list) -> list[str]:
        from .openai_batch import answer, waves

        out: list[str] = []
        # A request may carry many inputs: waves keep the items in flight within the engine's limit.
        for wave in waves(requests, errors, self.engine.config.max_concurrent_requests // 2):
            answers = await asyncio.gather(*(answer(self.engine, self.options.model_name, requests[i], errors[i])
                                             for i in wave))
            for i, (line, error) in zip(wave, answers):
                out.append(line)
                errors[i] = error  # counted in the summary; the line itself carries it for the user
        return out

    @staticmethod
    def _table(chunk: pa.Table, results: dict, errors: list) -> pa.Table:
        cols = {ROW: chunk.column(ROW)}
        if ID in chunk.column_names:
            cols[ID] = chunk.column(ID)
        cols.update(results)
        cols[ERROR] = pa.array(errors, pa.string())
        return pa.table(cols)


def _pieces(items: list, n: int) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _rows_or_null(values: list, errors: list, scalar: bool = False) -> list:
    if scalar:
        return [None if e else float(v) for v, e in zip(values, errors)]
    return [None if e else np.asarray(v, np.float32) for v, e in zip(values, errors)]


def _float_lists(values: list, errors: list, n: int) -> pa.Array:
    """float32 list column, built from one flat buffer (pa.array on a list of arrays is slow)."""
    good = [v for v, e in zip(values, errors) if e is None]
    width = len(good[0]) if good else 0
    flat = np.concatenate(good).astype(np.float32, copy=False) if good else np.empty(0, np.float32)
    offsets = np.zeros(n + 1, np.int32)
    lengths = np.array([0 if e else width for e in errors], np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = pa.array([e is not None for e in errors])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=mask)


def request_id() -> str:
    return uuid.uuid4().hex


def dumps(obj) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY).decode()
