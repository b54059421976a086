"""Tiny random NomicBERT, GTE and Jina v3 / jina-reranker-v2 models: built with transformers'
native classes (the references), saved with sentence-transformers, and rewritten into each
family's hub layout (remote-code config keys, renamed and fused weights) by the reverse of
transformers' conversion_mapping.py entries. A wrong entry in a table here shows up as a
mismatch against the native model, so the tables cannot hide a loader bug.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tiny_models import VOCAB, _save

HIDDEN, HEADS, LAYERS, FFN = 64, 4, 2, 96
HEAD_DIM = HIDDEN // HEADS
GTE_BASE, GTE_NTK = 500000.0, 2.0
JINA_TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]
JINA_INSTRUCTIONS = {"retrieval.query": "Represent the query for retrieving evidence documents: ",
                     "retrieval.passage": "Represent the document for retrieval: ",
                     "separation": "", "classification": "", "text-matching": ""}
FAMILIES = ("nomic", "gte", "jina")


def native_config(family: str, **extra):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=FFN, max_position_embeddings=128)
    common.update(extra)
    if family == "nomic":
        common.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 1000.0})
        return tf.NomicBertConfig(type_vocab_size=2, **common)
    if family == "gte":
        # GTE's static NTK as transformers writes it (architectures.md §5): linear over base·f
        ntk = {"rope_type": "linear", "rope_theta": GTE_BASE * GTE_NTK, "factor": GTE_NTK ** (2 / HEAD_DIM)}
        return tf.GteConfig(**{"type_vocab_size": 1, "hidden_act": "gelu", "rope_parameters": ntk, **common})
    common.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 20000.0})
    return tf.JinaEmbeddingsV3Config(type_vocab_size=1, **common)


GAIN, QK_GAIN = 5.0, 3.0  # on every encoder matrix, and again on q and k


def randomize_norms(model, seed: int) -> None:
    """tiny_models._randomize misses the native `*_layernorm` names: give every norm and bias
    non-trivial values, so a swapped norm or a dropped bias cannot hide. And sharpen attention: at
    the default init (std 0.02) its weights are nearly uniform, so positions barely move the output
    and the attention branch adds little next to the residual: a wrong rotary base or scaling would
    pass a parity bar unseen (cos 0.999999 with a 10x wrong base, before this)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
            if param.ndim == 2 and "embeddings" not in name and ("layers." in name or "layer." in name):
                param.mul_(GAIN * (QK_GAIN if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0))


def build_native(folder: Path, family: str, seed: int = 0, classifier: bool = False, **extra) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    if classifier:
        extra.update(num_labels=1, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0})
        model = tf.AutoModelForSequenceClassification.from_config(native_config(family, **extra))
    else:
        model = tf.AutoModel.from_config(native_config(family, **extra))
    randomize_norms(model, seed)
    _save(model, folder, seed)
    save_native_names(model, folder)
    return folder


