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
    assert s.model_id is None and s.port == 3000 and s.hostname == "0.0.0.0"
    assert (s.max_batch_tokens, s.max_concurrent_requests, s.max_client_batch_size) == (16384, 512, 32)
    assert s.max_batch_requests is None and s.auto_truncate is True and s.payload_limit == 2_000_000


def test_env_vars_and_flag_precedence(monkeypatch):
    monkeypatch.setenv("MODEL_ID", "/models/a")
    monkeypatch.setenv("MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("JSON_OUTPUT", "true")
    monkeypatch.setenv("AUTO_TRUNCATE", "false")
    s = parse_settings(["--max-batch-tokens", "1024"])
    assert s.model_id == "/models/a" and s.max_batch_tokens == 1024
    assert s.json_output is True and s.auto_truncate is False


@pytest.mark.parametrize("argv, expected", [(["--auto-truncate"], True), (["--auto-truncate=false"], False),
                                            (["--auto-truncate", "true"], True)])
def test_auto_truncate_takes_an_optional_value(monkeypatch, argv, expected):
    monkeypatch.delenv("AUTO_TRUNCATE", raising=False)
    assert parse_settings(argv).auto_truncate is expected


def test_hostname_that_is_not_an_ip_falls_back_like_tei(monkeypatch):
    monkeypatch.setenv("HOSTNAME", "my-container")
    assert parse_settings([]).hostname == "0.0.0.0"
    assert parse_settings(["--hostname", "127.0.0.1"]).hostname == "127.0.0.1"


def test_conflicting_prompts_are_refused():
    proc = subprocess.run([str(ROUTER), "--default-prompt", "a", "--default-prompt-name", "b"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "cannot be used together" in proc.stderr
