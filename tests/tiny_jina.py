"""Tiny JinaBERT v2 folders (hub layout: `model_type: bert` with Jina's remote-code `auto_map`), and a
plain padded reference written from the published description of the model (Jina's
jina-bert-implementation / jina-bert-v2-qk-post-norm, as TEI's jina.rs, jina_code.rs and
jinaBert_model.py read it). No `transformers` class exists for it, so the reference is eager PyTorch
on padded batches, sharing nothing with the packed code under test.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tiny_models import VOCAB, _copy_tokenizer

IMPL = {False: "jinaai/jina-bert-implementation", True: "jinaai/jina-bert-v2-qk-post-norm"}


def jina_config(code: bool = False, hidden: int = 48, heads: int = 6, layers: int = 2, inter: int = 80, **extra) -> dict:
    """Six heads by default: not a power of two, so the interleaved ALiBi slopes are exercised."""
    return {
        "model_type": "bert", "_name_or_path": IMPL[code],
        "auto_map": {"AutoConfig": f"{IMPL[code]}--configuration_bert.JinaBertConfig",
                     "AutoModel": f"{IMPL[code]}--modeling_bert.JinaBertModel"},
        "architectures": ["JinaBertForMaskedLM"], "vocab_size": VOCAB, "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": inter,
        "max_position_embeddings": 8192, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
        "position_embedding_type": "alibi", "feed_forward_type": "geglu", "emb_pooler": "mean", **extra,
    }


def random_state(cfg: dict, code: bool, seed: int, prefix: str = "", pooler: bool = True) -> dict[str, torch.Tensor]:
    """Weights at about 1.5/sqrt(fan_in): large enough that attention and the GLU really mix tokens."""
    gen = torch.Generator().manual_seed(seed)
    H, I = cfg["hidden_size"], cfg["intermediate_size"]

    def mat(rows, cols):
        return torch.randn(rows, cols, generator=gen) * (1.5 / math.sqrt(cols))

    def vec(n, center=0.0):
        return center + torch.randn(n, generator=gen) * 0.1

    s = {"embeddings.word_embeddings.weight": torch.randn(cfg["vocab_size"], H, generator=gen),
         "embeddings.token_type_embeddings.weight": torch.randn(cfg["type_vocab_size"], H, generator=gen),
         "embeddings.LayerNorm.weight": vec(H, 1.0), "embeddings.LayerNorm.bias": vec(H)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        for n in ("query", "key", "value"):
            s[f"{p}.attention.self.{n}.weight"], s[f"{p}.attention.self.{n}.bias"] = mat(H, H), vec(H)
        s[f"{p}.attention.output.dense.weight"], s[f"{p}.attention.output.dense.bias"] = mat(H, H), vec(H)
        s[f"{p}.attention.output.LayerNorm.weight"], s[f"{p}.attention.output.LayerNorm.bias"] = vec(H, 1.0), vec(H)
        if code:
            for n in ("layer_norm_q", "layer_norm_k"):
                s[f"{p}.attention.self.{n}.weight"], s[f"{p}.attention.self.{n}.bias"] = vec(H, 1.0), vec(H)
            s[f"{p}.mlp.up_gated_layer.weight"] = mat(2 * I, H)
            s[f"{p}.mlp.down_layer.weight"], s[f"{p}.mlp.down_layer.bias"] = mat(H, I), vec(H)
            for n in ("layer_norm_1", "layer_norm_2"):
                s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"] = vec(H, 1.0), vec(H)
        else:
            s[f"{p}.mlp.gated_layers.weight"] = mat(2 * I, H)
            s[f"{p}.mlp.wo.weight"], s[f"{p}.mlp.wo.bias"] = mat(H, I), vec(H)
            s[f"{p}.mlp.layernorm.weight"], s[f"{p}.mlp.layernorm.bias"] = vec(H, 1.0), vec(H)
    if pooler:
        s["pooler.dense.weight"], s["pooler.dense.bias"] = mat(H, H), vec(H)
    return {prefix + k: v.contiguous() for k, v in s.items()}


def _write(folder: Path, cfg: dict, state: dict) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _copy_tokenizer(folder)
    return folder


def build_jina_embedding(folder: Path, code: bool = False, seed: int = 0, pooling: str = "mean",
                         max_seq_length: int = 128, pooler: bool = True, **sizes) -> Path:
    """A sentence-transformers folder as jina-embeddings-v2 ships it: Transformer, Pooling, Normalize.
    `sizes`: jina_config's hidden, heads, layers, inter."""
    cfg = jina_config(code, **sizes)
    _write(folder, cfg, random_state(cfg, code, seed, pooler=pooler))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": cfg["hidden_size"], "pooling_mode_cls_token": pooling == "cls",
         "pooling_mode_mean_tokens": pooling == "mean"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def build_jina_reranker(folder: Path, seed: int = 0, pooler: bool = True, num_labels: int = 1) -> Path:
    """jina-reranker-v1's layout: JinaBertForSequenceClassification, encoder under `bert.`."""
    labels = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    cfg = jina_config(False, architectures=["JinaBertForSequenceClassification"], id2label=labels,
                      label2id={v: int(k) for k, v in labels.items()})
    state = random_state(cfg, False, seed, prefix="bert.", pooler=pooler)
    gen = torch.Generator().manual_seed(seed + 1)
    state["classifier.weight"] = torch.randn(num_labels, cfg["hidden_size"], generator=gen)
    state["classifier.bias"] = torch.randn(num_labels, generator=gen)
    return _write(folder, cfg, state)


