"""Where results go: one parquet shard per finished chunk in `OUTPUT.parts/`, then the output file.

A shard is written to a temporary name and renamed, so a killed run leaves only whole shards;
`--resume` skips the chunks whose shard exists, if the manifest (input file, chunk size, model and
options) is the same. The final file is assembled from the shards in row order, one shard in memory
at a time, and the parts folder is removed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .inputs import ID, InputError, ROW
from .job import EMBEDDING, ERROR, RESPONSE

OUTPUTS = {".parquet": "parquet", ".jsonl": "jsonl", ".npy": "npy"}


def output_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUTS:
        raise InputError(f"{path}: unsupported output extension {ext or '(none)'}; use one of {', '.join(OUTPUTS)}")
    return OUTPUTS[ext]


class Parts:
    def __init__(self, output: str, manifest: dict, resume: bool):
        self.output = output
        self.dir = Path(output + ".parts")
        self.manifest = manifest
        out_dir = self.dir.parent
        if not out_dir.is_dir():
            raise InputError(f"{output}: folder {out_dir} does not exist")
        saved = self.dir / "manifest.json"
        if resume and saved.is_file():
            old = json.loads(saved.read_text())
            if old != manifest:
                changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
                raise InputError(f"cannot resume {output}: {', '.join(changed)} changed since the killed run; "
                                 "run without --resume to start over")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir()
            saved.write_text(json.dumps(manifest, indent=1))
        self.done = {int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.parquet")}

    def _path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:08d}.parquet"

    def write(self, index: int, table: pa.Table) -> None:
        tmp = self.dir / f".chunk-{index:08d}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self._path(index))
        self.done.add(index)

    def shards(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.parquet"))

    def finish(self, fmt: str, id_name: str | None) -> dict:
        """Assemble the output; returns {"rows", "errors"}."""
        shards = self.shards()
        tmp = self.output + ".tmp"
        counts = {"rows": 0, "errors": 0}
        writer = {"parquet": _write_parquet, "jsonl": _write_jsonl, "npy": _write_npy}[fmt]
        writer(tmp, shards, id_name or "row", counts)
        os.replace(tmp, self.output)
        shutil.rmtree(self.dir, ignore_errors=True)
        return counts


def _renamed(table: pa.Table, id_name: str, keep_row: bool = False) -> pa.Table:
    """Internal names -> output names: the id column under its input name, or `row`."""
    names = []
    for name in table.column_names:
        if name == ID:
            names.append(id_name)
        elif name == ROW:
            names.append("row" if keep_row or ID not in table.column_names else "__row__")
        else:
            names.append(name)
    table = table.rename_columns(names)
    return table.drop_columns(["__row__"]) if "__row__" in names else table


def _tables(shards: list[Path], id_name: str, counts: dict, keep_row: bool = False):
    for path in shards:
        table = pq.read_table(path)
        counts["rows"] += table.num_rows
        counts["errors"] += table.num_rows - table.column(ERROR).null_count
        yield _renamed(table, id_name, keep_row)


def _write_parquet(path: str, shards: list[Path], id_name: str, counts: dict) -> None:
    # Chunks may disagree on a type (an id column that is all null in one chunk): unify first.
    schemas = [pq.read_schema(p) for p in shards]
    schema = _renamed(pa.unify_schemas(schemas, promote_options="permissive").empty_table(), id_name).schema \
        if schemas else pa.schema([("row", pa.int64()), (EMBEDDING, pa.list_(pa.float32())), (ERROR, pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for table in _tables(shards, id_name, counts):
            writer.write_table(table.cast(schema))


def _write_jsonl(path: str, shards: list[Path], id_name: str, counts: dict) -> None:
    with open(path, "wb") as f:
        for table in _tables(shards, id_name, counts):
            if RESPONSE in table.column_names:  # an OpenAI batch: the answer lines as they are
                for line in table.column(RESPONSE).to_pylist():
                    f.write(line.encode() + b"\n")
                continue
            for row in table.to_pylist():
                if row[ERROR] is None:
                    del row[ERROR]
                f.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def _write_npy(path: str, shards: list[Path], id_name: str, counts: dict) -> None:
    """A [rows, dim] float32 .npy; a failed row is NaN, and `OUTPUT.errors.jsonl` says why (by row
    number, and id when there is one)."""
    rows = sum(pq.read_metadata(p).num_rows for p in shards)
    width = 0
    for p in shards:
        col = pq.read_table(p, columns=[EMBEDDING]).column(EMBEDDING).drop_null()
        if len(col):
            width = len(col[0])
            break
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    errors_path = os.path.splitext(path.removesuffix(".tmp"))[0] + ".errors.jsonl"
    start = 0
    with open(errors_path, "wb") as errs:
        for table in _tables(shards, id_name, counts, keep_row=True):
            n = table.num_rows
            block = out[start : start + n]
            block[:] = np.nan
            col = table.column(EMBEDDING).combine_chunks()
            good = ~np.asarray(col.is_null())
            if good.any():
                block[good] = col.drop_null().flatten().to_numpy().reshape(-1, width)
            for row in table.drop_columns([EMBEDDING]).to_pylist():
                if row[ERROR] is not None:
                    errs.write(orjson.dumps(row) + b"\n")
            start += n
    out.flush()
    del out
    if counts["errors"] == 0:
        os.remove(errors_path)
