"""text-embeddings-batch, local runner: parity with sentence-transformers in every input and output
format, resume after a kill, per-row errors, bad files, rerank, classify, OpenAI batch files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bulk_data import ROWS, corpus, read_embeddings, write
from engine_util import cosine

BATCH = [sys.executable, "-m", "tei.batch"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def reference(minilm_path, texts) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu").encode(texts, batch_size=64)


def batch(*args: str) -> int:
    from tei.batch.cli import main

    return main(["--dtype", "float32", "--device", "cpu", "--quiet", *args])


# Each input format once, each output format at least once.
@pytest.mark.parametrize("source,output,ids", [
    ("parquet", "parquet", True),
    ("jsonl", "jsonl", True),
    ("json", "npy", False),
    ("csv", "parquet", True),
    ("txt", "npy", False),
])
def test_parity_with_sentence_transformers(tmp_path, minilm_path, texts, reference, source, output, ids):
    id_values = [f"doc-{i}" for i in range(len(texts))] if ids else None
    path = write(tmp_path / f"in.{source}", texts, id_values)
    out = tmp_path / f"out.{output}"
    args = ["--model-id", minilm_path, "--input", str(path), "--output", str(out), "--chunk-rows", "700"]
    assert batch(*args, *(["--id-column", "id"] if ids else [])) == 0
    got_ids, values, errors = read_embeddings(out)
    assert values.shape == (ROWS, reference.shape[1]) and values.dtype == np.float32
    assert got_ids == (id_values if ids else list(range(ROWS)))  # input order
    assert errors is None or not any(errors)
    assert cosine(values, reference).min() > 0.9999
    np.testing.assert_allclose(values, reference, atol=2e-4)
    assert not (tmp_path / f"out.{output}.parts").exists()
    if output == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pq.read_schema(out)
        assert schema.field("embedding").type == pa.list_(pa.float32())
        assert schema.names == ["id", "embedding", "error"]


def test_options_match_the_server(tmp_path, minilm_path, texts):
    """--dimensions, --no-normalize and --prompt-name do what the /embed fields do."""
    from engine_util import engine_for, run

    engine = engine_for(minilm_path, max_client_batch_size=50)
    try:
        want = run(engine.embed(texts[:50], normalize=False, dimensions=64)).values
    finally:
        engine.close()
    path = write(tmp_path / "in.jsonl", texts[:50])
    out = tmp_path / "out.npy"
    assert batch("--model-id", minilm_path, "--input", str(path), "--output", str(out),
                 "--no-normalize", "--dimensions", "64") == 0
    got = np.load(out)
    assert got.shape == (50, 64)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() > 0.01  # really not normalized


def test_bad_rows_are_recorded_and_the_job_goes_on(tmp_path, minilm_path, reference, texts):
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts[:20])]
    lines[3] = json.dumps({"id": 3, "text": ""})
    lines[5] = json.dumps({"id": 5, "text": "   "})
    lines[7] = json.dumps({"id": 7})
    lines[9] = json.dumps({"id": 9, "text": 42})
    lines[11] = "{not json"
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    for ext in ("jsonl", "parquet", "npy"):
        out = tmp_path / f"out.{ext}"
        assert batch("--model-id", minilm_path, "--input", str(path), "--output", str(out), "--id-column", "id") == 0
        ids, values, errors = read_embeddings(out)
        bad = {3, 5, 7, 9, 11}
        if ext == "npy":
            errors_file = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
            assert sorted(e["row"] for e in errors_file) == sorted(bad)
            errors = [next((e["error"] for e in errors_file if e["row"] == i), None) for i in range(20)]
        else:
            assert ids[:11] == list(range(11)) and ids[11] is None  # the bad line has no readable id
        assert {i for i, e in enumerate(errors) if e} == bad
        assert "empty" in errors[3] and "empty" in errors[5] and "missing" in errors[7]
        assert "not a string" in errors[9] and "JSON" in errors[11]
        good = [i for i in range(20) if i not in bad]
        assert np.isnan(values[sorted(bad)]).all()
        assert cosine(values[good], reference[good]).min() > 0.9999


def test_bad_file_or_column_is_one_line(tmp_path, minilm_path):
    path = write(tmp_path / "in.csv", ["a", "b"], [1, 2])
    cases = [
        (["--input", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--input", str(path), "--text-column", "body"], "column 'body' not found"),
        (["--input", str(path), "--id-column", "key"], "column 'key' not found"),
        (["--input", str(tmp_path / "in.xlsx")], "unsupported input extension"),
    ]
    (tmp_path / "in.xlsx").write_text("x")
    for args, message in cases:
        proc = subprocess.run([*BATCH, "--model-id", minilm_path, "--output", str(tmp_path / "o.parquet"), *args],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    proc = subprocess.run([*BATCH, "--model-id", str(tmp_path / "nomodel"), "--input", str(path), "--output",
                           str(tmp_path / "o.txt")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unsupported output extension" in proc.stderr


def _shards(parts: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*.parquet")}


def test_resume_after_a_killed_run(tmp_path, minilm_path, texts, reference):
    path = write(tmp_path / "in.parquet", texts, list(range(len(texts))))
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    cmd = [*BATCH, "--model-id", minilm_path, "--dtype", "float32", "--input", str(path), "--output", str(out),
           "--id-column", "id", "--chunk-rows", "100"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(_shards(parts)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _shards(parts)
    assert 3 <= len(before) < 20 and not out.exists()
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = done.stderr.strip().splitlines()[-1]
    # The summary counts what was done before the kill; those chunks were not computed again.
    assert f"{ROWS} texts" in summary and f"{100 * len(before)} done before" in summary, summary
    ids, values, errors = read_embeddings(out)
    assert ids == list(range(ROWS)) and not any(errors)
    assert cosine(values, reference).min() > 0.9999


@pytest.mark.slow
def test_resume_a_killed_ray_run(tmp_path, minilm_path, texts):
    """--resume with --ray: the chunks a killed Ray run finished are not computed again, and the
    output is the one a clean local run writes."""
    pytest.importorskip("ray", reason="the ray extra is not installed", exc_type=ImportError)
    import pyarrow.parquet as pq

    import netns

    texts = list(texts)
    texts[150] = ""  # a bad row, in a chunk the resumed run computes or skips alike
    path = write(tmp_path / "in.parquet", texts, [f"d{i}" for i in range(len(texts))])
    common = ["--model-id", minilm_path, "--dtype", "float32", "--device", "cpu", "--input", str(path),
              "--id-column", "id", "--chunk-rows", "100"]
    assert batch(*common, "--output", str(tmp_path / "local.parquet")) == 0
    out = tmp_path / "ray.parquet"
    parts = tmp_path / "ray.parquet.parts"
    cmd = [*BATCH, *common, "--output", str(out), "--ray"]
    with open(tmp_path / "killed.log", "w") as log:
        # Its own session: the kill takes the driver and the local Ray it started, all at once.
        proc = subprocess.Popen(netns.isolated(cmd), stdout=log, stderr=log, env=netns.env(), start_new_session=True)
        deadline = time.monotonic() + 600
        while len(_shards(parts)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    before = _shards(parts)
    assert 3 <= len(before) < 20 and not out.exists(), (tmp_path / "killed.log").read_text()[-3000:]
    done = subprocess.run(netns.isolated([*cmd, "--resume"]), capture_output=True, text=True, timeout=900,
                          env=netns.env(LOG_LEVEL="INFO"))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Ray nodes: ['127.0.0.1']" in done.stderr
    summary = next(line for line in done.stderr.splitlines() if " texts -> " in line)
    skipped = 100 * len(before)
    # What was done before the kill counts, and only the rest went through the actors again.
    assert f"{ROWS} texts -> " in summary and f"{skipped} done before, {ROWS - skipped} texts in " in summary, summary
    local, on_ray = pq.read_table(tmp_path / "local.parquet"), pq.read_table(out)
    assert on_ray.schema == local.schema
    assert on_ray.column("id").to_pylist() == local.column("id").to_pylist() == [f"d{i}" for i in range(ROWS)]
    assert on_ray.column("error").to_pylist() == local.column("error").to_pylist()
    _, ray_values, ray_errors = read_embeddings(out)
    _, local_values, _ = read_embeddings(tmp_path / "local.parquet")
    assert ray_errors[150] and sum(map(bool, ray_errors)) == 1
    good = [i for i in range(ROWS) if i != 150]
    assert cosine(ray_values[good], local_values[good]).min() > 0.99999
    np.testing.assert_allclose(ray_values[good], local_values[good], atol=1e-5)


def test_resume_refuses_a_changed_job(tmp_path, minilm_path, texts):
    path = write(tmp_path / "in.jsonl", texts[:30])
    out = tmp_path / "out.parquet"
    (tmp_path / "out.parquet.parts").mkdir()
    (tmp_path / "out.parquet.parts" / "manifest.json").write_text(json.dumps({"chunk_rows": 1}))
    assert batch("--model-id", minilm_path, "--input", str(path), "--output", str(out), "--resume") == 2
    assert not out.exists()


def test_rerank_task_matches_transformers(tmp_path, reranker_path):
    from classifier_models import reference_logits

    queries = ["What is deep learning?", "Where is Paris?", "What is deep learning?"] * 10
    docs = [f"Document {i}: deep learning and Paris, sentence {i % 7}" for i in range(30)]
    docs[4] = ""
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"q": q, "d": d}) + "\n" for q, d in zip(queries, docs)))
    out = tmp_path / "scores.jsonl"
    assert batch("--model-id", str(reranker_path), "--task", "rerank", "--query-column", "q",
                 "--document-column", "d", "--input", str(path), "--output", str(out)) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(30))
    assert rows[4]["score"] is None and "empty" in rows[4]["error"]
    good = [i for i in range(30) if i != 4]
    want = 1 / (1 + np.exp(-reference_logits(reranker_path, [(queries[i], docs[i]) for i in good])[:, 0]))
    np.testing.assert_allclose([rows[i]["score"] for i in good], want, atol=2e-4)


def test_classify_task(tmp_path, classifier_path, texts):
    from classifier_models import reference_logits

    texts = [t for t in texts if len(t) < 300][:40]  # within the reference's 128-token cut
    path = write(tmp_path / "in.csv", texts, list(range(40)))
    out = tmp_path / "labels.parquet"
    assert batch("--model-id", str(classifier_path), "--task", "classify", "--id-column", "id",
                 "--input", str(path), "--output", str(out)) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    logits = reference_logits(classifier_path, texts)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    config = json.loads((classifier_path / "config.json").read_text())
    labels = [config["id2label"][str(int(i))] for i in probs.argmax(1)]
    assert [r["id"] for r in table] == [str(i) for i in range(40)]  # csv values are text
    np.testing.assert_allclose([r["scores"] for r in table], probs, atol=2e-4)
    assert [r["label"] for r in table] == labels


def test_openai_batch_file(tmp_path, minilm_path, texts, reference):
    lines = [
        {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": texts[0]}},
        {"custom_id": "b", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "m", "input": texts[1:4], "encoding_format": "base64"}},
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
        {"custom_id": "d", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": ""}},
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": texts[4],
                                                                                 "dimensions": 32}},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "results.jsonl"
    assert batch("--model-id", minilm_path, "--input", str(path), "--output", str(out)) == 0
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == list("abcde")
    a, b, c, d, e = results
    assert a["error"] is None and a["response"]["status_code"] == 200 and a["id"].startswith("batch_req_")
    body = a["response"]["body"]
    assert body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    assert cosine(body["data"][0]["embedding"], reference[0]) > 0.9999
    import base64

    decoded = [np.frombuffer(base64.b64decode(x["embedding"]), "<f4") for x in b["response"]["body"]["data"]]
    assert cosine(np.stack(decoded), reference[1:4]).min() > 0.9999
    assert c["response"]["status_code"] == 400 and "not supported" in c["error"]["message"]
    assert c["response"]["body"] is None
    assert d["response"]["status_code"] == 422 and "empty" in d["error"]["message"]
    assert len(e["response"]["body"]["data"][0]["embedding"]) == 32


def test_progress_bar_on_a_terminal_only(tmp_path, minilm_path, texts):
    import pty

    path = write(tmp_path / "in.txt", texts[:300])
    cmd = [*BATCH, "--model-id", minilm_path, "--input", str(path), "--output", str(tmp_path / "o.npy"),
           "--chunk-rows", "50"]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0
    assert "texts/s" in piped.stderr and "%|" not in piped.stderr  # a summary, no bar
    assert "300 texts -> " in piped.stderr.strip().splitlines()[-1]
    quiet = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == ""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        seen += data
    assert proc.wait(timeout=300) == 0
    text = seen.decode(errors="replace")
    assert "%|" in text and "300/300" in text and "texts/s" in text


def test_a_job_no_row_could_pass_stops_at_once(tmp_path, minilm_path, capsys):
    path = write(tmp_path / "in.jsonl", ["a", "b"])
    out = tmp_path / "o.parquet"
    base = ["--model-id", minilm_path, "--input", str(path), "--output", str(out)]
    assert batch(*base, "--dimensions", "5000") == 2
    assert batch(*base, "--task", "classify") == 2
    assert batch(*base, "--prompt-name", "query") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --dimensions must be between 1 and the model's 384",
                     "error: --task classify needs a classifier or reranker model; this model is `embedding`",
                     "error: `prompt_name` `query` was given but the model has no prompts"]
    assert not out.exists()


def test_a_chunk_larger_than_the_admission_limit_loses_no_row(minilm_path, texts, reference):
    """Ray Data can merge chunks into one block: a call with more rows than the engine admits at
    once must queue its sub-requests, not record the overflow as "Model is overloaded"."""
    import dataclasses

    import pyarrow as pa

    from tei.batch.inputs import INVALID, ROW, TEXT
    from tei.batch.job import SUB_REQUEST, JobOptions, Worker, engine_settings
    from tei.cli import parse_settings

    model = parse_settings(["--model-id", str(minilm_path)]).models[0]
    settings = engine_settings(model, chunk_rows=8)
    settings = dataclasses.replace(settings, engine=dataclasses.replace(settings.engine,
                                                                        max_concurrent_requests=SUB_REQUEST))
    rows = (texts * (3 * SUB_REQUEST // len(texts) + 1))[: 3 * SUB_REQUEST]
    worker = Worker(settings, JobOptions())
    try:
        out = worker(pa.table({ROW: list(range(len(rows))), TEXT: rows, INVALID: [None] * len(rows)}))
    finally:
        worker.close()
    assert out.column("error").null_count == len(rows)
    vectors = np.array(out.column("embedding").to_pylist(), dtype=np.float32)
    expected = np.array([reference[texts.index(t)] for t in rows])
    assert ((vectors * expected).sum(1)).min() > 0.9999
