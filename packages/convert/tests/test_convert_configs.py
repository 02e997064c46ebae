"""Configs travel with the weights: HF config.json, Meta params.json and MindFormers YAML, both ways."""
import json
import shutil

import pytest
import transformers

from mfcore import ConfigError
from mf_convert import convert
from mf_llama2.configuration_llama import LlamaConfig
from mf_llama2.weight_maps import (hf_config_from_native, meta_config_from_native, meta_config_to_native)

from convert_helpers import assert_same_state, hf_state

# Meta's published params.json files, and the FFN widths of the matching Hugging Face configs.
LLAMA2_7B = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
LLAMA31_8B = {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "vocab_size": 128256,
              "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "norm_eps": 1e-05, "rope_theta": 500000.0,
              "use_scaled_rope": True}


def test_meta_params_to_config_and_back():
    config = LlamaConfig.from_dict(meta_config_to_native(LLAMA2_7B, {"tok_embeddings.weight": (32000, 4096)}))
    assert (config.vocab_size, config.intermediate_size, config.n_kv_heads) == (32000, 11008, 32)
    config = LlamaConfig.from_dict(meta_config_to_native(LLAMA31_8B, {}))
    assert (config.intermediate_size, config.n_kv_heads, config.theta) == (14336, 8, 500000.0)
    assert config.rope_scaling["rope_type"] == "llama3" and config.rope_scaling["factor"] == 8.0
    assert meta_config_from_native(config) == LLAMA31_8B | {"n_kv_heads": 8}


def _network_fields(config):
    """All but Meta's FFN rule inputs (HF configs give intermediate_size itself) and MindFormers' run-time
    seq_length (HF has max_position_embeddings only)."""
    data = config.to_dict()
    del data["multiple_of"], data["ffn_dim_multiplier"], data["seq_length"]
    return data


def test_native_config_to_hf_and_back(tmp_path):
    config = LlamaConfig.from_dict(meta_config_to_native(dict(LLAMA31_8B, max_seq_len=131072),
                                                         {"output.weight": (128256, 4096)}))
    (tmp_path / "config.json").write_text(json.dumps(hf_config_from_native(config)))
    hf = transformers.LlamaConfig.from_pretrained(tmp_path)
    assert (hf.hidden_size, hf.intermediate_size, hf.num_key_value_heads, hf.vocab_size) == (4096, 14336, 8, 128256)
    assert hf.rope_parameters["rope_type"] == "llama3" and hf.rope_parameters["rope_theta"] == 500000.0
    hf.save_pretrained(tmp_path / "resaved")  # as transformers itself writes it
    for directory in (tmp_path, tmp_path / "resaved"):
        again = LlamaConfig.from_dict(json.loads((directory / "config.json").read_text()))
        assert _network_fields(again) == _network_fields(config)
        assert (again.tie_word_embeddings, again.max_position_embedding) == (False, 131072)


def test_mindformers_ckpt_with_yaml_config(hf_models, tmp_path):
    src, model = hf_models["gqa-untied-sharded"]
    convert(src, tmp_path / "ck", ms_format="ckpt")
    ckpt = tmp_path / "alone" / "llama_tiny.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(tmp_path / "ck" / "mindspore_model.ckpt", ckpt)
    with pytest.raises(ConfigError, match="--config"):
        convert(ckpt, tmp_path / "hf")
    yaml_file = tmp_path / "predict_llama_tiny.yaml"
    yaml_file.write_text(
        "run_mode: predict\nmodel:\n  model_config:\n    type: LlamaConfig\n    batch_size: 1\n    seq_length: 128\n"
        "    hidden_size: 64\n    num_layers: 2\n    num_heads: 4\n    n_kv_heads: 2\n    vocab_size: 96\n"
        "    intermediate_size: 192\n    rms_norm_eps: 1.0e-5\n    theta: 10000.0\n    bos_token_id: 1\n"
        "    eos_token_id: 2\n    pad_token_id: 0\n  arch:\n    type: LlamaForCausalLM\n")
    result = convert(ckpt, tmp_path / "hf", target_format="hf", config=yaml_file, verify=True)
    assert (result.source_format, result.model_type) == ("mindformers", "llama")
    assert_same_state(hf_state(src), hf_state(tmp_path / "hf"))
    assert transformers.LlamaConfig.from_pretrained(tmp_path / "hf").num_key_value_heads == 2
