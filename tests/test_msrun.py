"""Data-parallel training over 2 local CPU workers started by MindSpore's `msrun`.

Both workers must finish, their checkpoints must hold identical weights (gradients are averaged by
MindSpore's DistributedGradReducer over the mccl backend), and those weights must equal a
single-process run on the same global batch (2 workers x 2 sequences = 1 process x 4 sequences).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfcore.cli import main
from mfcore.data import write_mindrecord

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEQ, VOCAB, STEPS = 32, 320, 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def task_yaml(tmp_path: Path, name: str, parallel: bool) -> Path:
    task = yaml.safe_load((REPO / "examples" / "llama2-tiny" / "pretrain.yaml").read_text())
    task["output_dir"] = str(tmp_path / name)
    task["trainer"].update(max_steps=STEPS, progress=False)
    task["train_dataset"]["data_loader"].update(dataset_dir=str(tmp_path / "train.mindrecord"))
    task["callbacks"][1].update(save_checkpoint_steps=2)
    task["model"]["model_config"].update(vocab_size=VOCAB, seq_length=SEQ)
    task["use_parallel"] = parallel
    task["parallel_config"]["data_parallel"] = 2 if parallel else 1
    task["runner_config"]["batch_size"] = 2 if parallel else 4
    del task["processor"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def load(path: Path):
    import mindspore as ms

    from mfcore.utils.runtime import ensure_runtime

    ensure_runtime()  # set MindSpore up as `mfcore run` will in this process

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path), format="safetensors").items()}


@pytest.mark.skipif(not (BIN / "msrun").exists(), reason="msrun (MindSpore's launcher) is not installed")
def test_data_parallel_with_msrun_matches_one_process(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(ids, ids) for ids in rng.integers(0, VOCAB, (24, SEQ)).astype(np.int32)]
    write_mindrecord(tmp_path / "train.mindrecord", iter(rows), SEQ)
    config = task_yaml(tmp_path, "dp", parallel=True)
    # MINDSPORE-CPU.md: the workers find MindSpore only when the environment's bin/ is first on PATH
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(BIN / "msrun"), "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}",
               "--join=True", f"--log_dir={tmp_path / 'logs'}", str(BIN / "mfcore"), "run", "--config", str(config)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("worker_*.log")}
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:],
                                  {k: v[-2000:] for k, v in logs.items()})
    assert sorted(logs) == ["worker_0.log", "worker_1.log"]
    for rank in (0, 1):
        text = logs[f"worker_{rank}.log"]
        assert f'"rank": {rank}' in text and '"step": 4' in text  # each worker printed its final result
    rank0 = load(tmp_path / "dp" / "checkpoint" / "rank_0" / "step_000004" / "mindspore_model.safetensors")
    rank1 = load(tmp_path / "dp" / "checkpoint" / "rank_1" / "step_000004" / "mindspore_model.safetensors")
    assert sorted(rank0) == sorted(rank1)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)

    assert main(["run", "--config", str(task_yaml(tmp_path, "single", parallel=False))]) == 0
    single = load(tmp_path / "single" / "checkpoint" / "rank_0" / "step_000004" / "mindspore_model.safetensors")
    for name in rank0:  # the same update up to the order of float sums
        np.testing.assert_allclose(rank0[name], single[name], rtol=1e-4, atol=2e-6, err_msg=name)


def test_use_parallel_outside_msrun_says_how_to_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    monkeypatch.delenv("RANK_SIZE", raising=False)
    rng = np.random.default_rng(0)
    write_mindrecord(tmp_path / "train.mindrecord", iter([(r, r) for r in rng.integers(0, VOCAB, (8, SEQ))
                                                           .astype(np.int32)]), SEQ)
    assert main(["run", "--config", str(task_yaml(tmp_path, "x", parallel=True))]) == 2
    assert "use_parallel: true, but this process was not started by msrun" in capsys.readouterr().err
