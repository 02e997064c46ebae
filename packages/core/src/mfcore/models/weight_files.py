"""Weight files of a model directory: which files, their tensors one at a time, writing one shard.

Ours are MindSpore safetensors (`mindspore_model*.safetensors` + index) or one `mindspore_model.ckpt`;
Hugging Face's `model*.safetensors` are read directly (bfloat16 kept exactly).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

import mindspore
import numpy as np
from mindspore import Tensor

from mfcore.errors import CheckpointError, ConfigError
from mfcore.utils.atomic import atomic_path

from .safetensors_reader import SafetensorsFile

WEIGHTS_NAME = "mindspore_model.safetensors"
WEIGHTS_INDEX_NAME = "mindspore_model.safetensors.index.json"
CKPT_NAME = "mindspore_model.ckpt"
HF_WEIGHTS_NAME = "model.safetensors"
HF_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"

# Training state that MindFormers (and MindSpore optimizers) store beside the weights; not parameters.
TRAINING_STATE = re.compile(r"(adam_[mv]|moment[12]|accu_grads|global_step|epoch_num|step_num|loss_scale|"
                            r"scale_sense|current_iterator_step|last_overflow_iterator_step|learning_rate|"
                            r"beta[12]_power)(\.|$)")


_SIZE_UNITS = {"B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
               "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_size(size: Union[int, str], field: str = "max_shard_size") -> int:
    """'5GB' -> 5_000_000_000 (decimal, as transformers), '2GiB' -> 2 * 2**30, '200MB', 1024 bytes; > 0.

    The one size parser of mfcore (save_pretrained's max_shard_size, `mfcore convert --shard-size`)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(size), re.IGNORECASE)
        if not match:
            raise ConfigError(field, f"cannot read the size {size!r}; write it like 5GB, 500MB or 2GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])
    if value <= 0:
        raise ConfigError(field, f"the size {size!r} must be positive (e.g. 5GB)")
    return value


def find_weight_files(directory: Path) -> List[Path]:
    """The weight files of a model directory: ours (sharded or not), Hugging Face's, or one .ckpt."""
    for index_name in (WEIGHTS_INDEX_NAME, HF_WEIGHTS_INDEX_NAME):
        index = directory / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid index file ({exc}); re-save the model") from exc
            files = [directory / name for name in dict.fromkeys(weight_map.values())]
            absent = [str(f.name) for f in files if not f.exists()]
            if absent:
                raise CheckpointError(f"{index}: shard(s) {', '.join(absent)} listed in the index are missing "
                                      f"from {directory}; copy them there or re-save the model")
            return files
    for name in (WEIGHTS_NAME, HF_WEIGHTS_NAME, CKPT_NAME):
        if (directory / name).exists():
            return [directory / name]
    others = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.ckpt"))
    if len(others) == 1:
        return others
    if others:
        raise CheckpointError(f"{directory}: several weight files ({', '.join(f.name for f in others)}) and no "
                              f"index file; keep one, or add {WEIGHTS_INDEX_NAME}")
    raise CheckpointError(f"{directory}: no weights found (looked for {WEIGHTS_NAME}, {HF_WEIGHTS_NAME}, their "
                          f".index.json, *.safetensors, *.ckpt). Convert a checkpoint into this directory with "
                          f"`mfcore convert`, or save a model there with save_pretrained")


def read_safetensors(path: Path) -> Iterable[Tuple[str, Tensor]]:
    """Yield (name, MindSpore tensor) one tensor at a time, each built on a copy-on-write map of the file
    (SafetensorsFile.map): loading reads nothing, and the weights live once, in the page cache; bfloat16
    stays bfloat16, exactly (its bits are viewed, not converted)."""
    file = SafetensorsFile(path)
    for name in file.names():
        yield name, as_tensor(file.map(name), file.dtype(name))


def as_tensor(array: np.ndarray, dtype: str) -> Tensor:
    """A tensor sharing `array`'s memory; safetensors' BF16 (read as uint16 bits) becomes bfloat16."""
    if dtype == "BF16":
        return Tensor.from_numpy(array.view(np.int16)).view(mindspore.bfloat16)
    return Tensor.from_numpy(np.ascontiguousarray(array))


def load_ckpt(file: Path) -> dict:
    try:
        return mindspore.load_checkpoint(str(file))
    except Exception as exc:
        raise CheckpointError(f"{file}: cannot be read as a MindSpore checkpoint: {exc}") from exc


def checkpoint_shapes(files: Sequence[Path]) -> List[Tuple[str, Tuple[int, ...]]]:
    """(name, shape) of every tensor, read from safetensors headers without loading the data."""
    shapes: List[Tuple[str, Tuple[int, ...]]] = []
    for file in files:
        if file.suffix == ".safetensors":
            header = SafetensorsFile(file)
            shapes.extend((name, header.shape(name)) for name in header.names())
        elif file.suffix == ".ckpt":
            shapes.extend((name, tuple(value.shape)) for name, value in load_ckpt(file).items())
        else:
            raise CheckpointError(f"{file}: unknown checkpoint format; use .safetensors or .ckpt")
    return shapes


def read_checkpoint(files: Sequence[Path]) -> Iterable[Tuple[str, Tensor]]:
    """(name, tensor) pairs, one tensor at a time for safetensors files."""
    for file in files:
        if file.suffix == ".safetensors":
            yield from read_safetensors(file)
        else:
            yield from load_ckpt(file).items()


def name_list(names: Sequence[str], limit: int = 12) -> str:
    names = list(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def save_tensors_file(items: List[Tuple[str, Tensor]], path: Path, fmt: str) -> None:
    """Write one MindSpore checkpoint file atomically (MindSpore insists on the file's suffix)."""
    with atomic_path(path, suffix=".safetensors" if fmt == "safetensors" else ".ckpt") as tmp:
        mindspore.save_checkpoint([{"name": n, "data": t} for n, t in items], str(tmp), format=fmt)
