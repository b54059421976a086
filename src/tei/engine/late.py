"""Engine operations beyond TEI's: multi-vector (ColBERT) embeddings and MaxSim reranking, BGE-M3's
sparse lexical weights, and --auto-chunk (inputs longer than the model, windowed and pooled back).

A mixin of engine.Engine: it uses the Engine's admission, tokenization and batcher (`_run`), and
only reshapes what goes in (markers, query expansion, windows) and what comes out.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import metrics
from ..models import late
from .batcher import EMBED
from .errors import EmptyInput, WrongModelType
from .tokenization import Encoded, TokenizeOptions

# Windows of --auto-chunk overlap by this fraction of their length, so no token is embedded
# only at the very edge of a window.
CHUNK_OVERLAP = 0.25


class LateInteraction:
    """Mixed into Engine (which provides spec, model, config, tokenizers, _run, _check_batch, ...)."""

    # ---- capabilities ---------------------------------------------------------------------------

    @property
    def multi_vector(self) -> late.MultiVectorSpec | None:
        return self.spec.multi_vector if self.spec.kind == "embedding" else None

    @property
    def lexical(self) -> bool:
        """BGE-M3's sparse head answers /embed_sparse."""
        return self.spec.kind == "embedding" and self.spec.sparse_head is not None

    @property
    def maxsim_rerank(self) -> bool:
        """ColBERT models rank by late interaction; BGE-M3 keeps TEI's dense cosine."""
        return self.multi_vector is not None and self.multi_vector.style == "colbert"

    # ---- multi-vector ---------------------------------------------------------------------------

    @metrics.metered("inputs")
    async def embed_multi_vector(self, inputs, truncate=None, truncation_direction: str = "right",
                                 prompt_name=None, is_query: bool = False):
        """One [tokens, dim] float32 array per input (queries marked and expanded as the model defines)."""
        if self.multi_vector is None:
            raise WrongModelType("Model has no multi-vector (ColBERT) head")
        self._check_batch(len(inputs))
        opts = TokenizeOptions(self._truncate(truncate), truncation_direction, self._prompt(prompt_name))
        return await self._multi_vectors(inputs, opts, [is_query] * len(inputs))

    async def _multi_vectors(self, inputs, opts: TokenizeOptions, queries: list[bool]):
        spec = self.multi_vector
        if opts.prompt is None and (spec.query_prompt or spec.document_prompt):
            # sentence-transformers' encode_query / encode_document prompts, per role
            inputs = [(((spec.query_prompt if q else spec.document_prompt) or "") + x) if isinstance(x, str) else x
                      for x, q in zip(inputs, queries)]
        skip = np.asarray(spec.skiplist, dtype=np.int64)
        marked: list[Encoded] = []

        def expand(encoded: list[Encoded]):
            for e, query in zip(encoded, queries):
                ids, type_ids, attend = late.mark(e.ids, e.type_ids, spec, query, self.max_input_length)
                marked.append(Encoded(ids, type_ids, e.chars, attend))
            return marked, finish

        def finish(vectors: list[np.ndarray]) -> list[np.ndarray]:
            if not len(skip):
                return vectors
            out = []
            for v, e, query in zip(vectors, marked, queries):
                ids = e.ids[1:] if spec.skip_first else e.ids
                out.append(v if query else v[~np.isin(ids, skip)])
            return out

        return await self._run(late.MULTI_VECTOR, inputs, opts, expand=expand)

    async def _maxsim(self, query: str, texts, truncate, truncation_direction: str):
        if not query:
            raise EmptyInput("`query` cannot be empty")
        opts = TokenizeOptions(self._truncate(truncate), truncation_direction, self.default_prompt)
        result = await self._multi_vectors([query, *texts], opts, [True] + [False] * len(texts))
        q, *docs = result.values
        result.values = np.asarray([late.maxsim(q, d, self.multi_vector.score) for d in docs], dtype=np.float32)
        return result

    # ---- BGE-M3 sparse --------------------------------------------------------------------------

    async def _lexical_weights(self, inputs, truncate, truncation_direction: str, prompt_name):
        self._check_batch(len(inputs))
        opts = TokenizeOptions(self._truncate(truncate), truncation_direction, self._prompt(prompt_name))
        return await self._run(late.SPARSE, inputs, opts)

    # ---- --auto-chunk ---------------------------------------------------------------------------

    @functools.cached_property
    def _special_layout(self) -> tuple[int, int]:
        """How many special tokens the tokenizer puts before and after a text ([CLS] … [SEP]: 1, 1)."""
        tok = self.tokenizers.main
        full, bare = tok.encode("a").ids, tok.encode("a", add_special_tokens=False).ids
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                return start, len(full) - start - len(bare)
        return 0, 0

    def windows(self, e: Encoded) -> list[Encoded]:
        """An over-long encoding as overlapping windows of at most max_input_length tokens, each
        wrapped in the tokenizer's own special tokens (a CLS-pooled model sees a CLS in each)."""
        limit = self.max_input_length
        if len(e.ids) <= limit:
            return [e]
        before, after = self._special_layout
        body = slice(before, len(e.ids) - after)
        ids, type_ids = e.ids[body], e.type_ids[body]
        width = limit - before - after
        stride = max(1, width - int(width * CHUNK_OVERLAP))
        out = []
        for start in range(0, len(ids), stride):
            window = slice(start, start + width)
            out.append(Encoded(
                np.concatenate([e.ids[:before], ids[window], e.ids[len(e.ids) - after:]]),
                np.concatenate([e.type_ids[:before], type_ids[window], e.type_ids[len(e.ids) - after:]]),
                e.chars,
            ))
            if start + width >= len(ids):
                break
        return out

    async def _chunked_embed(self, inputs, truncation_direction: str, prompt_name):
        """/embed with --auto-chunk: each window embedded in the same batches as everything else, then
        each input's windows averaged, weighted by their token counts (normalized by the caller)."""
        self._check_batch(len(inputs))
        # The model's limit no longer applies: the character limit still bounds an input.
        opts = TokenizeOptions(False, truncation_direction, self._prompt(prompt_name),
                               limit=self.tokenizers.max_chars)
        groups: list[list[int]] = []

        def expand(encoded: list[Encoded]):
            work: list[Encoded] = []
            for e in encoded:
                parts = self.windows(e)
                groups.append([len(p.ids) for p in parts])
                work.extend(parts)
            return work, finish

        def finish(vectors: np.ndarray) -> np.ndarray:
            out, row = np.empty((len(groups), vectors.shape[1]), dtype=np.float32), 0
            for i, weights in enumerate(groups):
                w = np.asarray(weights, dtype=np.float64)[:, None]
                out[i] = (vectors[row:row + len(weights)] * w).sum(0) / w.sum()
                row += len(weights)
            return out

        return await self._run(EMBED, inputs, opts, expand=expand)
