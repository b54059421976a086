"""Tiny random-weight multi-vector models: BGE-M3 (XLM-R plus `sparse_linear.pt` and
`colbert_linear.pt`, as BAAI/bge-m3 lays them out), stanford-nlp ColBERT (`HF_ColBERT` with
`linear.weight` in the checkpoint and `artifact.metadata`) and a sentence-transformers 6
`MultiVectorEncoder`."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tiny_models import _randomize, _save, build_hf_encoder


def _linear_state(out_features: int, in_features: int, seed: int, bias: bool = True) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {"weight": torch.randn(out_features, in_features, generator=gen) * 0.2}
    if bias:
        state["bias"] = torch.randn(out_features, generator=gen) * 0.2
    return state


def build_bge_m3(folder: Path, seed: int = 0, colbert_dim: int | None = None) -> Path:
    """XLM-R with a CLS pooling config and the two pickled heads. The tokenizer names [SEP] as its
    eos token, as XLM-R's names </s>, so the sparse output drops it the way FlagEmbedding does."""
    build_hf_encoder(folder, "xlm-roberta", seed)
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    sparse = _linear_state(1, hidden, seed + 1)
    sparse["bias"] += 0.3  # most weights positive: the max per id and the drops are then exercised
    torch.save(sparse, folder / "sparse_linear.pt")
    torch.save(_linear_state(colbert_dim or hidden, hidden, seed + 2), folder / "colbert_linear.pt")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hidden, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        cfg = json.loads((folder / name).read_text())
        cfg["eos_token"] = "[SEP]"
        (folder / name).write_text(json.dumps(cfg))
    return folder


def build_stanford_colbert(folder: Path, seed: int = 0, dim: int = 24, attend_to_mask_tokens: bool = False,
                           query_maxlen: int = 16, doc_maxlen: int = 40) -> Path:
    """`HF_ColBERT`: BertModel weights under `bert.` and the bias-free projection as `linear.weight`."""
    import transformers as tf
    from safetensors.torch import save_file
    from tiny_models import _config

    torch.manual_seed(seed)
    bert = tf.BertModel(_config("bert"))
    _randomize(bert, seed)
    _save(bert, folder, seed)
    state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    state["linear.weight"] = _linear_state(dim, bert.config.hidden_size, seed + 3, bias=False)["weight"]
    (folder / "model.safetensors").unlink()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["HF_ColBERT"]
    (folder / "config.json").write_text(json.dumps(cfg))
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen, "dim": dim, "similarity": "cosine", "mask_punctuation": True,
            "attend_to_mask_tokens": attend_to_mask_tokens}
    (folder / "artifact.metadata").write_text(json.dumps(meta))
    return folder


def build_st_multi_vector(folder: Path, seed: int = 0, dim: int = 24, attend: bool = False, length: int = 16,
                          prompts: dict | None = None, hf: Path | None = None) -> Path:
    """A sentence-transformers 6 MultiVectorEncoder: Transformer with query expansion, a token-level
    Dense, MultiVectorMask with the punctuation skiplist, Normalize. `hf`: the transformers encoder
    folder to start from (a tiny BERT when None)."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    hf = hf or build_hf_encoder(folder.parent / (folder.name + "-hf"), "bert", seed)
    transformer = Transformer(str(hf), query_expansion={"strategy": "fixed", "attend": attend, "length": length},
                              document_length=40)
    torch.manual_seed(seed + 4)
    dense = Dense(transformer.get_embedding_dimension(), dim, bias=False, activation_function=torch.nn.Identity(),
                  module_input_name="token_embeddings")
    modules = [transformer, dense, MultiVectorMask(skiplist_words=list(string.punctuation)),
               Normalize(module_input_name="token_embeddings")]
    MultiVectorEncoder(modules=modules, prompts=prompts or {"query": "query: ", "document": "passage: "},
                       device="cpu").save(str(folder))
    return folder
