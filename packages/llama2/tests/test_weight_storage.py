"""Weights held in their storage dtype on CPU: bfloat16 / float16 computed by mfcore's weight kernels, and
round-to-nearest int8 weight-only quantization. Each path is compared with a float32 model built from the
same (rounded or dequantized) weights, computed by MindSpore's own float32 ops."""
import json

import numpy as np
import pytest

import mindspore
from mindspore import Tensor

from mfcore import ConfigError
from mfcore.kernels import decode_kernels, status
from mfcore.kernels.cpu import pack_bf16_blocks
from mfcore.models.quantization import QuantizationConfig, quantize_rtn_int8
from mfcore.utils.runtime import ensure_runtime
from mf_llama2 import LlamaConfig
from mf_llama2.modeling_llama import LlamaForCausalLM, LlamaLinear

# Odd sizes (40, 53) exercise the kernels' vector tails; norms randomised so that a skipped norm shows.
TINY = dict(vocab_size=53, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=40,
            seq_length=64, initializer_range=0.1)
INT8 = {"quant_method": "rtn", "weight_dtype": "int8"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    if decode_kernels() is None:
        pytest.skip(f"mfcore's CPU kernels are off here: {status()}")
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    rng = np.random.default_rng(1)
    for name, param in model.parameters_and_names():
        if name.endswith("norm.weight") or name.endswith("norm_out.weight"):
            param.set_data(Tensor((1 + 0.3 * rng.standard_normal(param.shape)).astype(np.float32)))
    directory = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(directory)
    return directory


def _ids(shape=(2, 9), seed=0):
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], shape)


def _logits(model, ids):
    return model(Tensor(np.asarray(ids, dtype=np.int32))).asnumpy()


def _reference(directory, transform):
    """The float32 model with every linear weight replaced by transform(weight)."""
    model = LlamaForCausalLM.from_pretrained(directory)
    for name, param in model.parameters_and_names():
        if name.endswith(".weight") and param.ndim == 2:
            param.set_data(Tensor(transform(param.asnumpy()).astype(np.float32)))
    return model


def _linears(model):
    return [cell for _, cell in model.cells_and_names() if isinstance(cell, LlamaLinear)]


def _round_bf16(w):
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


# Tiles of 4 rows: whole ones, rests, prefetching. K = 344 is not a multiple of 16 or 32 (tails); K = 320 is,
# and from 32 rows x and each weight block are interleaved (130: a last tile of 2 rows).
@pytest.mark.parametrize("rows,k", [(1, 344), (2, 344), (4, 344), (5, 344), (6, 344), (7, 344), (16, 344), (37, 344),
                                    (37, 320), (130, 320)])
def test_bfloat16_linear_kernel_against_numpy(rows, k, monkeypatch):
    """With float32 activations (MFCORE_FLOAT32_ACTIVATIONS=1) any rows equal float64 math on the stored weights;
    by default x is rounded to bfloat16 first where the CPU has vdpbf16ps, at every row count (a sequence's
    numbers do not depend on its batch), as llama.cpp and transformers do: then it equals float64 math on the
    rounded x."""
    ensure_runtime()  # MindSpore is set up (host-blocking graphs, ...) before any kernel runs
    kernels = decode_kernels()
    if kernels is None:
        pytest.skip(f"mfcore's CPU kernels are off here: {status()}")
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    w = _round_bf16(rng.standard_normal((41, k)))  # 41: a last weight block of 5 rows
    bits = (w.view(np.uint32) >> 16).astype(np.uint16)
    weight = Tensor.from_numpy(bits.view(np.int16)).view(mindspore.bfloat16)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")
    np.testing.assert_allclose(kernels.linear_bf16(Tensor(x), weight).asnumpy(), exact, atol=2e-5, rtol=1e-5)
    monkeypatch.delenv("MFCORE_FLOAT32_ACTIVATIONS")
    fast = kernels.linear_bf16(Tensor(x), weight).asnumpy()
    rounded = _round_bf16(x).astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(fast, rounded if _has_bf16_dot() else exact,
                               atol=2e-5, rtol=1e-5)


