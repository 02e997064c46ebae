"""A converted checkpoint runs in mfcore's MindSpore Llama and gives transformers' logits."""
import numpy as np
import pytest
import torch
import transformers

from mf_convert import convert

from convert_helpers import VARIANTS

IDS = np.array([[1, 5, 9, 33, 90, 7, 2, 64, 17, 3]], dtype=np.int32)


@pytest.fixture(scope="module")
def auto_model():
    pytest.importorskip("mindspore")
    import mfcore

    if "llama" not in mfcore.get_plugins().models:
        pytest.skip("no model registered for model_type 'llama' yet (mf-llama2's network is missing)")
    return mfcore.AutoModelForCausalLM


def _reference_logits(directory):
    model = transformers.LlamaForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor(IDS, dtype=torch.long)).logits.numpy()


def _mindspore_logits(auto_model, directory):
    from mindspore import Tensor

    model = auto_model.from_pretrained(directory)
    model.set_train(False)
    out = model(Tensor(IDS))
    return (out[0] if isinstance(out, tuple) else out).asnumpy()


@pytest.mark.parametrize("variant", [v[0] for v in VARIANTS])
def test_converted_model_matches_transformers(auto_model, hf_models, variant, tmp_path):
    src, _ = hf_models[variant]
    convert(src, tmp_path / "ms", shard_size="60KB")
    got, want = _mindspore_logits(auto_model, tmp_path / "ms"), _reference_logits(src)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_converted_ckpt_matches_transformers(auto_model, hf_models, tmp_path):
    src, _ = hf_models["gqa-untied-sharded"]
    convert(src, tmp_path / "ck", ms_format="ckpt")
    np.testing.assert_allclose(_mindspore_logits(auto_model, tmp_path / "ck"), _reference_logits(src), atol=1e-4, rtol=0)


def test_save_pretrained_output_converts_back_to_hf(auto_model, hf_models, tmp_path):
    """What PreTrainedModel.save_pretrained writes is a native directory this converter reads."""
    from convert_helpers import assert_same_state, hf_state

    src, _ = hf_models["gqa-tied"]
    convert(src, tmp_path / "ms")
    auto_model.from_pretrained(tmp_path / "ms").save_pretrained(tmp_path / "saved")
    result = convert(tmp_path / "saved", tmp_path / "hf", target_format="hf", verify=True)
    assert result.source_format == "mindformers"
    assert_same_state(hf_state(src), hf_state(tmp_path / "hf"))


def test_bfloat16_checkpoint_loads_with_its_dtype(auto_model, tmp_path, monkeypatch):
    """bf16 weights stay bf16 in MindSpore (param_init_type); on CPU the network computes in fp32, as does
    the reference run on the same bf16 weights widened to fp32."""
    from convert_helpers import make_hf_model

    monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")  # prompts keep float32 activations, as the reference

    make_hf_model(tmp_path / "hf", 2, False, seed=11, dtype=torch.bfloat16)
    convert(tmp_path / "hf", tmp_path / "ms")
    model = auto_model.from_pretrained(tmp_path / "ms")
    assert {str(p.dtype) for p in model.get_parameters()} == {"BFloat16"}
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    with torch.no_grad():
        want = reference(torch.tensor(IDS, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(_mindspore_logits(auto_model, tmp_path / "ms"), want, atol=1e-4, rtol=0)
