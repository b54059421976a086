"""Run by test_parity_pylate with a Python that has PyLate (PYLATE_PYTHON: PyLate pins
sentence-transformers 5.3 and transformers <= 5.3, so it cannot share the test environment).

Builds a ColBERT with PyLate itself from a plain transformers encoder folder, saves it with
`ColBERT.save`, loads the saved folder back with PyLate and encodes the queries (is_query=True)
and the documents (is_query=False); writes the vectors to an .npz and what PyLate resolved to a .json.

    python pylate_reference.py job.json
job.json: {"base": folder, "out": folder, "npz": file, "seed": int, "kwargs": {ColBERT kwargs},
           "queries": [...], "documents": [...]}
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch


def main(job_path: str) -> None:
    from pylate import models

    job = json.loads(open(job_path, encoding="utf-8").read())
    torch.manual_seed(job["seed"])  # PyLate initialises the new Dense layer and prefix embeddings at random
    model = models.ColBERT(model_name_or_path=job["base"], device="cpu", **job["kwargs"])
    model.save(job["out"])
    model = models.ColBERT(model_name_or_path=job["out"], device="cpu")
    queries = model.encode(job["queries"], is_query=True, batch_size=2, convert_to_numpy=True)
    documents = model.encode(job["documents"], is_query=False, batch_size=3, convert_to_numpy=True)
    arrays = {f"q{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(queries)}
    arrays.update({f"d{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(documents)})
    np.savez(job["npz"], **arrays)
    resolved = {"query_prefix_id": model.query_prefix_id, "document_prefix_id": model.document_prefix_id,
                "pad_token_id": model.tokenizer.pad_token_id, "skiplist": sorted(set(model.skiplist)),
                "query_length": model.query_length, "document_length": model.document_length,
                "attend_to_expansion_tokens": model.attend_to_expansion_tokens,
                "modules": [type(m).__name__ for m in model]}
    with open(job["npz"] + ".json", "w", encoding="utf-8") as f:
        json.dump(resolved, f)


if __name__ == "__main__":
    main(sys.argv[1])
