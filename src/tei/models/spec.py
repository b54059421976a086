"""What kind of model a folder holds, decided from its config and sentence-transformers files as TEI does."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from . import late, late_layouts
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
    max_input_length: int | None  # None: no positional limit (static embeddings), the batch budget limits
    position_offset: int
    dense: tuple[DenseSpec, ...]
    prompts: dict[str, str]
    default_prompt_name: str | None
    splade_activation: str = "relu"  # sentence-transformers' SpladePooling `activation_function`
    # Task adapters (jina-embeddings-v3's `lora_adaptations`), each selected by the prompt of its
    # name, and the one merged into the weights at load (None: the base weights).
    adapters: tuple[str, ...] = ()
    adapter: str | None = None
    module: str = ""  # the folder of the model's weights and tokenizer.json, relative to `folder`
    special_tokens: bool = True  # False: texts are cut without [CLS]/[SEP] and the like (static embeddings)

    @property
    def model_dir(self) -> Path:
        return self.folder / self.module
    # LLM rerankers scored by two tokens (Qwen3-Reranker): the (yes, no) token ids
    yes_no: tuple[int, int] | None = None
    # Rerankers whose pairs are rendered through a prompt (engine/tokenization.PairTemplate's fields)
    prompt_template: dict[str, str] | None = None
    # A token the tokenizer must append to every text, where the repo's tokenizer.json does not (gte-Qwen2)
    appended_token: str | None = None
    # BGE-M3's `sparse_linear.pt` (lexical weights on /embed_sparse) and the ids it never weighs.
    sparse_head: Path | None = None
    sparse_special_ids: tuple[int, ...] = ()
    multi_vector: late.MultiVectorSpec | None = None  # BGE-M3's or a ColBERT model's per-token head
    trust_remote_code: bool = False  # for the transformers fallback (registry.FALLBACK)

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


def static_module(folder: Path) -> str | None:
    """The path of a sentence-transformers StaticEmbedding module, when it is the folder's first
    module (such folders, and model2vec's, are static-embedding models)."""
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list) and modules and str(modules[0].get("type", "")).endswith("StaticEmbedding"):
        return str(modules[0].get("path") or "")
    return None


