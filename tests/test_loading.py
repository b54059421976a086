"""Model folders: local, hub-cache layout, offline hub download; weight formats; model-kind detection."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import torch
from engine_util import cosine, engine_for, run
from server_process import ROUTER, ServerProcess
from texts import TEXTS
from tiny_models import build_classifier, build_embedding_model, build_hf_encoder

from tei.models.hub import ModelNotFound, _download, resolve_model_dir
from tei.models.spec import ModelSpecError, read_spec
from tei.models.weights import load_state_dict


def _hub_cache(root: Path, repo_id: str, src: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lay `src` out as huggingface_hub does: blobs, snapshots/<commit>/ links, refs/main."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        blob = repo / "blobs" / f"blob{abs(hash(str(rel)))}"
        shutil.copy(path, blob)
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / rel).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def tiny_st(models_dir) -> Path:
    return build_embedding_model(models_dir / "load-st", "bert", pooling="mean", seed=11)


def _embed(folder, **settings):
    engine = engine_for(folder, **settings)
    try:
        return run(engine.embed(TEXTS)).values
    finally:
        engine.close()


def test_local_folder_and_missing_folder(tmp_path, tiny_st):
    assert resolve_model_dir(str(tiny_st)) == tiny_st
    with pytest.raises(ModelNotFound):
        resolve_model_dir(str(tmp_path))  # a folder without config.json


def test_hub_cache_layout_is_found_offline(tmp_path, tiny_st, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _hub_cache(tmp_path, "acme/tiny", tiny_st)
    assert resolve_model_dir("acme/tiny", cache_dir=str(tmp_path)) == snapshot
    # the real huggingface_hub download path, served from the cache in offline mode
    assert Path(_download("acme/tiny", None, str(tmp_path), None)).resolve() == snapshot.resolve()
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE"):
        resolve_model_dir("acme/absent", cache_dir=str(tmp_path))
    ref = _embed(tiny_st)
    assert cosine(_embed("acme/tiny", huggingface_hub_cache=str(tmp_path)), ref).min() >= 0.99999


def test_server_serves_a_hub_id_from_the_cache(tmp_path, tiny_st):
    _hub_cache(tmp_path, "acme/tiny-served", tiny_st)
    with ServerProcess("--model-id", "acme/tiny-served", "--huggingface-hub-cache", str(tmp_path)) as server:
        info = httpx.get(server.url + "/info").json()
        assert info["model_id"] == "acme/tiny-served"
        assert len(httpx.post(server.url + "/embed", json={"inputs": "hi"}).json()[0]) == 64


def test_sharded_and_bin_weights_match_safetensors(models_dir):
    import transformers as tf

    base = build_hf_encoder(models_dir / "weights-base", "bert", seed=21)
    model = tf.AutoModel.from_pretrained(base)
    sharded, legacy = models_dir / "weights-sharded", models_dir / "weights-bin"
    model.save_pretrained(sharded, max_shard_size="200KB")
    shutil.copytree(base, legacy)
    # transformers 5 writes only safetensors: make the legacy pickle checkpoint by hand
    torch.save(load_state_dict(base), legacy / "pytorch_model.bin")
    (legacy / "model.safetensors").unlink()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(base / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file()
    ref = _embed(base, pooling="cls")
    assert cosine(_embed(sharded, pooling="cls"), ref).min() >= 0.99999
    assert cosine(_embed(legacy, pooling="cls"), ref).min() >= 0.99999


def test_model_kind_detection(models_dir, tiny_st):
    assert read_spec(tiny_st).kind == "embedding"
    assert read_spec(tiny_st).pooling == "mean"
    assert read_spec(tiny_st, "cls").pooling == "cls"
    assert read_spec(tiny_st, "last-token").pooling == "last_token"
    reranker = read_spec(build_classifier(models_dir / "kind-rr", "roberta", num_labels=1))
    assert reranker.kind == "reranker" and reranker.position_offset == 2
    classifier = read_spec(build_classifier(models_dir / "kind-cls", "bert", num_labels=3))
    assert classifier.kind == "classifier" and classifier.id2label == {"0": "label_a", "1": "label_b", "2": "label_c"}
    with pytest.raises(ModelSpecError, match="SPLADE"):
        read_spec(tiny_st, "splade")


def test_legacy_sentence_transformers_files(tmp_path, tiny_st):
    """Pre-v6 folders: boolean pooling flags and max_seq_length in sentence_bert_config.json."""
    folder = tmp_path / "legacy"
    shutil.copytree(tiny_st, folder)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 64, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    spec = read_spec(folder)
    assert spec.pooling == "cls" and spec.max_input_length == 32
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ModelSpecError, match="not supported"):
        read_spec(folder)


def test_unknown_model_stops_with_one_clean_line(tmp_path):
    proc = subprocess.run(
        [str(ROUTER), "--model-id", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
