"""Tensor dtypes by their safetensors names, and exact casts between float32, float16 and bfloat16.

numpy has no bfloat16: a bf16 tensor is held as its raw uint16 bits and only moved, never computed
on, so it survives any round trip bit for bit. Casts round to nearest even, as torch and MindSpore do.
"""
from __future__ import annotations

import numpy as np

from mfcore import ConfigError
# the storage table and bf16 widening are core's (model loading reads the same files)
from mfcore.models.safetensors_reader import ITEMSIZE, STORAGE, bf16_to_f32, storage_dtype  # noqa: F401

FLOATS = ("F64", "F32", "F16", "BF16")
# --dtype spellings -> safetensors names
CLI_DTYPES = {"fp32": "F32", "float32": "F32", "fp16": "F16", "float16": "F16", "bf16": "BF16",
              "bfloat16": "BF16"}
# names used by LlamaConfig / torch / MindSpore for the same dtypes
CONFIG_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def parse_dtype(text: str) -> str:
    try:
        return CLI_DTYPES[str(text).lower()]
    except KeyError:
        raise ConfigError("--dtype", f"unknown dtype {text!r}; use fp32, fp16 or bf16") from None


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bits, nearest even; NaN stays a (quiet) NaN."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32)
    rounded = ((bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


_CHUNK = 1 << 20  # elements converted at a time, so a cast holds input + output + ~8 MB of temporaries


def _convert(values: np.ndarray, source: str, target: str) -> np.ndarray:
    if source == "BF16":
        values = bf16_to_f32(values)
    if target == "BF16":
        return f32_to_bf16(values)
    with np.errstate(over="ignore"):  # out of fp16 range becomes inf, as in torch and MindSpore
        return values.astype(STORAGE[target])


def cast(array: np.ndarray, source: str, target: str) -> np.ndarray:
    """Cast `array` (stored as `source`) to `target`; integer tensors and same-dtype casts pass through."""
    if source == target or source not in FLOATS or target not in FLOATS:
        return array
    flat = np.ascontiguousarray(array).reshape(-1)
    out = np.empty(flat.shape, dtype=STORAGE[target])
    for start in range(0, flat.size, _CHUNK):
        out[start:start + _CHUNK] = _convert(flat[start:start + _CHUNK], source, target)
    return out.reshape(array.shape)
