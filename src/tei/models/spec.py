"""What kind of model a folder holds, decided from its config and sentence-transformers files as TEI does."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from .registry import Family, detect

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "last_token", "splade")
# SpladePooling `activation_function` → how many times log1p follows the ReLU
SPLADE_ACTIVATIONS = {"relu": 1, "log1p_relu": 2}
# sentence-transformers wrote one config file per architecture before `sentence_bert_config.json`.
_ST_CONFIG_NAMES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)


class ModelSpecError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class DenseSpec:
    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str  # "identity" | "tanh"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    folder: Path
    config: dict[str, Any]
    model_type: str
    family: Family
    kind: str  # "embedding" | "classifier" | "reranker"
    pooling: str | None  # embedding models only
    id2label: dict[str, str] | None
    max_input_length: int
    position_offset: int
    dense: tuple[DenseSpec, ...]
    prompts: dict[str, str]
    default_prompt_name: str | None
    splade_activation: str = "relu"  # sentence-transformers' SpladePooling `activation_function`

    @property
    def num_labels(self) -> int:
        return len(self.id2label or {})

    @property
    def label2id(self) -> dict[str, int] | None:
        if self.id2label is None:
            return None
        return {label: int(i) for i, label in self.id2label.items()}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _splade_from_st(folder: Path) -> str | None:
    """The activation of a sentence-transformers SparseEncoder's SpladePooling module, if it has one."""
    modules = _read_json(folder / "modules.json")
    for module in modules if isinstance(modules, list) else ():
        if not module.get("type", "").endswith("SpladePooling"):
            continue
        cfg = _read_json(folder / module.get("path", "") / "config.json") or {}
        strategy, activation = cfg.get("pooling_strategy", "max"), cfg.get("activation_function", "relu")
        if strategy != "max" or activation not in SPLADE_ACTIVATIONS:
            raise ModelSpecError(
                f"SpladePooling with pooling_strategy `{strategy}` and activation_function `{activation}` is not "
                f"supported: max pooling with {' or '.join(SPLADE_ACTIVATIONS)} is."
            )
        return activation
    return None


def _pooling_from_st(folder: Path) -> str | None:
    cfg = _read_json(folder / "1_Pooling" / "config.json")
    modules = _read_json(folder / "modules.json") if (folder / "modules.json").is_file() else None
    if cfg is None and isinstance(modules, list):
        for module in modules:
            if module.get("type", "").endswith("Pooling"):
                cfg = _read_json(folder / module.get("path", "") / "config.json")
    if cfg is None:
        return None
    mode = cfg.get("pooling_mode")  # sentence-transformers ≥ 6 writes one string
    if isinstance(mode, str):
        mode = {"lasttoken": "last_token", "last_token": "last_token", "cls": "cls", "mean": "mean"}.get(mode)
        if mode is None:
            raise ModelSpecError(f"Pooling config {cfg} is not supported: use --pooling cls, mean or last-token.")
        return mode
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_lasttoken"):
        return "last_token"
    raise ModelSpecError(f"Pooling config {cfg} is not supported: use --pooling cls, mean or last-token.")


def _dense_layers(folder: Path) -> tuple[DenseSpec, ...]:
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return ()
    layers = []
    for module in modules:
        if not module.get("type", "").endswith(".Dense"):
            continue
        path = folder / module["path"]
        cfg = _read_json(path / "config.json") or {}
        act = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
        if act.endswith("Tanh"):
            activation = "tanh"
        elif act.endswith("Identity"):
            activation = "identity"
        else:
            raise ModelSpecError(f"Dense activation {act} in {path} is not supported (Tanh or Identity).")
        layers.append(
            DenseSpec(
                path=path,
                in_features=int(cfg["in_features"]),
                out_features=int(cfg["out_features"]),
                bias=bool(cfg.get("bias", True)),
                activation=activation,
            )
        )
    return tuple(layers)


def _st_max_seq_length(folder: Path) -> int | None:
    for name in _ST_CONFIG_NAMES:
        cfg = _read_json(folder / name)
        if cfg and cfg.get("max_seq_length"):
            return int(cfg["max_seq_length"])
    return None


def read_spec(folder: Path, pooling_override: str | None = None) -> ModelSpec:
    config = _read_json(folder / "config.json")
    if config is None:
        raise ModelSpecError(f"{folder} has no config.json")
    model_type = config.get("model_type", "")
    family = detect(config, folder)
    pooling_override = pooling_override.replace("-", "_") if pooling_override else None
    if pooling_override is not None and pooling_override not in POOLINGS:
        raise ModelSpecError(f"Unknown pooling `{pooling_override}`: use cls, mean, splade or last-token.")

    kind = "embedding"
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch.endswith("Classification"):
            kind = "classifier"
            if pooling_override:
                log.warning("`--pooling` is ignored for classification models")
            break

    id2label = None
    pooling = None
    splade_activation = None
    if kind == "classifier":
        raw = config.get("id2label")
        if not raw or not config.get("label2id"):
            raise ModelSpecError("config.json of a classification model must have `id2label` and `label2id`.")
        id2label = {str(k): str(v) for k, v in raw.items()}
        kind = "reranker" if len(id2label) == 1 else "classifier"
    else:
        splade_activation = _splade_from_st(folder)
        pooling = pooling_override or ("splade" if splade_activation else _pooling_from_st(folder))
        if pooling == "splade" and not any(a.endswith("ForMaskedLM") for a in architectures):
            raise ModelSpecError("SPLADE pooling needs a *ForMaskedLM model (config.json `architectures`).")
        if pooling is None:
            if family.default_pooling is None:
                raise ModelSpecError("No 1_Pooling/config.json found: pass --pooling cls, mean or last-token.")
            log.warning("No pooling config found: defaulting to %s pooling", family.default_pooling)
            pooling = family.default_pooling

    position_offset = family.position_offset(config)
    max_input_length = _st_max_seq_length(folder)
    if max_input_length is None:
        positions = config.get("max_position_embeddings", config.get("max_trained_positions"))
        if positions is None:
            raise ModelSpecError("config.json has no max_position_embeddings.")
        max_input_length = int(positions) - position_offset
        # sentence-transformers ≥ 6 keeps max_seq_length as the tokenizer's model_max_length.
        tok_limit = (_read_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
        if isinstance(tok_limit, int) and 0 < tok_limit < max_input_length:
            max_input_length = tok_limit

    st_cfg = _read_json(folder / "config_sentence_transformers.json") or {}
    return ModelSpec(
        folder=folder,
        config=config,
        model_type=model_type,
        family=family,
        kind=kind,
        pooling=pooling,
        id2label=id2label,
        max_input_length=max_input_length,
        position_offset=position_offset,
        dense=_dense_layers(folder) if kind == "embedding" else (),
        prompts={str(k): str(v) for k, v in (st_cfg.get("prompts") or {}).items()},
        default_prompt_name=st_cfg.get("default_prompt_name"),
        splade_activation=splade_activation or "relu",
    )
