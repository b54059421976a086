"""Tiny random models of architectures with no own code here (served by the transformers fallback),
and a remote-code model written into its folder with `auto_map`."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_models import VOCAB, _copy_tokenizer, _save

COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
              max_position_embeddings=128)


def fallback_config(arch: str, **extra):
    import transformers as tf

    if arch == "deberta-v2":
        return tf.DebertaV2Config(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16,
                                  type_vocab_size=0, **COMMON, **extra)
    if arch == "electra":
        return tf.ElectraConfig(embedding_size=32, **COMMON, **extra)
    raise ValueError(arch)


def build_fallback_hf(folder: Path, arch: str, seed: int = 0, num_labels: int | None = None) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    if num_labels is None:
        model = tf.AutoModel.from_config(fallback_config(arch))
    else:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        model = tf.AutoModelForSequenceClassification.from_config(
            fallback_config(arch, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()}))
    return _save(model, folder, seed)


def build_fallback_embedding(folder: Path, arch: str, seed: int = 0, pooling: str = "mean") -> Path:
    from sentence_transformers import SentenceTransformer, models

    hf = build_fallback_hf(folder.parent / (folder.name + "-hf"), arch, seed)
    transformer = models.Transformer(str(hf), max_seq_length=128)
    dim = transformer.get_word_embedding_dimension()
    SentenceTransformer(modules=[transformer, models.Pooling(dim, pooling_mode=pooling)], device="cpu").save(str(folder))
    return folder


REMOTE_CODE = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class TinyConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, vocab_size=30522, hidden_size=32, max_position_embeddings=64, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden_size, self.max_position_embeddings = vocab_size, hidden_size, max_position_embeddings


class TinyModel(PreTrainedModel):
    """Embeddings, one masked-mean context mix, a tanh MLP: enough that padding would show."""

    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.mix = nn.Linear(2 * config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        h = self.embed(input_ids) + self.position(positions)
        m = attention_mask[..., None].to(h.dtype)
        context = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)
        h = torch.tanh(self.mix(torch.cat([h, context.expand_as(h)], -1)))
        return BaseModelOutput(last_hidden_state=h)
'''


def build_remote_code_model(folder: Path, seed: int = 0) -> Path:
    """A model type transformers does not know, with its modeling file beside config.json."""
    import importlib.util
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_tiny.py").write_text(REMOTE_CODE)
    spec = importlib.util.spec_from_file_location(f"modeling_tiny_{seed}", folder / "modeling_tiny.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.TinyModel(module.TinyConfig())
    model.save_pretrained(folder, safe_serialization=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"}
    cfg["architectures"] = ["TinyModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    _copy_tokenizer(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean", "embedding_dimension": 32}))
    return folder
