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

    def load(self) -> ModuleType:
        return importlib.import_module(f"tei.models.families.{self.module}")


FAMILIES: list[Family] = [
    Family("bert", "bert", ("bert",), default_pooling="cls"),
    Family("roberta", "bert", ("roberta", "xlm-roberta", "camembert"), position_offset=_roberta_offset,
           default_pooling="cls"),
    Family("distilbert", "distilbert", ("distilbert",), default_pooling="cls"),
]


class UnsupportedModel(ValueError):
    pass


def supported_names() -> str:
    names = sorted({t for f in FAMILIES for t in f.model_types})
    return ", ".join(names)


def detect(config: dict, folder: Path | None = None) -> Family:
    model_type = config.get("model_type", "")
    for family in FAMILIES:
        if family.match is not None and family.match(config, folder):
            return family
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    archs = ", ".join(config.get("architectures") or []) or "none"
    raise UnsupportedModel(
        f"Model type `{model_type}` (architectures: {archs}) is not supported; supported: {supported_names()}."
    )
