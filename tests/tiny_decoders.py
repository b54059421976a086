"""Tiny random-weight decoders (Qwen2, Qwen3, Mistral, Llama, Gemma3 text, EmbeddingGemma 2) built with
the native `transformers` classes, saved as sentence-transformers folders; Llama/Mistral-layout tokenizers;
and tiny Qwen3-Reranker checkpoints with a byte-level BPE tokenizer laid out as Qwen's (ChatML special
tokens, single `yes`/`no` tokens).

References run with eager attention: SDPA in transformers 5 drops a bidirectional mask when nothing
is padded and then runs causally (architectures.md §1.5).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_models import VOCAB, _copy_tokenizer, _randomize

EAGER = {"attn_implementation": "eager"}
DECODERS = ("qwen2", "qwen3", "mistral", "llama")
CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2/Qwen3's pre-tokenizer split (their tokenizer.json)
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
              r"\s+(?!\S)|\s+")
RERANK_QUERY = "What is deep learning?"
RERANK_DOCS = [
    "Deep learning is a part of machine learning based on neural networks.",
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé téxt 深度学习 and numbers 3.14159.",
    "short",
    " ".join(["A longer passage about retrieval augmented generation and rerankers."] * 20),
]
# The template's words, so the tiny BPE merges them as a real vocabulary would
RERANK_CORPUS = [
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".',
    "<Instruct>: Given a web search query, retrieve relevant passages that answer the query",
    "<Query>: <Document>: system user assistant", RERANK_QUERY, *RERANK_DOCS,
]


def decoder_config(arch: str, vocab: int = VOCAB, **extra):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=512, rms_norm_eps=1e-6, pad_token_id=0,
                  tie_word_embeddings=False)
    if arch == "qwen3":
        return tf.Qwen3Config(head_dim=24, **{**common, **extra})  # explicit head_dim != hidden / heads
    if arch == "qwen2":
        return tf.Qwen2Config(**{**common, **extra})
    if arch == "mistral":
        return tf.MistralConfig(**{**common, "sliding_window": None, **extra})
    if arch == "llama":
        return tf.LlamaConfig(**{**common, **extra})
    if arch == "gemma3":
        gemma = dict(common, hidden_size=96, num_attention_heads=3, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=20,
                     hidden_activation="gelu_pytorch_tanh", use_bidirectional_attention=True, sliding_window=8,
                     layer_types=["sliding_attention", "full_attention", "sliding_attention"], num_hidden_layers=3,
                     rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                      "full_attention": {"rope_type": "default", "rope_theta": 1e6}})
        return tf.Gemma3TextConfig(**{**gemma, **extra})
    raise ValueError(arch)


def _randomize_norms(model, seed: int) -> None:
    """RMSNorm weights away from 1 (Gemma's away from 0), biases away from 0."""
    _randomize(model, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.2)


def save_decoder(model, folder: Path, seed: int, tokenizer=None) -> Path:
    _randomize_norms(model, seed)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    (tokenizer or _copy_tokenizer)(folder)
    return folder


def build_decoder_embedding(folder: Path, arch: str, pooling: str = "lasttoken", seed: int = 0,
                            prompts: dict | None = None, dense: bool = False, model_type: str | None = None,
                            tokenizer=None, **config) -> Path:
    """Transformer (eager) + Pooling (+ EmbeddingGemma's two bias-free Dense layers) + Normalize.
    `model_type` rewrites config.json afterwards (NVIDIA's remote-code `llama_bidirec`). `tokenizer(folder)`
    writes the tokenizer files, into the final folder too: sentence-transformers re-saves them as
    transformers 5 rebuilds them, and a hub repo has them as written."""
    import transformers as tf

    torch.manual_seed(seed)
    hf = save_decoder(tf.AutoModel.from_config(decoder_config(arch, **config), **EAGER),
                      folder.parent / (folder.name + "-hf"), seed, tokenizer=tokenizer)
    return _st_folder(hf, folder, pooling, seed, prompts, dense, model_type, tokenizer)


def _st_folder(hf: Path, folder: Path, pooling: str, seed: int, prompts: dict | None = None, dense: bool = False,
               model_type: str | None = None, tokenizer=None) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(hf), max_seq_length=256, model_kwargs=EAGER)
    dim = transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension") \
        else transformer.get_word_embedding_dimension()
    modules = [transformer, Pooling(dim, pooling_mode=pooling)]
    if dense:
        torch.manual_seed(seed + 1)
        modules += [Dense(dim, dim * 4, bias=False, activation_function=torch.nn.Identity()),
                    Dense(dim * 4, dim, bias=False, activation_function=torch.nn.Identity())]
    modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts or None).save(str(folder))
    if model_type:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": model_type}))
    if tokenizer is not None:
        tokenizer(folder)
    return folder


