"""dtype casts match torch bit for bit, and bfloat16 survives every round trip unchanged."""
import json

import numpy as np
import pytest
import torch

from mf_convert import convert
from mf_convert.dtypes import bf16_to_f32, cast, f32_to_bf16
from mf_convert.safetensors_io import SafetensorsFile

from convert_helpers import assert_same_state, hf_state, make_hf_model


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bf16") / "hf"
    make_hf_model(directory, 2, False, shard_size="30KB", seed=3, dtype=torch.bfloat16)
    return directory


def test_float32_to_bfloat16_rounds_like_torch():
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 1e-45, 1e-40,
                        1.00390625, 1.01171875, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 65504.0], dtype=np.float32)
    values = np.concatenate([special, rng.standard_normal(10000).astype(np.float32) * 10,
                             rng.integers(0, 2 ** 32, 10000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    reference = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    ours = f32_to_bf16(values)
    finite = ~np.isnan(values)
    assert np.array_equal(ours[finite], reference[finite])
    assert np.isnan(bf16_to_f32(ours[~finite])).all()
    # widening is exact: bf16 -> f32 -> bf16 gives the same bits
    assert np.array_equal(f32_to_bf16(bf16_to_f32(reference)), reference)
    assert np.array_equal(bf16_to_f32(reference).view(np.uint32), torch.from_numpy(reference.view(np.int16))
                          .view(torch.bfloat16).float().numpy().view(np.uint32))
    # bf16 -> fp16 as torch does it
    assert np.array_equal(cast(reference[finite], "BF16", "F16"),
                          torch.from_numpy(reference[finite].view(np.int16)).view(torch.bfloat16).half().numpy())


@pytest.mark.parametrize("target", ["mindformers", "meta"])
def test_bfloat16_round_trip_is_bit_exact(bf16_model, tmp_path, target):
    convert(bf16_model, tmp_path / "mid", target_format=target, verify=True)
    if target == "mindformers":
        headers = [SafetensorsFile(f) for f in (tmp_path / "mid").glob("*.safetensors")]
        assert {h.dtype(n) for h in headers for n in h.names()} == {"BF16"}
        assert json.loads((tmp_path / "mid" / "config.json").read_text())["param_init_type"] == "bfloat16"
    convert(tmp_path / "mid", tmp_path / "back", target_format="hf", verify=True, shard_size="30KB")
    original = hf_state(bf16_model)
    assert {dtype for dtype, _ in original.values()} == {"torch.bfloat16"}
    assert_same_state(original, hf_state(tmp_path / "back"))


def test_bfloat16_through_mindspore_ckpt(bf16_model, tmp_path, mindspore):
    convert(bf16_model, tmp_path / "ck", ms_format="ckpt", verify=True)
    params = mindspore.load_checkpoint(str(tmp_path / "ck" / "mindspore_model.ckpt"))
    assert {str(p.dtype) for p in params.values()} == {"BFloat16"}
    convert(tmp_path / "ck", tmp_path / "back", target_format="hf")
    assert_same_state(hf_state(bf16_model), hf_state(tmp_path / "back"))
    # and MindSpore reads the bf16 native safetensors as bf16, same values
    convert(bf16_model, tmp_path / "st")
    files = list((tmp_path / "st").glob("*.safetensors"))
    loaded = {}
    for file in files:
        loaded.update(mindspore.load_checkpoint(str(file), format="safetensors"))
    original = hf_state(bf16_model)
    assert {str(p.dtype) for p in loaded.values()} == {"BFloat16"}
    assert len(loaded) == len(original)
    wq = loaded["model.layers.1.attention.wq.weight"].astype(mindspore.float32).asnumpy()
    assert np.array_equal(wq, bf16_to_f32(original["model.layers.1.self_attn.q_proj.weight"][1].view(np.uint16)))


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtype_cast_matches_torch(hf_models, tmp_path, dtype, torch_dtype):
    src, model = hf_models["gqa-tied"]
    convert(src, tmp_path / "cast", target_format="hf", dtype=dtype, verify=True)
    got = hf_state(tmp_path / "cast")
    for name, tensor in model.state_dict().items():
        if name not in got:
            continue
        want = tensor.detach().to(torch_dtype)
        want = want.view(torch.int16).numpy() if torch_dtype == torch.bfloat16 else want.numpy()
        assert got[name][0] == str(torch_dtype)
        assert np.array_equal(got[name][1], want), name
    assert json.loads((tmp_path / "cast" / "config.json").read_text())["torch_dtype"] == str(torch_dtype)[6:]