def _unk_token_id(tokenizer_file: Path) -> int | None:
    """The unknown token's id as model2vec finds it (the model's `unk_token`, or Unigram's `unk_id`)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    model = json.loads(tok.to_str())["model"]
    if "unk_token" in model:
        return None if model["unk_token"] is None else tok.token_to_id(model["unk_token"])
    return model.get("unk_id")


def _static_spec(folder: Path, config: dict, family: Family, pooling_override: str | None) -> ModelSpec:
    """A static-embedding folder: no transformer config; mean pooling is the model itself."""
    if pooling_override not in (None, "mean"):
        raise ModelSpecError(f"Static embedding models average their token rows: `--pooling {pooling_override}` "
                             "is not supported for them (mean is).")
    module = static_module(folder) or ""
    tokenizer_file = folder / module / "tokenizer.json"
    if config.get("model_type") == "model2vec":
        # model2vec's encode cuts at config `max_length` (512 when absent; null: no limit).
        max_length = config.get("max_length", 512)
        if tokenizer_file.is_file():
            config = {**config, "unk_token_id": _unk_token_id(tokenizer_file)}
    else:
        # sentence-transformers cuts only where the tokenizer file itself says so.
        truncation = (_read_json(tokenizer_file) or {}).get("truncation") or {}
        max_length = truncation.get("max_length")
    st_cfg = _read_json(folder / "config_sentence_transformers.json") or {}
    return ModelSpec(
        folder=folder, config=config, model_type=config.get("model_type") or "static", family=family,
        kind="embedding", pooling="mean", id2label=None,
        max_input_length=int(max_length) if max_length else None, position_offset=0,
        dense=_dense_layers(folder),
        prompts={str(k): str(v) for k, v in (st_cfg.get("prompts") or {}).items()},
        default_prompt_name=st_cfg.get("default_prompt_name"), module=module, special_tokens=False,
    )


def tokenizer_json(spec: ModelSpec) -> str:
    """The tokenizer file's text; without its post-processor when texts are cut without special
    tokens, so every route (and /tokenize) sees what the model sees."""
    text = (spec.model_dir / "tokenizer.json").read_text(encoding="utf-8")
    if spec.special_tokens:
        _warn_special_flags(spec.model_dir, text)
        return text
    tok = json.loads(text)
    tok["post_processor"] = None
    return json.dumps(tok)


def _warn_special_flags(folder: Path, text: str) -> None:
    """tokenizer.json's post-processor decides the special tokens, as in transformers 5: its
    `_from_pretrained` drops tokenizer_config.json's `add_bos_token`/`add_eos_token` whenever a
    tokenizer.json exists, so sentence-transformers 6 embeds what the file adds (transformers 4 rebuilt
    the post-processor from the flags, and e5-mistral-style repos relied on it for their </s>). Where
    the two disagree, start-up says so in one line per flag, and follows the file."""
    from tokenizers import Tokenizer

    cfg = _read_json(folder / "tokenizer_config.json") or {}
    flags = [(f, t) for f, t in (("add_bos_token", "bos_token"), ("add_eos_token", "eos_token"))
             if isinstance(cfg.get(f), bool)]
    if not flags:
        return
    try:
        enc = Tokenizer.from_str(text).encode("a")
    except Exception:  # a tokenizer that cannot encode fails later, with its own error
        return
    added = {tok for tok, special in zip(enc.tokens, enc.special_tokens_mask) if special}
    for flag, name in flags:
        token = cfg.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and (token in added) != cfg[flag]:
            log.warning("tokenizer_config.json sets `%s: %s` but tokenizer.json %s `%s`: texts get what tokenizer.json "
                        "says, as in transformers 5 and sentence-transformers (transformers 4 followed the flag)",
                        flag, str(cfg[flag]).lower(), "adds" if token in added else "does not add", token)


MODEL_KINDS = ("auto", "embedding", "reranker")


def _logit_score_ids(folder: Path) -> tuple[int, int] | None | bool:
    """sentence-transformers 6 packages a causal-LM cross-encoder as a `LogitScore` module: its
    (true, false) token ids, or True when it names none; None without such a module."""
    modules = _read_json(folder / "modules.json")
    for module in modules if isinstance(modules, list) else ():
        if module.get("type", "").endswith("LogitScore"):
            cfg = _read_json(folder / module.get("path", "") / "config.json") or {}
            if cfg.get("true_token_id") is not None and cfg.get("false_token_id") is not None:
                return int(cfg["true_token_id"]), int(cfg["false_token_id"])
            return True
    return None


def _yes_no_ids(folder: Path, tokens: tuple[str, str]) -> tuple[int, int]:
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ModelSpecError(f"tokenizer.json not found in {folder}: only fast tokenizers are supported")
    tok = Tokenizer.from_file(str(path))
    ids = tuple(tok.token_to_id(t) for t in tokens)
    if None in ids:
        missing = [t for t, i in zip(tokens, ids) if i is None]
        raise ModelSpecError(f"The tokenizer has no single token for {missing}: this LLM reranker cannot be scored.")
    return ids  # type: ignore[return-value]


def _named_reranker(model_id: str | None, folder: Path) -> bool:
    return any("reranker" in name.lower() for name in (model_id or "", folder.name))


def read_spec(folder: Path, pooling_override: str | None = None, default_prompt_name: str | None = None,
              model_id: str | None = None, model_kind: str = "auto", backend: str | None = None,
              trust_remote_code: bool = False) -> ModelSpec:
    config = _read_json(folder / "config.json")
    if config is None:
        if static_module(folder) is None:
            raise ModelSpecError(f"{folder} has no config.json")
        config = {}
    model_type = config.get("model_type", "")
    family = detect(config, folder, backend, trust_remote_code)
    if family.name == "static":
        return _static_spec(folder, config, family, pooling_override)
    pooling_override = pooling_override.replace("-", "_") if pooling_override else None
    if pooling_override is not None and pooling_override not in POOLINGS:
        raise ModelSpecError(f"Unknown pooling `{pooling_override}`: use cls, mean, splade or last-token.")

    kind = "embedding"
    architectures = config.get("architectures") or []
    for arch in architectures:
        # A token-classification head on an embedding model (gte-multilingual-base's sparse term
        # weights) is not a sequence classifier: the folder embeds, by its pooling config.
        if arch.endswith("Classification") and not arch.endswith("TokenClassification"):
            kind = "classifier"
            if pooling_override:
                log.warning("`--pooling` is ignored for classification models")
            break

    model_kind = (model_kind or "auto").lower()
    if model_kind not in MODEL_KINDS:
        raise ModelSpecError(f"Unknown --model-kind `{model_kind}`: use {', '.join(MODEL_KINDS)}.")
    module = family.load()
    yes_no = None
    logit_score = _logit_score_ids(folder)
    causal_lm = any(a.endswith("ForCausalLM") for a in architectures)
    if kind == "embedding" and causal_lm and (
        model_kind == "reranker" or (model_kind == "auto" and (logit_score or _named_reranker(model_id, folder)))
    ):
        if not hasattr(module, "yes_no_head") or model_type not in getattr(module, "RERANKER_TYPES", ()):
            raise ModelSpecError(
                f"`{model_type}` causal LMs cannot be served as rerankers: the yes/no prompt and scoring are "
                "verified for Qwen3-Reranker (qwen3) only; use --model-kind embedding to embed with it."
            )
        kind = "reranker"
        yes_no = logit_score if isinstance(logit_score, tuple) else _yes_no_ids(folder, module.YES_NO_TOKENS)
        if pooling_override:
            log.warning("`--pooling` is ignored for rerankers")
    elif model_kind != "auto" and (kind == "embedding") != (model_kind == "embedding"):
        raise ModelSpecError(f"--model-kind {model_kind} does not fit this checkpoint (architectures: "
                             f"{', '.join(architectures) or 'none'}): it is a{'n embedding' if kind == 'embedding' else ' ' + kind} model.")

    id2label = None
    pooling = None
    splade_activation = None
    if yes_no is not None:
        id2label = {"0": "LABEL_0"}
    elif kind == "classifier":
        raw = config.get("id2label")
        if not raw or not config.get("label2id"):
            raise ModelSpecError("config.json of a classification model must have `id2label` and `label2id`.")
        id2label = {str(k): str(v) for k, v in raw.items()}
        kind = "reranker" if len(id2label) == 1 else "classifier"
        if model_kind == "reranker" and kind != "reranker":
            raise ModelSpecError(f"--model-kind reranker does not fit this checkpoint: it has {len(id2label)} labels.")
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

    sparse_head = folder / "sparse_linear.pt" if kind == "embedding" and (folder / "sparse_linear.pt").is_file() else None
    try:
        multi_vector = late_layouts.detect(folder, config) if kind == "embedding" else None
        sparse_ids = late_layouts.sparse_special_ids(folder) if sparse_head else ()
    except ValueError as exc:
        raise ModelSpecError(str(exc)) from None

    position_offset = family.position_offset(config)
    # PyLate sets its Transformer's max_seq_length before each tokenization (query_length - 1, then
    # document_length - 1) and saves whichever came last: not a limit of the model. Its lengths are
    # the multi-vector spec's; the encoder's positions bound everything else.
    pylate = multi_vector is not None and multi_vector.source == "pylate"
    max_input_length = None if pylate else _st_max_seq_length(folder)
    if max_input_length is None:
        positions = config.get("max_position_embeddings", config.get("max_trained_positions"))
        if positions is None and isinstance(config.get("text_config"), dict):  # a composite model's text model
            positions = config["text_config"].get("max_position_embeddings")
        if positions is None:
            raise ModelSpecError("config.json has no max_position_embeddings.")
        max_input_length = int(positions) - position_offset
        # sentence-transformers ≥ 6 keeps max_seq_length as the tokenizer's model_max_length.
        tok_limit = (_read_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
        if isinstance(tok_limit, int) and 0 < tok_limit < max_input_length:
            max_input_length = tok_limit

    st_cfg = _read_json(folder / "config_sentence_transformers.json") or {}
    prompts = {str(k): str(v) for k, v in (st_cfg.get("prompts") or {}).items()}
    adapters = tuple(str(a) for a in config.get("lora_adaptations") or ())
    # The task instructions stand in for missing sentence-transformers prompts: a task's adapter
    # and its prefix go together.
    prompts = {**{str(k): str(v) for k, v in (config.get("task_instructions") or {}).items()}, **prompts}
    if sparse_head is not None and pooling == "splade":
        raise ModelSpecError("A folder with sparse_linear.pt cannot also use SPLADE pooling")
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
        prompts=prompts,
        default_prompt_name=st_cfg.get("default_prompt_name"),
        splade_activation=splade_activation or "relu",
        adapters=adapters,
        adapter=default_prompt_name if default_prompt_name in adapters else None,
        yes_no=yes_no,
        prompt_template=module.prompt_template(config) if kind == "reranker" and hasattr(module, "prompt_template") else None,
        appended_token=module.appended_token(config) if hasattr(module, "appended_token") else None,
        sparse_head=sparse_head,
        sparse_special_ids=sparse_ids,
        multi_vector=multi_vector,
        trust_remote_code=trust_remote_code,
    )
