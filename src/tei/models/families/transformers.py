"""The fallback: an architecture with no code of its own here, served through `transformers`
(`AutoModel`, or `AutoModelForSequenceClassification` for classifiers and rerankers; remote code
only with --trust-remote-code / TRUST_REMOTE_CODE, as TEI's Python backend).

It keeps the Encoder contract the loader relies on (forward(batch, plan) → packed hidden [T, H]) by
unpacking each packed batch into a padded one, running the model with an attention mask, and packing
the last hidden states back; so the batcher, pooling, Dense layers, prompts and every route stay the
same. It is slower than an own family (padding, no fused linears, no int8): own families always win,
and `--backend transformers` forces this path only to compare.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..attention import AttentionNeeds
from ..batch import PackedBatch

log = logging.getLogger(__name__)

PREFIXES: tuple[str, ...] = ()
IGNORED = ("*",)  # transformers loads (and checks) the checkpoint itself
OWN_WEIGHTS = True  # the loader hands this family the folder, not a state dict (models/loader.py)
# Sequences per padded forward: sentence-transformers' batch size. A whole token-budget batch padded
# to its longest sequence ran at 0.4x of sentence-transformers on DeBERTa-v2.
GROUP = 32


class MissingTransformers(ImportError):
    pass


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise MissingTransformers(
            "this architecture has no own code here and `transformers` is not installed: "
            "install it with `pip install 'tei[transformers]'` to serve it through the transformers fallback"
        ) from None
    return transformers


def is_classifier(cfg: dict) -> bool:
    return any(a.endswith("Classification") for a in cfg.get("architectures") or [])


def loadable(cfg: dict, trust_remote_code: bool) -> str | None:
    """None when transformers can build this config; else why not (one line)."""
    tf = import_transformers()
    model_type = cfg.get("model_type")
    if cfg.get("auto_map"):
        if not trust_remote_code:
            return "it needs remote code (`auto_map` in config.json): pass --trust-remote-code to run it"
        return None
    if model_type not in tf.CONFIG_MAPPING:
        return "transformers does not know it either"
    from transformers.models.auto import modeling_auto

    mapping = (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES if is_classifier(cfg)
               else modeling_auto.MODEL_MAPPING_NAMES)
    if model_type not in mapping:
        return f"transformers has no {'sequence-classification ' if is_classifier(cfg) else ''}model for it"
    return None


class _Passthrough(nn.Module):
    """Stands in for a layer where the loader's kernel warm-up expects one (there is nothing to warm)."""

    def forward(self, x: torch.Tensor, plan) -> torch.Tensor:
        return x


class TransformersEncoder(nn.Module):
    def __init__(self, model: nn.Module, hidden_size: int, classifier: bool):
        super().__init__()
        self.model = model
        self.hidden_size = hidden_size
        self.classifier = classifier
        self.layers = nn.ModuleList([_Passthrough()])
        self.attention: list = []
        self.needs = AttentionNeeds(head_dim=1)
        self.logits: torch.Tensor | None = None
        params = set(getattr(model.forward, "__wrapped__", model.forward).__code__.co_varnames)
        self.takes_type_ids = "token_type_ids" in params

    def forward(self, batch: PackedBatch, plan) -> torch.Tensor:
        """Padded runs of at most GROUP consecutive sequences (the batcher sorts a batch by length, so
        each run pads little), the hidden states packed back in order."""
        hidden, logits, first, token = [], [], 0, 0
        while first < len(batch.lengths):
            lengths = batch.lengths[first:first + GROUP]
            rows = sum(lengths)
            h, l = self._padded(batch.input_ids[token:token + rows], batch.token_type_ids[token:token + rows], lengths)
            hidden.append(h)
            logits.append(l)
            first, token = first + len(lengths), token + rows
        if self.classifier:
            self.logits = torch.cat(logits)
        return torch.cat(hidden)

    def _padded(self, ids: torch.Tensor, type_ids: torch.Tensor, lengths: list[int]):
        count, width = len(lengths), max(lengths)
        mask = torch.arange(width, device=ids.device)[None, :] < torch.tensor(lengths, device=ids.device)[:, None]
        kwargs = {"input_ids": ids.new_zeros(count, width).masked_scatter_(mask, ids), "attention_mask": mask.long()}
        if self.takes_type_ids:
            kwargs["token_type_ids"] = type_ids.new_zeros(count, width).masked_scatter_(mask, type_ids)
        out = self.model(**kwargs, output_hidden_states=self.classifier, return_dict=True)
        if self.classifier:
            return out.hidden_states[-1][mask], out.logits
        return out.last_hidden_state[mask], None


class StashedLogits(nn.Module):
    """The classification head already ran inside the transformers model: hand back its logits."""

    pooling = "cls"

    def __init__(self, encoder: TransformersEncoder):
        super().__init__()
        self.encoder = [encoder]  # a list: not a submodule (it would be cast and counted twice)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.encoder[0].logits[: len(pooled)].to(pooled.dtype)


def encoder(w, cfg: dict) -> TransformersEncoder:
    tf = import_transformers()
    folder, trust = cfg["_folder"], bool(cfg.get("_trust_remote_code"))
    auto = tf.AutoModelForSequenceClassification if is_classifier(cfg) else tf.AutoModel
    model = auto.from_pretrained(folder, trust_remote_code=trust, dtype=w.dtype, local_files_only=True)
    model.to(w.device).eval()
    hidden = int(getattr(model.config, "hidden_size", 0) or getattr(model.config, "d_model", 0))
    log.info("Serving %s through the transformers fallback (%s, padded batches): no own code for model type `%s`",
             type(model).__name__, "remote code" if cfg.get("auto_map") else f"transformers {tf.__version__}",
             cfg.get("model_type"))
    built = TransformersEncoder(model, hidden, is_classifier(cfg))
    cfg["_encoder"] = built
    return built


def classifier(w, cfg: dict) -> nn.Module:
    return StashedLogits(cfg["_encoder"])
