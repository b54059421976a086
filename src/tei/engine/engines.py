"""The Engines registry: served model name -> Engine, and which model a request without a name gets."""
from __future__ import annotations

import asyncio
from typing import Iterator, Sequence

from .engine import Engine
from .errors import UnknownModel

# What a request asks a model to do; a request without a model name goes to the first model that can.
EMBED, SPARSE, RERANK, PREDICT, ANY = "embed", "embed_sparse", "rerank", "predict", "any"

# Per task, the kinds of model to look for, best first. Embedding models also rank (by cosine) and
# rerankers also classify, so they are the fall-backs; with none fitting, the first model answers
# (and refuses with TEI's 424, as a one-model server does).
_PREFERENCE = {
    EMBED: ("dense", "embedding"),
    SPARSE: ("splade",),
    RERANK: ("reranker", "embedding"),
    PREDICT: ("classifier", "reranker"),
    ANY: (),
}


def _kinds(engine: Engine) -> tuple[str, ...]:
    kind = engine.spec.kind
    if kind == "embedding":
        return (kind, "splade" if engine.splade else "dense")
    return (kind,)


def check_unique(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two models are served as `{name}`: give each its own --served-model-name")
        seen.add(name)


class Engines:
    """Every served model's Engine, under its served name, in the order they were given.

    Each entry keeps the settings it was built from (the /info body reads the model id and revision)."""

    def __init__(self, served: Sequence[tuple[object, Engine]]):
        if not served:
            raise ValueError("no models to serve")
        check_unique([engine.name for _, engine in served])
        self._engines: dict[str, Engine] = {}
        self._settings: dict[str, object] = {}
        for settings, engine in served:
            self._engines[engine.name] = engine
            self._settings[engine.name] = settings
        self._by_model_id = {}
        for name, settings in self._settings.items():
            model_id = getattr(settings, "model_id", None)
            if model_id and model_id not in self._engines:
                self._by_model_id.setdefault(model_id, []).append(name)

    def __iter__(self) -> Iterator[Engine]:
        return iter(self._engines.values())

    def __len__(self) -> int:
        return len(self._engines)

    @property
    def names(self) -> list[str]:
        return list(self._engines)

    @property
    def default(self) -> Engine:
        return next(iter(self._engines.values()))

    def settings(self, name: str):
        return self._settings[name]

    def get(self, name: str) -> Engine:
        """By served name, or by model id when one model has it; UnknownModel otherwise."""
        engine = self._engines.get(name)
        if engine is not None:
            return engine
        aliases = self._by_model_id.get(name, ())
        if len(aliases) == 1:
            return self._engines[aliases[0]]
        raise UnknownModel(name, self.names)

    def resolve(self, name: str | None, task: str = ANY) -> Engine:
        """The named model, or the first one fit for `task`. With one model served, any name is that
        model, as TEI's OpenAI route answers whatever `model` says."""
        if len(self._engines) == 1:
            return self.default
        if name:
            return self.get(name)
        for kind in _PREFERENCE[task]:
            for engine in self._engines.values():
                if kind in _kinds(engine):
                    return engine
        return self.default

    async def health(self) -> bool:
        """Healthy when every model is."""
        return all(await asyncio.gather(*(engine.health() for engine in self)))

    def close(self) -> None:
        for engine in self:
            engine.close()
