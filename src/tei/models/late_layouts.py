"""What a multi-vector folder holds, read the way each library that writes such folders reads it:

- BGE-M3 (FlagEmbedding): `colbert_linear.pt` at the root;
- stanford-nlp ColBERT (`HF_ColBERT` in config.json, `artifact.metadata`): colbertv2.0,
  jina-colbert-v1/v2 (whose encoders are Jina's remote-code BERT / XLM-R, placed by the registry);
- PyLate: a sentence-transformers folder with PyLate's `Dense` modules and its settings at the top
  of `config_sentence_transformers.json` (GTE-ModernColBERT, answerai-colbert-small as PyLate saves it);
- sentence-transformers 6 `MultiVectorEncoder` (Transformer, Dense, MultiVectorMask, Normalize).

The three ColBERT libraries disagree on small things that change outputs, so each is followed where
its folders are read: how skiplist words become ids (stanford encodes each symbol and keeps the
first id; PyLate and sentence-transformers look the word up as one token, PyLate keeping the
unknown-token id it gets for a word not in the vocabulary, sentence-transformers dropping it), which
token pads a query, and what a prefix that is not a vocabulary token becomes.
"""
from __future__ import annotations

import json
import logging
import string
from pathlib import Path

from .late import HeadLayer, MultiVectorSpec

log = logging.getLogger(__name__)


def _json(path: Path) -> dict:
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


# transformers' tokenizer classes name these when their files do not (XLM-R's, then BERT's)
_CLASS_DEFAULTS = {"mask_token": ("<mask>", "[MASK]"), "unk_token": ("<unk>", "[UNK]")}


def _special_id(folder: Path, tok, name: str) -> int | None:
    if tok is None:
        return None
    token = _special(folder, name)
    for candidate in (token,) if token is not None else _CLASS_DEFAULTS.get(name, ()):
        token_id = tok.token_to_id(candidate)
        if token_id is not None:
            return token_id
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


def _required(token_id: int | None, message: str) -> int:
    if token_id is None:
        raise ValueError(f"{message}: the tokenizer names none")
    return token_id


# ---- skiplists -----------------------------------------------------------------------------------


def _skiplist_first_ids(tok, words) -> tuple[int, ...]:
    """stanford-nlp ColBERT: `tokenizer.encode(symbol, add_special_tokens=False)[0]` per symbol. On a
    sentencepiece vocabulary that is often the word-start form (`▁,`) or the bare `▁`, not the
    piece found inside text: stanford's own behaviour, kept for its folders."""
    ids = set()
    for word in words or ():
        encoded = tok.encode(word, add_special_tokens=False).ids
        if encoded:
            ids.add(encoded[0])
    return tuple(sorted(ids))


def _skiplist_tokens(tok, words, unk_id: int | None, keep_unknown: bool) -> tuple[int, ...]:
    """PyLate and sentence-transformers: `tokenizer.convert_tokens_to_ids(word)`, which answers the
    unknown token's id for a word that is not one token. PyLate keeps that id (so documents' unknown
    tokens are dropped too); sentence-transformers' MultiVectorMask drops the word instead."""
    ids = set()
    for word in words or ():
        token_id = tok.token_to_id(word)
        if token_id is None:
            if not keep_unknown or unk_id is None:
                continue
            token_id = unk_id
        ids.add(token_id)
    return tuple(sorted(ids))


# ---- layouts -------------------------------------------------------------------------------------


def detect(folder: Path, config: dict) -> MultiVectorSpec | None:
    if (folder / "colbert_linear.pt").is_file():
        return MultiVectorSpec("bge-m3", (HeadLayer(folder / "colbert_linear.pt"),), skip_first=True, score="mean")
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


def _stanford(folder: Path) -> MultiVectorSpec:
    """stanford-nlp ColBERT's Checkpoint: queries `[CLS] [Q] …` padded with [MASK] to query_maxlen,
    documents `[CLS] [D] …` cut to doc_maxlen, the bias-free `linear` in the encoder's checkpoint."""
    meta = _json(folder / "artifact.metadata")
    tok = _tokenizer(folder)
    if meta.get("similarity", "cosine") != "cosine":
        raise ValueError(f"ColBERT similarity `{meta['similarity']}` is not supported (cosine is)")
    return MultiVectorSpec(
        "stanford",
        layers=(HeadLayer(None, "linear."),),
        query_marker=_token_id(tok, meta.get("query_token_id", "[unused0]"), "query marker"),
        document_marker=_token_id(tok, meta.get("doc_token_id", "[unused1]"), "document marker"),
        query_length=int(meta.get("query_maxlen", 32)),
        document_length=int(meta.get("doc_maxlen", 180)),
        expansion_id=_required(_special_id(folder, tok, "mask_token"), "ColBERT query expansion needs a mask token"),
        attend_expansion=bool(meta.get("attend_to_mask_tokens", False)),
        skiplist=_skiplist_first_ids(tok, string.punctuation) if meta.get("mask_punctuation", True) else (),
    )


