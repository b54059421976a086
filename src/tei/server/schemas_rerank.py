"""Request bodies of /rerank (TEI's and Cohere/Jina's, told apart by the body) and /predict.

Unknown fields are ignored (pydantic's default): FastGPT admins add arbitrary ones, and the Cohere
SDKs send `rank_fields`, `max_chunks_per_doc`, `max_tokens_per_doc` or `priority`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

from pydantic import Field, PrivateAttr, StrictInt, model_validator

from .schemas import Body, Direction

TEI, COHERE = "tei", "cohere"


class TextObject(Body):
    """Jina's `{"text": ...}` query form."""

    text: str


# A Cohere v1 document may be an object: `text` (or the `rank_fields`) is ranked, the rest echoed back.
Document = Union[str, Dict[str, Any]]


class RerankRequest(Body):
    query: Union[str, TextObject]
    texts: Optional[List[str]] = None  # TEI: answered with a bare list
    documents: Optional[List[Document]] = None  # Cohere/Jina: answered with {"results": ...}
    model: Optional[str] = None
    top_n: Optional[int] = Field(default=None, ge=0)  # None and 0 both mean every document
    return_documents: Optional[bool] = None
    return_text: Optional[bool] = None
    rank_fields: Optional[List[str]] = None
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    raw_scores: bool = False
    instruction: Optional[str] = None  # LLM rerankers (Qwen3-Reranker): the task, in place of the default

    _texts: List[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _one_dialect(self):
        if self.texts is None and self.documents is None:
            raise ValueError("`documents` (Cohere/Jina) or `texts` (TEI) is required")
        if self.texts is not None and self.documents is not None:
            raise ValueError("send `documents` (Cohere/Jina) or `texts` (TEI), not both")
        if self.texts is not None:
            self._texts = self.texts
        else:
            self._texts = [_document_text(doc, i, self.rank_fields) for i, doc in enumerate(self.documents)]
        return self

    @property
    def dialect(self) -> str:
        return TEI if self.texts is not None else COHERE

    @property
    def query_text(self) -> str:
        return self.query if isinstance(self.query, str) else self.query.text

    @property
    def document_texts(self) -> List[str]:
        """What is ranked: strings as given; objects by their `text`, or by `rank_fields` when named."""
        return self._texts

    @property
    def want_text(self) -> bool:
        # Either flag asks for the text back, whichever dialect the body speaks.
        return bool(self.return_documents or self.return_text)


def _document_text(doc: Document, index: int, rank_fields: Optional[List[str]]) -> str:
    if isinstance(doc, str):
        return doc
    if rank_fields:
        # Cohere ranks the named fields in order; written as `key: value` lines, as it recommends YAML.
        parts = [f"{key}: {_as_text(doc[key])}" for key in rank_fields if key in doc]
        if not parts:
            raise ValueError(f"`documents[{index}]` has none of the `rank_fields` {rank_fields}")
        return "\n".join(parts)
    text = doc.get("text")
    if not isinstance(text, str):
        raise ValueError(f"`documents[{index}]` must be a string or an object with a string `text`")
    return text


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# /predict: one sequence is a text or a (text, text_pair); `["a", "b"]` is ONE pair, not a batch.
Sequence = Union[str, Tuple[str, str], List[int]]
PredictInputs = Union[str, List[Union[str, StrictInt, List[Union[str, StrictInt]]]]]


class PredictRequest(Body):
    inputs: PredictInputs
    truncate: Optional[bool] = None
    truncation_direction: Direction = "right"
    raw_scores: bool = False

    _sequences: List[Sequence] = PrivateAttr(default_factory=list)
    _batch: bool = PrivateAttr(default=False)

    @model_validator(mode="after")
    def _parse(self):
        self._sequences, self._batch = predict_sequences(self.inputs)
        return self

    @property
    def sequences(self) -> List[Sequence]:
        return self._sequences

    @property
    def is_batch(self) -> bool:
        """A batch is answered with a list of lists, a single input with one flat list."""
        return self._batch


_PREDICT_SHAPES = (
    "`inputs` must be a string, a pair of strings [string, string], token ids [int, ...], "
    "or a batch of strings, pairs and token ids [[string], [string, string], [int, ...], ...]"
)


def predict_sequences(value) -> tuple[list[Sequence], bool]:
    """TEI's hand-written PredictInput parser: a string, `[a]`, `[a, b]`, ids, or a batch of those."""
    if isinstance(value, str):
        return [value], False
    if not value:
        raise ValueError("`inputs` cannot be empty")
    if all(isinstance(x, str) for x in value):
        return [_sequence(value)], False
    if all(isinstance(x, int) for x in value):
        return [list(value)], False
    if all(isinstance(x, list) for x in value):
        return [_sequence(x) for x in value], True
    raise ValueError(_PREDICT_SHAPES)


def _sequence(items: list) -> Sequence:
    if items and all(isinstance(x, int) for x in items):
        return list(items)
    if not all(isinstance(x, str) for x in items):
        raise ValueError(_PREDICT_SHAPES)
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return (items[0], items[1])
    raise ValueError(f"a sequence is one string or a pair of strings, got {len(items)} items: {_PREDICT_SHAPES}")
