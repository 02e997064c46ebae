"""LlamaConfig reads Hugging Face, MindFormers and Meta spellings as one canonical config."""
import json

import pytest

import mfcore
from mfcore import ConfigError
from mf_llama2 import LlamaConfig
from mf_llama2.configuration_llama import llama_intermediate_size


@pytest.mark.parametrize("hidden, multiple_of, multiplier, expected", [
    (4096, 256, None, 11008),     # Llama 2 7B (published intermediate_size)
    (5120, 256, None, 13824),     # Llama 2 13B
    (8192, 4096, 1.3, 28672),     # Llama 2 70B params.json
    (4096, 1024, 1.3, 14336),     # Llama 3 8B params.json
])
def test_meta_ffn_rule_gives_the_published_widths(hidden, multiple_of, multiplier, expected):
    assert llama_intermediate_size(hidden, multiple_of, multiplier) == expected
    config = LlamaConfig(hidden_size=hidden, num_heads=32 if hidden != 5120 else 40, multiple_of=multiple_of,
                         ffn_dim_multiplier=multiplier)
    assert config.intermediate_size == expected


def test_hugging_face_config_json_written_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaConfig(vocab_size=1000, hidden_size=128, intermediate_size=344, num_hidden_layers=3,
                                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                                  rope_theta=500000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                  bos_token_id=5, eos_token_id=6,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    hf.save_pretrained(tmp_path)
    config = mfcore.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, LlamaConfig)
    assert (config.num_layers, config.num_heads, config.n_kv_heads) == (3, 8, 2)
    assert (config.theta, config.rms_norm_eps, config.intermediate_size) == (500000.0, 1e-6, 344)
    assert config.max_position_embedding == 512 and config.tie_word_embeddings is True
    assert config.rope_scaling["factor"] == 8.0 and config.rope_scaling["original_max_position_embeddings"] == 64
    assert (config.bos_token_id, config.eos_token_id) == (5, 6)


def test_mindformers_yaml_model_config(tmp_path):
    (tmp_path / "task.yaml").write_text("""
model:
  model_config:
    type: LlamaConfig
    seq_length: 8192
    hidden_size: 4096
    num_layers: 32
    num_heads: 32
    n_kv_heads: 8
    vocab_size: 128256
    intermediate_size: 14336
    theta: 500000
    compute_dtype: bfloat16
    param_init_type: float32
  arch:
    type: LlamaForCausalLM
""")
    config = mfcore.AutoConfig.from_pretrained(tmp_path / "task.yaml")
    assert config.num_key_value_heads == 8 and config.rope_theta == 500000
    assert config.compute_dtype == "bfloat16" and config.max_position_embedding == 8192


def test_meta_params_json_spellings():
    config = LlamaConfig.from_dict({"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8,
                                    "vocab_size": 128256, "multiple_of": 1024, "ffn_dim_multiplier": 1.3,
                                    "norm_eps": 1e-5, "rope_theta": 500000.0})
    assert config.intermediate_size == 14336 and config.theta == 500000.0


def test_transformers_v5_rope_parameters():
    config = LlamaConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})
    assert config.theta == 500000.0 and config.rope_scaling["factor"] == 32.0


@pytest.mark.parametrize("values, field", [
    ({"hidden_size": 100, "num_heads": 8}, "num_heads"),
    ({"num_heads": 32, "n_kv_heads": 5}, "n_kv_heads"),
    ({"num_layers": 0}, "num_layers"),
    ({"theta": -1}, "theta"),
    ({"compute_dtype": "float8"}, "compute_dtype"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling.rope_type"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling.low_freq_factor"),
])
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as excinfo:
        LlamaConfig.from_dict(values)
    assert str(excinfo.value).startswith(field + ":")


def test_hf_activation_other_than_silu_is_rejected():
    with pytest.raises(ConfigError, match="hidden_act"):
        LlamaConfig.from_dict({"hidden_act": "gelu"})


def test_presets_match_published_configs():
    c = mfcore.AutoConfig.from_pretrained("llama2-70b")
    assert (c.hidden_size, c.num_layers, c.num_heads, c.n_kv_heads, c.intermediate_size) == (8192, 80, 64, 8, 28672)
    c = mfcore.AutoConfig.from_pretrained("llama2-7b")
    assert (c.vocab_size, c.seq_length, c.intermediate_size, c.pad_token_id) == (32000, 4096, 11008, 0)


def test_round_trip_through_config_json(tmp_path):
    config = mfcore.AutoConfig.from_pretrained("llama2-tiny", rope_scaling={
        "type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 128})
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "llama" and data["rope_scaling"]["rope_type"] == "llama3"
    assert mfcore.AutoConfig.from_pretrained(tmp_path) == config


def test_special_token_outside_vocabulary_is_rejected():
    with pytest.raises(ConfigError, match="^bos_token_id: 128000 is outside the vocabulary"):
        mfcore.AutoConfig.from_pretrained("llama3-tiny", vocab_size=640)


def test_mindformers_runner_keys_are_accepted_with_their_reason_and_sampling_keys_honoured():
    with pytest.warns(UserWarning, match=r"accepted without effect here: use_flash_attention \(attention is computed"):
        config = LlamaConfig.from_dict({"use_flash_attention": True, "do_sample": False, "top_k": 3,
                                        "max_decode_length": 512})
    from mfcore.generation import GenerationConfig

    generation = GenerationConfig.from_model_config(config)
    assert (generation.do_sample, generation.top_k, generation.max_length, generation.max_new_tokens) == (False, 3, 512, None)
