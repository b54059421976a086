"""TEI's gRPC API against real `text-embeddings-router` processes, driven by the real `tei-client`.

tei-client's own stubs (`tei_client.stubs`) make the raw calls too: they are what a TEI user runs, and
this test process never imports the server's generated modules (both register `tei.v1` in protobuf's
default pool). Servers: the bundled MiniLM with `--grpc` (parity with sentence-transformers), a tiny
embedding model with `--grpc-port` beside HTTP and `--api-key` (parity with the HTTP routes, auth),
and tiny random-weight reranker / classifier models (parity with transformers, permits, streams).
"""
from __future__ import annotations

import asyncio
import gc
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch
from engine_util import cosine
from grpc_health.v1 import health_pb2, health_pb2_grpc
from otlp_collector import collector  # noqa: F401 (fixture)
from server_process import ServerProcess, free_port
from tei_client import GrpcClient
from tei_client.models import ClassificationTuple
from tei_client.stubs import tei_pb2 as pb
from tei_client.stubs import tei_pb2_grpc as pb_grpc
from texts import TEXTS
from tiny_models import build_classifier, build_embedding_model

COS_BAR = 0.99999
SCORE_TOL = 1e-4
TIMEOUT = 60
KEY = "s3cret-key"
Code = grpc.StatusCode


