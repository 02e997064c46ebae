"""MindFormers' fused projections (qkv_concat: True): `mfcore convert` splits w_qkv / w_gate_hidden into
wq/wk/wv, w1/w3 (and q/k/v_proj, gate/up_proj) and fuses them back, bit for bit; the fused model loads
them and gives the same logits as the split one and as transformers.

The expected fused layout is written out here from MindFormers r1.5.0 (llama_transformer.py reshapes
w_qkv's output to (n_kv_heads, (n_rep + 2) * head_dim) and splits it into n_rep query heads, one key
head and one value head; llama_layer.py reshapes w_gate_hidden's to (hidden_dim, 2)), row by row with
loops, independently of the reshapes in mf_llama2.weight_maps.
"""
import json

import numpy as np
import pytest
import torch
import transformers

from mf_convert import convert

from convert_helpers import TINY, assert_same_state, hf_state

HEADS = TINY["num_attention_heads"]
HEAD_DIM = TINY["hidden_size"] // HEADS
IDS = np.array([[1, 5, 9, 33, 90, 7, 2, 64, 17, 3]], dtype=np.int32)


def mindformers_w_qkv(q, k, v, kv_heads):
    """Rows of MindFormers r1.5.0's w_qkv: per key/value head g, its query heads, then k head g, v head g."""
    rep = HEADS // kv_heads
    rows = []
    for g in range(kv_heads):
        for r in range(rep):
            head = g * rep + r
            rows.extend(q[head * HEAD_DIM:(head + 1) * HEAD_DIM])
        rows.extend(k[g * HEAD_DIM:(g + 1) * HEAD_DIM])
        rows.extend(v[g * HEAD_DIM:(g + 1) * HEAD_DIM])
    return np.stack(rows)


def mindformers_w_gate_hidden(w1, w3):
    """Rows of MindFormers r1.5.0's w_gate_hidden: w1 row i, then w3 row i."""
    return np.stack([row for i in range(w1.shape[0]) for row in (w1[i], w3[i])])


def _ms_state(directory):
    from safetensors.numpy import load_file

    state = {}
    for file in sorted(directory.glob("*.safetensors")):
        state.update(load_file(file))
    return state


@pytest.fixture(scope="module")
def fused(hf_models, tmp_path_factory):
    """(HF source dir, its fused native conversion), grouped-query attention (2 kv heads for 4 heads)."""
    src, _ = hf_models["gqa-untied-sharded"]
    dst = tmp_path_factory.mktemp("fused") / "ms"
    result = convert(src, dst, qkv_concat=True, verify=True)
    assert result.verified
    return src, dst


def test_fused_layout_is_mindformers(fused):
    src, dst = fused
    hf, ms = hf_state(src), _ms_state(dst)
    assert json.loads((dst / "config.json").read_text())["qkv_concat"] is True
    for n in range(TINY["num_hidden_layers"]):
        hf_layer = f"model.layers.{n}."
        q, k, v = (hf[hf_layer + f"self_attn.{p}_proj.weight"][1] for p in "qkv")
        assert np.array_equal(ms[f"model.layers.{n}.attention.w_qkv.weight"], mindformers_w_qkv(q, k, v, 2))
        w1, w3 = hf[hf_layer + "mlp.gate_proj.weight"][1], hf[hf_layer + "mlp.up_proj.weight"][1]
        assert np.array_equal(ms[f"model.layers.{n}.feed_forward.w_gate_hidden.weight"],
                              mindformers_w_gate_hidden(w1, w3))
        for part in ("wq", "wk", "wv"):
            assert f"model.layers.{n}.attention.{part}.weight" not in ms
    assert len(ms) == len(hf) - 3 * TINY["num_hidden_layers"]


def test_fused_round_trips_bit_exact(fused, tmp_path):
    src, dst = fused
    convert(dst, tmp_path / "hf", target_format="hf", verify=True)  # fused -> HF splits
    assert_same_state(hf_state(src), hf_state(tmp_path / "hf"))
    convert(dst, tmp_path / "same", verify=True)  # native -> native keeps the source's layout
    assert {k: v.tobytes() for k, v in _ms_state(tmp_path / "same").items()} == \
        {k: v.tobytes() for k, v in _ms_state(dst).items()}
    convert(dst, tmp_path / "split", qkv_concat=False, verify=True)  # native -> native, split
    convert(src, tmp_path / "direct")
    assert {k: v.tobytes() for k, v in _ms_state(tmp_path / "split").items()} == \
        {k: v.tobytes() for k, v in _ms_state(tmp_path / "direct").items()}
    assert json.loads((tmp_path / "split" / "config.json").read_text())["qkv_concat"] is False
    convert(tmp_path / "split", tmp_path / "refused", qkv_concat=True, verify=True)  # and fused again
    assert {k: v.tobytes() for k, v in _ms_state(tmp_path / "refused").items()} == \
        {k: v.tobytes() for k, v in _ms_state(dst).items()}


