"""LoRA: the wrapped layer computes x W^T + b + alpha/r x A^T B^T (checked in numpy), only adapters
train, adapter-only save/load round-trips, merging gives the same outputs as the adapter."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, mint, nn

from mfcore.utils.runtime import ensure_runtime

from mfcore.errors import CheckpointError, ConfigError
from mfcore.training.lora import (LoRALinear, LoraConfig, adapter_parameters, inject_lora, load_adapter, merge_lora,
                         save_adapter)

# MindSpore is set up the way mfcore sets it (CPU, PyNative) before any kernel runs, so that tests
# which later run `mfcore run` in this process find the same runtime.
ensure_runtime()


class Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.wq = mint.nn.Linear(6, 6)
        self.wo = mint.nn.Linear(6, 4, bias=False)

    def construct(self, x):
        return self.wo(mint.tanh(self.wq(x)))


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.layers = nn.CellList([Block(), Block()])

    def construct(self, x):
        return self.layers[1](mint.cat((self.layers[0](x), self.layers[0](x)[:, :2]), -1))


def seeded_net(seed=0):
    net = Net()
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        p.set_data(Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))
    return net


def randomize_adapters(net, seed=1):
    rng = np.random.default_rng(seed)
    for p in adapter_parameters(net):
        p.set_data(Tensor(rng.normal(0, 0.5, p.shape).astype(np.float32)))


X = Tensor(np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32))


def test_injection_keeps_names_freezes_base_and_starts_as_identity():
    net = seeded_net()
    before = net(X).asnumpy()
    names_before = [p.name for p in net.get_parameters()]
    wrapped = inject_lora(net, LoraConfig(rank=2, alpha=4, target_modules=["wq"]))
    assert wrapped == ["layers.0.wq", "layers.1.wq"]
    names = [p.name for p in net.get_parameters()]
    assert set(names_before) <= set(names)
    assert "layers.0.wq.mindpet_delta_lora_a" in names and "layers.1.wq.mindpet_delta_lora_b" in names
    assert sorted(p.name for p in net.trainable_params()) == sorted(
        n for n in names if "mindpet_delta" in n)
    np.testing.assert_array_equal(net(X).asnumpy(), before)  # B = 0 at start


def test_lora_layer_matches_numpy_formula():
    base = mint.nn.Linear(6, 5)
    layer = LoRALinear(base, LoraConfig(rank=3, alpha=6), np.random.default_rng(0))
    rng = np.random.default_rng(2)
    layer.mindpet_delta_lora_b.set_data(Tensor(rng.normal(size=(5, 3)).astype(np.float32)))
    w, b = base.weight.asnumpy(), base.bias.asnumpy()
    a, bb = layer.mindpet_delta_lora_a.asnumpy(), layer.mindpet_delta_lora_b.asnumpy()
    x = X.asnumpy()
    expected = x @ w.T + b + (6 / 3) * (x @ a.T @ bb.T)
    np.testing.assert_allclose(layer(X).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_merge_gives_the_adapted_outputs_and_restores_plain_layers():
    net = seeded_net()
    inject_lora(net, LoraConfig(rank=2, alpha=8, target_modules=r".*\.(wq|wo)"))
    randomize_adapters(net)
    adapted = net(X).asnumpy()
    merged = merge_lora(net)
    assert len(merged) == 4
    assert not any(isinstance(c, LoRALinear) for _, c in net.cells_and_names())
    assert not any("mindpet" in p.name for p in net.get_parameters())
    assert [p.name for p in net.get_parameters()] == [p.name for p in Net().get_parameters()]
    np.testing.assert_allclose(net(X).asnumpy(), adapted, rtol=1e-5, atol=1e-5)


def test_adapter_save_holds_only_adapters_and_loads_back(tmp_path):
    net = seeded_net()
    inject_lora(net, LoraConfig(rank=2, alpha=4, target_modules=["wq", "wo"]))
    randomize_adapters(net)
    save_adapter(net, tmp_path, base_model="some-base")
    saved = ms.load_checkpoint(str(tmp_path / "adapter_model.safetensors"), format="safetensors")
    assert sorted(saved) == sorted(p.name for p in adapter_parameters(net))
    other = seeded_net()
    inject_lora(other, LoraConfig(rank=2, alpha=4, target_modules=["wq", "wo"]))
    load_adapter(other, tmp_path)
    np.testing.assert_array_equal(other(X).asnumpy(), net(X).asnumpy())
    wrong = seeded_net()
    inject_lora(wrong, LoraConfig(rank=2, alpha=4, target_modules=["wq"]))
    with pytest.raises(CheckpointError, match="no layer for"):
        load_adapter(wrong, tmp_path)


def test_only_adapters_change_when_training(tmp_path):
    from mfcore.training.trainer import Trainer, TrainingArguments

    class LM(nn.Cell):
        def __init__(self):
            super().__init__()
            self.net = seeded_net()
            self.emb = mint.nn.Linear(1, 6)

        def construct(self, input_ids, labels=None):
            out = self.net(self.emb(input_ids.astype(ms.float32).expand_dims(-1)).reshape(-1, 6))
            return ((out - 0.5) ** 2).mean()

    lm = LM()
    inject_lora(lm, LoraConfig(rank=2, alpha=4, target_modules=["wq"]))
    frozen = {p.name: p.asnumpy().copy() for p in lm.get_parameters() if "mindpet" not in p.name}
    data = {"input_ids": np.arange(32, dtype=np.int32).reshape(8, 4) % 3, "labels": np.zeros((8, 4), np.int32)}
    trainer = Trainer(lm, TrainingArguments(output_dir=str(tmp_path), max_steps=3, batch_size=2, progress=False,
                                            learning_rate=1e-2), data)
    trainer.train()
    for p in lm.get_parameters():
        if "mindpet" not in p.name:
            np.testing.assert_array_equal(p.asnumpy(), frozen[p.name])
    assert any(np.abs(p.asnumpy()).max() > 0 for p in adapter_parameters(lm) if "lora_b" in p.name)
    step_dir = tmp_path / "checkpoint" / "rank_0" / "step_000003"
    assert sorted(f.name for f in step_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "optimizer.safetensors", "trainer_state.json"]


def test_config_from_mindformers_keys_and_errors():
    config = LoraConfig.from_dict({"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.1,
                                   "target_modules": ".*wq|.*wv"})
    assert (config.rank, config.alpha, config.dropout, config.scaling) == (4, 8, 0.1, 2.0)
    assert config.matches("model.layers.0.attention.wq") and not config.matches("model.layers.0.attention.wk")
    with pytest.raises(ConfigError, match="pet_config.lora_rank"):
        LoraConfig.from_dict({"lora_rank": 0})
    with pytest.raises(ConfigError, match="pet_config.pet_type"):
        LoraConfig.from_dict({"pet_type": "prefix"})
    with pytest.raises(ConfigError, match="pet_config.rnak"):
        LoraConfig.from_dict({"rnak": 3})
    with pytest.raises(ConfigError, match="matches no linear layer"):
        inject_lora(seeded_net(), LoraConfig(target_modules=["w_nothing"]))


def test_dropout_applies_in_training_only():
    base = mint.nn.Linear(6, 5)
    layer = LoRALinear(base, LoraConfig(rank=3, alpha=6, dropout=0.5), np.random.default_rng(0))
    layer.mindpet_delta_lora_b.set_data(Tensor(np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)))
    w, b = base.weight.asnumpy(), base.bias.asnumpy()
    a, bb = layer.mindpet_delta_lora_a.asnumpy(), layer.mindpet_delta_lora_b.asnumpy()
    x = X.asnumpy()
    layer.set_train(False)
    np.testing.assert_allclose(layer(X).asnumpy(), x @ w.T + b + 2 * (x @ a.T @ bb.T), rtol=1e-5, atol=1e-5)
    layer.set_train(True)
    first, second = layer(X).asnumpy(), layer(X).asnumpy()
    assert not np.array_equal(first, second)  # a new mask each call