def _weight_kernels(monkeypatch, float32_activations):
    """The compiled kernels (the test skips where they are off), with x kept in float32 if asked."""
    ensure_runtime()
    kernels = decode_kernels()
    if kernels is None:
        pytest.skip(f"mfcore's CPU kernels are off here: {status()}")
    if float32_activations:
        monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")
    return kernels


def _bf16_weight(w):
    bits = (np.ascontiguousarray(w, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return Tensor.from_numpy(bits.view(np.int16)).view(mindspore.bfloat16)


@pytest.mark.parametrize("float32_activations", [False, True])
@pytest.mark.parametrize("rows,k", [(1, 344), (5, 344), (16, 320), (37, 344), (130, 320)])
def test_bfloat16_projection_kernels_equal_the_linear_kernel(rows, k, float32_activations, monkeypatch):
    """linear_qkv_bf16 gives each of q, k, v exactly as linear_bf16 would (same tiles, same sums), so does
    linear_pair_bf16 for two, and swiglu_bf16 gives silu(gate) * up of linear_bf16's gate and up, at decode and
    prompt row counts, on both the vdpbf16ps path and the float32 one. 41 / 13 / 7 / 43 output rows: blocks
    that end part-way."""
    kernels = _weight_kernels(monkeypatch, float32_activations)
    rng = np.random.default_rng(rows)
    x = Tensor(rng.standard_normal((rows, k)).astype(np.float32))
    weights = [_bf16_weight(rng.standard_normal((n, k))) for n in (41, 13, 7)]
    for fused, weight in zip(kernels.linear_qkv_bf16(x, *weights), weights):
        np.testing.assert_array_equal(fused.asnumpy(), kernels.linear_bf16(x, weight).asnumpy())
    for fused, weight in zip(kernels.linear_pair_bf16(x, *weights[:2]), weights):
        np.testing.assert_array_equal(fused.asnumpy(), kernels.linear_bf16(x, weight).asnumpy())
    w1, w3 = _bf16_weight(rng.standard_normal((43, k))), _bf16_weight(rng.standard_normal((43, k)))
    gate = kernels.linear_bf16(x, w1).asnumpy().astype(np.float64)
    up = kernels.linear_bf16(x, w3).asnumpy().astype(np.float64)
    np.testing.assert_allclose(kernels.swiglu_bf16(x, w1, w3).asnumpy(), gate / (1 + np.exp(-gate)) * up,
                               rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("float32_activations", [False, True])
@pytest.mark.parametrize("rows", [1, 4, 16, 37])
def test_packed_bfloat16_weights_give_the_same_sums(rows, float32_activations, monkeypatch):
    """pack_bf16_blocks' layout read by the packed kernels gives exactly the sums of the weight as rows (the
    same tiles in the same order), one row, a lone tile, several tiles, interleaved prompt tiles; and
    MFCORE_FLOAT32_ACTIVATIONS' path unpacks it. 41 / 13 / 7 rows: a last, partial block that stays as rows."""
    kernels = _weight_kernels(monkeypatch, float32_activations)
    rng = np.random.default_rng(rows)
    x = Tensor(rng.standard_normal((rows, 320)).astype(np.float32))
    bits = [(_round_bf16(rng.standard_normal((n, 320))).view(np.uint32) >> 16).astype(np.uint16) for n in (41, 13, 7)]
    as_tensor = [Tensor.from_numpy(b.view(np.int16)).view(mindspore.bfloat16) for b in bits]
    packed = [Tensor.from_numpy(pack_bf16_blocks(b).view(np.int16)).view(mindspore.bfloat16) for b in bits]
    assert not np.array_equal(pack_bf16_blocks(bits[0]), bits[0])  # the layout really changed
    for b in bits:  # the library's copy and numpy's agree
        np.testing.assert_array_equal(pack_bf16_blocks(b), pack_bf16_blocks(b, native_ok=False))
    np.testing.assert_array_equal(kernels.linear_bf16_packed(x, packed[0]).asnumpy(),
                                  kernels.linear_bf16(x, as_tensor[0]).asnumpy())
    for fused, weight in zip(kernels.linear_qkv_bf16_packed(x, *packed), as_tensor):
        np.testing.assert_array_equal(fused.asnumpy(), kernels.linear_bf16(x, weight).asnumpy())
    for fused, weight in zip(kernels.linear_pair_bf16_packed(x, *packed[1:]), as_tensor[1:]):
        np.testing.assert_array_equal(fused.asnumpy(), kernels.linear_bf16(x, weight).asnumpy())


def test_a_packed_model_computes_the_same_and_refuses_to_save(saved, tmp_path):
    """pack_weights_for_inference changes the layout, not a bit of the logits or of a greedy generation; a
    packed model will not save (its files would hold the layout) or train."""
    with pytest.warns(UserWarning, match="bfloat16 compute"):
        model = LlamaForCausalLM.from_pretrained(saved, dtype="bfloat16")
        packed = LlamaForCausalLM.from_pretrained(saved, dtype="bfloat16")
    count = packed.pack_weights_for_inference()
    if not decode_kernels().has_bf16_dot:
        assert count == 0
        pytest.skip("no vdpbf16ps on this CPU: weights are never packed here")
    assert count > 0 and packed.pack_weights_for_inference() == 0  # once
    ids = _ids()
    np.testing.assert_array_equal(_logits(packed, ids), _logits(model, ids))
    kwargs = dict(max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(packed.generate(ids, **kwargs), model.generate(ids, **kwargs))
    with pytest.raises(ConfigError, match="packed"):
        packed.save_pretrained(tmp_path / "out")
    with pytest.raises(ConfigError, match="packed"):
        packed.prepare_for_training()


@pytest.mark.parametrize("rows", [1, 3, 5, 37])
def test_int8_linear_kernel_against_numpy(rows, monkeypatch):
    """x . Wq^T * scale: float32 activations equal float64 math; by default prompts round x to bfloat16
    (int8 values are exact in bfloat16) where the CPU has vdpbf16ps, as the bfloat16 path does."""
    ensure_runtime()
    kernels = decode_kernels()
    if kernels is None:
        pytest.skip(f"mfcore's CPU kernels are off here: {status()}")
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 344)).astype(np.float32)
    q, scale = quantize_rtn_int8(rng.standard_normal((41, 344)).astype(np.float32))
    dequantized = q.astype(np.float64) * scale[:, None]
    monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")
    exact = kernels.linear_int8(Tensor(x), Tensor(q), Tensor(scale)).asnumpy()
    np.testing.assert_allclose(exact, x.astype(np.float64) @ dequantized.T, atol=2e-5, rtol=1e-5)
    monkeypatch.delenv("MFCORE_FLOAT32_ACTIVATIONS")
    fast = kernels.linear_int8(Tensor(x), Tensor(q), Tensor(scale)).asnumpy()
    activations = _round_bf16(x) if _has_bf16_dot() else x
    np.testing.assert_allclose(fast, activations.astype(np.float64) @ dequantized.T, atol=2e-5, rtol=1e-5)


def _has_bf16_dot() -> bool:
    try:
        return "avx512_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def test_bfloat16_weights_stay_bfloat16_and_compute_through_the_kernels(saved, monkeypatch):
    monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")  # compared with float32 math: keep x in float32
    with pytest.warns(UserWarning, match="bfloat16 compute"):
        model = LlamaForCausalLM.from_pretrained(saved, dtype="bfloat16")
    assert all(p.dtype == mindspore.bfloat16 for p in model.get_parameters())
    assert all(layer.storage_op is not None for layer in _linears(model))
    assert model.model.tok_embeddings.gather_bf16 is not None
    layer = model.model.layers[0]  # generation computes q, k, v and the MLP's gate and up in one kernel each
    assert layer.attention.qkv_bf16 is not None and layer.feed_forward.swiglu_bf16 is not None

    round_bf16 = _round_bf16
    reference = _reference(saved, round_bf16)
    for cell in (reference.model.tok_embeddings,):
        cell.embedding_weight.set_data(Tensor(round_bf16(cell.embedding_weight.asnumpy())))
    for name, param in reference.parameters_and_names():
        if param.ndim == 1:
            param.set_data(Tensor(round_bf16(param.asnumpy())))
    ids = _ids()
    np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=1e-5, rtol=1e-5)
    kwargs = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(model.generate(ids, **kwargs), reference.generate(ids, **kwargs))


def test_float16_weights_compute_in_float32_on_cpu(saved):  # float16 prompts always keep float32 x
    model = LlamaForCausalLM.from_pretrained(saved, dtype="float16")
    assert all(p.dtype == mindspore.float16 for p in model.get_parameters())
    assert model.config.compute_dtype == "float32"
    assert all(layer.storage_op is not None for layer in _linears(model))
    reference = _reference(saved, lambda w: w.astype(np.float16))
    for name, param in reference.parameters_and_names():
        if param.ndim == 1 or "embedding" in name:
            param.set_data(Tensor(param.asnumpy().astype(np.float16).astype(np.float32)))
    ids = _ids()
    np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=1e-5, rtol=1e-5)


