"""TEI's flags and environment variables."""
from __future__ import annotations

import subprocess

import pytest
from server_process import ROUTER

from tei.cli import parse_settings

TEI_FLAGS = [
    "--model-id", "--revision", "--tokenization-workers", "--dtype", "--served-model-name", "--pooling",
    "--max-concurrent-requests", "--max-batch-tokens", "--max-batch-requests", "--max-client-batch-size",
    "--auto-truncate", "--default-prompt-name", "--default-prompt", "--dense-path", "--hf-token", "--hostname",
    "--port", "--uds-path", "--huggingface-hub-cache", "--payload-limit", "--api-key", "--json-output",
    "--disable-spans", "--otlp-endpoint", "--otlp-service-name", "--prometheus-port", "--cors-allow-origin",
]


def test_help_lists_every_tei_flag_with_its_env_var():
    out = subprocess.run([str(ROUTER), "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in TEI_FLAGS:
        assert flag in out, flag
        env = flag.lstrip("-").replace("-", "_").upper()
        assert f"env: {env}" in out.replace("\n", " ").replace("  ", " ") or env in out


def test_defaults_are_teis(monkeypatch):
    for var in ("MODEL_ID", "PORT", "HOSTNAME", "MAX_BATCH_TOKENS", "AUTO_TRUNCATE", "MAX_CLIENT_BATCH_SIZE"):
        monkeypatch.delenv(var, raising=False)
    s = parse_settings([])
    (model,) = s.models
    e = model.engine
    assert model.model_id is None and s.port == 3000 and s.hostname == "0.0.0.0"
    assert (e.max_batch_tokens, e.max_concurrent_requests, e.max_client_batch_size) == (16384, 512, 32)
    assert e.max_batch_requests is None and e.auto_truncate is True and s.payload_limit == 2_000_000


def test_env_vars_and_flag_precedence(monkeypatch):
    monkeypatch.setenv("MODEL_ID", "/models/a")
    monkeypatch.setenv("MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("JSON_OUTPUT", "true")
    monkeypatch.setenv("AUTO_TRUNCATE", "false")
    s = parse_settings(["--max-batch-tokens", "1024"])
    assert s.model.model_id == "/models/a" and s.model.engine.max_batch_tokens == 1024
    assert s.json_output is True and s.model.engine.auto_truncate is False


@pytest.mark.parametrize("argv, expected", [(["--auto-truncate"], True), (["--auto-truncate=false"], False),
                                            (["--auto-truncate", "true"], True)])
def test_auto_truncate_takes_an_optional_value(monkeypatch, argv, expected):
    monkeypatch.delenv("AUTO_TRUNCATE", raising=False)
    assert parse_settings(argv).model.engine.auto_truncate is expected


def test_hostname_that_is_not_an_ip_falls_back_like_tei(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "my-container")
    assert parse_settings([]).hostname == "0.0.0.0"
    assert parse_settings(["--hostname", "127.0.0.1"]).hostname == "127.0.0.1"


def test_conflicting_prompts_are_refused():
    proc = subprocess.run([str(ROUTER), "--default-prompt", "a", "--default-prompt-name", "b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "cannot be used together" in proc.stderr


# ---- several models ----------------------------------------------------------------------------


def _served(argv):
    return [(m.model_id, m.name) for m in parse_settings(argv).models]


@pytest.fixture
def no_model_env(monkeypatch):
    for var in ("MODEL_ID", "SERVED_MODEL_NAME", "MODELS", "MAX_BATCH_TOKENS", "DTYPE"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("argv, expected", [
    # one model: the name may come before or after its id, as today
    (["--served-model-name", "a", "--model-id", "/m/a"], [("/m/a", "a")]),
    # each name follows its model; a model without one is called by its id
    (["--model-id", "/m/a", "--served-model-name", "a", "--model-id", "/m/b"], [("/m/a", "a"), ("/m/b", "/m/b")]),
    (["--model-id", "/m/a", "--model-id", "/m/b", "--served-model-name", "b"], [("/m/a", "/m/a"), ("/m/b", "b")]),
    # as many names as models: the same order
    (["--model-id", "/m/a", "--model-id", "/m/b", "--served-model-name", "a", "--served-model-name", "b"],
     [("/m/a", "a"), ("/m/b", "b")]),
])
def test_repeated_model_id_pairs_names_in_order(no_model_env, argv, expected):
    assert _served(argv) == expected


def test_flags_given_once_apply_to_every_model(no_model_env):
    s = parse_settings(["--model-id", "/m/a", "--model-id", "/m/b", "--max-batch-tokens", "2048", "--dtype", "bfloat16"])
    assert [(m.engine.max_batch_tokens, m.dtype) for m in s.models] == [(2048, "bfloat16")] * 2


def test_models_file_gives_per_model_options_over_the_flags(no_model_env, tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("""
models:
  - model_id: /m/embedder
    served_model_name: embedder
    max-batch-tokens: 4096
    prompts: {query: "query: "}
    default_prompt_name: query
  - model_id: /m/reranker
    served_model_name: reranker
    dtype: float32
    max_concurrent_requests: 8
    device: cpu
""")
    s = parse_settings(["--models", str(path), "--max-batch-tokens", "1024", "--dtype", "bfloat16"])
    first, second = s.models
    assert (first.name, first.engine.max_batch_tokens, first.dtype) == ("embedder", 4096, "bfloat16")
    assert first.engine.prompts == {"query": "query: "} and first.engine.default_prompt_name == "query"
    assert (second.name, second.engine.max_batch_tokens, second.dtype) == ("reranker", 1024, "float32")
    assert (second.engine.max_concurrent_requests, second.device) == (8, "cpu")


@pytest.mark.parametrize("text, message", [
    ("models:\n  - model_id: /m/a\n    batch_tokens: 3\n", "unknown option(s) ['batch_tokens']"),
    ("models: []\n", "non-empty list"),
    ("models: [\n", "cannot read the models file"),
])
def test_bad_models_file_is_one_line_at_start_up(tmp_path, text, message):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    proc = subprocess.run([str(ROUTER), "--models", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and message in proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_two_names_for_one_model_are_refused(no_model_env):
    with pytest.raises(ValueError, match="two --served-model-name"):
        parse_settings(["--model-id", "/m/a", "--served-model-name", "x", "--served-model-name", "y", "--model-id", "/m/b",
                        "--model-id", "/m/c"])
