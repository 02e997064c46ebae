"""Streaming safetensors: write a file tensor by tensor (reading is core's `SafetensorsFile`).

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} (plus optional "__metadata__"), then the raw bytes. We write it ourselves so that
bfloat16 works without torch and a file is written without holding all its tensors in memory.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from mfcore import CheckpointError
from mfcore.models.safetensors_reader import ITEMSIZE, SafetensorsFile, storage_dtype  # noqa: F401 (SafetensorsFile re-exported)


def write_safetensors(path, plan: Iterable[Tuple[str, str, Tuple[int, ...]]], produce: Callable[[str], np.ndarray],
                      metadata: Optional[Mapping[str, str]] = None, on_tensor: Optional[Callable] = None) -> None:
    """Write tensors [(name, dtype, shape)] to `path`, asking `produce(name)` for each in turn.

    The header is written first from the plan, so only one tensor is in memory at a time.
    `on_tensor(name, nbytes)` is called after each tensor (progress bars).
    """
    plan = list(plan)
    header: Dict[str, dict] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in plan:
        nbytes = int(np.prod(shape, dtype=np.int64)) * ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name, dtype, shape in plan:
            array = np.ascontiguousarray(produce(name))
            if array.dtype != storage_dtype(dtype) or tuple(array.shape) != tuple(shape):
                raise CheckpointError(f"{path}: tensor {name!r}: produced {array.dtype}{list(array.shape)}, "
                                      f"planned {dtype}{list(shape)} (a transform changed the shape?)")
            handle.write(memoryview(array.reshape(-1)).cast("B"))
            if on_tensor is not None:
                on_tensor(name, array.nbytes)
            del array  # before the next tensor is read: one tensor in memory, not two
        handle.flush()
        os.fsync(handle.fileno())