def test_rtn_int8_quantizes_per_output_channel():
    w = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    w[3] = 0.0
    q, scale = quantize_rtn_int8(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale[3] == 1.0 and not q[3].any()
    np.testing.assert_array_equal(np.abs(q).max(axis=1)[[0, 1, 2, 4]], 127)
    assert np.abs(q * scale[:, None] - w).max() <= scale.max() / 2 + 1e-7  # round to nearest
    # bfloat16 weights arrive as their uint16 bits (safetensors' BF16) and quantize as their float32 values
    bits = (_round_bf16(w).view(np.uint32) >> 16).astype(np.uint16)
    q16, scale16 = quantize_rtn_int8(bits)
    q32, scale32 = quantize_rtn_int8(_round_bf16(w))
    np.testing.assert_array_equal(q16, q32)
    np.testing.assert_array_equal(scale16, scale32)


def test_int8_model_equals_float32_on_dequantized_weights(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_FLOAT32_ACTIVATIONS", "1")  # compared with float32 math: keep x in float32
    model = LlamaForCausalLM.from_pretrained(saved, quantization_config=INT8, dtype="float32")
    linears = _linears(model)
    assert linears and all(layer.weight.dtype == mindspore.int8 for layer in linears)

    def dequantize(w):
        q, scale = quantize_rtn_int8(w)
        return q.astype(np.float32) * scale[:, None]

    reference = _reference(saved, dequantize)
    ids = _ids()
    np.testing.assert_allclose(_logits(model, ids), _logits(reference, ids), atol=1e-5, rtol=1e-5)
    kwargs = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    generated = model.generate(ids, **kwargs)
    np.testing.assert_array_equal(generated, reference.generate(ids, **kwargs))

    # Saved quantized (int8 + scales + quantization_config) and loaded back as it is, bit for bit.
    model.save_pretrained(tmp_path / "int8")
    assert json.loads((tmp_path / "int8" / "config.json").read_text())["quantization_config"]["weight_dtype"] == "int8"
    again = LlamaForCausalLM.from_pretrained(tmp_path / "int8", dtype="float32")
    for (name, a), (_, b) in zip(model.parameters_and_names(), again.parameters_and_names()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)
    np.testing.assert_array_equal(again.generate(ids, **kwargs), generated)


def test_modules_to_not_convert_keeps_the_head_in_float(saved):
    config = dict(INT8, modules_to_not_convert=["lm_head"])
    model = LlamaForCausalLM.from_pretrained(saved, quantization_config=config, dtype="float32")
    assert model.lm_head.weight.dtype == mindspore.float32 and model.lm_head.weight_scale is None
    assert model.model.layers[0].attention.wq.weight.dtype == mindspore.int8


def test_quantization_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="quant_method"):
        QuantizationConfig.from_value({"quant_method": "gptq"})
    with pytest.raises(ConfigError, match="weight_dtype"):
        QuantizationConfig.from_value({"quant_method": "rtn", "weight_dtype": "int4"})
    with pytest.raises(ConfigError, match="unknown key"):
        QuantizationConfig.from_value({"quant_method": "rtn", "weigth_dtype": "int8"})
    assert LlamaConfig(**TINY, quantization_config=INT8).quantization_config["quant_method"] == "rtn"
