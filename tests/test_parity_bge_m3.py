"""BGE-M3's three outputs from one model: dense (CLS), sparse lexical weights and ColBERT vectors,
against the computation FlagEmbedding's m3.py publishes, written plainly here over transformers
(FlagEmbedding 1.4.2 itself does not import under transformers 5: it needs the removed
`transformers.modeling_attn_mask_utils`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_util import engine_for, run
from texts import TEXTS
from tiny_late import build_bge_m3

TOL = 1e-4
# Repeated words: the sparse weight of an id is its max over occurrences, not the sum.
CASES = [*TEXTS[:6], "the the the cat sat on the mat the end", "a"]


@pytest.fixture(scope="module")
def m3(models_dir):
    return build_bge_m3(models_dir / "bge-m3", seed=11)


def _reference(folder):
    """FlagEmbedding's m3.py: dense = normalize(h[CLS]); sparse = relu(sparse_linear(h)), max per id,
    cls/eos/pad/unk ids and weights <= 0 dropped; colbert = normalize(colbert_linear(h[1:]))."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    sparse = torch.load(folder / "sparse_linear.pt", weights_only=True)
    colbert = torch.load(folder / "colbert_linear.pt", weights_only=True)
    unused = {tok.convert_tokens_to_ids(tok.special_tokens_map[t])
              for t in ("cls_token", "eos_token", "pad_token", "unk_token") if t in tok.special_tokens_map}
    out = []
    with torch.no_grad():
        for text in CASES:
            enc = tok(text, return_tensors="pt", truncation=True, max_length=model.config.max_position_embeddings - 2)
            h = model(**enc).last_hidden_state[0]
            weights = torch.relu(h @ sparse["weight"].T + sparse["bias"])[:, 0]
            lexical: dict[int, float] = {}
            for w, i in zip(weights.tolist(), enc["input_ids"][0].tolist()):
                if i not in unused and w > 0 and w > lexical.get(i, 0):
                    lexical[i] = w
            vecs = torch.nn.functional.normalize(h[1:] @ colbert["weight"].T + colbert["bias"], dim=-1)
            out.append((torch.nn.functional.normalize(h[0], dim=-1).numpy(), lexical, vecs.numpy()))
    return out


def _ours(folder, **settings):
    engine = engine_for(folder, **settings)
    try:
        dense = run(engine.embed(CASES)).values
        sparse = run(engine.embed_sparse(CASES)).values
        multi = run(engine.embed_multi_vector(CASES)).values
        alone = [run(engine.embed_multi_vector([t])).values[0] for t in CASES[:3]]
    finally:
        engine.close()
    return dense, sparse, multi, alone


def _check(ours, reference, tol=TOL):
    dense, sparse, multi, alone = ours
    for i, (ref_dense, ref_lexical, ref_vecs) in enumerate(reference):
        assert np.abs(dense[i] - ref_dense).max() <= tol
        indices, values = sparse[i]
        assert list(indices) == sorted(ref_lexical), f"sparse ids differ for {CASES[i]!r}"
        assert np.abs(values - np.asarray([ref_lexical[k] for k in sorted(ref_lexical)])).max(initial=0) <= tol
        assert multi[i].shape == ref_vecs.shape
        assert np.abs(multi[i] - ref_vecs).max() <= tol
    for i, vecs in enumerate(alone):  # batched with other lengths and alone: the same vectors
        assert np.abs(vecs - reference[i][2]).max() <= tol


def test_three_outputs_match_the_published_computation(m3):
    reference = _reference(m3)
    assert any(len(lex) for _, lex, _ in reference)
    _check(_ours(m3), reference)


def test_bf16_and_int8_run_near(m3):
    reference = _reference(m3)
    for dtype, bar in (("bfloat16", 0.999), ("int8", 0.99)):
        dense, sparse, multi, _ = _ours(m3, dtype=dtype)
        cos = [float(np.dot(dense[i], r[0])) for i, r in enumerate(reference)]
        assert min(cos) >= bar, dtype
        vec_cos = min(float((multi[i] * r[2]).sum(-1).min()) for i, r in enumerate(reference))
        assert vec_cos >= bar - 0.01, dtype


def test_pickles_are_loaded_as_tensors_only(models_dir):
    """A .pt head holding anything but tensors is refused at start-up, never unpickled freely."""
    from tei.app import StartupError

    folder = build_bge_m3(models_dir / "bge-m3-evil", seed=12)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled",))

    torch.save({"weight": torch.zeros(1, 64), "extra": Payload()}, folder / "sparse_linear.pt")
    with pytest.raises(StartupError, match="sparse_linear.pt|Unsupported|weights_only|global"):
        engine_for(folder)
