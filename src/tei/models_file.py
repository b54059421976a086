"""`--models models.yaml`: the served models and each one's options, as flat keys (see README).

```yaml
models:
  - model_id: BAAI/bge-small-en-v1.5
    served_model_name: bge-small
    max_batch_tokens: 8192
  - model_id: BAAI/bge-reranker-v2-m3
    served_model_name: bge-reranker
    dtype: bfloat16
```
"""
from __future__ import annotations

from .settings import MODEL_OPTIONS


def read_models_file(path: str) -> list[dict]:
    """The entries as option dicts (`max-batch-tokens` and `max_batch_tokens` both work). ValueError
    with one sentence, naming the entry, when the file does not parse or names an unknown option."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the models file {path}: {exc}") from None
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} must hold a non-empty list of models (under `models:`)")
    return [_entry(path, i, entry) for i, entry in enumerate(entries, 1)]


def _entry(path: str, index: int, entry) -> dict:
    if isinstance(entry, str):
        entry = {"model_id": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: model {index} must be a mapping of options or a model id")
    options = {str(key).replace("-", "_"): value for key, value in entry.items()}
    unknown = sorted(options.keys() - MODEL_OPTIONS)
    if unknown:
        raise ValueError(f"{path}: model {index} has unknown option(s) {unknown}; known: {sorted(MODEL_OPTIONS)}")
    prompts = options.get("prompts")
    if prompts is not None and not (isinstance(prompts, dict) and all(isinstance(v, str) for v in prompts.values())):
        raise ValueError(f"{path}: model {index}: `prompts` must map prompt names to texts")
    for key in ("model_id", "served_model_name", "revision"):
        if options.get(key) is not None:
            options[key] = str(options[key])
    return options
