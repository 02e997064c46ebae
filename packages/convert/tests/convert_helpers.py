"""Test helpers: tiny Llama checkpoints written by the independent references (transformers, torch,
safetensors), and comparisons of their tensors. (Not conftest.py: other test folders have one.)"""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the reference checkpoints are written by torch + transformers")
transformers = pytest.importorskip("transformers", reason="the reference checkpoints are written by transformers")
# The checkpoints are Llamas: their name maps come from mf-llama2's register_converters.
pytest.importorskip("mf_llama2", reason="mf-llama2 provides the Llama weight maps these tests convert with")

# hidden 64 -> Meta's FFN rule with multiple_of 32 gives 192, so params.json describes the same network.
TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
            rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
# (name, kv heads, tied, shard size passed to save_pretrained or None)
VARIANTS = [("mha-untied", 4, False, None), ("gqa-untied-sharded", 2, False, "60KB"),
            ("mha-tied-sharded", 4, True, "60KB"), ("gqa-tied", 2, True, None)]
TOKENIZER_FILES = {"tokenizer_config.json": '{"tokenizer_class": "LlamaTokenizer", "model_max_length": 128}\n',
                   "special_tokens_map.json": '{"bos_token": "<s>", "eos_token": "</s>"}\n'}


def make_hf_model(directory: Path, kv_heads: int, tied: bool, shard_size=None, seed=0, dtype=torch.float32,
                  safe_serialization=True):
    """A randomly initialised transformers LlamaForCausalLM saved with save_pretrained; norms randomised
    too, so a norm weight landing in the wrong place cannot go unnoticed."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(num_key_value_heads=kv_heads, tie_word_embeddings=tied, **TINY)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(1.0, 0.2)
            else:
                param.normal_(0.0, 0.3)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(directory, safe_serialization=safe_serialization, **kwargs)
    for name, text in TOKENIZER_FILES.items():
        (directory / name).write_text(text)
    return model


def hf_state(directory: Path) -> dict:
    """Every tensor of a transformers safetensors directory, read by the safetensors library (bf16 as bits)."""
    from safetensors import safe_open

    state = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                state[name] = (str(tensor.dtype), tensor.view(torch.int16).numpy() if tensor.dtype == torch.bfloat16
                               else tensor.numpy())
    return state


def config_json(directory: Path) -> dict:
    return json.loads((Path(directory) / "config.json").read_text())


def assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name][0] == b[name][0], name
        assert a[name][1].shape == b[name][1].shape, name
        assert np.array_equal(a[name][1].view(np.uint8), b[name][1].view(np.uint8)), name

