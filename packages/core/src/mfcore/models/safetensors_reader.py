"""Reading safetensors files lazily, one tensor at a time, with bfloat16 kept exact without torch.

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}} (plus optional "__metadata__"), then the raw bytes. numpy has no bfloat16: a BF16 tensor
is returned as its raw uint16 bits. Files are checked against their header, so a truncated or corrupt
file is an error that names it. Shared by model loading (mfcore.models.modeling) and mf-convert.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from mfcore.errors import CheckpointError

# safetensors dtype name -> numpy storage dtype (BF16 stored as its uint16 bit pattern).
STORAGE = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
ITEMSIZE = {name: np.dtype(dt).itemsize for name, dt in STORAGE.items()}


def storage_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(STORAGE[name])
    except KeyError:
        raise ValueError(f"unsupported tensor dtype {name!r}; supported: {', '.join(STORAGE)}") from None


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits are the top half of a float32: widening is exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


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

    def map(self, name: str) -> np.ndarray:
        """One tensor as an array on a copy-on-write map of the file: nothing is read until used, the
        pages are the page cache's (held once, not copied), and writing to it never changes the file.
        The map outlives a later replace of the file (save_pretrained renames a new file into place).
        Each tensor has a map of its own: dropping the array (e.g. once quantized) unmaps its pages."""
        entry = self.entries[name]
        begin, stop = entry["data_offsets"]
        dtype = storage_dtype(entry["dtype"])
        if stop == begin:
            return np.empty(entry["shape"], dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="c", offset=self.data_start + begin, shape=tuple(entry["shape"]))

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
