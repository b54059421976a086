"""Per-token outputs beyond pooling: BGE-M3's sparse lexical weights and the multi-vector (ColBERT,
late-interaction) vectors of BGE-M3 and ColBERT models, both computed from the same forward pass
as the dense vector.

BGE-M3 (FlagEmbedding `BGEM3FlagModel`):
- sparse: relu(sparse_linear(h_t)) for every token, the max per token id, without the ids of the
  cls/eos/pad/unk tokens and without weights <= 0;
- ColBERT: colbert_linear(h_t) for every token but the first (CLS), each L2-normalised.
ColBERT (stanford-nlp `HF_ColBERT`, PyLate, sentence-transformers `MultiVectorEncoder`): a bias-free
projection of every token, L2-normalised; document tokens in the skiplist (punctuation) dropped.
"""
from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionPlan
from .attention.plan import _sdpa
from .batch import PackedBatch
from .layers import Linear

SPARSE = "sparse"  # the Batcher job kind of /embed_sparse on a BGE-M3 model
MULTI_VECTOR = "multi_vector"  # the Batcher job kind of /embed_multi_vector


@dataclasses.dataclass(frozen=True)
class MultiVectorSpec:
    """How a folder's multi-vector head is read and how its inputs are marked (spec.read_spec)."""

    style: str  # "bge-m3" | "colbert"
    head_path: Path | None  # a torch state dict (.pt, read weights_only) or safetensors; None: the encoder's checkpoint
    head_prefix: str = ""  # the projection's name in that file, before `weight` / `bias`
    skip_first: bool = False  # BGE-M3 drops the CLS vector
    query_marker: int | None = None  # token id inserted after the first token of a query
    document_marker: int | None = None
    query_length: int | None = None  # queries are padded with `expansion_id` up to this length
    query_fixed: bool = True  # and cut to it (sentence-transformers' "fixed" expansion; "min" does not cut)
    document_length: int | None = None
    expansion_id: int | None = None
    attend_expansion: bool = True  # whether the padding tokens of a query take part in attention as keys
    skiplist: tuple[int, ...] = ()  # document token ids whose vectors are dropped (punctuation)
    score: str = "sum"  # MaxSim over query vectors: "sum" (ColBERT) or "mean" (BGE-M3)
    # Text prompts of sentence-transformers multi-vector models, used when a request names none.
    query_prompt: str | None = None
    document_prompt: str | None = None


