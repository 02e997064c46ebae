"""PreTrainedModel: saving and loading checkpoints (errors that name parameters), presets, runtime."""
import json

import numpy as np
import pytest

import mindspore
from mindspore import Tensor

import mfcore
from mfcore import CheckpointError
from mfcore.models.weight_files import find_weight_files, parse_size, read_safetensors

from toy_causal_lm import ToyConfig, ToyCounterLM

TOY_PLUGIN = """
from mfcore import hookimpl, Preset

@hookimpl
def register_configs(register):
    register("toy-counter", "toy_causal_lm:ToyConfig")

@hookimpl
def register_models(register):
    register("toy-counter", "toy_causal_lm:ToyCounterLM")

@hookimpl
def register_presets(register):
    register(Preset(name="toy-small", model_type="toy-counter", config={"width": 4}, random_init_ok=True,
                    generation={"max_new_tokens": 3}))
    register(Preset(name="toy-huge", model_type="toy-counter", config={"width": 10**9}))
"""


@pytest.fixture
def toy_plugin(make_distribution):
    make_distribution("mf-toy", entry_points={"toy": "mf_toy_plugin"}, modules={"mf_toy_plugin": TOY_PLUGIN})


def _toy(width=3, seed=0):
    model = ToyCounterLM(ToyConfig(width=width))
    values = np.random.default_rng(seed).normal(size=(2, width)).astype(np.float32)
    model.scale.set_data(Tensor(values))
    return model


def _params(model):
    return {name: p.asnumpy() for name, p in model.parameters_and_names()}


@pytest.mark.parametrize("fmt", ["safetensors", "ckpt"])
def test_save_and_load_round_trip(tmp_path, fmt):
    model = _toy()
    model.generation_config = model.generation_config.update(max_new_tokens=9, top_k=3)
    model.save_pretrained(tmp_path, format=fmt)
    assert (tmp_path / f"mindspore_model.{fmt}").exists()
    loaded = ToyCounterLM.from_pretrained(tmp_path)
    for name, value in _params(model).items():
        np.testing.assert_array_equal(_params(loaded)[name], value)
    assert loaded.generation_config.max_new_tokens == 9 and loaded.generation_config.top_k == 3


def test_sharded_save_writes_an_index_and_replaces_old_shards(tmp_path):
    model = _toy(width=300)
    model.save_pretrained(tmp_path, max_shard_size=2000)  # scale (2400 bytes) and bias in two files
    index = json.loads((tmp_path / "mindspore_model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == ["bias", "scale"]
    assert len(set(index["weight_map"].values())) == 2
    assert index["metadata"]["total_size"] == 2 * 300 * 4 + 300 * 4
    loaded = ToyCounterLM.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.scale.asnumpy(), model.scale.asnumpy())
    model.save_pretrained(tmp_path)  # unsharded now: the old shards and index must go
    assert sorted(p.name for p in tmp_path.glob("mindspore_model*")) == ["mindspore_model.safetensors"]
    np.testing.assert_array_equal(ToyCounterLM.from_pretrained(tmp_path).scale.asnumpy(), model.scale.asnumpy())


def _write(path, tensors):
    mindspore.save_checkpoint([{"name": n, "data": Tensor(v)} for n, v in tensors.items()], str(path),
                              format="safetensors")


def test_load_checkpoint_names_missing_unexpected_and_wrongly_shaped(tmp_path):
    model = _toy()
    good = _params(model)
    _write(tmp_path / "missing.safetensors", {"scale": good["scale"]})
    with pytest.raises(CheckpointError, match=r"missing parameter\(s\): bias"):
        model.load_checkpoint(tmp_path / "missing.safetensors")
    _write(tmp_path / "extra.safetensors", dict(good, **{"head.weight": np.ones(2, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected parameter\(s\): head.weight"):
        model.load_checkpoint(tmp_path / "extra.safetensors")
    _write(tmp_path / "shape.safetensors", dict(good, bias=np.ones(5, np.float32)))
    with pytest.raises(CheckpointError, match=r"bias: checkpoint \(5,\) vs model \(3,\)"):
        model.load_checkpoint(tmp_path / "shape.safetensors")
    np.testing.assert_array_equal(model.scale.asnumpy(), good["scale"])  # nothing was half-loaded
    with pytest.warns(UserWarning, match="missing"):
        model.load_checkpoint(tmp_path / "missing.safetensors", strict=False)
    with pytest.raises(CheckpointError, match="no such file"):
        model.load_checkpoint(tmp_path / "absent")


def test_training_state_in_a_checkpoint_is_skipped(tmp_path):
    model = _toy()
    good = _params(model)
    _write(tmp_path / "train.safetensors", dict(good, **{"adam_m.scale": good["scale"], "global_step": np.ones(1)}))
    fresh = ToyCounterLM(ToyConfig(width=3))
    fresh.load_checkpoint(tmp_path / "train.safetensors")
    np.testing.assert_array_equal(fresh.scale.asnumpy(), good["scale"])


def test_weight_files_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no weights found.*mfcore convert"):
        find_weight_files(tmp_path)
    (tmp_path / "mindspore_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "mindspore_model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="00001-of-00002.safetensors.*missing"):
        find_weight_files(tmp_path)
    assert parse_size("5GB") == 5 * 10 ** 9 and parse_size("200MB") == 2 * 10 ** 8 and parse_size(12) == 12


def test_reads_bfloat16_safetensors_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values = torch.randn(4, 5).to(torch.bfloat16)
    safetensors_torch.save_file({"w": values, "f16": values.to(torch.float16)}, str(tmp_path / "x.safetensors"))
    read = dict(read_safetensors(tmp_path / "x.safetensors"))
    assert read["w"].dtype == mindspore.bfloat16
    np.testing.assert_array_equal(read["w"].astype(mindspore.float32).asnumpy(), values.float().numpy())
    np.testing.assert_array_equal(read["f16"].asnumpy(), values.to(torch.float16).numpy())


def test_presets_random_init_only_when_allowed(toy_plugin, monkeypatch):
    model = mfcore.AutoModelForCausalLM.from_pretrained("toy-small")
    assert isinstance(model, ToyCounterLM) and model.scale.shape == (2, 4)
    assert model.generation_config.max_new_tokens == 3

    def no_allocation(*args, **kwargs):
        raise AssertionError("a real-size preset must fail before building the network")

    monkeypatch.setattr(ToyCounterLM, "__init__", no_allocation)
    with pytest.raises(CheckpointError, match="toy-huge.*mfcore convert"):
        mfcore.AutoModelForCausalLM.from_pretrained("toy-huge")


def test_auto_model_loads_a_saved_directory(toy_plugin, tmp_path):
    model = mfcore.AutoModelForCausalLM.from_pretrained("toy-small")
    model.save_pretrained(tmp_path)
    loaded = mfcore.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is ToyCounterLM
    np.testing.assert_array_equal(loaded.scale.asnumpy(), model.scale.asnumpy())


def test_runtime_setup_is_idempotent():
    from mfcore.utils import runtime

    info = runtime.ensure_runtime()
    assert runtime.setup(device_target=info.device_target, mode=info.mode) == info
    other = "GPU" if info.device_target == "CPU" else "CPU"
    with pytest.raises(mfcore.ConfigError, match="cannot switch"):
        runtime.setup(device_target=other)
    with pytest.raises(mfcore.ConfigError, match="mode"):
        runtime.setup(mode="fast")
