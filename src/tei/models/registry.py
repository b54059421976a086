"""Which model family serves a folder, decided from its config.json (and, where that is not enough,
from `auto_map`, position-embedding keys or files) in one place.

A family is one module under `models/families/`, imported only when a folder needs it. It provides:
- `PREFIXES`: the name prefixes its checkpoints nest the encoder under (`bert.`, `model.`, ...);
- `IGNORED`: fnmatch patterns of checkpoint tensors it deliberately leaves unused (poolers of
  embedding models, MLM heads, position-id buffers); every other tensor must be read, or loading
  fails naming it (weights.Weights.check_all_used);
- `encoder(w, cfg) -> layers.Encoder`;
- optionally `classifier(w, cfg) -> head` (a module over pooled states with a `pooling` attribute:
  "cls" unless the family pools otherwise) and `mlm_head(w, cfg)` (SPLADE).
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Callable


def _no_offset(cfg: dict) -> int:
    return 0


def _roberta_offset(cfg: dict) -> int:
    """RoBERTa-family positions start after the padding index."""
    return int(cfg.get("pad_token_id", 1)) + 1


def _jina_flash(cfg: dict) -> bool:
    """Jina's remote XLM-R code (auto_map names it); model_type alone says `xlm-roberta`."""
    auto = " ".join(str(v) for v in (cfg.get("auto_map") or {}).values()).lower()
    return "xlm-roberta-flash-implementation" in auto or "xlmrobertaflash" in auto


def _jina_v3(cfg: dict, folder: Path | None) -> bool:
    return (_jina_flash(cfg) or cfg.get("model_type") == "xlm-roberta") and cfg.get("position_embedding_type") == "rotary"


def _jina_reranker(cfg: dict, folder: Path | None) -> bool:
    return _jina_flash(cfg) and cfg.get("position_embedding_type", "absolute") == "absolute"
def _mpnet_offset(cfg: dict) -> int:
    """RoBERTa-style too, but transformers' MPNetEmbeddings fixes its padding index at 1 whatever
    `pad_token_id` says."""
    return 2


def _runs_remote_code(cfg: dict, repo: str) -> bool:
    """A config written by `repo`'s remote code (TEI's test, so re-uploads and fine-tunes match too)."""
    auto = (cfg.get("auto_map") or {}).get("AutoConfig") or ""
    return cfg.get("_name_or_path") == repo or repo in str(auto)


def is_jina_code(cfg: dict) -> bool:
    return _runs_remote_code(cfg, "jinaai/jina-bert-v2-qk-post-norm")


def _is_jina(cfg: dict, folder: Path | None) -> bool:
    return cfg.get("model_type") == "bert" and (
        _runs_remote_code(cfg, "jinaai/jina-bert-implementation") or is_jina_code(cfg)
    )


def _is_static(cfg: dict, folder: Path | None) -> bool:
    from .spec import static_module

    return cfg.get("model_type") == "model2vec" or (folder is not None and static_module(folder) is not None)


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    module: str  # under tei.models.families
    model_types: tuple[str, ...] = ()
    # For folders `model_type` alone cannot place (JinaBERT says `bert`; Jina v3 says `xlm-roberta`):
    # tried before any model_type match.
    match: Callable[[dict, Path | None], bool] | None = None
    position_offset: Callable[[dict], int] = _no_offset
    # Pooling of an embedding folder that has no sentence-transformers pooling config (None: refuse).
    default_pooling: str | None = None
    # The dtype when --dtype is unset, where the device default (float16 on GPUs) is wrong for the family.
    default_dtype: str | None = None
    float16: bool = True  # False: --dtype float16 is refused at start-up

    def load(self) -> ModuleType:
        return importlib.import_module(f"tei.models.families.{self.module}")


FAMILIES: list[Family] = [
    Family("static", "static", ("model2vec",), match=_is_static),
    # Mean pooling by default: every JinaBERT v2 checkpoint was trained with it (`emb_pooler: mean`).
    Family("jinabert", "jina_bert", match=_is_jina, default_pooling="mean"),
    Family("bert", "bert", ("bert",), default_pooling="cls"),
    Family("roberta", "bert", ("roberta", "xlm-roberta", "camembert"), position_offset=_roberta_offset,
           default_pooling="cls"),
    Family("distilbert", "distilbert", ("distilbert",), default_pooling="cls"),
    Family("nomic_bert", "nomic", ("nomic_bert",), default_pooling="mean"),
    Family("gte", "gte", ("new", "gte"), default_pooling="cls"),
    Family("jina_v3", "jina", ("jina_embeddings_v3",), match=_jina_v3, default_pooling="mean"),
    Family("jina_reranker", "jina", match=_jina_reranker, position_offset=_roberta_offset, default_pooling="cls"),
    Family("mpnet", "mpnet", ("mpnet",), position_offset=_mpnet_offset),
    # Mean by default: in local layers CLS only sees its window (why ModernBERT's classifiers offer mean).
    Family("modernbert", "modernbert", ("modernbert",), default_pooling="mean"),
    Family("decoder", "decoder", ("qwen2", "qwen3", "mistral", "llama", "llama_bidirec"), default_pooling="last_token"),
    # EmbeddingGemma overflows in float16 (its model card): float32 unless bfloat16 is asked for.
    Family("gemma3", "gemma3", ("gemma3_text",), default_pooling="mean", default_dtype="float32", float16=False),
    # float32 by default as its predecessor; no float16 overflow is documented for it, so float16 is allowed.
    Family("embedding_gemma2", "embedding_gemma2", ("embedding_gemma2", "embedding_gemma2_text"),
           default_pooling="mean", default_dtype="float32"),
]


# Architectures with no own code: served through transformers when it can load them (families/transformers.py).
FALLBACK = Family("transformers", "transformers", default_pooling="cls")
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


class UnsupportedModel(ValueError):
    pass


def supported_names() -> str:
    names = sorted({t for f in FAMILIES for t in f.model_types})
    return ", ".join(names)


def detect(config: dict, folder: Path | None = None, backend: str | None = None,
           trust_remote_code: bool = False) -> Family:
    """The own family for this config; else the transformers fallback, if transformers can load it
    (`backend="transformers"` forces the fallback)."""
    model_type = config.get("model_type", "")
    if backend != "transformers":
        for family in FAMILIES:
            if family.match is not None and family.match(config, folder):
                return family
        for family in FAMILIES:
            if model_type in family.model_types:
                return family
    return _fallback(config, trust_remote_code)


def _fallback(config: dict, trust_remote_code: bool) -> Family:
    from .families import transformers as fallback

    try:
        problem = fallback.loadable(config, trust_remote_code)
    except fallback.MissingTransformers as exc:
        problem = str(exc)
    if problem is not None:
        archs = ", ".join(config.get("architectures") or []) or "none"
        raise UnsupportedModel(
            f"Model type `{config.get('model_type', '')}` (architectures: {archs}) is not supported ({problem}); "
            f"supported: {supported_names()}."
        )
    if config.get("model_type") in _ROBERTA_LIKE:
        return dataclasses.replace(FALLBACK, position_offset=_roberta_offset)
    return FALLBACK
