"""Meta's original layout (consolidated.NN.pth + params.json), built here from transformers' weights."""
import json

import numpy as np
import pytest
import torch

from mfcore import CheckpointError
from mf_convert import convert

from convert_helpers import assert_same_state, hf_state

PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": -1, "multiple_of": 32, "norm_eps": 1e-5,
          "rope_theta": 10000.0}


def permute(w, n_heads, dim1, dim2):
    """transformers' convert_llama_weights_to_hf.permute (Meta -> HF layout), verbatim."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def unpermute(w, n_heads, dim1, dim2):
    """HF -> Meta layout: the inverse of permute."""
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def meta_state(model):
    """Meta's names and q/k layout for a transformers LlamaForCausalLM."""
    config, sd = model.config, model.state_dict()
    heads, kv, dim = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
    kv_dim = dim // heads * kv
    out = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
           "output.weight": sd["lm_head.weight"] if "lm_head.weight" in sd else sd["model.embed_tokens.weight"]}
    for n in range(config.num_hidden_layers):
        hf, meta = f"model.layers.{n}.", f"layers.{n}."
        q = sd[hf + "self_attn.q_proj.weight"]
        k = sd[hf + "self_attn.k_proj.weight"]
        assert torch.equal(permute(unpermute(q, heads, dim, dim), heads, dim, dim), q)
        out.update({
            meta + "attention.wq.weight": unpermute(q, heads, dim, dim),
            meta + "attention.wk.weight": unpermute(k, kv, kv_dim, dim),
            meta + "attention.wv.weight": sd[hf + "self_attn.v_proj.weight"],
            meta + "attention.wo.weight": sd[hf + "self_attn.o_proj.weight"],
            meta + "feed_forward.w1.weight": sd[hf + "mlp.gate_proj.weight"],
            meta + "feed_forward.w2.weight": sd[hf + "mlp.down_proj.weight"],
            meta + "feed_forward.w3.weight": sd[hf + "mlp.up_proj.weight"],
            meta + "attention_norm.weight": sd[hf + "input_layernorm.weight"],
            meta + "ffn_norm.weight": sd[hf + "post_attention_layernorm.weight"]})
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def split_dim(name, embedding_dim):
    """Meta's model-parallel layout (fairscale Column/RowParallelLinear, Parallel/VocabParallelEmbedding)."""
    if name == "tok_embeddings.weight":
        return embedding_dim
    if name == "output.weight" or any(name.endswith(f".{w}.weight") for w in ("wq", "wk", "wv", "w1", "w3")):
        return 0
    if name.endswith(".wo.weight") or name.endswith(".w2.weight"):
        return 1
    return None


def write_meta(directory, state, params, shards=1, embedding_dim=1):
    directory.mkdir(parents=True)
    for i in range(shards):
        part = {}
        for name, tensor in state.items():
            dim = split_dim(name, embedding_dim)
            part[name] = tensor.clone() if dim is None else torch.chunk(tensor, shards, dim=dim)[i].clone()
        torch.save(part, directory / f"consolidated.{i:02d}.pth")
    (directory / "params.json").write_text(json.dumps(params))
    (directory / "tokenizer.model").write_bytes(b"\x00sentencepiece stand-in")
    return directory


@pytest.mark.parametrize("variant,shards,embedding_dim", [
    ("mha-untied", 1, 1), ("gqa-untied-sharded", 2, 1), ("mha-untied", 2, 0), ("gqa-untied-sharded", 4, 0)])
def test_meta_converts_to_identical_tensors(hf_models, tmp_path, variant, shards, embedding_dim):
    src, model = hf_models[variant]
    params = dict(PARAMS, n_kv_heads=model.config.num_key_value_heads)
    meta = write_meta(tmp_path / "meta", meta_state(model), params, shards, embedding_dim)

    convert(meta, tmp_path / "from_meta", verify=True)
    convert(src, tmp_path / "from_hf")
    assert_same_state(hf_state(tmp_path / "from_hf"), hf_state(tmp_path / "from_meta"))
    assert (tmp_path / "from_meta" / "tokenizer.model").read_bytes() == b"\x00sentencepiece stand-in"
    config = json.loads((tmp_path / "from_meta" / "config.json").read_text())
    assert (config["vocab_size"], config["intermediate_size"], config["n_kv_heads"]) == \
           (model.config.vocab_size, model.config.intermediate_size, model.config.num_key_value_heads)

    convert(meta, tmp_path / "hf", target_format="hf")
    assert_same_state(hf_state(src), hf_state(tmp_path / "hf"))


@pytest.mark.parametrize("via_native", [True, False])
def test_to_meta_matches_meta_layout(hf_models, tmp_path, via_native):
    src, model = hf_models["gqa-untied-sharded"]
    if via_native:
        convert(src, tmp_path / "ms")
        src = tmp_path / "ms"
    convert(src, tmp_path / "meta", target_format="meta", verify=True)
    written = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    expected = meta_state(model)
    assert sorted(written) == sorted(expected)
    for name in expected:
        assert torch.equal(written[name], expected[name]), name
    params = json.loads((tmp_path / "meta" / "params.json").read_text())
    assert {k: params[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "norm_eps")} == \
           {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 96, "norm_eps": 1e-5}
    # Meta's FFN rule on these params gives the width the weights have
    hidden = int(2 * 4 * params["dim"] / 3)
    assert params["multiple_of"] * -(-hidden // params["multiple_of"]) == model.config.intermediate_size


def test_meta_missing_shard(hf_models, tmp_path):
    src, model = hf_models["gqa-untied-sharded"]
    params = dict(PARAMS, n_kv_heads=2)
    meta = write_meta(tmp_path / "meta", meta_state(model), params, shards=2)
    (meta / "consolidated.01.pth").unlink()
    with pytest.raises(CheckpointError, match=r"shape .* shard missing"):
        convert(meta, tmp_path / "out")
    meta4 = write_meta(tmp_path / "meta4", meta_state(model), params, shards=4, embedding_dim=0)
    (meta4 / "consolidated.02.pth").unlink()
    with pytest.raises(CheckpointError, match=r"consolidated\.02\.pth: missing shard"):
        convert(meta4, tmp_path / "out")
    assert not (tmp_path / "out").exists()
