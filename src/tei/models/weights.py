"""Read checkpoint tensors: safetensors (single or sharded), `pytorch_model.bin` as a fallback; and
the name lookup that families load through, which also proves every tensor was used."""
from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    pass


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        log.warning("Loading weights from pytorch_model.bin: safetensors loads faster and safer")
        return torch.load(str(legacy), map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"No model.safetensors, sharded safetensors or pytorch_model.bin in {folder}")


class Weights:
    """Name lookup over a checkpoint that tolerates the prefixes and legacy names found in the wild.

    A `BertModel` saved by sentence-transformers has bare names (`embeddings.…`); a
    `BertForSequenceClassification` nests them under `bert.`; old checkpoints use `gamma`/`beta`.
    Every lookup is recorded, so `check_all_used` can refuse a checkpoint with tensors the family
    did not read (a forgotten bias or norm would otherwise load silently and compute wrong numbers).
    """

    def __init__(self, state: dict[str, torch.Tensor], prefixes: tuple[str, ...], dtype: torch.dtype, device):
        self.state = {self._modernize(k): v for k, v in state.items()}
        self.prefixes = ("",) + tuple(p + "." for p in prefixes)
        self.dtype = dtype
        self.device = device
        self.used: set[str] = set()

    @staticmethod
    def _modernize(name: str) -> str:
        if name.endswith(".gamma"):
            return name[: -len("gamma")] + "weight"
        if name.endswith(".beta"):
            return name[: -len("beta")] + "bias"
        return name

    def find(self, name: str) -> str | None:
        for prefix in self.prefixes:
            if prefix + name in self.state:
                return prefix + name
        return None

    def has(self, name: str) -> bool:
        return self.find(name) is not None

    def raw(self, name: str) -> torch.Tensor:
        """The stored tensor, as stored (dtype and device untouched)."""
        key = self.find(name)
        if key is None:
            raise WeightsError(f"Weight `{name}` not found in the checkpoint")
        self.used.add(key)
        return self.state[key]

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.raw(name).to(device=self.device, dtype=dtype or self.dtype)

    def optional(self, name: str) -> torch.Tensor | None:
        return self.get(name) if self.has(name) else None

    def ignore(self, *patterns: str) -> None:
        """Mark tensors as deliberately unused (fnmatch patterns, tried with each prefix)."""
        for key in self.state:
            for prefix in self.prefixes:
                if key.startswith(prefix) and any(fnmatch.fnmatchcase(key[len(prefix):], p) for p in patterns):
                    self.used.add(key)

    def check_all_used(self, family: str) -> None:
        unused = sorted(k for k in self.state if k not in self.used)
        if unused:
            more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
            raise WeightsError(
                f"The checkpoint has weight `{unused[0]}`{more} that the `{family}` model code does not use: "
                "this checkpoint does not match the architecture its config.json declares."
            )
