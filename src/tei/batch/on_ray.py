"""The Ray Data runner: the same chunks and the same Worker as the local runner, on an actor pool.

The input is read by one streaming read task that yields our own chunks (inputs.py), so every
format and every per-row error is exactly as local; chunks already done are skipped there for
--resume. `map_batches` runs Worker over an ActorPoolStrategy pool, one Engine per actor, on
batches of at most --chunk-rows rows (Ray Data re-blocks what the read yields, so a batch may
straddle two chunks), and the driver cuts the results back into chunks by row number and writes
each finished chunk's shard as results stream back in input order."""
from __future__ import annotations

from .inputs import ROW
from .job import Worker
from .plan import Plan


def run_on_ray(plan: Plan, actors: int | None, cpus_per_actor: float, gpus_per_actor: float) -> str:
    from ..ray.cluster import connect
    import ray

    started = connect()
    try:
        total_cpus = ray.cluster_resources().get("CPU", 1)
        if actors is None:
            # One CPU stays free for the read task: with every CPU held by actors, Ray Data
            # cannot schedule the read and the job hangs (ray#44687).
            actors = max(1, int((total_cpus - 1) // max(cpus_per_actor, 1e-9)))
        return _run(plan, actors, cpus_per_actor, gpus_per_actor)
    finally:
        if started:
            ray.shutdown()


def _datasource(plan: Plan):
    """Source.chunks() as a Ray Data datasource: one read task that streams them."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    source, rows, done = plan.source, plan.chunk_rows, set(plan.parts.done)

    def read():
        for index, chunk in enumerate(source.chunks(rows)):
            if index not in done:
                yield chunk

    class ChunksDatasource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(source.path,))
            return [ReadTask(read, meta)]

    return ChunksDatasource()


class RayWorker(Worker):
    def __init__(self, settings, options):
        from ..ray.cluster import use_assigned_cpus

        use_assigned_cpus()
        super().__init__(settings, options)


def _run(plan: Plan, actors: int, cpus_per_actor: float, gpus_per_actor: float) -> str:
    import pyarrow as pa
    import ray.data
    from ray.data import ActorPoolStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards are cut from rows as they come back
    ctx.enable_progress_bars = False  # ours counts texts; Ray's count blocks
    ctx.print_on_execution_start = False
    settings = plan.engine_settings
    ds = ray.data.read_datasource(_datasource(plan), override_num_blocks=1)
    ds = ds.map_batches(
        RayWorker,
        fn_constructor_args=(settings, plan.options),
        # Never more than a chunk at once, which is what the engine's limits are sized for
        # (job.engine_settings). The chunks the read yields do not reach the actor one by one:
        # with batch_size=None Ray Data 2.60 handed a whole 2,000-row file (20 chunks) to one
        # call, and the rows past the item limit came back "Model is overloaded".
        batch_size=plan.chunk_rows,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    progress = plan.progress()
    progress.skip(_done_rows(plan))
    current, pieces = None, []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = batch.column(ROW)
        # A batch may hold the tail of one chunk and the head of the next.
        chunk_of = rows.to_numpy() // plan.chunk_rows
        for index in sorted(set(chunk_of.tolist())):
            part = batch.filter(pa.array(chunk_of == index))
            if current is not None and index != current:
                _flush(plan, current, pieces)
                pieces = []
            current = index
            pieces.append(part)
            progress.advance(part.num_rows)
    if current is not None:
        _flush(plan, current, pieces)
    return plan.finish(progress)


def _flush(plan: Plan, index: int, pieces: list) -> None:
    import pyarrow as pa

    plan.parts.write(index, pa.concat_tables(pieces))


def _done_rows(plan: Plan) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in plan.parts.shards())

