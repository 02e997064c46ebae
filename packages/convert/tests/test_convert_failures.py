"""Every way a conversion can fail ends in an error naming the file and tensor, and leaves DST untouched."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mfcore import CheckpointError
from mf_convert import convert, engine

from convert_helpers import make_hf_model


@pytest.fixture
def sharded(hf_models, tmp_path):
    """A private copy of a sharded transformers checkpoint, free to damage."""
    src, _ = hf_models["gqa-untied-sharded"]
    return shutil.copytree(src, tmp_path / "src")


@pytest.fixture
def single(hf_models, tmp_path):
    src, _ = hf_models["mha-untied"]
    return shutil.copytree(src, tmp_path / "single")


def _rewrite(directory, edit):
    """Load model.safetensors with the safetensors library, let `edit` change the dict, save it back."""
    from safetensors.numpy import load_file, save_file

    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def test_truncated_file(sharded, tmp_path):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    data = (sharded / victim).read_bytes()
    (sharded / victim).write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=rf"{victim}: truncated.*tensor '[^']+'") as info:
        convert(sharded, tmp_path / "out")
    cut = [n for n, f in index["weight_map"].items() if f == victim]
    assert any(name in str(info.value) for name in cut)
    assert not (tmp_path / "out").exists()


def test_corrupt_header(single, tmp_path):
    (single / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*header"):
        convert(single, tmp_path / "out", source_format="hf")


def test_missing_shard_listed_in_index(sharded, tmp_path):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[2]
    (sharded / victim).unlink()
    with pytest.raises(CheckpointError, match=rf"{victim}: missing shard.*e\.g\. 'model\.layers"):
        convert(sharded, tmp_path / "out")


def test_missing_shard_without_index(sharded, tmp_path):
    (sharded / "model.safetensors.index.json").unlink()
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=rf"{victim.name}: missing shard"):
        convert(sharded, tmp_path / "out")


def test_tensor_missing_from_its_shard(sharded, tmp_path):
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = "model-00001-of-00010.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model-00001-of-00010\.safetensors: tensor 'model\.layers\.0\.mlp\.up_proj"):
        convert(sharded, tmp_path / "out")


def test_wrong_shape(single, tmp_path):
    def edit(state):
        state["model.layers.1.self_attn.k_proj.weight"] = state["model.layers.1.self_attn.k_proj.weight"][:32]
    _rewrite(single, edit)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.1\.self_attn\.k_proj\.weight' "
                                              r"has shape \[32, 64\], the config .* needs \[64, 64\]"):
        convert(single, tmp_path / "out")


def test_unmapped_name(single, tmp_path):
    _rewrite(single, lambda state: state.update({"model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.self_attn\.q_norm\.weight' "
                                              r"is not a llama parameter .*unmapped"):
        convert(single, tmp_path / "out")


def test_missing_tensor(single, tmp_path):
    _rewrite(single, lambda state: state.pop("model.layers.1.post_attention_layernorm.weight"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.post_attention_layernorm\.weight' is missing"):
        convert(single, tmp_path / "out")


def test_pickle_payload_is_refused_never_executed(hf_models, tmp_path):
    """A .bin whose unpickling would create a file: refused, and the file is not created."""
    src, _ = hf_models["mha-untied"]
    marker = tmp_path / "pwned"
    proof = tmp_path / "proof"
    builder = ("import sys, torch\n"
               "class Payload:\n"
               "    def __init__(self, path): self.path = path\n"
               "    def __reduce__(self): return (open, (self.path, 'w'))\n"
               "torch.save({'model.embed_tokens.weight': torch.zeros(2), 'x': Payload(sys.argv[2])}, sys.argv[1])\n")
    for target, path in ((tmp_path / "evil", marker), (tmp_path / "evil_copy", proof)):
        target.mkdir()
        shutil.copy(src / "config.json", target)
        subprocess.run([sys.executable, "-c", builder, str(target / "pytorch_model.bin"), str(path)], check=True)
    # the payload is live: plain unpickling runs it
    subprocess.run([sys.executable, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=False)",
                    str(tmp_path / "evil_copy" / "pytorch_model.bin")], check=True)
    assert proof.exists()

    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: refused: .*not executed"):
        convert(tmp_path / "evil", tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_pickle_without_torch_says_what_to_do(hf_models, tmp_path, monkeypatch):
    src, model = hf_models["mha-untied"]
    (tmp_path / "bin").mkdir()
    shutil.copy(src / "config.json", tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: reading PyTorch pickle files .* needs torch.*pip install torch"):
        convert(tmp_path / "bin", tmp_path / "out")


def test_truncated_meta_shard(hf_models, tmp_path):
    src, model = hf_models["mha-untied"]
    (tmp_path / "meta").mkdir()
    torch.save({"tok_embeddings.weight": torch.zeros(96, 64)}, tmp_path / "meta" / "consolidated.00.pth")
    data = (tmp_path / "meta" / "consolidated.00.pth").read_bytes()
    (tmp_path / "meta" / "consolidated.00.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "meta" / "params.json").write_text('{"dim": 64, "n_layers": 2, "n_heads": 4}')
    with pytest.raises(CheckpointError, match=r"consolidated\.00\.pth: cannot be read .*truncated"):
        convert(tmp_path / "meta", tmp_path / "out")


@pytest.mark.parametrize("dst_exists", [False, True])
@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_interrupted_conversion_leaves_dst_untouched(sharded, tmp_path, monkeypatch, dst_exists, failure):
    dst = tmp_path / "dst"
    if dst_exists:
        dst.mkdir()
        (dst / "keep.txt").write_text("old contents")
    produce, calls = engine.Conversion.produce, []

    def failing_produce(self, item):
        calls.append(item.target_name)
        if len(calls) == 7:
            raise failure("interrupted in the middle of the conversion")
        return produce(self, item)

    monkeypatch.setattr(engine.Conversion, "produce", failing_produce)
    with pytest.raises(failure):
        convert(sharded, dst, overwrite=True, shard_size="60KB")
    assert len(calls) == 7  # it failed after writing some shards
    if dst_exists:
        assert sorted(p.name for p in dst.iterdir()) == ["keep.txt"]
        assert (dst / "keep.txt").read_text() == "old contents"
    else:
        assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src"] + (["dst"] if dst_exists else []))


def test_failed_verify_leaves_dst_untouched(single, tmp_path, monkeypatch):
    produce, seen = engine.Conversion.produce, set()

    def drifting_produce(self, item):  # a second read of the same tensor gives other bits
        array = produce(self, item)
        if item.target_name in seen and item.target_name.endswith("wv.weight"):
            array = array.copy()
            array.reshape(-1)[0] += 1
        seen.add(item.target_name)
        return array

    monkeypatch.setattr(engine.Conversion, "produce", drifting_produce)
    with pytest.raises(CheckpointError, match=r"verify: .*mindspore_model\.safetensors: tensor 'model\.layers\.0\.attention\.wv\.weight'"):
        convert(single, tmp_path / "out", verify=True)
    assert not (tmp_path / "out").exists()


def test_existing_dst_is_not_replaced_without_overwrite(single, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        convert(single, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_dst_holding_the_source_is_refused(single, tmp_path):
    from mfcore import ConfigError

    for dst in (single, tmp_path):
        with pytest.raises(ConfigError, match="would destroy the source"):
            convert(single, dst, overwrite=True)
    assert (single / "model.safetensors").exists()
