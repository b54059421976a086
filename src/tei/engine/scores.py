"""Logits → the scores TEI reports, and the high-to-low order every rerank dialect returns."""
from __future__ import annotations

import numpy as np


def activate(logits: np.ndarray, raw: bool) -> np.ndarray:
    """[n, C] logits → sigmoid for one label, softmax for several, untouched when `raw`."""
    logits = np.asarray(logits, dtype=np.float32)
    if raw:
        return logits
    if logits.shape[1] == 1:
        # exp of a large positive logit overflows float32; the two-sided form never does
        e = np.exp(-np.abs(logits))
        return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def ranking(scores: np.ndarray, top_n: int | None = None) -> np.ndarray:
    """Indices by score, highest first; ties keep input order. `top_n` of None or 0 keeps all."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:top_n] if top_n else order
