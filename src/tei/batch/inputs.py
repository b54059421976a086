"""Input files, read by extension, streamed in chunks of rows as Arrow tables.

Every chunk has the same internal columns, whatever the file format, so one worker (job.py) serves
the local runner and the Ray Data runner alike:

    ROW      int64   the row's position in the input (0-based): output order and resume key
    ID       any     the --id-column value, when the input has one
    TEXT     string  embed/classify: the text; rerank: QUERY and DOCUMENT instead;
                     OpenAI batch: REQUEST, the whole request line
    INVALID  string  why a row could not be read (bad JSON line, missing or non-string field)

A row that cannot be read never stops the job; a file or column that cannot be read at all is one
InputError sentence.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Iterator

import orjson
import pyarrow as pa

ROW, ID, TEXT, QUERY, DOCUMENT, REQUEST, INVALID = (
    "__row__", "__id__", "__text__", "__query__", "__document__", "__request__", "__invalid__",
)
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".txt": "txt"}


class InputError(ValueError):
    """The input cannot be read at all: one sentence for the user."""


@dataclasses.dataclass(frozen=True)
class Fields:
    """Which input columns feed the job, by task."""

    task: str = "embed"  # embed | classify | rerank | openai
    text: str = "text"
    query: str = "query"
    document: str = "document"
    id: str | None = None

    def payload(self) -> dict[str, str]:
        """Internal column -> input column."""
        if self.task == "rerank":
            return {QUERY: self.query, DOCUMENT: self.document}
        if self.task == "openai":
            return {}
        return {TEXT: self.text}


def input_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise InputError(f"{path}: unsupported input extension {ext or '(none)'}; use one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def is_openai_batch(path: str) -> bool:
    """An OpenAI batch file is JSON lines whose first record has `custom_id` and `body`."""
    if input_format(path) != "jsonl":
        return False
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    first = orjson.loads(line)
                except orjson.JSONDecodeError:
                    return False
                return isinstance(first, dict) and "custom_id" in first and "body" in first
    return False


class Source:
    """One input file. `chunks(n)` yields tables of n rows (the last may be shorter)."""

    def __init__(self, path: str, fields: Fields):
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
        self.path = path
        self.fields = fields
        self.format = input_format(path)
        if self.format == "txt" and fields.task == "rerank":
            raise InputError(f"{path}: a .txt file holds one text per line; rerank needs query and document columns")
        if self.format == "txt" and fields.id:
            raise InputError(f"{path}: a .txt file has no columns, so no --id-column")
        self.id_name = fields.id
        self._check_columns()

    # ---- size and columns -----------------------------------------------------------------

    def count_rows(self) -> int:
        """Rows in the file, for the progress bar's ETA (a line count for text formats)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        if self.format == "json":
            return len(self._json_records())
        count, last = 0, b"\n"
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
        count += last != b"\n"
        return max(0, count - (self.format == "csv"))

    def _wanted(self) -> list[str]:
        cols = list(self.fields.payload().values())
        if self.fields.task == "openai":
            cols = ["custom_id", "body"]
        return cols + ([self.fields.id] if self.fields.id else [])

    def _check_columns(self) -> None:
        if self.format == "txt":
            return
        names = self._column_names()
        if names is None:
            return
        missing = [c for c in self._wanted() if c not in names]
        if missing:
            raise InputError(
                f"{self.path}: column {', '.join(repr(c) for c in missing)} not found "
                f"(columns: {', '.join(names) or 'none'}); choose with --text-column / --id-column"
            )

    def _column_names(self) -> list[str] | None:
        """The file's columns; for JSON lines, the first record's keys."""
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                return pq.ParquetFile(self.path).schema_arrow.names
            if self.format == "csv":
                with open(self.path, newline="", encoding="utf-8") as f:
                    return next(csv.reader(f), [])
            if self.format == "json":
                first = next(iter(self._json_records()), None)
                return list(first) if isinstance(first, dict) else None
            with open(self.path, "rb") as f:
                for line in f:
                    if line.strip():
                        first = orjson.loads(line)
                        return list(first) if isinstance(first, dict) else None
        except (OSError, UnicodeDecodeError, orjson.JSONDecodeError, pa.ArrowException) as exc:
            raise InputError(f"{self.path}: cannot read it as {self.format}: {exc}") from None
        return []

    # ---- reading --------------------------------------------------------------------------

    def chunks(self, rows: int) -> Iterator[pa.Table]:
        reader = {
            "parquet": self._parquet, "jsonl": self._jsonl, "json": self._json, "csv": self._csv, "txt": self._txt,
        }[self.format]
        start = 0
        try:
            for records in reader(rows):
                yield self._table(start, records)
                start += len(records)
        except (OSError, UnicodeDecodeError, pa.ArrowException) as exc:
            raise InputError(f"{self.path}: cannot read it as {self.format}: {exc}") from None

    def _table(self, start: int, records: list[dict | str]) -> pa.Table:
        """Records (dicts, or a reason string for an unreadable row) -> the internal columns."""
        payload = self.fields.payload()
        cols: dict[str, list] = {ROW: list(range(start, start + len(records))), INVALID: []}
        for internal in payload:
            cols[internal] = []
        if self.fields.task == "openai":
            cols[REQUEST] = []
        ids = [] if self.id_name else None
        for rec in records:
            bad = rec if isinstance(rec, str) else None
            if ids is not None:
                ids.append(None if bad else rec.get(self.id_name))
            for internal, column in payload.items():
                value = None if bad else rec.get(column)
                if bad is None and not isinstance(value, str):
                    bad = f"`{column}` is missing" if value is None else f"`{column}` is not a string"
                cols[internal].append(value if isinstance(value, str) else None)
            if self.fields.task == "openai":
                cols[REQUEST].append(None if bad else orjson.dumps(rec).decode())
            cols[INVALID].append(bad)
        arrays = {k: pa.array(v, pa.int64() if k == ROW else pa.string()) for k, v in cols.items()}
        if ids is not None:
            arrays[ID] = _id_array(ids)
        return pa.table(arrays)

    def _parquet(self, rows: int) -> Iterator[list]:
        import pyarrow.parquet as pq

        # Row-group batches: only `rows` rows (plus one batch) are in memory at a time.
        columns = sorted(set(self._wanted()))
        buffer: list[dict] = []
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows, columns=columns):
            buffer.extend(batch.to_pylist())
            while len(buffer) >= rows:
                yield buffer[:rows]
                buffer = buffer[rows:]
        if buffer:
            yield buffer

    def _jsonl(self, rows: int) -> Iterator[list]:
        with open(self.path, "rb") as f:
            yield from _batched((_json_line(line) for line in f if line.strip()), rows)

    def _json_records(self) -> list:
        # A JSON array is parsed whole (JSON lines stream): use .jsonl for inputs larger than memory.
        with open(self.path, "rb") as f:
            head = f.read(1).lstrip()
            f.seek(0)
            if head == b"[":
                try:
                    data = orjson.loads(f.read())
                except orjson.JSONDecodeError as exc:
                    raise InputError(f"{self.path}: not valid JSON: {exc}") from None
                return data
            return [_json_line(line) for line in f if line.strip()]

    def _json(self, rows: int) -> Iterator[list]:
        records = [r if isinstance(r, (dict, str)) else "the row is not a JSON object" for r in self._json_records()]
        yield from _batched(iter(records), rows)

    def _csv(self, rows: int) -> Iterator[list]:
        with open(self.path, newline="", encoding="utf-8") as f:
            yield from _batched(iter(csv.DictReader(f)), rows)

    def _txt(self, rows: int) -> Iterator[list]:
        with io.open(self.path, encoding="utf-8", newline="\n") as f:
            lines = ({self.fields.text: line.rstrip("\r\n")} for line in f)
            yield from _batched(lines, rows)


def _json_line(line: bytes) -> dict | str:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"the line is not valid JSON: {exc}"
    return rec if isinstance(rec, dict) else "the line is not a JSON object"


def _batched(it: Iterator, n: int) -> Iterator[list]:
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _id_array(values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them all as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())
