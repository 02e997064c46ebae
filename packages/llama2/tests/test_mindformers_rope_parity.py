"""MindFormers' rotary extension keys against transformers: `extend_method: LLAMA3` with
`scaling_factor: {factor, low_freq_factor, high_freq_factor, original_max_position_embedding}` is
Llama 3.1's rope scaling (transformers rope_type "llama3"), and `extend_method: PI` is its "linear" type.

The model is built from the MindFormers model_config keys (as a task YAML gives them), its weights are a
transformers LlamaForCausalLM's (fp32, eager attention, norm weights randomised); original_max_position_
embedding is 16 and the sequences run to 64, so most positions lie where the scaled bands matter.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mindspore import Tensor  # noqa: E402

import mfcore  # noqa: E402

from test_modeling_llama_parity import hf_config  # noqa: E402  (same folder: the parity tests' helpers)

ORIGINAL = 16
LENGTH = 64
DIMS = dict(vocab_size=83, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=LENGTH, tie_word_embeddings=False)
# MindFormers model_config keys -> the transformers rope_scaling they must mean
CASES = {
    "llama3.1": (dict(extend_method="LLAMA3", scaling_factor=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                                  original_max_position_embedding=ORIGINAL)),
                 dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_position_embeddings=ORIGINAL)),
    "pi": (dict(extend_method="PI", scaling_factor=4.0), dict(rope_type="linear", factor=4.0)),
}


def mindformers_config(keys):
    """LlamaConfig from MindFormers' own names (as in a task YAML's model_config)."""
    return mfcore.AutoConfig.for_model(
        "llama", hidden_size=DIMS["hidden_size"], num_layers=DIMS["num_hidden_layers"],
        num_heads=DIMS["num_attention_heads"], n_kv_heads=DIMS["num_key_value_heads"],
        vocab_size=DIMS["vocab_size"], intermediate_size=DIMS["intermediate_size"], theta=DIMS["rope_theta"],
        seq_length=LENGTH, max_position_embedding=LENGTH, rms_norm_eps=1e-5, compute_dtype="float32",
        param_init_type="float32", **keys)


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    """(case, transformers model, ours built from the MindFormers keys with the transformers weights)."""
    keys, scaling = CASES[request.param]
    torch.manual_seed(7)
    hf = transformers.LlamaForCausalLM(hf_config(dict(DIMS, rope_scaling=scaling))).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.5 * torch.randn_like(param))
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory, safe_serialization=True)
    config = mindformers_config(keys)
    assert config.rope_scaling["rope_type"] == scaling["rope_type"]
    ours = mfcore.AutoModelForCausalLM.from_config(config)
    ours.load_checkpoint(directory)
    ours.set_train(False)
    return request.param, hf, ours, directory


def _hf_logits(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor(ids)).logits.numpy()


def test_logits_past_original_max_position_match_transformers(pair):
    _, hf, ours, directory = pair
    ids = np.random.default_rng(1).integers(0, DIMS["vocab_size"], (1, LENGTH))
    got = ours(Tensor(ids.astype(np.int32))).asnumpy()
    want = _hf_logits(hf, ids)
    assert np.abs(got - want)[:, ORIGINAL:].max() <= 1e-4
    assert np.abs(got - want).max() <= 1e-4
    # The scaling matters here: transformers' own plain rotary gives other logits past the original window.
    plain = transformers.LlamaForCausalLM.from_pretrained(directory, rope_parameters=dict(
        rope_type="default", rope_theta=DIMS["rope_theta"]), attn_implementation="eager").eval() \
        if int(transformers.__version__.split(".")[0]) >= 5 else \
        transformers.LlamaForCausalLM.from_pretrained(directory, rope_scaling=None, attn_implementation="eager").eval()
    assert np.abs(_hf_logits(plain, ids) - want)[:, ORIGINAL:].max() > 1e-2


@pytest.mark.parametrize("pair", ["llama3.1"], indirect=True)  # PI shares the rotary path
def test_greedy_generation_past_original_max_position_matches_transformers(pair):
    _, hf, ours, _ = pair
    prompt = np.random.default_rng(4).integers(3, DIMS["vocab_size"], (1, 20))
    new = 28  # to position 48, three times the original window
    with torch.no_grad():
        expected = hf.generate(torch.tensor(prompt), attention_mask=torch.ones_like(torch.tensor(prompt)),
                               do_sample=False, max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
                               pad_token_id=0).numpy()
    got = ours.generate(prompt, max_new_tokens=new, eos_token_id=None)
    np.testing.assert_array_equal(got, expected)
