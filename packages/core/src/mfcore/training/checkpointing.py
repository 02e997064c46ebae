"""Training checkpoints: model (or LoRA adapter) weights, optimizer state, trainer state; atomic; last K kept.

Layout (MindFormers keeps one folder per rank too):

    output_dir/checkpoint/rank_0/step_000030/
        model.safetensors + config.json   (full training: loadable with from_pretrained / --load_checkpoint)
        adapter_model.safetensors + adapter_config.json   (LoRA: only the adapter)
        optimizer.safetensors             (AdamW moments and step, loss-scale state)
        trainer_state.json                (step, epoch, data position, seed, ...)

A checkpoint directory is written under a temporary name and renamed when complete, so a run killed
while saving leaves the previous checkpoints intact and never a half-written one.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mindspore as ms
import numpy as np

from mfcore.utils.atomic import atomic_directory, atomic_write_text
from mfcore.errors import CheckpointError

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
MODEL_NAME = "model.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def rank_dir(output_dir: Path, rank: int) -> Path:
    return Path(output_dir) / "checkpoint" / f"rank_{rank}"


def step_dir(output_dir: Path, rank: int, step: int) -> Path:
    return rank_dir(output_dir, rank) / f"step_{step:06d}"


def list_checkpoints(directory: Path) -> List[Path]:
    """Complete checkpoints (they hold trainer_state.json) in a rank directory, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_NAME).exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def save_tensors(params: Sequence[ms.Parameter], path: Path, names: Optional[Sequence[str]] = None) -> None:
    """Parameters -> one MindSpore safetensors file (float32 stays float32: bit-exact)."""
    entries = [{"name": name, "data": ms.Tensor(p.asnumpy())}
               for name, p in zip(names or [p.name for p in params], params)]
    ms.save_checkpoint(entries, str(path), format="safetensors")


def load_tensors(path: Path) -> Dict[str, ms.Parameter]:
    if not path.exists():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    return ms.load_checkpoint(str(path), format="safetensors")


def assign_tensors(params: Sequence[ms.Parameter], loaded: Dict[str, ms.Parameter], source: Path,
                   names: Optional[Sequence[str]] = None) -> None:
    """Copy loaded values into parameters by name; every name must be present with the same shape."""
    names = list(names or [p.name for p in params])
    missing = [n for n in names if n not in loaded]
    if missing:
        raise CheckpointError(f"{source}: missing {len(missing)} tensor(s), e.g. {missing[:3]}; "
                              "it was written for another model or setting")
    for name, param in zip(names, params):
        value = loaded[name].asnumpy()
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, the model expects "
                                  f"{tuple(param.shape)}")
        param.set_data(ms.Tensor(value.astype(ms.dtype_to_nptype(param.dtype)) if value.dtype != np.dtype(
            ms.dtype_to_nptype(param.dtype)) else value))


def save_checkpoint(output_dir: Path, rank: int, step: int, *, model_writer, optimizer_params,
                    state: dict, keep: int) -> Path:
    """Write one checkpoint atomically and delete all but the newest `keep` (keep <= 0: keep all)."""
    target = step_dir(output_dir, rank, step)
    with atomic_directory(target, overwrite=True) as tmp:
        model_writer(tmp)
        save_tensors(optimizer_params, tmp / OPTIMIZER_NAME)
        atomic_write_text(tmp / STATE_NAME, json.dumps(state, indent=2, sort_keys=True) + "\n")
    if keep > 0:
        for old in list_checkpoints(rank_dir(output_dir, rank))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def find_resume_checkpoint(resume, output_dir: Path, rank: int) -> Optional[Path]:
    """`resume`: True -> the newest checkpoint of this rank (None when there is none yet); a path ->
    that checkpoint (a step directory, or a rank / output directory whose newest one is taken)."""
    if not resume:
        return None
    if resume is True:
        found = list_checkpoints(rank_dir(output_dir, rank))
        return found[-1] if found else None
    path = Path(resume)
    if (path / STATE_NAME).exists():
        return path
    for candidate in (rank_dir(path, rank), path):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(f"--resume_training {resume}: no checkpoint (a step_N folder with {STATE_NAME}) there")


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{checkpoint / STATE_NAME}: unreadable ({exc})") from exc
