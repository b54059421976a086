"""PyLate ColBERT folders (GTE-ModernColBERT, answerai-colbert-small as PyLate saves them):

- against PyLate itself: a tiny ColBERT built, saved and reloaded by PyLate, encoded with
  `encode(is_query=True/False)` (pylate_reference.py, run by the Python named by PYLATE_PYTHON,
  default /tmp/pylate-venv/bin/python: PyLate pins sentence-transformers 5.3 and transformers
  <= 5.3, so it cannot live in this environment; skipped when that Python is absent);
- always: folders written by hand in PyLate's layout (tiny_colbert.build_pylate_by_hand: Dense
  chains with a residual, prefixes in or out of the vocabulary, the max_seq_length PyLate leaves
  behind), against the computation written below from pylate/models/colbert.py (`tokenize`,
  `encode`) and Dense.py, over the transformers encoder.
"""
from __future__ import annotations

import inspect
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_util import late_outputs
from texts import TEXTS
from tiny_colbert import build_pylate_by_hand, build_xlmr_encoder
from tiny_models import build_hf_encoder

COS_BAR = 0.99999
TOL = 1e-4
QUERIES = ["what is the capital of France?", "deep learning", "a", " ".join(["retrieval"] * 30)]
DOCS = [*TEXTS[:6], "Paris is the capital, and largest city, of France.", "odd (symbols) | here: a|b ~ c"]
PYLATE_PYTHON = os.environ.get("PYLATE_PYTHON", "/tmp/pylate-venv/bin/python")


def _close(ours, ref):
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape, (o.shape, r.shape)
        cos = (o * r).sum(-1) / np.linalg.norm(o, axis=-1) / np.linalg.norm(r, axis=-1)
        assert cos.min() >= COS_BAR
        assert np.abs(o - r).max() <= TOL


def _check(folder, ref_q, ref_d):
    q, d, alone, scores = late_outputs(folder, QUERIES, DOCS)
    _close(q, ref_q)
    _close(d, ref_d)
    _close(alone, ref_d[-2:])
    expected = np.asarray([(ref_q[0] @ r.T).max(1).sum() for r in ref_d])  # PyLate's colbert_scores
    assert np.abs(scores - expected).max() <= TOL * len(ref_q[0])
    assert list(np.argsort(-scores)) == list(np.argsort(-expected))


# ---- the published computation -------------------------------------------------------------------


def _dense_chain(folder: Path):
    from safetensors.torch import load_file

    modules = json.loads((folder / "modules.json").read_text())
    layers = []
    for m in modules[1:]:
        cfg = json.loads((folder / m["path"] / "config.json").read_text())
        assert cfg["activation_function"].endswith("Identity")
        layers.append((load_file(str(folder / m["path"] / "model.safetensors")), cfg["use_residual"]))

    def apply(x):
        for state, residual in layers:
            y = x @ state["linear.weight"].double().T
            if "linear.bias" in state:
                y = y + state["linear.bias"].double()
            if residual:
                y = y + (x if "residual.weight" not in state else x @ state["residual.weight"].double().T)
            x = y
        return x
    return apply


