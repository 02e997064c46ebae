"""Hugging Face -> MindSpore -> Hugging Face, bit for bit, for tiny models written by transformers."""
import json

import numpy as np
import pytest
import torch
import transformers

from mf_convert import convert

from convert_helpers import TOKENIZER_FILES, VARIANTS, assert_same_state, hf_state

VARIANT_NAMES = [v[0] for v in VARIANTS]
# Names from MindFormers' Llama (see shared/MINDFORMERS.md), written out here rather than taken from the map.
MINDFORMERS_NAMES = {"model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
                     "model.norm.weight": "model.norm_out.weight", "lm_head.weight": "lm_head.weight",
                     "model.layers.1.self_attn.q_proj.weight": "model.layers.1.attention.wq.weight",
                     "model.layers.1.self_attn.k_proj.weight": "model.layers.1.attention.wk.weight",
                     "model.layers.1.self_attn.v_proj.weight": "model.layers.1.attention.wv.weight",
                     "model.layers.1.self_attn.o_proj.weight": "model.layers.1.attention.wo.weight",
                     "model.layers.1.mlp.gate_proj.weight": "model.layers.1.feed_forward.w1.weight",
                     "model.layers.1.mlp.down_proj.weight": "model.layers.1.feed_forward.w2.weight",
                     "model.layers.1.mlp.up_proj.weight": "model.layers.1.feed_forward.w3.weight",
                     "model.layers.1.input_layernorm.weight": "model.layers.1.attention_norm.weight",
                     "model.layers.1.post_attention_layernorm.weight": "model.layers.1.ffn_norm.weight"}


def _ms_state(directory):
    from safetensors.numpy import load_file

    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(file))
    return state


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_hf_to_mindspore_to_hf_is_bit_exact(hf_models, variant, tmp_path):
    src, model = hf_models[variant]
    sharded = len(list(src.glob("*.safetensors"))) > 1
    native = tmp_path / "ms"
    result = convert(src, native, verify=True, shard_size="60KB" if sharded else "5GB")
    assert result.source_format == "hf" and result.target_format == "mindformers" and result.verified
    assert (len(result.files) > 1) == sharded
    if sharded:
        index = json.loads((native / "mindspore_model.safetensors.index.json").read_text())
        assert sorted(set(index["weight_map"].values())) == result.files

    # native names are MindFormers', values unchanged
    original, ms = hf_state(src), _ms_state(native)
    for hf_name, ms_name in MINDFORMERS_NAMES.items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            assert ms_name not in ms
            continue
        assert np.array_equal(ms[ms_name], original[hf_name][1]), hf_name
    assert len(ms) == len(original)
    for name, text in TOKENIZER_FILES.items():
        assert (native / name).read_text() == text

    back = tmp_path / "hf"
    convert(native, back, target_format="hf", verify=True, shard_size="60KB" if sharded else "5GB")
    assert_same_state(original, hf_state(back))

    # the config written back means the same network to transformers
    reloaded = transformers.LlamaForCausalLM.from_pretrained(back, attn_implementation="eager").eval()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings"):
        assert getattr(reloaded.config, key) == getattr(model.config, key), key
    reference = transformers.LlamaForCausalLM.from_pretrained(src, attn_implementation="eager").eval()
    ids = torch.tensor([[1, 5, 9, 33, 90, 7]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, reference(ids).logits)


def test_mindspore_reads_native_safetensors_and_ckpt(hf_models, tmp_path, mindspore):
    """The native files are what mindspore.load_checkpoint reads, safetensors and .ckpt alike."""
    src, _ = hf_models["gqa-untied-sharded"]
    original = hf_state(src)
    expected = {MINDFORMERS_NAMES.get(k, k): v for k, v in original.items()}
    convert(src, tmp_path / "st", shard_size="5GB")
    loaded = mindspore.load_checkpoint(str(tmp_path / "st" / "mindspore_model.safetensors"), format="safetensors")
    convert(src, tmp_path / "ck", ms_format="ckpt", verify=True)
    from_ckpt = mindspore.load_checkpoint(str(tmp_path / "ck" / "mindspore_model.ckpt"))
    for params in (loaded, from_ckpt):
        assert len(params) == len(original)
        for name, (_, array) in expected.items():
            if name in params:
                assert np.array_equal(params[name].asnumpy(), array), name
        assert "model.layers.1.attention.wk.weight" in params
    # and the .ckpt converts back to the same Hugging Face tensors
    convert(tmp_path / "ck", tmp_path / "hf", target_format="hf", verify=True)
    assert_same_state(original, hf_state(tmp_path / "hf"))


def test_pytorch_bin_source(hf_models, tmp_path):
    """pytorch_model.bin (a torch.save pickle, as transformers < 5 wrote) is read with weights_only=True."""
    import shutil

    src, model = hf_models["gqa-untied-sharded"]
    (tmp_path / "bin").mkdir()
    shutil.copy(src / "config.json", tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    convert(tmp_path / "bin", tmp_path / "ms", verify=True)
    convert(tmp_path / "ms", tmp_path / "back", target_format="hf")
    assert_same_state(hf_state(src), hf_state(tmp_path / "back"))

    # sharded: pytorch_model-0000i-of-00002.bin + pytorch_model.bin.index.json
    (tmp_path / "bins").mkdir()
    shutil.copy(src / "config.json", tmp_path / "bins")
    state, weight_map = model.state_dict(), {}
    names = list(state)
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), start=1):
        file = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({n: state[n] for n in part}, tmp_path / "bins" / file)
        weight_map.update({n: file for n in part})
    (tmp_path / "bins" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    convert(tmp_path / "bins", tmp_path / "back2", target_format="hf", verify=True)
    assert_same_state(hf_state(src), hf_state(tmp_path / "back2"))
