"""Read checkpoint tensors: safetensors (single or sharded), `pytorch_model.bin` as a fallback."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


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
    """

    def __init__(self, state: dict[str, torch.Tensor], prefixes: tuple[str, ...], dtype: torch.dtype, device):
        self.state = {self._modernize(k): v for k, v in state.items()}
        self.prefixes = ("",) + tuple(p + "." for p in prefixes)
        self.dtype = dtype
        self.device = device

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

    def get(self, name: str) -> torch.Tensor:
        key = self.find(name)
        if key is None:
            raise KeyError(f"Weight `{name}` not found in checkpoint")
        return self.state[key].to(device=self.device, dtype=self.dtype)
