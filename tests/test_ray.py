"""Ray, on loopback only (tests/netns.py): `text-embeddings-batch --ray` against the local run, and
`text-embeddings-router --ray-replicas 2` against the TEI API. Slow: a Ray start takes tens of
seconds here, so these are two tests, each one Ray session."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import netns
from bulk_data import corpus, read_embeddings, write
from engine_util import cosine

pytestmark = pytest.mark.slow
pytest.importorskip("ray", reason="the ray extra is not installed", exc_type=ImportError)
HERE = Path(__file__).parent


def test_ray_data_gives_the_local_output(tmp_path, minilm_path):
    texts = corpus()
    texts[10] = ""  # a bad row travels through Ray too
    path = write(tmp_path / "in.parquet", texts, [f"d{i}" for i in range(len(texts))])
    common = ["--model-id", minilm_path, "--dtype", "float32", "--input", str(path), "--id-column", "id",
              "--chunk-rows", "500"]
    from tei.batch.cli import main

    assert main([*common, "--output", str(tmp_path / "local.parquet"), "--quiet"]) == 0
    cmd = [sys.executable, "-m", "tei.batch", *common, "--output", str(tmp_path / "ray.parquet"), "--ray"]
    proc = subprocess.run(netns.isolated(cmd), capture_output=True, text=True, timeout=900,
                          env=netns.env(LOG_LEVEL="INFO"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Ray nodes: ['127.0.0.1']" in proc.stderr  # Ray itself reports the loopback address
    local_ids, local, local_errors = read_embeddings(tmp_path / "local.parquet")
    ray_ids, on_ray, ray_errors = read_embeddings(tmp_path / "ray.parquet")
    assert ray_ids == local_ids == [f"d{i}" for i in range(len(texts))]
    assert ray_errors == local_errors and ray_errors[10] and sum(map(bool, ray_errors)) == 1
    good = [i for i in range(len(texts)) if i != 10]
    assert cosine(on_ray[good], local[good]).min() > 0.99999
    assert f"{len(texts)} texts -> " in proc.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("serve") / "answers.json"
    flags = ["--max-concurrent-requests", "8", "--max-client-batch-size", "16",
             "--ray-max-ongoing-requests", "2", "--ray-max-queued-requests", "2"]
    cmd = [sys.executable, str(HERE / "ray_scenarios" / "serve_check.py"), str(out), *flags]
    proc = subprocess.run(netns.isolated(cmd), capture_output=True, text=True, timeout=900, env=netns.env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


def test_ray_serve_answers_the_tei_api(served, minilm_path):
    from sentence_transformers import SentenceTransformer

    log = "".join(served["log"])
    assert "Ray nodes: ['127.0.0.1']" in log
    assert served["health"]["status"] == 200
    info = served["info"]["body"]
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_client_batch_size"] == 16
    texts = ["What is deep learning?", "Ünïcödé 深度学习", "hello"]
    want = SentenceTransformer(minilm_path, device="cpu").encode(texts)
    assert served["embed"]["status"] == 200
    assert cosine(np.array(served["embed"]["body"]), want).min() > 0.9999
    openai = served["openai"]["body"]
    assert [d["index"] for d in openai["data"]] == [0, 1, 2] and openai["usage"]["prompt_tokens"] > 0
    assert cosine(np.array([d["embedding"] for d in openai["data"]]), want).min() > 0.9999
    ranked = served["rerank"]["body"]
    assert ranked[0]["index"] == 2 and ranked[0]["score"] == pytest.approx(1.0, abs=1e-4)  # the query itself
    normed = want / np.linalg.norm(want, axis=1, keepdims=True)
    scores = {r["index"]: r["score"] for r in ranked}
    assert scores[0] == pytest.approx(float(normed[1] @ normed[0]), abs=1e-4)
    assert served["tokenize"]["status"] == 200 and served["tokenize"]["body"][0][0]["text"] == "[CLS]"


def test_ray_serve_errors_are_tei_errors(served):
    assert served["empty"]["status"] == 422
    assert served["empty"]["body"] == {"error": "Input validation error: `inputs` cannot be empty",
                                       "error_type": "Validation"}
    assert served["openai_empty"]["status"] == 422 and served["openai_empty"]["body"]["type"] == "Validation"
    assert served["bad_json"]["status"] == 400 and served["bad_json"]["body"]["error_type"] == "Validation"
    assert served["too_many"]["status"] == 413
    assert served["too_many"]["body"]["error"] == "batch size 40 > maximum allowed batch size 16"
    # A replica full of items answers TEI's own 429.
    assert served["over_permits"]["status"] == 429
    assert served["over_permits"]["body"] == {"error": "Model is overloaded", "error_type": "Overloaded"}


def test_ray_serve_uses_both_replicas(served):
    replicas = {a["replica"] for a in served["spread"]}
    assert all(a["status"] == 200 for a in served["spread"])
    assert len(replicas) == 2 and None not in replicas


OVERLOADED = {"error": "Model is overloaded", "error_type": "Overloaded"}  # TEI's body (engine/errors.py)


def test_ray_serve_sheds_a_flood_with_tei_429_never_a_hang(served):
    statuses = [a["status"] for a in served["flood"]]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1
    refused = [a for a in served["flood"] if a["status"] == 429]
    # Every refusal is TEI's, byte for byte, also those of the ingress when every replica and its
    # queue are full (they add Retry-After); none is Serve's plain-text body.
    assert all(a["body"] == OVERLOADED for a in refused), refused[:3]
    assert any(a["retry_after"] == "1" for a in refused), refused[:3]
    assert all(a["cors"] == "*" for a in served["flood"])  # the refusals passed the app's CORS layer
    assert served["flood_seconds"] < 300
    assert served["after_flood"]["status"] == 200
    assert served["exit_code"] == 0  # SIGTERM: a clean shutdown


def test_ray_serve_refuses_openai_clients_in_openai_words(served):
    statuses = [a["status"] for a in served["openai_flood"]]
    assert set(statuses) <= {200, 429} and 429 in statuses, statuses
    # The plain server's /v1/embeddings error: TEI's keys plus OpenAI's message/code/type.
    want = {**OVERLOADED, "message": OVERLOADED["error"], "code": 429, "type": "Overloaded"}
    assert all(a["body"] == want for a in served["openai_flood"] if a["status"] == 429)
    for a in served["openai_flood"]:
        if a["status"] == 200:
            assert len(a["body"]["data"]) == 4


def test_the_ingress_loads_no_engine():
    """The ingress replica imports what it needs to forward and refuse, and not torch."""
    code = (
        "import sys, pickle, ray.serve, ray.serve.exceptions; import tei.ray.serve, tei.ray.forward; "
        "import tei.server.edge, tei.server.errors, tei.engine.errors; from tei.settings import ServerSettings; "
        "from tei.ray.options import RayServeOptions; "
        "s = pickle.loads(pickle.dumps(ServerSettings.single(ray_serve=RayServeOptions(replicas=2)))); "
        "tei.server.edge.wrap(lambda *a: None, s, [m.name for m in s.models]); "
        "print(sorted(m for m in ('torch', 'transformers', 'tei.engine.engine') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=netns.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
