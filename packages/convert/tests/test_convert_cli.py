"""`mfcore convert` as a user runs it: detection, progress, --verify, --dtype, errors with exit code 2."""
import json
import subprocess
import sys

from convert_helpers import assert_same_state, hf_state


def mfcore(*args):
    return subprocess.run([sys.executable, "-m", "mfcore", *map(str, args)], capture_output=True, text=True)


def test_convert_command_round_trip(hf_models, tmp_path):
    src, model = hf_models["gqa-tied"]
    run = mfcore("convert", src, tmp_path / "ms", "--verify", "--shard-size", "50KB")
    assert run.returncode == 0, run.stderr
    assert "llama hf -> mindformers" in run.stdout and "verified" in run.stdout
    assert "hf -> mindformers" in run.stderr  # the tqdm progress bar
    assert json.loads((tmp_path / "ms" / "config.json").read_text())["model_type"] == "llama"
    assert (tmp_path / "ms" / "mindspore_model.safetensors.index.json").exists()

    run = mfcore("convert", tmp_path / "ms", tmp_path / "hf", "--to", "hf", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "mindformers -> hf" in run.stdout and run.stderr == ""
    assert_same_state(hf_state(src), hf_state(tmp_path / "hf"))

    run = mfcore("convert", src, tmp_path / "bf16", "--from", "hf", "--to", "mindformers", "--model-type", "llama",
                 "--dtype", "bf16", "--ms-format", "ckpt", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "bf16" / "mindspore_model.ckpt").exists()


def test_convert_command_errors(hf_models, tmp_path):
    src, _ = hf_models["mha-untied"]
    run = mfcore("convert", tmp_path / "nowhere", tmp_path / "out")
    assert run.returncode == 2 and "nowhere: no such file or directory" in run.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    run = mfcore("convert", src, tmp_path / "out", "--no-progress")
    assert run.returncode == 2 and "exists and is not empty" in run.stderr
    run = mfcore("convert", "--help")
    assert run.returncode == 0
    for flag in ("--from", "--to", "--model-type", "--dtype", "--shard-size", "--verify"):
        assert flag in run.stdout
