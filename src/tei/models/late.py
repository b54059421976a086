"""Per-token outputs beyond pooling: BGE-M3's sparse lexical weights and the multi-vector (ColBERT,
late-interaction) vectors of BGE-M3 and ColBERT models, both computed from the same forward pass
as the dense vector. What a folder holds (which layout, which markers) is read by late_layouts.

BGE-M3 (FlagEmbedding `BGEM3FlagModel`):
- sparse: relu(sparse_linear(h_t)) for every token, the max per token id, without the ids of the
  cls/eos/pad/unk tokens and without weights <= 0;
- ColBERT: colbert_linear(h_t) for every token but the first (CLS), each L2-normalised.
ColBERT (stanford-nlp `HF_ColBERT`, PyLate, sentence-transformers `MultiVectorEncoder`): one or more
projections of every token (PyLate chains Dense layers, some with a residual), L2-normalised;
document tokens in the skiplist (punctuation) dropped.
"""
from __future__ import annotations

import dataclasses
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
class HeadLayer:
    """One projection of the multi-vector head: `act(x W^T + b)`, plus x (or x R^T when the sizes
    differ) where PyLate's Dense has `use_residual`."""

    path: Path | None  # a torch state dict (.pt, read weights_only) or safetensors; None: the encoder's checkpoint
    prefix: str = ""  # the projection's name in that file, before `weight` / `bias` (a residual is `residual.weight`)
    activation: str | None = None  # layers.linear.ACTIVATIONS name; None: identity
    residual: bool = False


@dataclasses.dataclass(frozen=True)
class MultiVectorSpec:
    """How a folder's multi-vector head is read and how its inputs are marked (late_layouts.detect)."""

    source: str  # "bge-m3" | "stanford" | "pylate" | "sentence-transformers": whose conventions the folder follows
    layers: tuple[HeadLayer, ...]
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

    @property
    def style(self) -> str:
        """BGE-M3 keeps TEI's dense scoring; every ColBERT layout ranks by MaxSim."""
        return "bge-m3" if self.source == "bge-m3" else "colbert"


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


def _take(state: dict[str, torch.Tensor], names: list[str], dtype, device, source: str) -> list:
    """The named tensors (None where absent), after proving `state` holds nothing else: a tensor
    loaded but unused would mean the layout was misread."""
    extra = sorted(set(state) - set(names))
    if extra:
        raise ValueError(f"{source} has tensor `{extra[0]}` that the multi-vector head does not use")
    return [None if state.get(n) is None else state[n].to(dtype=dtype, device=device) for n in names]


def _projection(state: dict[str, torch.Tensor], prefix: str, dtype, device, source: str,
                activation: str | None = None) -> Linear:
    weight, bias = _take(state, [prefix + "weight", prefix + "bias"], dtype, device, source)
    if weight is None:
        raise ValueError(f"{source} has no `{prefix}weight`")
    return Linear(weight, bias, activation)


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


def _source(layer: HeadLayer) -> str:
    if layer.path is None:
        return "the checkpoint's multi-vector head"
    return f"{layer.path.parent.name}/{layer.path.name}" if layer.path.name.startswith(("model.", "pytorch_model")) \
        else layer.path.name


class _Stage(nn.Module):
    def __init__(self, layer: HeadLayer, state: dict[str, torch.Tensor], dtype, device, source: str):
        super().__init__()
        p = layer.prefix
        weight, bias, residual = _take(state, [p + "weight", p + "bias", "residual.weight"], dtype, device, source)
        if weight is None:
            raise ValueError(f"{source} has no `{p}weight`")
        self.linear = Linear(weight, bias, layer.activation)
        self.residual = None  # identity residual when the sizes match (PyLate's Dense), a projection otherwise
        if layer.residual and self.linear.in_features != self.linear.out_features:
            if residual is None:
                raise ValueError(f"{source}: a residual Dense from {self.linear.in_features} to "
                                 f"{self.linear.out_features} needs `residual.weight`")
            self.residual = Linear(residual, None)
        elif residual is not None:
            raise ValueError(f"{source} has `residual.weight` but its config does not use a residual")
        self.add_input = layer.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.add_input:
            y = y + (x if self.residual is None else self.residual(x))
        return y


class MultiVectorHead(nn.Module):
    """The model's projections of every token, each vector L2-normalised; some tokens dropped as the model says.
    `states`: one state dict per HeadLayer (its `<prefix>weight`, `<prefix>bias`, PyLate's `residual.weight`)."""

    def __init__(self, spec: MultiVectorSpec, states: list[dict[str, torch.Tensor]], dtype, device):
        super().__init__()
        self.spec = spec
        self.stages = nn.ModuleList(
            _Stage(layer, state, dtype, device, _source(layer)) for layer, state in zip(spec.layers, states))
        for before, after in zip(self.stages, self.stages[1:]):
            if before.linear.out_features != after.linear.in_features:
                raise ValueError(f"Multi-vector projections do not chain: {before.linear.out_features} "
                                 f"outputs into {after.linear.in_features} inputs")

    @property
    def dim(self) -> int:
        return self.stages[-1].linear.out_features

    def forward(self, hidden: torch.Tensor, batch: PackedBatch, count: int) -> list[np.ndarray]:
        """One [tokens, dim] array per sequence (the first token left out where the model drops it);
        documents' skiplist tokens are dropped by the caller, which knows queries from documents."""
        tokens = int(batch.cu_seqlens[count])
        x = hidden[:tokens]
        for stage in self.stages:
            x = stage(x)
        vectors = F.normalize(x.float(), dim=-1).cpu().numpy()
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
