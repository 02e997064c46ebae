"""Streaming safetensors: read one tensor at a time, write a file tensor by tensor.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} (plus optional "__metadata__"), then the raw bytes. We read and write it ourselves so
that bfloat16 works without torch and a file is written without holding all its tensors in memory.
Files are checked against their header (a truncated file is an error that names it).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from mfcore import CheckpointError

from .dtypes import ITEMSIZE, storage_dtype

_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    """A lazily read safetensors file: the header is parsed at once, tensors only when asked for."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                head = handle.read(8)
                if len(head) < 8:
                    raise CheckpointError(f"{self.path}: truncated or not a safetensors file ({size} bytes)")
                (length,) = struct.unpack("<Q", head)
                if length > min(_MAX_HEADER, size - 8):
                    raise CheckpointError(f"{self.path}: not a safetensors file or truncated "
                                          f"(header says {length} bytes, file has {size})")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{self.path}: cannot read the safetensors header: {exc}") from exc
        self.metadata: Dict[str, str] = header.pop("__metadata__", None) or {}
        self.data_start = 8 + length
        self.entries: Dict[str, dict] = {}
        end = 0
        for name, entry in header.items():
            try:
                begin, stop = entry["data_offsets"]
                expected = int(np.prod(entry["shape"], dtype=np.int64)) * ITEMSIZE[entry["dtype"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{self.path}: tensor {name!r} has a malformed header entry {entry!r}") from exc
            if stop - begin != expected:
                raise CheckpointError(f"{self.path}: tensor {name!r}: header offsets hold {stop - begin} bytes, "
                                      f"its dtype and shape need {expected}; the file is corrupt")
            self.entries[name] = entry
            end = max(end, stop)
        if self.data_start + end > size:
            missing = [n for n, e in self.entries.items() if self.data_start + e["data_offsets"][1] > size]
            raise CheckpointError(f"{self.path}: truncated: {size} bytes, the header needs {self.data_start + end} "
                                  f"(tensor {missing[0]!r} and {len(missing) - 1} more are cut off); "
                                  f"download or copy the file again")

    def names(self) -> List[str]:
        return list(self.entries)

    def dtype(self, name: str) -> str:
        return self.entries[name]["dtype"]

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """One tensor as a numpy array (bfloat16 as uint16 bits), read straight into its buffer."""
        entry = self.entries[name]
        begin, stop = entry["data_offsets"]
        array = np.empty(entry["shape"], dtype=storage_dtype(entry["dtype"]))
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + begin)
            got = handle.readinto(memoryview(array.reshape(-1)).cast("B")) if stop > begin else 0
        if got != stop - begin:
            raise CheckpointError(f"{self.path}: tensor {name!r}: read {got} of {stop - begin} bytes; "
                                  f"the file is truncated")
        return array


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