def pylate_formula(folder: Path, texts: list[str], is_query: bool) -> list[np.ndarray]:
    """ColBERT.tokenize + ColBERT.encode: the prefix as `convert_tokens_to_ids` after the first
    token of a text cut to length - 1; queries padded to that length with the mask token (PyLate
    makes it the pad token), attention to it only with attend_to_expansion_tokens; Dense layers;
    documents' skiplist (`convert_tokens_to_ids` of each word) and padding dropped; L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    prefix = st["query_prefix" if is_query else "document_prefix"]
    prefix_id = tok.convert_tokens_to_ids(prefix) if prefix else None
    length = st["query_length" if is_query else "document_length"]
    expansion = is_query and st["do_query_expansion"]
    pad_id = tok.mask_token_id
    enc = tok(texts, truncation=True, max_length=length - 1 if prefix_id is not None else length,
              padding="max_length" if expansion else "longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids[mask == 0] = pad_id
    types = enc.get("token_type_ids")
    if prefix_id is not None:
        def insert(t, value):
            return torch.cat([t[:, :1], torch.full((len(t), 1), value, dtype=t.dtype), t[:, 1:]], 1)
        ids, mask = insert(ids, prefix_id), insert(mask, 1)
        types = None if types is None else insert(types, 0)
    if expansion and st["attend_to_expansion_tokens"]:
        mask = torch.ones_like(mask)
    # sentence-transformers' Transformer passes only what the model's forward takes (ModernBERT: no types)
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    kwargs = {"token_type_ids": types} if types is not None and takes_types else {}
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state.double()
    vectors = _dense_chain(folder)(hidden)
    if is_query:
        keep = torch.ones_like(ids, dtype=torch.bool) if expansion else mask.bool()
    else:
        skip = torch.tensor([tok.convert_tokens_to_ids(w) for w in st["skiplist_words"]])
        keep = mask.bool() & ~torch.isin(ids, skip)
    return [torch.nn.functional.normalize(v[k], dim=-1).numpy() for v, k in zip(vectors, keep)]


HAND = {
    "default": dict(),
    "attend": dict(settings={"attend_to_expansion_tokens": True}),
    "no-expansion": dict(settings={"do_query_expansion": False}),
    # a skiplist word that is no token: PyLate's convert_tokens_to_ids gives [UNK], which it then skips
    "unknown-skiplist-word": dict(settings={"skiplist_words": [*string.punctuation, "NOT-A-TOKEN"]}),
    # prefixes PyLate could not add to the vocabulary: it inserts [UNK] for them
    "prefixes-not-in-vocab": dict(settings={"query_prefix": "[QRY] ", "document_prefix": "[DOC] "},
                                  add_prefixes=False),
    "one-dense-no-residual": dict(dims=(24,), residual=False),
    "modernbert": dict(backbone="modernbert", dims=(24,), residual=False),  # GTE-ModernColBERT's shape
    "modernbert-attend": dict(backbone="modernbert", settings={"attend_to_expansion_tokens": True}),
}


@pytest.mark.parametrize("variant", list(HAND))
def test_pylate_layout_against_the_published_computation(models_dir, variant):
    folder = build_pylate_by_hand(models_dir / f"pylate-hand-{variant}", seed=71, **HAND[variant])
    _check(folder, pylate_formula(folder, QUERIES, True), pylate_formula(folder, DOCS, False))


def test_pylate_spec_reading(models_dir):
    """What the spec resolves, named: the trap values are the point (max_seq_length 31 left by PyLate
    does not cut documents; [UNK] skiplisted; the prefixes are the added tokens)."""
    from tokenizers import Tokenizer

    from tei.models.spec import read_spec

    folder = build_pylate_by_hand(models_dir / "pylate-hand-spec", seed=72,
                                  settings={"skiplist_words": [*string.punctuation, "NOT-A-TOKEN"]})
    spec = read_spec(folder)
    mv, tok = spec.multi_vector, Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert mv.source == "pylate" and len(mv.layers) == 2 and mv.layers[0].residual
    assert (mv.query_marker, mv.document_marker) == (tok.token_to_id("[Q] "), tok.token_to_id("[D] "))
    assert mv.expansion_id == tok.token_to_id("[MASK]") and not mv.attend_expansion
    assert tok.token_to_id("[UNK]") in mv.skiplist
    assert spec.max_input_length > 31 and mv.document_length == 40


# ---- PyLate itself ----------------------------------------------------------------------------------


def _pylate_available() -> bool:
    if not Path(PYLATE_PYTHON).is_file():
        return False
    probe = subprocess.run([PYLATE_PYTHON, "-c", "import pylate.models"], capture_output=True, timeout=300)
    return probe.returncode == 0


needs_pylate = pytest.mark.skipif(not _pylate_available(), reason=f"no PyLate at PYLATE_PYTHON={PYLATE_PYTHON}")

REAL = {
    "bert": dict(query_length=16, document_length=40, attend_to_expansion_tokens=False),
    "bert-attend": dict(query_length=16, document_length=40, attend_to_expansion_tokens=True),
    "xlmr": dict(query_length=16, document_length=40),
}


@needs_pylate
@pytest.mark.parametrize("variant", list(REAL))
def test_against_pylate(models_dir, tmp_path, variant):
    from tei.models.spec import read_spec

    base = (build_xlmr_encoder(models_dir / "pylate-base-xlmr", QUERIES + DOCS, seed=73) if variant == "xlmr"
            else build_hf_encoder(models_dir / f"pylate-base-{variant}", "bert", seed=74))
    out = models_dir / f"pylate-real-{variant}"
    job = {"base": str(base), "out": str(out), "npz": str(tmp_path / "ref.npz"), "seed": 75,
           "kwargs": {"embedding_size": 24, **REAL[variant]}, "queries": QUERIES, "documents": DOCS}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([PYLATE_PYTHON, str(Path(__file__).with_name("pylate_reference.py")),
                           str(tmp_path / "job.json")], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ref = np.load(job["npz"])
    resolved = json.loads(Path(job["npz"] + ".json").read_text())
    mv = read_spec(out).multi_vector
    assert (mv.query_marker, mv.document_marker) == (resolved["query_prefix_id"], resolved["document_prefix_id"])
    assert mv.expansion_id == resolved["pad_token_id"] and sorted(mv.skiplist) == resolved["skiplist"]
    assert mv.attend_expansion == resolved["attend_to_expansion_tokens"]
    _check(out, [ref[f"q{i}"] for i in range(len(QUERIES))], [ref[f"d{i}"] for i in range(len(DOCS))])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