class GrpcServer(ServerProcess):
    """`--grpc`: TEI's API on --port and no HTTP; ready when grpc.health.v1 says SERVING."""

    def __init__(self, *args: str, env: dict | None = None):
        self.prometheus_port = free_port()
        super().__init__("--grpc", "--prometheus-port", str(self.prometheus_port), *args, env=env)
        self.target = f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        with grpc.insecure_channel(self.target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class Stubs:
    def __init__(self, target: str, api_key: str | None = None):
        self.channel = grpc.insecure_channel(target)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.info = pb_grpc.InfoStub(self.channel)
        self.embed = pb_grpc.EmbedStub(self.channel)
        self.predict = pb_grpc.PredictStub(self.channel)
        self.rerank = pb_grpc.RerankStub(self.channel)
        self.tokenize = pb_grpc.TokenizeStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


def _status(call, *args, **kwargs) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as err:
        result = call(*args, timeout=TIMEOUT, **kwargs)
        if not hasattr(result, "SerializeToString"):  # a response stream: read it to the end
            list(result)
    return err.value.code(), err.value.details()


def _bearer(key: str) -> grpc.ChannelCredentials:
    return grpc.composite_channel_credentials(grpc.local_channel_credentials(), grpc.access_token_call_credentials(key))


def _with_dimensions(request: pb.EmbedRequest, dimensions: int) -> pb.EmbedRequest:
    """tei-client's proto predates `optional uint32 dimensions = 6`: add the field as raw wire bytes."""
    request.MergeFromString(bytes([6 << 3]) + _varint(dimensions))
    return request


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ---- servers and references ---------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def loop():
    """One event loop for the async calls; GrpcClient.__del__ also closes its aio channel on it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    gc.collect()
    asyncio.set_event_loop(None)
    loop.close()


def _serving(server: ServerProcess):
    """Serve for a module; whatever the tests sent, the server must not have logged a traceback."""
    with server:
        yield server
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture(scope="module")
def minilm(minilm_path):
    yield from _serving(GrpcServer("--max-batch-tokens", "4096"))


@pytest.fixture(scope="module")
def st_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def reranker_dir(models_dir) -> Path:
    return build_classifier(models_dir / "grpc-reranker", "bert", num_labels=1, seed=5)


@pytest.fixture(scope="module")
def reranker(reranker_dir):
    # 4 permits: a rerank of 5 texts can never be admitted; streams of 2 in flight each share them.
    env = {"GRPC_MAX_PARALLEL_STREAM_REQUESTS": "2"}
    yield from _serving(GrpcServer("--model-id", str(reranker_dir), "--max-concurrent-requests", "4", env=env))


@pytest.fixture(scope="module")
def classifier_dir(models_dir) -> Path:
    return build_classifier(models_dir / "grpc-classifier", "bert", num_labels=3, seed=6)


@pytest.fixture(scope="module")
def classifier(classifier_dir):
    yield from _serving(GrpcServer("--model-id", str(classifier_dir)))


@pytest.fixture(scope="module")
def beside_http(models_dir):
    """HTTP on --port and gRPC on --grpc-port, both behind --api-key."""
    folder = build_embedding_model(models_dir / "grpc-embedder", "bert", pooling="mean", seed=7)
    grpc_port = free_port()
    server = ServerProcess("--model-id", str(folder), "--grpc-port", str(grpc_port), "--api-key", KEY)
    server.target = f"127.0.0.1:{grpc_port}"
    yield from _serving(server)


def _logits(folder: Path, inputs: list) -> np.ndarray:
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(folder)
    model = tf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    firsts = [x[0] if isinstance(x, tuple) else x for x in inputs]
    seconds = [x[1] for x in inputs] if isinstance(inputs[0], tuple) else None
    batch = tok(firsts, seconds, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


DOCS = ["Paris is the capital of France.", "Berlin is in Germany.", "The cat sat on the mat.", "Bread and butter."]
QUERY = "What is the capital of France?"


# ---- wire compatibility -------------------------------------------------------------------------


def test_our_proto_is_a_superset_of_tei_clients():
    """Every message, field (number, type, label) and method tei-client knows exists identically in ours."""
    from google.protobuf import descriptor_pb2

    code = "import sys; from tei.grpc import tei_pb2; sys.stdout.buffer.write(tei_pb2.DESCRIPTOR.serialized_pb)"
    ours = descriptor_pb2.FileDescriptorProto.FromString(
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60).stdout
    )
    theirs = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "tei.v1"

    def fields(message):
        return {f.name: (f.number, f.type, f.label, f.type_name) for f in message.field}

    our_messages = {m.name: fields(m) for m in ours.message_type}
    for message in theirs.message_type:
        for name, wire in fields(message).items():
            assert our_messages[message.name][name] == wire, (message.name, name)
    our_enums = {e.name: {v.name: v.number for v in e.value} for e in ours.enum_type}
    for enum in theirs.enum_type:
        assert our_enums[enum.name] == {v.name: v.number for v in enum.value}

    def methods(service):
        return {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming) for m in service.method}

    our_services = {s.name: methods(s) for s in ours.service}
    assert set(our_services) == {s.name for s in theirs.service}
    for service in theirs.service:  # every TEI method as TEI has it; ours may add methods (EmbedMultiVector)
        for name, signature in methods(service).items():
            assert our_services[service.name][name] == signature, (service.name, name)


# ---- embedding model served with --grpc ---------------------------------------------------------


def test_tei_client_embed_matches_sentence_transformers(minilm, st_model):
    client = GrpcClient(minilm.target)
    ours = np.array(client.embed(TEXTS, truncate=True))
    ref = st_model.encode(TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    assert cosine(ours, ref).min() >= COS_BAR
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_tei_client_info_tokenize_decode(minilm):
    client = GrpcClient(minilm.target)
    info = client.info()
    assert info.server_model_type.value == "embedding"
    assert info.max_input_length == 256 and info.max_batch_tokens == 4096
    assert info.max_client_batch_size == 32 and info.max_concurrent_requests == 512
    tokens = client.tokenize(["hello world", "Ünï"])
    assert [t.id for t in tokens[0].tokens] == [101, 7592, 2088, 102]
    hello = tokens[0].tokens[1]
    assert (hello.text, hello.special, hello.start, hello.stop) == ("hello", False, 0, 5)
    assert tokens[0].tokens[0].special and tokens[0].tokens[0].text == "[CLS]"
    assert client.decode([101, 7592, 2088, 102]) == "hello world"
    assert client.decode([[7592], [2088]]) == ["hello", "world"]


def test_tei_client_embed_all_matches_token_embeddings(minilm, st_model):
    ours = GrpcClient(minilm.target).embed_all(["hello world", "What is deep learning?"])
    for text, tokens in zip(["hello world", "What is deep learning?"], ours):
        ref = st_model.encode(text, output_value="token_embeddings").numpy()
        assert np.array(tokens).shape == ref.shape
        assert cosine(np.array(tokens), ref).min() >= COS_BAR


def test_tei_client_async_embed(minilm, st_model, loop):
    async def go():
        client = GrpcClient(minilm.target)  # grpc.aio channels belong to the loop that makes them
        return client, await client.async_embed(["hello", "world"])

    client, ours = loop.run_until_complete(go())
    ours = np.array(ours)
    assert cosine(ours, st_model.encode(["hello", "world"])).min() >= COS_BAR


def test_unary_embed_normalize_dimensions_and_metadata(minilm, st_model):
    stubs = Stubs(minilm.target)
    text = "What is deep learning?"
    reply, call = stubs.embed.Embed.with_call(pb.EmbedRequest(inputs=text), timeout=TIMEOUT)
    assert cosine(reply.embeddings, st_model.encode(text)) >= COS_BAR
    meta = reply.metadata
    assert meta.compute_chars == len(text) and meta.compute_tokens == 7  # [CLS] what is deep learning ? [SEP]
    assert meta.total_time_ns >= meta.inference_time_ns > 0
    headers = dict(call.initial_metadata())
    assert headers["x-compute-characters"] == str(len(text)) and headers["x-compute-tokens"] == "7"
    for name in ("x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert int(headers[name]) >= 0

    # `normalize` is proto3-optional: unset means true; tei-client's older proto cannot send false.
    raw = stubs.embed.Embed(pb.EmbedRequest(inputs=text, normalize=False), timeout=TIMEOUT).embeddings
    ref_raw = st_model.encode(text, normalize_embeddings=False)
    assert cosine(raw, ref_raw) >= COS_BAR
    cut = stubs.embed.Embed(_with_dimensions(pb.EmbedRequest(inputs=text), 64), timeout=TIMEOUT).embeddings
    assert len(cut) == 64 and abs(np.linalg.norm(cut) - 1) < 1e-5
    assert cosine(cut, ref_raw[:64]) >= COS_BAR


def test_embed_stream_answers_in_order(minilm, st_model):
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(24)]
    replies = list(Stubs(minilm.target).embed.EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts),
                                                          timeout=TIMEOUT))
    ours = np.array([r.embeddings for r in replies])
    assert cosine(ours, st_model.encode(texts)).min() >= COS_BAR
    assert [r.metadata.compute_chars for r in replies] == [len(t) for t in texts]


def test_truncation_is_taken_from_the_request(minilm, st_model):
    stubs = Stubs(minilm.target)
    long = " ".join(["word"] * 400)  # 402 tokens > 256
    code, details = _status(stubs.embed.Embed, pb.EmbedRequest(inputs=long))  # proto3 default: false
    assert code == Code.INVALID_ARGUMENT and "256" in details
    right = stubs.embed.Embed(pb.EmbedRequest(inputs=long, truncate=True), timeout=TIMEOUT)
    assert right.metadata.compute_tokens == 256
    assert cosine(right.embeddings, st_model.encode(long)) >= COS_BAR  # sentence-transformers cuts at 256 too
    left = pb.EmbedRequest(inputs="alpha " + long, truncate=True,
                           truncation_direction=pb.TruncationDirection.TRUNCATION_DIRECTION_LEFT)
    assert stubs.embed.Embed(left, timeout=TIMEOUT).metadata.compute_tokens == 256


def test_rerank_on_an_embedding_model_ranks_by_cosine(minilm, st_model):
    result = Stubs(minilm.target).rerank.Rerank(
        pb.RerankRequest(query=QUERY, texts=DOCS, return_text=True), timeout=TIMEOUT
    )
    vectors = st_model.encode([QUERY, *DOCS])
    expected = vectors[1:] @ vectors[0]
    assert [r.index for r in result.ranks] == list(np.argsort(-expected))
    for rank in result.ranks:
        assert abs(rank.score - expected[rank.index]) <= SCORE_TOL and rank.text == DOCS[rank.index]


@pytest.mark.parametrize(
    "call, request_, fragment",
    [
        ("Embed", pb.EmbedRequest(inputs=""), "empty"),
        ("Embed", pb.EmbedRequest(inputs="hi", prompt_name="nope"), "prompt_name"),
        ("Embed", _with_dimensions(pb.EmbedRequest(inputs="hi"), 385), "dimensions"),
        ("Embed", pb.EmbedRequest(inputs="hi", truncation_direction=7), "truncation_direction"),
        ("EmbedAll", pb.EmbedAllRequest(inputs=""), "empty"),
        ("Decode", pb.DecodeRequest(ids=[]), "empty"),
        ("Decode", pb.DecodeRequest(ids=[10**6]), "token ids"),
        ("Tokenize", pb.EncodeRequest(inputs=""), "empty"),
        ("Rerank", pb.RerankRequest(query="q", texts=[]), "empty"),
        ("Rerank", pb.RerankRequest(query="q", texts=["t"] * 600), "batch size 600"),
    ],
)
def test_invalid_input_is_invalid_argument(minilm, call, request_, fragment):
    stubs = Stubs(minilm.target)
    stub = {"Embed": stubs.embed, "EmbedAll": stubs.embed, "Decode": stubs.tokenize, "Tokenize": stubs.tokenize,
            "Rerank": stubs.rerank}[call]
    code, details = _status(getattr(stub, call), request_)
    assert code == Code.INVALID_ARGUMENT
    assert fragment in details


def test_wrong_model_type_is_failed_precondition(minilm):
    stubs = Stubs(minilm.target)
    code, details = _status(stubs.predict.Predict, pb.PredictRequest(inputs="hi"))
    assert code == Code.FAILED_PRECONDITION and "classifier" in details
    code, details = _status(stubs.embed.EmbedSparse, pb.EmbedSparseRequest(inputs="hi"))
    assert code == Code.FAILED_PRECONDITION and "SPLADE" in details
    code, _ = _status(stubs.embed.EmbedSparseStream, iter([pb.EmbedSparseRequest(inputs="hi")]))
    assert code == Code.FAILED_PRECONDITION


def test_a_failing_stream_message_ends_the_stream_with_its_status(minilm):
    texts = ["first", "second", "", "never answered"]
    replies = Stubs(minilm.target).embed.EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts),
                                                     timeout=TIMEOUT)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for reply in replies:
            got.append(reply)
    assert err.value.code() == Code.INVALID_ARGUMENT
    assert len(got) == 2  # answers before the failure still arrive, in order


def test_tokenize_and_decode_streams(minilm):
    stubs = Stubs(minilm.target)
    texts = ["hello world", "deep learning", "a b c"]
    encoded = list(stubs.tokenize.TokenizeStream(
        iter(pb.EncodeRequest(inputs=t, add_special_tokens=False) for t in texts), timeout=TIMEOUT))
    ids = [[t.id for t in e.tokens] for e in encoded]
    assert ids[0] == [7592, 2088]
    decoded = stubs.tokenize.DecodeStream(iter(pb.DecodeRequest(ids=i) for i in ids), timeout=TIMEOUT)
    assert [d.text for d in decoded] == texts


def test_info_health_reflection_and_metrics_listener(minilm):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    stubs = Stubs(minilm.target)
    info = stubs.info.Info(pb.InfoRequest(), timeout=TIMEOUT)
    assert info.model_type == pb.ModelType.MODEL_TYPE_EMBEDDING and info.model_dtype == "float32"
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2" and info.version

    def health(service):
        return stubs.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert health("") == health("tei.v1.Embed") == health("tei.v1.Info") == health("tei.v1.Tokenize") == serving
    assert health("tei.v1.Predict") == not_serving  # no classifier behind it

    services = ProtoReflectionDescriptorDatabase(stubs.channel).get_services()
    assert {"tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize"} <= set(services)

    metrics = httpx.get(f"http://127.0.0.1:{minilm.prometheus_port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{minilm.port}/health", timeout=5)  # --grpc: no HTTP on --port


# ---- reranker (4 permits, 2 messages in flight per stream) -------------------------------------


def test_tei_client_rerank_matches_transformers(reranker, reranker_dir):
    logits = _logits(reranker_dir, [(QUERY, d) for d in DOCS])[:, 0]
    client = GrpcClient(reranker.target)
    result = client.rerank(QUERY, DOCS, return_text=True)
    expected = 1 / (1 + np.exp(-logits))
    assert [r.index for r in result.ranks] == list(np.argsort(-expected))
    for rank in result.ranks:
        assert abs(rank.score - expected[rank.index]) <= SCORE_TOL
        assert rank.text == DOCS[rank.index]
    raw = client.rerank(QUERY, DOCS, raw_scores=True)
    assert all(abs(r.score - logits[r.index]) <= SCORE_TOL and not r.text for r in raw.ranks)


def test_rerank_stream_matches_unary_rerank(reranker):
    stubs = Stubs(reranker.target)
    unary = stubs.rerank.Rerank(pb.RerankRequest(query=QUERY, texts=DOCS), timeout=TIMEOUT)
    messages = [pb.RerankStreamRequest(query=QUERY, text=d, return_text=i == 0, raw_scores=False)
                for i, d in enumerate(DOCS)]
    streamed = stubs.rerank.RerankStream(iter(messages), timeout=TIMEOUT)
    assert [r.index for r in streamed.ranks] == [r.index for r in unary.ranks]
    assert np.allclose([r.score for r in streamed.ranks], [r.score for r in unary.ranks], atol=SCORE_TOL)
    assert all(r.text == DOCS[r.index] for r in streamed.ranks)  # return_text from the first message
    assert streamed.metadata.compute_chars == unary.metadata.compute_chars == sum(len(QUERY) + len(d) for d in DOCS)
    assert streamed.metadata.compute_tokens == unary.metadata.compute_tokens
    code, _ = _status(stubs.rerank.RerankStream, iter([]))
    assert code == Code.INVALID_ARGUMENT


def test_predict_and_predict_pair_on_a_reranker(reranker, reranker_dir):
    stubs = Stubs(reranker.target)
    single = stubs.predict.Predict(pb.PredictRequest(inputs=DOCS[0], raw_scores=True), timeout=TIMEOUT)
    assert len(single.predictions) == 1 and single.predictions[0].label == "LABEL_0"
    assert abs(single.predictions[0].score - _logits(reranker_dir, [DOCS[0]])[0, 0]) <= SCORE_TOL
    pair = stubs.predict.PredictPair(pb.PredictPairRequest(inputs=[QUERY, DOCS[0]], raw_scores=True),
                                     timeout=TIMEOUT)
    assert abs(pair.predictions[0].score - _logits(reranker_dir, [(QUERY, DOCS[0])])[0, 0]) <= SCORE_TOL
    code, details = _status(stubs.predict.PredictPair, pb.PredictPairRequest(inputs=["a", "b", "c"]))
    assert code == Code.INVALID_ARGUMENT and "single or two elements" in details
    code, _ = _status(stubs.embed.Embed, pb.EmbedRequest(inputs="hi"))
    assert code == Code.FAILED_PRECONDITION


def test_rerank_larger_than_all_permits_is_resource_exhausted(reranker):
    code, details = _status(Stubs(reranker.target).rerank.Rerank, pb.RerankRequest(query=QUERY, texts=DOCS + ["x"]))
    assert code == Code.RESOURCE_EXHAUSTED and details == "Model is overloaded"


def test_past_the_permits_unary_fails_fast_while_streams_and_rerank_wait(reranker, loop):
    """64 concurrent unary Predicts on 4 permits: each one answered, OK or RESOURCE_EXHAUSTED, never a
    hang. Concurrent streams (2 in flight each) and Reranks that need all 4 permits wait and all succeed."""

    async def go():
        async with grpc.aio.insecure_channel(reranker.target) as channel:
            predict, rerank = pb_grpc.PredictStub(channel), pb_grpc.RerankStub(channel)

            async def unary(i):
                try:
                    await predict.Predict(pb.PredictRequest(inputs=f"text {i} " * 20), timeout=TIMEOUT)
                    return Code.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            async def stream(i):
                requests = [pb.PredictRequest(inputs=f"stream {i} message {j}") for j in range(12)]
                return [r async for r in predict.PredictStream(iter(requests), timeout=TIMEOUT)]

            async def full_rerank(i):
                return await rerank.Rerank(pb.RerankRequest(query=f"q{i}", texts=DOCS), timeout=TIMEOUT)

            return await asyncio.gather(
                asyncio.gather(*(unary(i) for i in range(64))),
                asyncio.gather(*(stream(i) for i in range(4))),
                asyncio.gather(*(full_rerank(i) for i in range(6))),
            )

    codes, streams, reranks = loop.run_until_complete(asyncio.wait_for(go(), 120))
    assert len(codes) == 64 and set(codes) <= {Code.OK, Code.RESOURCE_EXHAUSTED} and Code.OK in codes
    assert [len(s) for s in streams] == [12] * 4
    assert all(len(r.ranks) == len(DOCS) for r in reranks)


# ---- classifier ---------------------------------------------------------------------------------


def test_tei_client_classify_matches_transformers(classifier, classifier_dir):
    client = GrpcClient(classifier.target)
    texts = ["I love this.", "This is terrible.", "Meh."]
    logits = _logits(classifier_dir, texts)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = ["label_a", "label_b", "label_c"]
    for result, p in zip(client.classify(texts), probs):
        assert [s.label for s in result.scores] == [labels[i] for i in np.argsort(-p)]  # highest first
        assert np.allclose([s.score for s in result.scores], np.sort(p)[::-1], atol=SCORE_TOL)
    pair_logits = _logits(classifier_dir, [("premise one", "hypothesis one")])[0]
    (pair,) = client.classify([ClassificationTuple(premise="premise one", hypothesis="hypothesis one")],
                              raw_scores=True)
    assert all(abs(s.score - pair_logits[labels.index(s.label)]) <= SCORE_TOL for s in pair.scores)
    code, details = _status(Stubs(classifier.target).rerank.Rerank, pb.RerankRequest(query="q", texts=["t"]))
    assert code == Code.FAILED_PRECONDITION and "re-ranker" in details


# ---- beside HTTP, with --api-key ----------------------------------------------------------------


def test_grpc_beside_http_matches_the_http_routes(beside_http):
    stubs = Stubs(beside_http.target, api_key=KEY)
    headers = {"Authorization": f"Bearer {KEY}"}
    http = httpx.post(beside_http.url + "/embed", json={"inputs": TEXTS, "truncate": True}, headers=headers,
                      timeout=TIMEOUT)
    assert http.status_code == 200, http.text
    streamed = stubs.embed.EmbedStream(iter(pb.EmbedRequest(inputs=t, truncate=True) for t in TEXTS),
                                       timeout=TIMEOUT, metadata=stubs.metadata)
    assert cosine(np.array([r.embeddings for r in streamed]), np.array(http.json())).min() >= COS_BAR
    http_tokens = httpx.post(beside_http.url + "/tokenize", json={"inputs": "hello world"}, headers=headers,
                             timeout=TIMEOUT).json()[0]
    tokens = stubs.tokenize.Tokenize(pb.EncodeRequest(inputs="hello world", add_special_tokens=True),
                                     timeout=TIMEOUT, metadata=stubs.metadata).tokens
    assert [(t.id, t.text, t.special) for t in tokens] == [(t["id"], t["text"], t["special"]) for t in http_tokens]
    info = stubs.info.Info(pb.InfoRequest(), timeout=TIMEOUT, metadata=stubs.metadata)
    http_info = httpx.get(beside_http.url + "/info", headers=headers, timeout=TIMEOUT).json()
    assert (info.model_id, info.max_input_length) == (http_info["model_id"], http_info["max_input_length"])


def test_api_key_right_wrong_and_missing(beside_http):
    right = Stubs(beside_http.target, api_key=KEY)
    assert right.info.Info(pb.InfoRequest(), timeout=TIMEOUT, metadata=right.metadata).model_id
    stubs = Stubs(beside_http.target)
    bad_metadata = [None, (("authorization", ""),), (("authorization", "Bearer wrong"),), (("authorization", KEY),)]
    for metadata in bad_metadata:
        for call, request in (
            (stubs.info.Info, pb.InfoRequest()),
            (stubs.embed.Embed, pb.EmbedRequest(inputs="hi")),
            (stubs.embed.EmbedStream, iter([pb.EmbedRequest(inputs="hi")])),
            (stubs.rerank.RerankStream, iter([pb.RerankStreamRequest(query="q", text="t")])),
        ):
            code, details = _status(call, request, metadata=metadata)
            assert (code, details) == (Code.UNAUTHENTICATED, "No valid auth token")
    # tei-client sends the key as call credentials (which gRPC allows over a local connection)
    assert len(GrpcClient(beside_http.target, credentials=_bearer(KEY)).embed("hi")[0]) == 64
    for client in (GrpcClient(beside_http.target), GrpcClient(beside_http.target, credentials=_bearer("wrong"))):
        with pytest.raises(grpc.RpcError) as err:
            client.embed("hi")
        assert err.value.code() == Code.UNAUTHENTICATED
    # health checks stay open for orchestrators
    assert right.health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status == \
        health_pb2.HealthCheckResponse.SERVING


# ---- start-up and shutdown ----------------------------------------------------------------------


def _refused_soon(target: str, within: float = 15.0) -> bool:
    """Whether a call on a new connection gets UNAVAILABLE within `within` seconds of "Shutting down".

    That line is logged just before the listener closes, so a connection opened in between can be
    accepted and never answered; short deadlines keep such a try from eating the server's grace.
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as fresh:
            try:
                pb_grpc.InfoStub(fresh).Info(pb.InfoRequest(), timeout=2)
            except grpc.RpcError as err:
                if err.code() == Code.UNAVAILABLE:
                    return True
        time.sleep(0.2)
    return False


def test_sigterm_drains_an_open_stream_and_exits_0(classifier_dir):
    server = GrpcServer("--model-id", str(classifier_dir)).start()
    try:
        channel = grpc.insecure_channel(server.target)
        outbox: queue.Queue = queue.Queue()
        replies = pb_grpc.PredictStub(channel).PredictStream(iter(outbox.get, None), timeout=TIMEOUT)
        outbox.put(pb.PredictRequest(inputs="before the signal"))
        assert len(next(replies).predictions) == 3
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "Shutting down" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _refused_soon(server.target)  # new calls are refused...
        outbox.put(pb.PredictRequest(inputs="after the signal"))  # ...the open stream is still served
        assert len(next(replies).predictions) == 3
        outbox.put(None)
        assert list(replies) == []
        assert server.proc.wait(30) == 0
        assert "Traceback" not in server.output()
    finally:
        server.stop()


def test_grpc_and_grpc_port_together_are_refused():
    proc = subprocess.run([*ServerProcess().args, "--grpc", "--grpc-port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--grpc-port" in proc.stderr


def test_a_taken_grpc_port_stops_start_up_with_one_line(reranker_dir):
    with GrpcServer("--model-id", str(reranker_dir)) as running:
        proc = subprocess.run(
            [*ServerProcess("--model-id", str(reranker_dir)).args, "--grpc-port", str(running.port)],
            capture_output=True, text=True, timeout=120,
        )
    assert proc.returncode == 1
    assert "cannot listen for gRPC" in proc.stderr and "Traceback" not in proc.stderr


def test_settings_read_grpc_flags_and_env(monkeypatch):
    from tei.cli import parse_settings

    assert parse_settings([]).grpc is False and parse_settings([]).grpc_port is None
    assert parse_settings(["--grpc"]).grpc is True
    assert parse_settings(["--grpc-port", "50051"]).grpc_port == 50051
    monkeypatch.setenv("GRPC", "true")
    monkeypatch.setenv("GRPC_PORT", "50052")
    monkeypatch.setenv("GRPC_MAX_PARALLEL_STREAM_REQUESTS", "7")
    settings = parse_settings([])
    assert (settings.grpc, settings.grpc_port, settings.grpc_max_parallel_stream_requests) == (True, 50052, 7)


def test_calls_are_traced_with_the_callers_parent(classifier_dir, collector):
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    server = GrpcServer("--model-id", str(classifier_dir), "--otlp-endpoint", collector.endpoint).start()
    try:
        stubs = Stubs(server.target)
        traceparent = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
        stubs.predict.Predict(pb.PredictRequest(inputs="traced"), metadata=traceparent, timeout=TIMEOUT)
        replies = stubs.predict.PredictStream(iter([pb.PredictRequest(inputs="a"), pb.PredictRequest(inputs="b")]),
                                              timeout=TIMEOUT)
        assert len(list(replies)) == 2
    finally:
        assert server.stop() == 0, server.output()  # a graceful stop flushes the spans
    spans = [span for _, span in collector.spans]
    (unary,) = [s for s in spans if s.name == "tei.v1.Predict/Predict"]
    assert unary.trace_id.hex() == trace_id and unary.parent_span_id.hex() == parent_id
    assert unary.kind == unary.SPAN_KIND_SERVER
    assert {s.name for s in spans if s.parent_span_id == unary.span_id} == {"tokenization", "queue", "inference"}
    (stream,) = [s for s in spans if s.name == "tei.v1.Predict/PredictStream"]
    phases = [s.name for s in spans if s.parent_span_id == stream.span_id]
    assert sorted(phases) == sorted(["tokenization", "queue", "inference"] * 2)  # one set per message