# sentence-transformers / PyLate Dense `activation_function` → layers.linear activation (None: identity)
_ACTIVATIONS = {"Identity": None, "Tanh": "tanh", "ReLU": "relu", "GELU": "gelu", "SiLU": "silu"}


def _dense_layer(folder: Path, module: dict, default_activation: str) -> HeadLayer:
    path = folder / module.get("path", "")
    cfg = _json(path / "config.json")
    name = str(cfg.get("activation_function", default_activation)).rsplit(".", 1)[-1]
    if name not in _ACTIVATIONS:
        raise ValueError(f"Dense activation `{cfg.get('activation_function')}` in {path.name} is not supported "
                         f"for multi-vector heads ({', '.join(_ACTIVATIONS)} are)")
    weights = path / "model.safetensors" if (path / "model.safetensors").is_file() else path / "pytorch_model.bin"
    return HeadLayer(weights, "linear.", _ACTIVATIONS[name], bool(cfg.get("use_residual", False)))


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
        "sentence-transformers",
        layers=(_dense_layer(folder, modules[1], "torch.nn.modules.activation.Tanh"),),  # ST's Dense default
        query_length=int(expansion["length"]) if expansion else transformer.get("query_length"),
        query_fixed=expansion is None or expansion.get("strategy") == "fixed",
        document_length=transformer.get("document_length"),
        expansion_id=_token_id(tok, expansion_token, "expansion token") if expansion else None,
        attend_expansion=bool((expansion or {}).get("attend", False)),
        skiplist=_skiplist_tokens(tok, mask.get("skiplist_words"), None, keep_unknown=False),
        score="mean" if st.get("similarity_fn_name") == "meanmaxsim" else "sum",
        query_prompt=prompts.get("query") or None,
        document_prompt=prompts.get("document") or None,
    )


def _pylate_marker(tok, prefix: str, unk_id: int | None, what: str) -> int | None:
    """PyLate inserts `convert_tokens_to_ids(prefix)` after the first token: the prefix as one token
    (PyLate adds it to the vocabulary before saving), else the unknown token's id."""
    if prefix == "":
        return None
    token_id = tok.token_to_id(prefix) if tok is not None else None
    if token_id is not None:
        return token_id
    if unk_id is None:
        raise ValueError(f"The {what} `{prefix}` is not a token of the vocabulary, which has no unknown token")
    log.warning("The %s `%s` is not a vocabulary token: PyLate inserts the unknown token instead, so do we",
                what, prefix)
    return unk_id


def _pylate(folder: Path, st: dict, modules: list) -> MultiVectorSpec:
    """PyLate's ColBERT as saved by `ColBERT.save` (pylate/models/colbert.py): Transformer and one or
    more PyLate Dense modules; query_prefix / document_prefix inserted as tokens after the first;
    queries padded to query_length with the mask token (else eos, else pad) when do_query_expansion;
    documents cut to document_length; `None` settings take PyLate's defaults."""
    tok = _tokenizer(folder)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    # PyLate's loader keeps the Transformer and the Dense modules and drops any other
    kept = [m for m, kind in zip(modules, kinds) if kind in ("Transformer", "Dense")]
    if [k for k in kinds if k in ("Transformer", "Dense")][:1] != ["Transformer"] or len(kept) < 2:
        raise ValueError(f"A PyLate ColBERT with modules {kinds} is not supported (a Transformer, then Dense layers, is)")
    if len(kept) < len(modules):
        log.warning("PyLate ignores the modules %s of this folder; so do we",
                    [k for k in kinds if k not in ("Transformer", "Dense")])
    unk_id = _special_id(folder, tok, "unk_token")

    def setting(key, default):
        value = st.get(key)
        return default if value is None else value

    expansion = bool(setting("do_query_expansion", True))
    pad = None
    if expansion:
        for name in ("mask_token", "eos_token", "pad_token"):  # PyLate's choice of the query padding token
            pad = _special_id(folder, tok, name)
            if pad is not None:
                break
        _required(pad, "PyLate query expansion needs a mask, eos or pad token")
    return MultiVectorSpec(
        "pylate",
        # A sentence-transformers Dense keeps its activation (Tanh when its config names none) in PyLate too
        layers=tuple(_dense_layer(folder, m, "torch.nn.modules.activation.Tanh" if m.get("type", "").startswith(
            "sentence_transformers") else "torch.nn.modules.linear.Identity") for m in kept[1:]),
        query_marker=_pylate_marker(tok, setting("query_prefix", "[Q] "), unk_id, "query prefix"),
        document_marker=_pylate_marker(tok, setting("document_prefix", "[D] "), unk_id, "document prefix"),
        query_length=int(setting("query_length", 32)),
        document_length=int(setting("document_length", 180)),
        expansion_id=pad,
        # PyLate never attends to expansion tokens it did not add
        attend_expansion=expansion and bool(setting("attend_to_expansion_tokens", False)),
        skiplist=_skiplist_tokens(tok, setting("skiplist_words", list(string.punctuation)), unk_id, keep_unknown=True),
        score="mean" if str(st.get("similarity_fn_name", "")).lower() == "meanmaxsim" else "sum",
    )