def read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """The heads BGE-M3 ships are pickled state dicts: load tensors only, never arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for anything but tensors
        raise ValueError(f"{path.name} cannot be read as tensors only (it is never unpickled freely): "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} is not a state dict of tensors")
    return state


def _projection(state: dict[str, torch.Tensor], prefix: str, dtype, device, source: str) -> Linear:
    weight, bias = state.get(prefix + "weight"), state.get(prefix + "bias")
    if weight is None:
        raise ValueError(f"{source} has no `{prefix}weight`")
    extra = sorted(set(state) - {prefix + "weight", prefix + "bias"})  # nothing loaded is left unused
    if extra:
        raise ValueError(f"{source} has tensor `{extra[0]}` that the multi-vector head does not use")
    to = dict(dtype=dtype, device=device)
    return Linear(weight.to(**to), None if bias is None else bias.to(**to))


class SparseHead(nn.Module):
    """BGE-M3's `sparse_linear.pt`: one weight per token, pooled by max per token id."""

    def __init__(self, path: Path, special_ids: set[int], dtype, device):
        super().__init__()
        self.linear = _projection(read_torch_state(path), "", dtype, device, path.name)
        if self.linear.out_features != 1:
            raise ValueError(f"{path.name} maps to {self.linear.out_features} values per token, not 1")
        self.special = torch.tensor(sorted(special_ids), dtype=torch.int64, device=device)

    def forward(self, hidden: torch.Tensor, batch: PackedBatch, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        tokens = int(batch.cu_seqlens[count])
        weights = torch.relu(self.linear(hidden[:tokens]).float()[:, 0])
        ids = batch.input_ids[:tokens]
        keep = (weights > 0) & ~torch.isin(ids, self.special)
        seq = torch.repeat_interleave(torch.arange(count, device=ids.device), torch.tensor(batch.lengths[:count],
                                                                                         device=ids.device))
        seq, ids, weights = seq[keep], ids[keep], weights[keep]
        # One (sequence, id) key per entry; unique sorts by sequence, then id: ascending indices.
        keys, inverse = torch.unique(seq * (int(ids.max()) + 1 if len(ids) else 1) + ids, return_inverse=True)
        maxima = torch.zeros(len(keys), dtype=torch.float32, device=ids.device)
        maxima.scatter_reduce_(0, inverse, weights, reduce="amax", include_self=False)
        width = int(ids.max()) + 1 if len(ids) else 1
        key_seq, key_id = (keys // width).cpu().numpy(), (keys % width).cpu().numpy()
        maxima = maxima.cpu().numpy()
        bounds = np.searchsorted(key_seq, np.arange(count + 1))
        return [(key_id[bounds[i]:bounds[i + 1]], maxima[bounds[i]:bounds[i + 1]]) for i in range(count)]


class MultiVectorHead(nn.Module):
    """A projection of every token, each vector L2-normalised; some tokens dropped as the model says."""

    def __init__(self, spec: MultiVectorSpec, state: dict[str, torch.Tensor], dtype, device):
        super().__init__()
        self.spec = spec
        source = spec.head_path.name if spec.head_path else "the checkpoint's multi-vector head"
        self.linear = _projection(state, spec.head_prefix, dtype, device, source)

    @property
    def dim(self) -> int:
        return self.linear.out_features

    def forward(self, hidden: torch.Tensor, batch: PackedBatch, count: int) -> list[np.ndarray]:
        """One [tokens, dim] array per sequence (the first token left out where the model drops it);
        documents' skiplist tokens are dropped by the caller, which knows queries from documents."""
        tokens = int(batch.cu_seqlens[count])
        vectors = F.normalize(self.linear(hidden[:tokens]).float(), dim=-1).cpu().numpy()
        first = 1 if self.spec.skip_first else 0
        ends = batch.cu_seqlens[: count + 1].tolist()
        return [vectors[ends[i] + first:ends[i + 1]] for i in range(count)]


def maxsim(query: np.ndarray, document: np.ndarray, score: str) -> float:
    """Late interaction: each query vector's best dot product over the document's vectors, summed
    (ColBERT) or averaged (BGE-M3's colbert_score)."""
    best = (query @ document.T).max(axis=1)
    return float(best.mean() if score == "mean" else best.sum())


def mark(ids: np.ndarray, type_ids: np.ndarray, spec: MultiVectorSpec, query: bool, limit: int):
    """A tokenized input as the model expects it: its marker after the first token, cut to its
    length (keeping the last token), and a query padded with expansion tokens. Returns the ids,
    the type ids and how many leading tokens attention may look at (None: all)."""
    marker = spec.query_marker if query else spec.document_marker
    if marker is not None:
        ids = np.concatenate([ids[:1], np.asarray([marker], dtype=ids.dtype), ids[1:]])
        type_ids = np.concatenate([type_ids[:1], type_ids[:1], type_ids[1:]])
    cap = (spec.query_length if spec.query_fixed else None) if query else spec.document_length
    length = min(limit, cap or limit)
    if len(ids) > length:
        ids = np.concatenate([ids[:length - 1], ids[-1:]])
        type_ids = type_ids[:length]
    attended = None
    if query and spec.query_length and spec.expansion_id is not None and len(ids) < spec.query_length:
        pad = spec.query_length - len(ids)
        if not spec.attend_expansion:
            attended = len(ids)
        ids = np.concatenate([ids, np.full(pad, spec.expansion_id, dtype=ids.dtype)])
        type_ids = np.concatenate([type_ids, np.zeros(pad, dtype=type_ids.dtype)])
    return ids, type_ids, attended


class ExpansionPlan(AttentionPlan):
    """SDPA per run of equal lengths, with each sequence's keys limited to its first
    `batch.attend[i]` tokens: a ColBERT query's expansion tokens get outputs of their own but no
    token attends to them (stanford ColBERT `attend_to_mask_tokens: false`, PyLate's
    `attend_to_expansion_tokens: false`)."""

    def __init__(self, batch: PackedBatch):
        super().__init__(batch, "sdpa")
        self._keys: dict[int, torch.Tensor] = {}

    def _key_mask(self, seq: int, count: int, length: int, device) -> torch.Tensor:
        mask = self._keys.get(seq)
        if mask is None:
            limits = [length if a is None else a for a in self.batch.attend[seq:seq + count]]
            limits = torch.tensor(limits, device=device)
            mask = self._keys[seq] = (torch.arange(length, device=device)[None, :] < limits[:, None])[:, None, None, :]
        return mask

    def attend(self, q, k, v, *, causal=False, window=None, bias=None, scale=None):
        total, heads, dim = q.shape
        out = q.new_empty(total, heads, dim)
        seq = 0
        for first, count, length in self.runs:
            rows = slice(first, first + count * length)
            keys = self._key_mask(seq, count, length, q.device)
            mask = self._mask(length, causal or False, window, bias, q)
            if mask is None and causal:
                mask = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
            if mask is None:
                mask = keys
            elif mask.dtype == torch.bool:
                mask = mask & keys
            else:
                mask = mask.masked_fill(~keys, float("-inf"))
            ctx = _sdpa(q[rows], k[rows], v[rows], count, length, False, mask, scale)
            out[rows].view(count, length, heads, dim).copy_(ctx)
            seq += count
        return out.view(total, heads * dim)


# ---- what a folder holds ------------------------------------------------------------------------------


def _json(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    return Tokenizer.from_file(str(path)) if path.is_file() else None


def _token_id(tok, token, what: str) -> int:
    if isinstance(token, int):
        return token
    token_id = tok.token_to_id(token) if tok is not None else None
    if token_id is None:
        raise ValueError(f"The {what} `{token}` is not in the tokenizer's vocabulary")
    return token_id


def _special(folder: Path, name: str):
    """A special token's text from special_tokens_map.json or tokenizer_config.json (as transformers reads it)."""
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        value = _json(folder / file).get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


# What transformers' tokenizer classes name these tokens when the files do not (XLM-R's, then BERT's).
_DEFAULT_SPECIALS = {"cls_token": ("<s>", "[CLS]"), "eos_token": ("</s>",), "pad_token": ("<pad>", "[PAD]"),
                     "unk_token": ("<unk>", "[UNK]")}


def sparse_special_ids(folder: Path) -> tuple[int, ...]:
    """FlagEmbedding drops the weights of the cls, eos, pad and unk tokens the tokenizer names."""
    tok = _tokenizer(folder)
    if tok is None:
        return ()
    ids = set()
    for name, defaults in _DEFAULT_SPECIALS.items():
        named = _special(folder, name)
        candidates = (named,) if named is not None else defaults
        ids.update(i for i in (tok.token_to_id(t) for t in candidates) if i is not None)
    return tuple(sorted(ids))


def detect(folder: Path, config: dict) -> MultiVectorSpec | None:
    """BGE-M3 (`colbert_linear.pt` at the root), stanford-nlp ColBERT (`HF_ColBERT` with
    `artifact.metadata`), or PyLate / sentence-transformers multi-vector folders."""
    if (folder / "colbert_linear.pt").is_file():
        return MultiVectorSpec("bge-m3", folder / "colbert_linear.pt", skip_first=True, score="mean")
    if "HF_ColBERT" in (config.get("architectures") or []):
        return _stanford(folder)
    st = _json(folder / "config_sentence_transformers.json")
    modules = _json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    if not isinstance(modules, list):
        return None
    if any(m.get("type", "").endswith("MultiVectorMask") for m in modules):
        return _sentence_transformers(folder, st, modules)
    if st.get("model_type") == "ColBERT" or "query_prefix" in st:
        return _pylate(folder, st, modules)
    return None


def _marker(tok, prefix: str | None):
    """A prefix that is one vocabulary token is inserted as that id (as PyLate and ColBERT do);
    any other prefix stays text, prepended like a prompt."""
    if not prefix:
        return None, None
    for candidate in (prefix, prefix.split(None, 1)[0] if prefix.split() else prefix):
        token_id = tok.token_to_id(candidate) if tok is not None else None
        if token_id is not None:
            return token_id, None
    return None, prefix


def _head_file(path: Path) -> Path:
    return path / "model.safetensors" if (path / "model.safetensors").is_file() else path / "pytorch_model.bin"


def _word_ids(tok, words) -> tuple[int, ...]:
    ids = {tok.encode(w, add_special_tokens=False).ids[0] for w in words or () if tok.encode(w, add_special_tokens=False).ids}
    return tuple(sorted(ids))


def _sentence_transformers(folder: Path, st: dict, modules: list) -> MultiVectorSpec:
    """A sentence-transformers 6 `MultiVectorEncoder`: Transformer (query expansion, document
    length), a token-level Dense, MultiVectorMask (skiplist), Normalize."""
    tok = _tokenizer(folder)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Dense", "MultiVectorMask", "Normalize"]:
        raise ValueError(f"A MultiVectorEncoder with modules {kinds} is not supported "
                         "(Transformer, Dense, MultiVectorMask, Normalize is)")
    transformer = _json(folder / modules[0].get("path", "") / "sentence_bert_config.json")
    mask = _json(folder / modules[2]["path"] / "config.json")
    if mask.get("keep_only_token_ids") or set(mask.get("skiplist_tasks") or ["document"]) != {"document"}:
        raise ValueError("MultiVectorMask with keep_only_token_ids or a query skiplist is not supported")
    expansion = transformer.get("query_expansion")
    if expansion is not None and expansion.get("strategy") not in ("fixed", "min"):
        raise ValueError(f"Query expansion strategy `{expansion.get('strategy')}` is not supported (fixed, min)")
    prompts = st.get("prompts") or {}
    expansion_token = (expansion or {}).get("token") or _special(folder, "mask_token") or _special(folder, "eos_token")
    return MultiVectorSpec(
        "colbert",
        head_path=_head_file(folder / modules[1]["path"]),
        head_prefix="linear.",
        query_length=int(expansion["length"]) if expansion else transformer.get("query_length"),
        query_fixed=expansion is None or expansion.get("strategy") == "fixed",
        document_length=transformer.get("document_length"),
        expansion_id=_token_id(tok, expansion_token, "expansion token") if expansion else None,
        attend_expansion=bool((expansion or {}).get("attend", False)),
        skiplist=_word_ids(tok, mask.get("skiplist_words")),
        score="mean" if st.get("similarity_fn_name") == "meanmaxsim" else "sum",
        query_prompt=prompts.get("query") or None,
        document_prompt=prompts.get("document") or None,
    )


def _stanford(folder: Path) -> MultiVectorSpec:
    meta = _json(folder / "artifact.metadata")
    tok = _tokenizer(folder)
    if meta.get("similarity", "cosine") != "cosine":
        raise ValueError(f"ColBERT similarity `{meta['similarity']}` is not supported (cosine is)")
    return MultiVectorSpec(
        "colbert",
        head_path=None,  # `linear.weight` lives in the encoder's own checkpoint
        head_prefix="linear.",
        query_marker=_token_id(tok, meta.get("query_token_id", "[unused0]"), "query marker"),
        document_marker=_token_id(tok, meta.get("doc_token_id", "[unused1]"), "document marker"),
        query_length=int(meta.get("query_maxlen", 32)),
        document_length=int(meta.get("doc_maxlen", 180)),
        expansion_id=_token_id(tok, _special(folder, "mask_token") or "[MASK]", "mask token"),
        attend_expansion=bool(meta.get("attend_to_mask_tokens", False)),
        skiplist=_word_ids(tok, string.punctuation) if meta.get("mask_punctuation", True) else (),
    )


def _pylate(folder: Path, st: dict, modules: list) -> MultiVectorSpec:
    """PyLate (≤ 3) ColBERT folders such as answerai-colbert-small: Transformer + a token-level Dense,
    the multi-vector settings at the top of config_sentence_transformers.json."""
    tok = _tokenizer(folder)
    dense = [m for m in modules if m.get("type", "").endswith("Dense")]
    if len(dense) != 1:
        raise ValueError(f"A ColBERT model with {len(dense)} Dense modules is not supported (one is)")
    query_marker, query_prompt = _marker(tok, st.get("query_prefix"))
    document_marker, document_prompt = _marker(tok, st.get("document_prefix"))
    expansion = st.get("do_query_expansion", True)
    return MultiVectorSpec(
        "colbert",
        head_path=_head_file(folder / dense[0]["path"]),
        head_prefix="linear.",
        query_marker=query_marker,
        document_marker=document_marker,
        query_length=int(st.get("query_length") or 32),
        document_length=int(st.get("document_length") or 0) or None,
        expansion_id=_token_id(tok, _special(folder, "mask_token") or "[MASK]", "mask token") if expansion else None,
        attend_expansion=bool(st.get("attend_to_expansion_tokens", False)),
        skiplist=_word_ids(tok, st.get("skiplist_words")),
        score="mean" if st.get("similarity_fn_name") == "meanmaxsim" else "sum",
        query_prompt=query_prompt,
        document_prompt=document_prompt,
    )