def reference_embeddings(folder: Path, texts, **kw):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", model_kwargs=EAGER)
    return st.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False, **kw)


# ---- Llama/Mistral tokenizers: tokenizer.json against tokenizer_config.json's add_bos/add_eos --------------

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")


def llama_tokenizer_writer(add_bos: bool | None = True, add_eos: bool | None = True,
                           post_processor: str | None = "bos"):
    """A writer of Llama/Mistral's tokenizer layout (SentencePiece-style BPE: Metaspace, byte fallback,
    <unk> <s> </s> at ids 0-2), trained on the test texts. Its tokenizer.json adds <s> only
    (`post_processor="bos"`, as Llama-2's and Mistral's files) or nothing (None), while
    tokenizer_config.json sets `add_bos_token`/`add_eos_token` (None: leaves the key out), as
    e5-mistral-7b-instruct's, SFR-Embedding-Mistral's and Linq-Embed-Mistral's do; `"bos_eos"`: the file
    adds both, as transformers 4 saved it once it had applied the flags."""
    def write(folder: Path) -> None:
        from texts import TEXTS
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        # Trained on words (split), served unsplit as Llama's file is: no merge spans a word boundary.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=list(LLAMA_SPECIALS), show_progress=False)
        tok.train_from_iterator([*TEXTS, *RERANK_CORPUS] * 3, trainer)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        if post_processor == "bos":
            tok.post_processor = processors.TemplateProcessing(
                single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
        elif post_processor == "bos_eos":  # what transformers 4 saved after applying add_eos_token
            tok.post_processor = processors.TemplateProcessing(
                single="<s>:0 $A:0 </s>:0", pair="<s>:0 $A:0 </s>:0 <s>:1 $B:1 </s>:1",
                special_tokens=[("<s>", 1), ("</s>", 2)])
        folder.mkdir(parents=True, exist_ok=True)
        tok.save(str(folder / "tokenizer.json"))
        config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                  "pad_token": "</s>", "legacy": False, "model_max_length": 512, "clean_up_tokenization_spaces": False}
        for key, value in (("add_bos_token", add_bos), ("add_eos_token", add_eos)):
            if value is not None:
                config[key] = value
        (folder / "tokenizer_config.json").write_text(json.dumps(config))

    return write


def tokenizer_vocab(write) -> int:
    """The vocabulary size a tokenizer writer produces (for the model's embedding table)."""
    import tempfile

    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        return Tokenizer.from_file(str(Path(tmp) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


# ---- EmbeddingGemma 2 (transformers' embedding_gemma2) ---------------------------------------------------

def build_embedding_gemma2(folder: Path, seed: int = 0, text_only: bool = False, rope: dict | None = None,
                           prompts: dict | None = None) -> Path:
    """A tiny EmbeddingGemma 2: the composite model with no vision or audio tower (its text model
    under `language_model.`), or the text model alone. Sliding layers of radius 3 alternate with wider
    full-attention layers (their own head size and one k/v head, via `per_layer_config`); random
    norms, PLE norms and layer scalars. A sentence-transformers folder: Transformer + mean Pooling +
    Normalize (written by sentence-transformers for the text model; by hand for the composite, whose
    processor needs image and audio configs a text-only test has no use for)."""
    import transformers as tf

    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=2,
                num_key_value_heads=2, head_dim=32, global_head_dim=48, num_global_key_value_heads=1,
                sliding_window=3, sliding_window_pattern=2, hidden_size_per_layer_input=16, embedding_dim=40,
                max_position_embeddings=512, pad_token_id=0)
    if rope:
        text["rope_parameters"] = rope
    torch.manual_seed(seed)
    cfg = tf.EmbeddingGemma2TextConfig(**text) if text_only else tf.EmbeddingGemma2Config(text_config=text)
    model = tf.AutoModel.from_config(cfg, **EAGER)
    gen = torch.Generator().manual_seed(seed + 200)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("layer_scalar"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
    if text_only:
        hf = save_decoder(model, folder.parent / (folder.name + "-hf"), seed)
        return _st_folder(hf, folder, "mean", seed, prompts)
    save_decoder(model, folder, seed)
    modules = [("", "sentence_transformers.base.modules.transformer.Transformer"),
               ("1_Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
               ("2_Normalize", "sentence_transformers.base.modules.normalize.Normalize")]
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": kind} for i, (path, kind) in enumerate(modules)]))
    for path in ("1_Pooling", "2_Normalize"):
        (folder / path).mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"embedding_dimension": text["embedding_dim"], "pooling_mode": "mean", "include_prompt": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "prompts": prompts or {}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}))
    return folder


