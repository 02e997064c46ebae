"""`mfcore convert --quantize int8`: linear weights written as int8 + per-channel scales load as they are,
equal bit for bit to quantizing the same checkpoint while loading it."""
import json

import numpy as np
import pytest

from convert_helpers import make_hf_model

from mfcore import ConfigError
from mf_convert import convert

INT8 = {"quant_method": "rtn", "weight_dtype": "int8"}


def test_quantized_conversion_loads_as_int8_and_equals_load_time_quantization(tmp_path, mindspore):
    from mf_llama2.modeling_llama import LlamaForCausalLM

    make_hf_model(tmp_path / "hf", kv_heads=2, tied=False)
    result = convert(tmp_path / "hf", tmp_path / "int8", quantize="int8", verify=True)
    assert result.verified
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization_config"]["weight_dtype"] == "int8"
    saved = LlamaForCausalLM.from_pretrained(tmp_path / "int8", dtype="float32")
    loaded = LlamaForCausalLM.from_pretrained(tmp_path / "hf", quantization_config=INT8, dtype="float32")
    names = dict(saved.parameters_and_names())
    assert names["model.layers.0.attention.wq.weight"].dtype == mindspore.int8
    assert names["lm_head.weight"].dtype == mindspore.int8
    assert names["model.tok_embeddings.embedding_weight"].dtype == mindspore.float32  # embeddings stay float
    for name, param in loaded.parameters_and_names():
        assert names[name].dtype == param.dtype, name
        np.testing.assert_array_equal(names[name].asnumpy(), param.asnumpy(), err_msg=name)
    ids = np.random.default_rng(0).integers(0, 96, (1, 7))
    kwargs = dict(max_new_tokens=5, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(saved.generate(ids, **kwargs), loaded.generate(ids, **kwargs))


def test_quantize_refuses_what_it_cannot_write(tmp_path):
    make_hf_model(tmp_path / "hf", kv_heads=2, tied=False)
    with pytest.raises(ConfigError, match="--quantize"):
        convert(tmp_path / "hf", tmp_path / "out", target_format="hf", quantize="int8")
    with pytest.raises(ConfigError, match="--quantize"):
        convert(tmp_path / "hf", tmp_path / "out", quantize="int4")
    assert not (tmp_path / "out").exists()
