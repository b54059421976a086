"""Ray integration: Ray Serve replicas of the whole TEI server behind a thin ingress that keeps
TEI's 429 (serve.py, forward.py), and the loopback-safe way to join a cluster (cluster.py). Needs
`pip install 'tei[ray]'`; nothing here imports Ray until it is used, so `tei.cli` can read the
--ray-* flags without it.

For `serve run` and KubeRay's serveConfigV2 (`import_path`):

    serve run tei.ray:app                         # settings from the environment (MODEL_ID, ...)
    serve run tei.ray:build_app model-id=BAAI/bge-small-en-v1.5 ray-replicas=2
"""
from __future__ import annotations


def build_app(args: dict | None = None):
    """Serve's application builder: `args` are router flags without their dashes."""
    from .serve import application_from_args

    return application_from_args(args or {})


def __getattr__(name: str):
    if name == "app":  # built on first access, from the environment, so `import tei.ray` stays cheap
        return build_app({})
    raise AttributeError(name)
