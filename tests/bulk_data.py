"""A 2,000-row corpus for the bulk tests, written in every input format text-embeddings-batch reads."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from texts import TEXTS

ROWS = 2000


def corpus(rows: int = ROWS, seed: int = 13) -> list[str]:
    """Varied texts: one word to past the model's 256-token limit, unicode and punctuation included."""
    words = " ".join(TEXTS).split()
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        n = rng.choice([1, 3, 8, 20, 40, 90]) if i % 97 else 400
        out.append(f"{i}: " + " ".join(rng.choice(words) for _ in range(n)))
    return out


def write(path: Path, texts: list[str], ids: list | None = None, column: str = "text") -> Path:
    """texts (and an `id` column) in the format path's extension names."""
    rows = [{"id": i, column: t} if ids is not None else {column: t} for i, t in zip(ids or texts, texts)]
    ext = path.suffix
    if ext == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Small row groups: the reader must stitch chunks across them.
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=300)
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif ext == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif ext == ".txt":
        assert ids is None and all("\n" not in t for t in texts)
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    else:
        raise ValueError(ext)
    return path


def read_embeddings(path: Path):
    """(ids, [n, D] array, errors) from any output format."""
    import numpy as np

    if path.suffix == ".npy":
        values = np.load(path)
        return list(range(len(values))), values, None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    key = "id" if "id" in rows[0] else "row"
    ids = [r[key] for r in rows]
    errors = [r.get("error") for r in rows]
    width = len(next(r["embedding"] for r in rows if r["embedding"] is not None))
    values = np.array([r["embedding"] if r["embedding"] is not None else [np.nan] * width for r in rows], np.float32)
    return ids, values, errors