def save_native_names(model, folder: Path) -> None:
    """transformers 5 saves these classes under the original (hub) names, reversing its own
    conversion table; rewrite the weights under the in-memory names, the native layout, which
    from_pretrained loads as they are. The hub layout is then made here, by this module's tables."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def sentence_transformer(native: Path, folder: Path, pooling: str, prompts: dict | None = None,
                         max_seq_length: int = 128) -> Path:
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(native), max_seq_length=max_seq_length)
    modules = [transformer, models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling),
               models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts or None).save(str(folder))
    return folder


# ---- the hub layouts -----------------------------------------------------------------------------

def _layer_pairs(family: str, i: int) -> list[tuple[str, list[str]]]:
    """(hub name, native names it holds, concatenated by rows) for layer i, without .weight/.bias."""
    n = f"layers.{i}"
    qkv = [f"{n}.self_attn.{x}_proj" for x in "qkv"]
    norms = {"post_attention_layernorm": "norm1", "post_mlp_layernorm": "norm2"}
    if family == "nomic":
        h = f"encoder.layers.{i}"
        pairs = [(f"{h}.attn.Wqkv", qkv), (f"{h}.attn.out_proj", [f"{n}.self_attn.o_proj"]),
                 (f"{h}.mlp.fc11", [f"{n}.mlp.up_proj"]), (f"{h}.mlp.fc12", [f"{n}.mlp.gate_proj"]),
                 (f"{h}.mlp.fc2", [f"{n}.mlp.down_proj"])]
    elif family == "gte":
        h = f"encoder.layer.{i}"
        norms = {"post_attention_layernorm": "attn_ln", "post_mlp_layernorm": "mlp_ln"}
        pairs = [(f"{h}.attention.qkv_proj", qkv), (f"{h}.attention.o_proj", [f"{n}.self_attn.o_proj"]),
                 (f"{h}.mlp.up_gate_proj", [f"{n}.mlp.up_proj", f"{n}.mlp.gate_proj"]),
                 (f"{h}.mlp.down_proj", [f"{n}.mlp.down_proj"])]
    elif family == "jina":
        h = f"encoder.layers.{i}"
        pairs = [(f"{h}.mixer.Wqkv", qkv), (f"{h}.mixer.out_proj", [f"{n}.self_attn.o_proj"]),
                 (f"{h}.mlp.fc1", [f"{n}.mlp.fc1"]), (f"{h}.mlp.fc2", [f"{n}.mlp.fc2"])]
    else:  # jina-reranker-v2: XLM-R's names on the native side
        h, n = f"encoder.layers.{i}", f"encoder.layer.{i}"
        norms = {"attention.output.LayerNorm": "norm1", "output.LayerNorm": "norm2"}
        pairs = [(f"{h}.mixer.Wqkv", [f"{n}.attention.self.{x}" for x in ("query", "key", "value")]),
                 (f"{h}.mixer.out_proj", [f"{n}.attention.output.dense"]),
                 (f"{h}.mlp.fc1", [f"{n}.intermediate.dense"]), (f"{h}.mlp.fc2", [f"{n}.output.dense"])]
    return pairs + [(f"{h}.{hub}", [f"{n}.{native}"]) for native, hub in norms.items()]


def hub_pairs(family: str) -> list[tuple[str, list[str]]]:
    emb_norm = "embeddings.LayerNorm" if family == "gte" else "emb_ln"
    pairs = [(emb_norm, ["embeddings.LayerNorm"])]
    for i in range(LAYERS):
        pairs += _layer_pairs(family, i)
    return pairs


def to_hub_state(state: dict, family: str, native_prefix: str = "", hub_prefix: str = "") -> dict:
    """Rename (and fuse) a native state dict into the hub layout; names not in the table stay."""
    out, used = {}, set()
    for hub, natives in hub_pairs(family):
        for suffix in (".weight", ".bias"):
            keys = [native_prefix + k + suffix for k in natives]
            if all(k in state for k in keys):
                out[hub_prefix + hub + suffix] = torch.cat([state[k] for k in keys], 0)
                used.update(keys)
    for key, value in state.items():
        if key not in used:
            out[hub_prefix + key[len(native_prefix):] if key.startswith(native_prefix) else key] = value
    return out


def hub_config(family: str, native: dict, **extra) -> dict:
    """The remote-code config.json each family's hub repositories carry."""
    bert_keys = {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                 "intermediate_size": FFN, "hidden_act": "gelu", "vocab_size": VOCAB, "max_position_embeddings": 128,
                 "layer_norm_eps": native["layer_norm_eps"], "pad_token_id": 1}
    if family == "nomic":
        cfg = {
            "model_type": "nomic_bert", "architectures": ["NomicBertModel"],
            "auto_map": {"AutoConfig": "nomic-ai/nomic-bert-2048--configuration_hf_nomic_bert.NomicBertConfig",
                         "AutoModel": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"},
            "n_embd": HIDDEN, "n_head": HEADS, "n_layer": LAYERS, "n_inner": FFN, "activation_function": "swiglu",
            "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False,
            "rotary_emb_scale_base": None, "rotary_scaling_factor": None, "qkv_proj_bias": False,
            "mlp_fc1_bias": False, "mlp_fc2_bias": False, "layer_norm_epsilon": native["layer_norm_eps"],
            "type_vocab_size": 2, "vocab_size": VOCAB, "max_trained_positions": 128, "n_positions": 8192,
            "prenorm": False, "causal": False, "pad_token_id": 0,
        }
    elif family == "gte":
        cfg = {
            "model_type": "new", "architectures": ["NewModel"],
            "auto_map": {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
                         "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"},
            **bert_keys, "type_vocab_size": native["type_vocab_size"], "layer_norm_type": "layer_norm",
            "position_embedding_type": "rope", "rope_theta": GTE_BASE, "rope_scaling": {"type": "ntk", "factor": GTE_NTK},
            "logn_attention_scale": False, "logn_attention_clip1": False, "pack_qkv": True, "unpad_inputs": False,
        }
    elif family == "jina":
        cfg = {
            "model_type": "xlm-roberta", "architectures": ["XLMRobertaLoRA"],
            "auto_map": {"AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
                         "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA"},
            **bert_keys, "type_vocab_size": 1, "position_embedding_type": "rotary", "rotary_emb_base": 20000.0,
            "bos_token_id": 0, "eos_token_id": 2,
            "lora_adaptations": JINA_TASKS, "lora_rank": 4, "lora_alpha": 1, "task_instructions": JINA_INSTRUCTIONS,
            "load_trained_adapters": True, "use_flash_attn": True,
        }
    else:  # jina-reranker-v2: XLM-R's keys, Jina's auto_map
        cfg = {k: v for k, v in native.items() if k not in ("transformers_version", "dtype")}
        cfg["auto_map"] = {
            "AutoConfig": "jinaai/jina-reranker-v2-base-multilingual--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModelForSequenceClassification":
                "jinaai/jina-reranker-v2-base-multilingual--modeling_xlm_roberta.XLMRobertaForSequenceClassification"}
    cfg.update(extra)
    return cfg


def write_hub(src: Path, dst: Path, family: str, state: dict | None = None, native_prefix: str = "",
              hub_prefix: str = "", **config) -> Path:
    """A copy of the folder `src` (native weights, sentence-transformers files) in the hub layout."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, dirs_exist_ok=True)
    native = json.loads((src / "config.json").read_text())
    state = state if state is not None else to_hub_state(load_file(str(src / "model.safetensors")), family,
                                                         native_prefix, hub_prefix)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(hub_config(family, native, **config), indent=1))
    return dst


# ---- jina-embeddings-v3's task LoRA --------------------------------------------------------------

LORA_SCALE = 1 / 4  # lora_alpha / lora_rank of hub_config("jina")
_EMBEDDINGS = ("embeddings.word_embeddings", "embeddings.token_type_embeddings")


def add_lora(hub_state: dict, seed: int, rank: int = 4) -> dict:
    """Parametrize every adapted weight as Jina stores it: `original` plus per-task lora_A/lora_B
    (linear: A [t, r, in], B [t, out, r]; embeddings: A [t, vocab, r], B [t, r, hidden])."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in hub_state.items():
        name = key[: -len(".weight")]
        adapted = key.endswith(".weight") and value.ndim == 2 and (
            name.endswith(_EMBEDDINGS) or any(s in name for s in ("mixer.", "mlp.fc", "pooler.dense")))
        if not adapted:
            out[key] = value
            continue
        rows, cols = value.shape
        t = len(JINA_TASKS)
        if name.endswith(_EMBEDDINGS):
            a, b = torch.randn(t, rows, rank, generator=gen), torch.randn(t, rank, cols, generator=gen) * 0.05
        else:
            a, b = torch.randn(t, rank, cols, generator=gen) * 0.3, torch.randn(t, rows, rank, generator=gen) * 0.3
        p = f"{name}.parametrizations.weight"
        out[f"{p}.original"], out[f"{p}.0.lora_A"], out[f"{p}.0.lora_B"] = value, a, b
    return out


def lora_delta(lora_state: dict, name: str, task: int) -> torch.Tensor:
    """The weight change task `task` makes to hub weight `name` (written from architectures.md §4)."""
    p = f"{name}.parametrizations.weight.0"
    a, b = lora_state[f"{p}.lora_A"][task], lora_state[f"{p}.lora_B"][task]
    return LORA_SCALE * (a @ b if name.endswith(_EMBEDDINGS) else b @ a)


def merged_native_state(native_state: dict, lora_state: dict, task: int, hub_prefix: str) -> dict:
    """The native weights with task `task`'s deltas added: each fused hub delta split back by rows."""
    merged = dict(native_state)
    sources = {hub: natives for hub, natives in hub_pairs("jina")}
    for key in lora_state:
        if not key.endswith(".parametrizations.weight.original"):
            continue
        hub = key[len(hub_prefix): -len(".parametrizations.weight.original")]
        delta = lora_delta(lora_state, hub_prefix + hub, task)
        natives = [n + ".weight" for n in sources.get(hub, [hub])]
        for native, part in zip(natives, delta.split([native_state[n].shape[0] for n in natives], 0)):
            merged[native] = native_state[native] + part
    return merged


def write_lora_hub(native_st: Path, dst: Path, seed: int) -> tuple[Path, dict, dict]:
    """jina-embeddings-v3's hub layout with random task adapters, from a native sentence-transformers
    folder (its transformers model next to it, `-hf`): (folder, native state, hub state with LoRA)."""
    from safetensors.torch import load_file

    native_state = load_file(str(native_st.with_name(native_st.name + "-hf") / "model.safetensors"))
    lora = add_lora(to_hub_state(native_state, "jina", hub_prefix="roberta."), seed=seed)
    hub = write_hub(native_st, dst, "jina", state=lora)
    (hub / "config_sentence_transformers.json").write_text(json.dumps({"prompts": JINA_INSTRUCTIONS}))
    return hub, native_state, lora