def test_fused_bfloat16_round_trip(fused, tmp_path):
    """bfloat16 bits through split and fuse: HF bf16 -> fused .ckpt -> HF bf16, bit for bit."""
    src, _ = fused
    convert(src, tmp_path / "bf16", dtype="bf16", target_format="hf")
    convert(tmp_path / "bf16", tmp_path / "fused", qkv_concat=True, ms_format="ckpt", verify=True)
    convert(tmp_path / "fused", tmp_path / "back", target_format="hf", verify=True)
    assert_same_state(hf_state(tmp_path / "bf16"), hf_state(tmp_path / "back"))


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("bits", [np.float32, np.uint16])
def test_split_and_fuse_are_inverses(kv_heads, bits):
    """Every grouping (multi-query, grouped, multi-head), biases (1-D) too, bf16 as its raw bits."""
    from mf_llama2.weight_maps import FUSIONS
    from mfcore import AutoConfig

    config = AutoConfig.for_model("llama", hidden_size=TINY["hidden_size"], num_heads=HEADS, n_kv_heads=kv_heads,
                                  intermediate_size=24, num_layers=1, vocab_size=8)
    rng = np.random.default_rng(kv_heads)
    kv = kv_heads * HEAD_DIM
    for fused_name, shapes in (("model.layers.0.attention.w_qkv.weight", [(64, 64), (kv, 64), (kv, 64)]),
                               ("model.layers.0.attention.w_qkv.bias", [(64,), (kv,), (kv,)]),
                               ("model.layers.0.feed_forward.w_gate_hidden.weight", [(24, 64), (24, 64)])):
        parts = [rng.integers(0, 60000, shape).astype(bits) for shape in shapes]
        whole = FUSIONS.fuse(fused_name, parts, config)
        if "w_qkv.weight" in fused_name:
            assert np.array_equal(whole, mindformers_w_qkv(*parts, kv_heads))
        elif "gate" in fused_name:
            assert np.array_equal(whole, mindformers_w_gate_hidden(*parts))
        back = FUSIONS.split(fused_name, whole, config)
        assert len(back) == len(parts)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(back, parts))
        assert FUSIONS.parts(fused_name) and all(FUSIONS.fused_name(p) == fused_name for p in FUSIONS.parts(fused_name))


def _logits(model):
    from mindspore import Tensor

    model.set_train(False)
    out = model(Tensor(IDS))
    return (out[0] if isinstance(out, tuple) else out).asnumpy()


def test_fused_model_logits_equal_split_and_transformers(fused, tmp_path, mindspore):
    """The fused checkpoint in a qkv_concat model = the split one in a plain model = transformers."""
    import mfcore

    src, dst = fused
    fused_model = mfcore.AutoModelForCausalLM.from_pretrained(dst)
    assert fused_model.config.qkv_concat and fused_model.model.layers[0].attention.w_qkv is not None
    convert(dst, tmp_path / "split", target_format="hf")
    split_model = mfcore.AutoModelForCausalLM.from_pretrained(tmp_path / "split")
    assert not split_model.config.qkv_concat
    got, split = _logits(fused_model), _logits(split_model)
    np.testing.assert_allclose(got, split, atol=1e-5, rtol=0)
    reference = transformers.LlamaForCausalLM.from_pretrained(src, attn_implementation="eager").eval()
    with torch.no_grad():
        want = reference(torch.tensor(IDS, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_layout_mismatch_names_the_convert_flag_that_fixes_it(fused, tmp_path, mindspore, capsys):
    """A qkv_concat model given separate weights says which `mfcore convert` rewrites them; that command works."""
    import mfcore
    from mfcore import CheckpointError
    from mfcore.cli import main

    src, dst = fused
    config = mfcore.AutoConfig.from_pretrained(dst)
    model = mfcore.AutoModelForCausalLM.from_config(config)
    with pytest.raises(CheckpointError, match=r"--qkv-concat true") as error:
        model.load_checkpoint(src)
    assert "mfcore convert" in str(error.value)
    assert main(["convert", str(src), str(tmp_path / "fixed"), "--qkv_concat", "True", "--no-progress"]) == 0
    model.load_checkpoint(tmp_path / "fixed")
    assert main(["convert", str(src), str(tmp_path / "bad"), "--to", "hf", "--qkv-concat", "--no-progress"]) == 2
    assert "--qkv-concat: format 'hf' has no fused q/k/v layout" in capsys.readouterr().err