def reference_embedding_gemma2(folder: Path, texts, prompt_name: str | None = None, dtype=None):
    """sentence-transformers for the text model; for the composite model (whose processor this test
    folder lacks), what its Transformer + mean Pooling compute: transformers' `EmbeddingGemma2Model`
    on each text alone (prompt first), its projected states averaged over every token (in `dtype`,
    float32 unless given)."""
    import transformers as tf

    if json.loads((folder / "config.json").read_text())["model_type"] != "embedding_gemma2" and dtype is None:
        return reference_embeddings(folder, texts, prompt_name=prompt_name)
    prompt = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"].get(prompt_name, "") \
        if prompt_name else ""
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModel.from_pretrained(str(folder), dtype=dtype or torch.float32, **EAGER).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok(prompt + text, truncation=True, max_length=256)["input_ids"]
            out.append(model(input_ids=torch.tensor([ids])).last_hidden_state[0].float().mean(0).numpy())
    import numpy as np

    return np.stack(out)


# ---- Qwen3-Reranker-shaped checkpoints ----------------------------------------------------------------

def write_qwen_tokenizer(folder: Path, append_eos: bool = True) -> None:
    """A byte-level BPE over the test texts and the template's words, with ChatML special tokens;
    `yes` and `no` are single tokens, as in Qwen's vocabulary. Like Qwen3-Embedding's tokenizer it
    appends <|endoftext|> (the pad token) to every text: the reranker template must not get it."""
    from texts import TEXTS
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=list(CHATML), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [*TEXTS, *RERANK_CORPUS] * 3 + ["yes\nno\nyes no yes no"] * 50
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens(["<think>", "</think>"])
    if append_eos:
        eos = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A $B <|endoftext|>", special_tokens=[("<|endoftext|>", eos)])
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2TokenizerFast", "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
              "padding_side": "left", "model_max_length": 512, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def qwen_vocab(folder: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def build_qwen3_reranker(folder: Path, seed: int = 0, seq_cls: bool = False, tied: bool = False) -> Path:
    """Qwen3ForCausalLM (Qwen3-Reranker's layout), or its 1-label Qwen3ForSequenceClassification
    conversion (score = lm_head[yes] − lm_head[no])."""
    import transformers as tf
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    write_qwen_tokenizer(folder)
    vocab = qwen_vocab(folder)
    torch.manual_seed(seed)
    cfg = decoder_config("qwen3", vocab=vocab, tie_word_embeddings=tied, pad_token_id=0)
    lm = tf.Qwen3ForCausalLM(cfg)
    _randomize_norms(lm, seed)
    with torch.no_grad():  # logits that spread over a few units, so a 1e-4 bar means something
        lm.lm_head.weight.mul_(40.0)
    if not seq_cls:
        lm.eval()
        lm.save_pretrained(folder, safe_serialization=True)
        return folder
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    yes, no = tok.token_to_id("yes"), tok.token_to_id("no")
    cfg = decoder_config("qwen3", vocab=vocab, num_labels=1, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0})
    cls = tf.Qwen3ForSequenceClassification(cfg)
    cls.model.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        cls.score.weight.copy_((lm.lm_head.weight[yes] - lm.lm_head.weight[no])[None, :])
    cls.eval()
    cls.save_pretrained(folder, safe_serialization=True)
    return folder


def template_ids(tok, query: str, document: str, instruction: str, max_length: int) -> list[int]:
    """The official Qwen3-Reranker recipe (its model card): prefix + middle[:budget] + suffix, each
    tokenized without special tokens."""
    from tei.models.families.decoder import PROMPT_TEMPLATE as T

    prefix = tok.encode(T["prefix"], add_special_tokens=False)
    suffix = tok.encode(T["suffix"], add_special_tokens=False)
    middle = tok.encode(T["middle"].format(instruction=instruction, query=query, document=document),
                        add_special_tokens=False)
    return prefix + middle[: max_length - len(prefix) - len(suffix)] + suffix


def reference_rerank(folder: Path, query: str, docs, instruction: str | None = None, max_length: int = 512):
    """Raw scores (logit_yes − logit_no, or the seq-cls logit) from transformers, one pair at a time
    (no padding, so positions are exact)."""
    import transformers as tf

    from tei.models.families.decoder import PROMPT_TEMPLATE

    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    seq_cls = any(a.endswith("SequenceClassification") for a in cfg["architectures"])
    cls = tf.AutoModelForSequenceClassification if seq_cls else tf.AutoModelForCausalLM
    model = cls.from_pretrained(str(folder), **EAGER).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    out = []
    with torch.no_grad():
        for doc in docs:
            ids = template_ids(tok, query, doc, instruction or PROMPT_TEMPLATE["instruction"], max_length)
            logits = model(input_ids=torch.tensor([ids])).logits.float()
            out.append(float(logits[0, 0]) if seq_cls else float(logits[0, -1, yes] - logits[0, -1, no]))
    return out
