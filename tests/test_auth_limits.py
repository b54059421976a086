"""--api-key, --payload-limit, --max-client-batch-size, --max-concurrent-requests, the model's input
length and --cors-allow-origin, against a real `text-embeddings-router` process."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prod_util import rss_bytes, tiny_embedder
from server_process import ServerProcess

KEY = "s3cret-key"
PAYLOAD_LIMIT = 20_000
MAX_LENGTH = 32
ORIGINS = ("https://a.example", "https://b.example")

# Every route TEI guards, and the ones this server adds (even where a build lacks them: the guard
# comes before routing, so a route added later is covered by the same middleware).
PROTECTED = [
    ("GET", "/info"), ("POST", "/embed"), ("POST", "/embed_all"), ("POST", "/embed_sparse"), ("POST", "/predict"),
    ("POST", "/rerank"), ("POST", "/v1/rerank"), ("POST", "/v2/rerank"), ("POST", "/similarity"),
    ("POST", "/tokenize"), ("POST", "/decode"), ("POST", "/embeddings"), ("POST", "/v1/embeddings"),
    ("POST", "/vertex"), ("POST", "/"), ("POST", "/invocations"),
]
PUBLIC = ["/health", "/", "/ping", "/metrics", "/docs", "/openapi.json", "/api-doc/openapi.json"]


@pytest.fixture(scope="module")
def server(models_dir):
    folder = tiny_embedder(models_dir, MAX_LENGTH)
    args = ["--model-id", str(folder), "--api-key", KEY, "--payload-limit", str(PAYLOAD_LIMIT),
            "--max-client-batch-size", "4", "--max-concurrent-requests", "3", "--max-batch-tokens", "1024"]
    for origin in ORIGINS:
        args += ["--cors-allow-origin", origin]
    with ServerProcess(*args) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def _bare(server):
    return httpx.Client(base_url=server.url, timeout=30)


# ---- auth -------------------------------------------------------------------------------------


def _documented_routes(client) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"bearer {KEY}"}, {"Authorization": f"Bearer {KEY}x"},
                                     {"Authorization": ""}, {"X-Api-Key": KEY}])
def test_protected_routes_refuse_a_missing_or_wrong_key(server, client, headers):
    routes = set(PROTECTED) | {r for r in _documented_routes(client) if r[1] not in PUBLIC}
    with _bare(server) as bare:
        for method, path in sorted(routes):
            r = bare.request(method, path, json={"inputs": "hi"}, headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
            body = r.json()
            assert body["error"] == "No valid auth token" and body["error_type"] == "Unauthorized", body


def test_openai_route_answers_401_in_its_dialect(server):
    with _bare(server) as bare:
        body = bare.post("/v1/embeddings", json={"input": "hi"}).json()
    assert body["message"] == "No valid auth token" and body["code"] == 401 and body["type"] == "Unauthorized"


def test_the_right_key_opens_every_route(client):
    assert client.get("/info").json()["max_input_length"] == MAX_LENGTH
    assert client.post("/embed", json={"inputs": "hi"}).status_code == 200
    assert client.post("/v1/embeddings", json={"input": "hi"}).status_code == 200
    assert client.post("/tokenize", json={"inputs": "hi"}).status_code == 200
    assert client.post("/", json={"inputs": "hi"}).status_code == 200
    for method, path in _documented_routes(client):
        r = client.request(method, path, json={})
        assert r.status_code != 401, (method, path)


def test_public_routes_need_no_key(server):
    with _bare(server) as bare:
        for path in PUBLIC:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                assert bare.get(path, headers=headers).status_code == 200, path
        assert bare.post("/", json={"inputs": "hi"}).status_code == 401  # GET / is health; POST / is a task


@pytest.mark.parametrize("value", ["", "Bearer anything", "Basic dXNlcjpwYXNz", "garbage"])
def test_without_a_key_any_authorization_header_is_accepted(default_server, value):
    r = httpx.post(default_server.url + "/embed", json={"inputs": "hi"}, headers={"Authorization": value}, timeout=30)
    assert r.status_code == 200, r.text


# ---- payload limit ----------------------------------------------------------------------------


def _body_of_size(size: int) -> bytes:
    head, tail = b'{"inputs": "', b'"}'
    return head + b"a " * ((size - len(head) - len(tail)) // 2) + b"a" * ((size - len(head) - len(tail)) % 2) + tail


TOO_LARGE = {"error": "Failed to buffer the request body: length limit exceeded", "error_type": "Validation"}


def test_body_over_the_payload_limit_is_413(client):
    body = _body_of_size(PAYLOAD_LIMIT + 1)
    r = client.post("/embed", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json() == TOO_LARGE
    big = client.post("/embed", content=b"x" * (10 * PAYLOAD_LIMIT), headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json() == TOO_LARGE


def test_body_at_the_payload_limit_is_served(client):
    body = _body_of_size(PAYLOAD_LIMIT)
    assert len(body) == PAYLOAD_LIMIT
    r = client.post("/embed", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-compute-tokens"] == str(MAX_LENGTH)  # truncated to the model's limit


def test_chunked_body_over_the_limit_is_413(client):
    body = _body_of_size(PAYLOAD_LIMIT + 500)

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    r = client.post("/embed", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json() == TOO_LARGE
    small = _body_of_size(3000)
    ok = client.post("/embed", content=iter([small[:1000], small[1000:]]), headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text


def test_payload_limit_on_the_openai_route_uses_its_dialect(client):
    r = client.post("/v1/embeddings", content=b"x" * (PAYLOAD_LIMIT + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["code"] == 413 and r.json()["message"] == TOO_LARGE["error"]


# ---- batch size and input length -------------------------------------------------------------


@pytest.mark.parametrize("path, body", [
    ("/embed", {"inputs": ["a"] * 5}),
    ("/embed_all", {"inputs": ["a"] * 5}),
    ("/v1/embeddings", {"input": ["a"] * 5}),
    ("/tokenize", {"inputs": ["a"] * 5}),
    ("/decode", {"ids": [[101]] * 5}),
])
def test_more_inputs_than_max_client_batch_size_is_413(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "batch size 5 > maximum allowed batch size 4"
    at_limit = client.post(path, json={k: v[:4] for k, v in body.items()})
    # Four inputs pass the batch check; on model routes they then need four of the three permits.
    assert at_limit.status_code == (200 if path in ("/tokenize", "/decode") else 429), at_limit.text
    assert client.post(path, json={k: v[:3] for k, v in body.items()}).status_code == 200


def test_input_length_comes_from_the_model_config(client):
    long = "word " * 100
    r = client.post("/embed", json={"inputs": long, "truncate": False})
    assert r.status_code == 422
    assert r.json()["error"] == f"Input validation error: `inputs` must have less than {MAX_LENGTH} tokens. Given: 102"
    for direction in ("right", "left"):
        ok = client.post("/embed", json={"inputs": long, "truncate": True, "truncation_direction": direction})
        assert ok.status_code == 200 and ok.headers["x-compute-tokens"] == str(MAX_LENGTH)
    exact = client.post("/embed", json={"inputs": "word " * (MAX_LENGTH - 2), "truncate": False})
    assert exact.status_code == 200 and exact.headers["x-compute-tokens"] == str(MAX_LENGTH)


# ---- concurrency ------------------------------------------------------------------------------


def test_more_items_than_permits_is_429_at_once(client):
    r = client.post("/embed", json={"inputs": ["a", "b", "c", "d"]}, timeout=10)
    assert r.status_code == 429
    assert r.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
    assert client.post("/embed", json={"inputs": ["a", "b", "c"]}).status_code == 200  # permits came back


async def _hammer(url: str, clients: int, total: int, deadline_s: float) -> list[int | str]:
    """`clients` concurrent connections send `total` requests in all (or until the deadline)."""
    results: list[int | str] = []
    sent = 0
    stop = time.monotonic() + deadline_s
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers, limits=limits) as http:
        async def worker(i: int):
            nonlocal sent
            while sent < total and time.monotonic() < stop:
                sent += 1
                texts = [f"request {sent} from client {i} " * (1 + sent % 5)] * (1 + sent % 2)
                try:
                    r = await http.post("/embed", json={"inputs": texts})
                    results.append(r.status_code)
                except httpx.HTTPError as exc:  # a lost or hung request: reported, never hidden
                    results.append(type(exc).__name__)

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return results


def test_load_past_the_concurrency_limit(server, client):
    """48 clients against 3 permits: some 429s, every request answered, memory flat."""
    asyncio.run(_hammer(server.url, clients=16, total=200, deadline_s=20))  # warm allocator caches
    before = rss_bytes(server.proc.pid)
    results = asyncio.run(_hammer(server.url, clients=48, total=1500, deadline_s=30))
    after = rss_bytes(server.proc.pid)
    counts = {code: results.count(code) for code in set(results)}
    print(f"load: {counts}, server RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    assert set(counts) <= {200, 429}, counts  # nothing lost, hung or failed
    assert counts.get(429, 0) > 0 and counts.get(200, 0) > 0, counts
    assert after - before < 64 * 2**20, (before, after)
    assert client.get("/health").status_code == 200
    assert client.post("/embed", json={"inputs": ["a", "b", "c"]}).status_code == 200  # every permit came back


# ---- CORS -------------------------------------------------------------------------------------


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url + "/embed", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type"})


def test_cors_allows_only_the_given_origins(server):
    for origin in ORIGINS:
        r = _preflight(server.url, origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert {"GET", "POST"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
        assert "content-type" in r.headers["access-control-allow-headers"].lower()
        assert httpx.get(server.url + "/health", headers={"Origin": origin}).headers[
            "access-control-allow-origin"] == origin
    other = _preflight(server.url, "https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in httpx.get(server.url + "/health",
                                                          headers={"Origin": "https://evil.example"}).headers


def test_cors_allows_any_origin_by_default(default_server):
    r = _preflight(default_server.url, "https://anywhere.example")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_production_flags_read_their_environment_variables(monkeypatch):
    from tei.cli import parse_settings

    monkeypatch.setenv("API_KEY", "from-env")
    monkeypatch.setenv("PAYLOAD_LIMIT", "1234")
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "https://a.example,https://b.example")
    monkeypatch.setenv("OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("DISABLE_SPANS", "true")
    s = parse_settings([])
    assert (s.api_key, s.payload_limit, s.otlp_endpoint, s.disable_spans) == (
        "from-env", 1234, "http://127.0.0.1:4317", True)
    assert s.cors_allow_origin == ("https://a.example", "https://b.example")
    flags = parse_settings(["--api-key", "flag", "--cors-allow-origin", "https://c.example",
                            "--cors-allow-origin", "https://d.example"])
    assert flags.api_key == "flag" and flags.cors_allow_origin == ("https://c.example", "https://d.example")