# ---- the plain reference ------------------------------------------------------------------------

def _slopes(n: int) -> list[float]:
    """ALiBi's head slopes: 2^(-8k/n) for k = 1..n when n is a power of two; otherwise those of the
    next lower power p, then the odd-numbered ones of the 2p list."""
    p = 2 ** int(math.floor(math.log2(n)))
    slopes = [2 ** (-8 * k / p) for k in range(1, p + 1)]
    return slopes + [2 ** (-8 * k / (2 * p)) for k in range(1, 2 * p + 1, 2)][: n - p]


def _ln(x, state, name, eps):
    return F.layer_norm(x, x.shape[-1:], state[f"{name}.weight"], state[f"{name}.bias"], eps)


def _lin(x, state, name, bias=True):
    return F.linear(x, state[f"{name}.weight"], state.get(f"{name}.bias") if bias else None)


def reference_hidden(state: dict, cfg: dict, ids: torch.Tensor, types: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L] padded ids (mask 1 = real token) → [B, L, H] last hidden states."""
    code = cfg["_name_or_path"] == IMPL[True]
    state = {k[len("bert."):] if k.startswith("bert.") else k: v.double() for k, v in state.items()}
    eps, heads, inter = cfg["layer_norm_eps"], cfg["num_attention_heads"], cfg["intermediate_size"]
    B, L = ids.shape
    d = cfg["hidden_size"] // heads
    x = state["embeddings.word_embeddings.weight"][ids] + state["embeddings.token_type_embeddings.weight"][types]
    x = _ln(x, state, "embeddings.LayerNorm", eps)
    pos = torch.arange(L)
    alibi = -torch.tensor(_slopes(heads), dtype=torch.float64)[:, None, None] * (pos[None, :] - pos[:, None]).abs()
    key_mask = torch.where(mask.bool(), 0.0, float("-inf")).double()[:, None, None, :]  # padded keys
    act = {"geglu": lambda t: F.gelu(t), "reglu": F.relu}[cfg["feed_forward_type"]]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (_lin(x, state, f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
        if code:
            q, k = _ln(q, state, f"{p}.attention.self.layer_norm_q", eps), _ln(k, state, f"{p}.attention.self.layer_norm_k", eps)
        q, k, v = (t.view(B, L, heads, d).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + alibi[None] + key_mask
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, heads * d)
        a = _ln(_lin(ctx, state, f"{p}.attention.output.dense") + x, state, f"{p}.attention.output.LayerNorm", eps)
        if code:
            h = _ln(a + x, state, f"{p}.layer_norm_1", eps)
            g = _lin(h, state, f"{p}.mlp.up_gated_layer", bias=False)
            x = _ln(_lin(g[..., :inter] * act(g[..., inter:]), state, f"{p}.mlp.down_layer") + h,
                    state, f"{p}.layer_norm_2", eps)
        else:
            g = _lin(a, state, f"{p}.mlp.gated_layers", bias=False)
            x = _ln(_lin(act(g[..., :inter]) * g[..., inter:], state, f"{p}.mlp.wo") + a, state, f"{p}.mlp.layernorm", eps)
    return x


def _padded(encodings):
    L = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(encodings), L, dtype=torch.long)
    types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for b, e in enumerate(encodings):
        n = len(e.ids)
        ids[b, :n], types[b, :n], mask[b, :n] = torch.tensor(e.ids), torch.tensor(e.type_ids), 1
    return ids, types, mask


def _load(folder: Path, max_length: int):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()  # the shared tokenizer file pads to a fixed length
    tok.enable_truncation(max_length)
    return load_file(str(folder / "model.safetensors")), json.loads((folder / "config.json").read_text()), tok


def reference_embeddings(folder: Path, texts: list[str], pooling: str = "mean", max_length: int = 128) -> torch.Tensor:
    """One padded batch of every text, pooled over real tokens (not normalized)."""
    state, cfg, tok = _load(folder, max_length)
    ids, types, mask = _padded(tok.encode_batch(texts))
    hidden = reference_hidden(state, cfg, ids, types, mask)
    if pooling == "cls":
        return hidden[:, 0]
    m = mask[..., None].double()
    return (hidden * m).sum(1) / m.sum(1)


def reference_scores(folder: Path, pairs: list[tuple[str, str]], max_length: int) -> torch.Tensor:
    """Raw logits [n, labels] of JinaBertForSequenceClassification: [CLS] → pooler (if any) → classifier."""
    state, cfg, tok = _load(folder, max_length)
    ids, types, mask = _padded(tok.encode_batch(pairs))
    cls = reference_hidden(state, cfg, ids, types, mask)[:, 0]
    s = {k: v.double() for k, v in state.items()}
    if "bert.pooler.dense.weight" in s:
        cls = torch.tanh(_lin(cls, s, "bert.pooler.dense"))
    return _lin(cls, s, "classifier")
