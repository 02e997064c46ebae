"""Output formats: sharded safetensors (Hugging Face, MindSpore), MindSpore .ckpt, Meta .pth.

Each writer takes the planned tensors [(name, dtype, shape)] and a `produce(name)` callback, and
returns the files it wrote. Safetensors output is streamed; .ckpt and .pth writers go through
mindspore.save_checkpoint / torch.save, which need every tensor of the file in memory at once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mfcore import CheckpointError

from .dtypes import ITEMSIZE
from .safetensors_io import write_safetensors

Planned = Tuple[str, str, Tuple[int, ...]]


def nbytes(item: Planned) -> int:
    return int(np.prod(item[2], dtype=np.int64)) * ITEMSIZE[item[1]]


def split_into_shards(plan: Sequence[Planned], max_bytes: int) -> List[List[Planned]]:
    shards: List[List[Planned]] = [[]]
    size = 0
    for item in plan:
        if shards[-1] and size + nbytes(item) > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += nbytes(item)
    return shards


def write_safetensors_dir(directory: Path, plan: Sequence[Planned], produce: Callable, max_shard_bytes: int,
                          metadata: Dict[str, str], on_tensor: Optional[Callable] = None,
                          stem: str = "model") -> List[Path]:
    """STEM.safetensors, or STEM-0000i-of-0000n.safetensors + STEM.safetensors.index.json."""
    shards = split_into_shards(plan, max_shard_bytes)
    if len(shards) == 1:
        names = [f"{stem}.safetensors"]
    else:
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    files = []
    for name, shard in zip(names, shards):
        write_safetensors(directory / name, shard, produce, metadata, on_tensor)
        files.append(directory / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(nbytes(item) for item in plan)},
                 "weight_map": {item[0]: name for name, shard in zip(names, shards) for item in shard}}
        (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def write_ckpt(path: Path, plan: Sequence[Planned], produce: Callable, on_tensor: Optional[Callable] = None) -> List[Path]:
    """A MindSpore .ckpt via mindspore.save_checkpoint (imported only here)."""
    import mindspore
    from mfcore.utils.runtime import ensure_runtime

    ensure_runtime()  # MindSpore's device must be chosen before the first kernel runs
    records = []
    for name, dtype, shape in plan:
        array = produce(name)
        if dtype == "BF16":  # MindSpore takes no bf16 numpy: go through fp32, exact both ways
            tensor = mindspore.Tensor((array.astype(np.uint32) << 16).view(np.float32)).astype(mindspore.bfloat16)
        else:
            tensor = mindspore.Tensor(array)
        records.append({"name": name, "data": tensor})
        if on_tensor is not None:
            on_tensor(name, array.nbytes)
    mindspore.save_checkpoint(records, str(path))
    return [path]


def write_torch(path: Path, plan: Sequence[Planned], produce: Callable, on_tensor: Optional[Callable] = None) -> List[Path]:
    """A torch.save dict of tensors (Meta's consolidated.00.pth)."""
    from .readers import import_torch

    torch = import_torch(path)
    state = {}
    for name, dtype, shape in plan:
        array = produce(name)
        if dtype == "BF16":
            state[name] = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            state[name] = torch.from_numpy(array)
        if on_tensor is not None:
            on_tensor(name, array.nbytes)
    try:
        torch.save(state, path)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be written: {exc}") from exc
    return [path]
