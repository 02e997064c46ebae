"""Checkpoint files as lazily read tensor collections: names, dtypes and shapes first, data on demand.

One class per file kind (safetensors, torch pickles read with weights_only=True, MindSpore .ckpt) and
one that joins Meta's model-parallel shards. `TensorSource` puts the files of one checkpoint together
and knows which file holds which tensor, so every error can name both.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from mfcore import CheckpointError

from .dtypes import f32_to_bf16
from .safetensors_io import SafetensorsFile

_TORCH_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def import_torch(path):
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch pickle files (.bin / .pth) needs torch, which is not "
                              f"installed; `pip install torch` (CPU is enough), or use a safetensors "
                              f"copy of the checkpoint") from None
    return torch


class TorchFile:
    """A torch.save file read with torch.load(weights_only=True): a pickle that wants to import or run
    anything but plain tensors is refused, never executed. Memory-mapped, so tensors load on use."""

    def __init__(self, path):
        self.path = Path(path)
        torch = import_torch(self.path)
        self.mapped = True
        try:
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):  # old (non-zip) files cannot be memory-mapped
                    raise
                self.mapped = False
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            if type(exc).__name__ == "UnpicklingError":
                raise CheckpointError(
                    f"{self.path}: refused: the file holds pickled code, not only tensors (torch.load with "
                    f"weights_only=True rejected it: {str(exc).splitlines()[0]}). It was not executed. Use "
                    f"a safetensors copy, or one from a source you trust") from None
            raise CheckpointError(f"{self.path}: cannot be read as a PyTorch checkpoint (truncated or corrupt?): "
                                  f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{self.path}: holds a {type(state).__name__}, not a dict of tensors")
        self.tensors = {}
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{self.path}: entry {name!r} is a {type(value).__name__}, not a tensor")
            self.tensors[name] = value
        self._torch = torch

    def names(self) -> List[str]:
        return list(self.tensors)

    def dtype(self, name: str) -> str:
        key = str(self.tensors[name].dtype).replace("torch.", "")
        if key not in _TORCH_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {key}")
        return _TORCH_DTYPES[key]

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def read(self, name: str) -> np.ndarray:
        tensor = self.tensors[name]
        try:
            if tensor.dtype == self._torch.bfloat16:
                array = tensor.contiguous().view(self._torch.int16).numpy().view(np.uint16).copy()
            else:
                array = tensor.contiguous().numpy().copy()
        except RuntimeError as exc:  # a cut-off memory-mapped file fails here
            raise CheckpointError(f"{self.path}: tensor {name!r} cannot be read (truncated file?): {exc}") from exc
        if self.mapped:
            _release_file_pages(tensor)
        return array


def _release_file_pages(tensor) -> None:
    """Let go of the pages of a memory-mapped tensor once it has been copied out.

    Pages of a file mapping that were read stay in the process's RSS until unmapped, so streaming
    through a mapped .pth would grow to the whole file. madvise(MADV_DONTNEED) drops them; they are
    clean (never written), so a later read faults them in from the file again. Only for mmap'ed
    storage: on heap memory it would zero the data.
    """
    if not sys.platform.startswith("linux"):
        return
    storage = tensor.untyped_storage()
    start, size = storage.data_ptr(), storage.nbytes()
    if not size:
        return
    page = mmap.PAGESIZE
    first, last = start // page * page, -(-(start + size) // page) * page
    _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # 4 = MADV_DONTNEED


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _LIBC


class CkptFile:
    """A MindSpore .ckpt (protobuf). MindSpore reads it whole, so this one is not streamed."""

    _MS_DTYPES = {"Float32": "F32", "Float16": "F16", "BFloat16": "BF16", "Float64": "F64", "Int64": "I64",
                  "Int32": "I32", "Int16": "I16", "Int8": "I8", "UInt8": "U8", "Bool": "BOOL"}

    def __init__(self, path):
        self.path = Path(path)
        try:
            import mindspore
            from mfcore.utils.runtime import ensure_runtime
        except ImportError:
            raise CheckpointError(f"{self.path}: reading .ckpt needs mindspore") from None
        ensure_runtime()  # MindSpore's device must be chosen before the first kernel runs
        self._ms = mindspore
        try:
            self.params = mindspore.load_checkpoint(str(self.path))
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot be read as a MindSpore checkpoint (truncated or corrupt?): "
                                  f"{type(exc).__name__}: {exc}") from exc

    def names(self) -> List[str]:
        return list(self.params)

    def dtype(self, name: str) -> str:
        key = str(self.params[name].dtype)
        if key not in self._MS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {key}")
        return self._MS_DTYPES[key]

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self.params[name].shape)

    def read(self, name: str) -> np.ndarray:
        param = self.params[name]
        if param.dtype == self._ms.bfloat16:  # bf16 -> fp32 is exact, so the bits come back unchanged
            return f32_to_bf16(param.astype(self._ms.float32).asnumpy())
        return param.asnumpy().copy()


def open_file(path):
    suffix = Path(path).suffix
    if suffix == ".safetensors":
        return SafetensorsFile(path)
    if suffix in (".bin", ".pth", ".pt"):
        return TorchFile(path)
    if suffix == ".ckpt":
        return CkptFile(path)
    raise CheckpointError(f"{path}: unknown checkpoint file type {suffix!r} (.safetensors, .bin, .pth, .ckpt)")


class TensorSource:
    """The tensors of one checkpoint, possibly spread over several files, by name."""

    def __init__(self, files: List, origin: Path):
        self.origin = origin
        self.files = files
        self._owner: Dict[str, object] = {}
        for file in files:
            for name in file.names():
                if name in self._owner:
                    raise CheckpointError(f"tensor {name!r} is in both {self._owner[name].path} and {file.path}")
                self._owner[name] = file

    def names(self) -> List[str]:
        return list(self._owner)

    def where(self, name: str) -> str:
        return str(self._owner[name].path)

    def dtype(self, name: str) -> str:
        return self._owner[name].dtype(name)

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._owner[name].shape(name)

    def read(self, name: str) -> np.ndarray:
        return self._owner[name].read(name)


class MetaShards(TensorSource):
    """Meta's consolidated.00.pth ... consolidated.NN.pth, joined tensor by tensor on read.

    `split_dim(name, shard_shape)` says along which dimension a tensor was split (None: replicated).
    """

    def __init__(self, files: List[TorchFile], origin: Path, split_dim: Callable[[str, tuple], Optional[int]]):
        self.origin = origin
        self.files = files
        self.split_dim = split_dim
        first = files[0]
        for shard in files[1:]:
            if set(shard.names()) != set(first.names()):
                odd = sorted(set(shard.names()) ^ set(first.names()))
                raise CheckpointError(f"{shard.path}: holds different tensors than {first.path} ({odd[:3]}...)")
        self._owner = {name: first for name in first.names()}

    def where(self, name: str) -> str:
        if len(self.files) == 1:
            return str(self.files[0].path)
        return f"{self.files[0].path.parent}/consolidated.*.pth ({len(self.files)} shards)"

    def shape(self, name: str) -> Tuple[int, ...]:
        shape = list(self.files[0].shape(name))
        dim = self.split_dim(name, tuple(shape)) if len(self.files) > 1 else None
        if dim is not None:
            shape[dim] = sum(f.shape(name)[dim] for f in self.files)
        return tuple(shape)

    def read(self, name: str) -> np.ndarray:
        if len(self.files) == 1:
            return self.files[0].read(name)
        dim = self.split_dim(name, self.files[0].shape(name))
        parts = [f.read(name) for f in self.files]
        if dim is None:
            for shard, part in zip(self.files[1:], parts[1:]):
                if part.shape != parts[0].shape or not np.array_equal(part.view(np.uint8), parts[0].view(np.uint8)):
                    raise CheckpointError(f"{shard.path}: tensor {name!r} should be the same in every shard "
                                          f"(replicated) but differs from {self.files[0].path}")
            return parts[0]
        return np.concatenate(parts, axis=dim)


# -- opening a checkpoint directory --------------------------------------------------------------------
_SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)\.(?P<ext>safetensors|bin)")


def index_file(directory: Path) -> Optional[Path]:
    """The shard index of a directory; safetensors first (Hub repositories often hold both kinds)."""
    indexes = sorted(directory.glob("*.safetensors.index.json")) or sorted(directory.glob("pytorch_model*.bin.index.json"))
    if len(indexes) > 1:
        raise CheckpointError(f"{directory}: several index files ({', '.join(i.name for i in indexes)}); "
                              f"keep the one of the checkpoint to convert")
    return indexes[0] if indexes else None


def weight_files(directory: Path) -> List[Path]:
    """The weight files of a Hugging Face / MindSpore directory, checked for missing shards."""
    index = index_file(directory)
    if index is not None:
        return _files_from_index(index)
    for pattern in ("*.safetensors", "pytorch_model*.bin", "*.ckpt"):
        files = sorted(directory.glob(pattern))
        if files:
            _check_numbered_shards(files)
            if pattern == "*.ckpt" and len(files) > 1:
                raise CheckpointError(f"{directory}: several .ckpt files ({', '.join(f.name for f in files)}); "
                                      f"pass the one to convert")
            return files
    raise CheckpointError(f"{directory}: no weight files (*.safetensors, pytorch_model*.bin, *.ckpt, "
                          f"consolidated.*.pth)")


def _files_from_index(index: Path) -> List[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a valid index (needs a 'weight_map' object): {exc}") from exc
    files: Dict[str, List[str]] = {}
    for name, file in weight_map.items():
        files.setdefault(file, []).append(name)
    for file, names in files.items():
        if not (index.parent / file).exists():
            raise CheckpointError(f"{index.parent / file}: missing shard: {index.name} lists it for "
                                  f"{len(names)} tensor(s), e.g. {names[0]!r}; download the missing file")
    return [index.parent / file for file in sorted(files)]


def _check_numbered_shards(files: List[Path]) -> None:
    groups: Dict[Tuple[str, str, int], set] = {}
    for file in files:
        match = _SHARD_NAME.fullmatch(file.name)
        if match:
            groups.setdefault((match["stem"], match["ext"], int(match["n"])), set()).add(int(match["i"]))
    for (stem, ext, total), present in groups.items():
        for i in range(1, total + 1):
            if i not in present:
                width = len(str(total)) if total > 99999 else 5
                raise CheckpointError(f"{files[0].parent / f'{stem}-{i:0{width}d}-of-{total:0{width}d}.{ext}'}: "
                                      f"missing shard ({len(present)} of {total} present)")


def check_index_contents(directory: Path, source: TensorSource) -> None:
    """Every tensor the index lists must be in the shard it names (a stale or mixed download)."""
    index = index_file(directory)
    if index is not None:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        for name, file in weight_map.items():
            if name not in source._owner or Path(source.where(name)).name != file:
                raise CheckpointError(f"{directory / file}: tensor {name!r} listed in {index.name} is not in "
                                      f"the file; the shard is incomplete or from another download")


def meta_shard_files(directory: Path) -> List[Path]:
    files = sorted(directory.glob("consolidated.*.pth"))
    if not files:
        raise CheckpointError(f"{directory}: no consolidated.*.pth files (Meta's original layout)")
    numbers = []
    for file in files:
        try:
            numbers.append(int(file.name.split(".")[1]))
        except ValueError:
            raise CheckpointError(f"{file}: unexpected name; Meta shards are consolidated.00.pth, .01, ...") from None
    for expected, number in enumerate(sorted(numbers)):
        if number != expected:
            raise CheckpointError(f"{directory}/consolidated.{expected:02d}.pth: missing shard "
                                  f"(found {', '.join(f.name for f in files)})")
    return files
