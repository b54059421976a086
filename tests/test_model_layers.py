"""The shared model layers against transformers' own formulas, the family registry, and the
every-weight-is-used check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tei.models.layers import Rotary, apply_rotary, rope_parameters
from tei.models.registry import UnsupportedModel, detect
from tei.models.weights import Weights, WeightsError

ROPE_CASES = [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0},
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32},
    {"rope_type": "proportional", "rope_theta": 1e6, "partial_rotary_factor": 0.25},  # Gemma 4, EmbeddingGemma 2
]


@pytest.mark.parametrize("params", ROPE_CASES, ids=lambda p: p["rope_type"])
def test_rotary_frequencies_match_transformers(params):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_ids=128,
                         max_position_embeddings=128, rope_parameters=dict(params))
    ours = Rotary(32, rope_parameters(config.to_dict()), max_positions=128)
    if params["rope_type"] == "default":
        inv = 1.0 / (params["rope_theta"] ** (torch.arange(0, 32, 2).float() / 32))
        scaling = 1.0
    else:
        inv, scaling = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, "cpu")
    assert torch.allclose(ours.inv_freq, inv.float(), rtol=1e-6)
    assert ours.scaling == pytest.approx(scaling)


def test_legacy_rope_keys_and_per_layer_parameters():
    legacy = rope_parameters({"rope_theta": 160000, "rope_scaling": {"type": "ntk", "factor": 2.0}})
    assert legacy == {"rope_theta": 160000, "type": "ntk", "factor": 2.0, "rope_type": "ntk"}
    per_layer = {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}
    assert rope_parameters(per_layer, "sliding_attention")["rope_theta"] == 10000.0
    assert rope_parameters(per_layer, "full_attention")["rope_theta"] == 160000.0
    with pytest.raises(ValueError, match="RoPE scaling `longrope` is not supported"):
        rope_parameters({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1.0}})


def test_rotary_rotates_halves_by_position_and_leaves_the_unrotated_part():
    rot = Rotary(8, {"rope_type": "default", "rope_theta": 10000.0}, max_positions=64, partial=0.5)
    positions = torch.tensor([0, 1, 2, 0, 1])
    cos, sin = rot.cos_sin(positions, [3, 2], torch.float32)
    x = torch.randn(5, 2, 8)
    y = apply_rotary(x, cos, sin)
    assert torch.equal(y[0], x[0]) and torch.equal(y[3], x[3])  # position 0 is not rotated
    assert torch.equal(y[..., 4:], x[..., 4:])  # partial rotary: only the first half of the head
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation keeps lengths
    assert torch.allclose(y[1], y[4]) == torch.allclose(x[1], x[4])


def test_registry_places_folders_and_refuses_unknown_ones_in_one_line():
    assert detect({"model_type": "bert"}).name == "bert"
    assert detect({"model_type": "xlm-roberta", "pad_token_id": 1}).position_offset({"pad_token_id": 1}) == 2
    with pytest.raises(UnsupportedModel) as err:
        # a type transformers does not know either (perceiver itself now goes to the transformers fallback)
        detect({"model_type": "perceiver-x", "architectures": ["PerceiverXModel"]})
    message = str(err.value)
    assert "perceiver-x" in message and "PerceiverXModel" in message and "bert" in message and "\n" not in message


def test_a_checkpoint_with_a_tensor_the_family_does_not_read_is_refused():
    state = {"encoder.w": torch.zeros(2), "encoder.extra_bias": torch.zeros(2), "pooler.dense.weight": torch.zeros(2)}
    w = Weights(state, (), torch.float32, "cpu")
    w.get("encoder.w")
    w.ignore("pooler.*")
    with pytest.raises(WeightsError, match="`encoder.extra_bias`.*`bert` model code does not use"):
        w.check_all_used("bert")
    w.get("encoder.extra_bias")
    w.check_all_used("bert")


def test_a_missing_weight_is_named(models_dir):
    from tiny_models import build_embedding_model
    from safetensors.torch import load_file, save_file

    from tei.devices import place
    from tei.models.loader import Model
    from tei.models.spec import read_spec

    folder = build_embedding_model(models_dir / "emb-missing", "bert", seed=11)
    path = Path(folder) / "model.safetensors"
    state = load_file(str(path))
    state.pop("encoder.layer.1.output.dense.bias")
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="`encoder.layer.1.output.dense.bias` not found"):
        Model(read_spec(Path(folder)), place("cpu", None))
