"""The conversion: plan every tensor from the headers, then stream them through name maps, tensor
transforms and dtype casts into a temporary directory that replaces DST only when complete.

source tensor --to_native + to_native_transform--> native --from_native + from_native_transform--> target

Native tensors are the separate projections (wq, wk, wv, w1, w3). A source that stores them fused
(MindFormers' qkv_concat w_qkv / w_gate_hidden) is split on the way in; `qkv_concat=True` fuses them
again on the way out (the weight map's `fusions` know the layout).
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from mfcore import CheckpointError, ConfigError, get_plugins
from mfcore.models.weight_files import parse_size
from mfcore.utils.atomic import atomic_directory

from . import detect, readers, writers
from .dtypes import CONFIG_NAMES, FLOATS, ITEMSIZE, cast, parse_dtype
from .quantize import SCALE_SUFFIX, QuantizedTensors, quantization_for, quantized_plan

MS_METADATA = {"format": "ms"}   # what mindspore.save_checkpoint(format="safetensors") writes
HF_METADATA = {"format": "pt"}   # what transformers expects in its safetensors files
# File names: transformers' for Hugging Face, PreTrainedModel.save_pretrained's for native MindSpore.
HF_STEM, NATIVE_STEM = "model", "mindspore_model"


@dataclass
class Item:
    """One tensor of the conversion."""

    source_name: str
    native_name: str
    target_name: str
    shape: tuple
    source_dtype: str
    target_dtype: str
    # Split: the source tensor is fused and this item is its part number `split_index` (source_shape:
    # the fused tensor's). Fused: the target tensor is made from these part items, in order.
    split_index: Optional[int] = None
    source_shape: Optional[tuple] = None
    parts: Tuple["Item", ...] = ()

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * ITEMSIZE[self.target_dtype]


@dataclass
class ConvertResult:
    dst: Path
    source_format: str
    target_format: str
    model_type: str
    tensors: int
    bytes_written: int
    seconds: float
    files: List[str] = field(default_factory=list)
    tokenizer_files: List[str] = field(default_factory=list)
    verified: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / 1e6 / max(self.seconds, 1e-9)


class Conversion:
    """A planned conversion of one checkpoint. `convert()` below is the usual entry point."""

    def __init__(self, src, source_format: Optional[str] = None, target_format: str = "mindformers",
                 model_type: Optional[str] = None, dtype: Optional[str] = None, config=None,
                 quantize: Optional[str] = None, qkv_concat: Optional[bool] = None):
        self.src = Path(src)
        if source_format is not None and source_format not in detect.FORMATS:
            raise ConfigError("--from", f"unknown format {source_format!r}; use one of {', '.join(detect.FORMATS)}")
        if target_format not in detect.FORMATS:
            raise ConfigError("--to", f"unknown format {target_format!r}; use one of {', '.join(detect.FORMATS)}")
        self.source_format = source_format or detect.detect_format(self.src, model_type)
        self.target_format = target_format
        config_dict, self.config_file = detect.source_config_dict(self.src, self.source_format,
                                                                  Path(config) if config else None)
        self.model_type = model_type or detect.detect_model_type(config_dict, self.source_format, self.src)
        plugins = get_plugins()
        self.source_map = plugins.converter(self.model_type, self.source_format)
        self.target_map = plugins.converter(self.model_type, target_format)
        if config_dict is None:
            raise ConfigError("--config", f"{self.src}: no config beside the weights (config.json / params.json); "
                                          f"pass --config with a config.json or a MindFormers YAML")
        self.source = self._open_source(config_dict)
        self.config = self._build_config(config_dict, from_user=config is not None)
        self.dtype = parse_dtype(dtype) if dtype else None
        self.quantization = quantization_for(quantize, target_format)
        self.qkv_concat = qkv_concat
        self._split_cache: Tuple[Optional[str], list] = (None, [])
        self.items = self._plan()
        self._by_native = {item.native_name: item for item in self.items}
        self._quantized = QuantizedTensors()

    # -- source ------------------------------------------------------------------------------------
    def _open_source(self, config_dict: dict) -> readers.TensorSource:
        directory = detect.weight_directory(self.src)
        if self.source_format == "meta":
            files = [self.src] if self.src.is_file() else readers.meta_shard_files(self.src)
            shards = [readers.TorchFile(f) for f in files]
            split = self.source_map.split_dim
            if len(shards) > 1 and split is None:
                raise ConfigError("--from", f"the {self.model_type} meta map has no shard rules (split_dim)")
            return readers.MetaShards(shards, directory, lambda name, shape: split(name, shape, config_dict))
        files = [self.src] if self.src.is_file() else readers.weight_files(self.src)
        source = readers.TensorSource([readers.open_file(f) for f in files], directory)
        if self.src.is_dir():
            readers.check_index_contents(self.src, source)
        return source

    def _build_config(self, config_dict: dict, from_user: bool):
        config_cls = get_plugins().configs.get(self.model_type)
        if self.source_map.config_to_native is not None and not from_user:
            # The format's own config file (Meta's params.json); values it leaves open come from the shapes.
            shapes = {name: self.source.shape(name) for name in self.source.names()}
            return config_cls.from_dict(self.source_map.config_to_native(config_dict, shapes))
        return config_cls.from_dict(config_dict)

    # -- plan --------------------------------------------------------------------------------------
    def _plan(self) -> List[Item]:
        source, fmt = self.source, self.source_format
        fusions = self.source_map.fusions
        items: Dict[str, Item] = {}
        source_fused = False
        for name in source.names():
            if self.source_map.ignore is not None and self.source_map.ignore(name):
                continue
            native = self.source_map.to_native(name)
            if native is None:
                raise CheckpointError(f"{source.where(name)}: tensor {name!r} is not a {self.model_type} parameter "
                                      f"that the {fmt!r} name map knows (unmapped name); is --from {fmt} / "
                                      f"--model-type {self.model_type} right?")
            dtype = source.dtype(name)
            target_dtype = self.dtype if (self.dtype and dtype in FLOATS) else dtype
            parts = fusions.parts(native) if fusions is not None else None
            if parts:  # a fused tensor: one native item per part, split when produced
                source_fused = True
                try:
                    shapes = [a.shape for a in fusions.split(native, np.empty(source.shape(name), np.uint8),
                                                             self.config)]
                except ValueError:
                    raise CheckpointError(f"{source.where(name)}: fused tensor {name!r} has shape "
                                          f"{list(source.shape(name))}, which the config's heads / FFN width "
                                          f"({self.config_file}) cannot split") from None
                new = [Item(name, part, "", tuple(shape), dtype, target_dtype, index, tuple(source.shape(name)))
                       for index, (part, shape) in enumerate(zip(parts, shapes))]
            else:
                new = [Item(name, native, "", tuple(source.shape(name)), dtype, target_dtype)]
            for item in new:
                if item.native_name in items:
                    raise CheckpointError(f"{source.where(name)}: tensors {items[item.native_name].source_name!r} "
                                          f"and {name!r} both hold {item.native_name!r}")
                items[item.native_name] = item
        self._check_against_config(items)
        fuse = self._target_fused(source_fused)
        if hasattr(self.config, "qkv_concat"):  # the written config describes the written layout
            self.config.qkv_concat = fuse
        plan = self._fused(list(items.values())) if fuse else list(items.values())
        for item in plan:
            item.target_name = self.target_map.from_native(item.native_name)
            if item.target_name is None:
                raise CheckpointError(f"{source.where(item.source_name)}: tensor {item.source_name!r} "
                                      f"({item.native_name}) has no name in format {self.target_format!r}")
        if self.quantization is not None:
            return quantized_plan(plan, self.quantization)
        return plan

    def _target_fused(self, source_fused: bool) -> bool:
        """Whether the output stores fused projections: --qkv-concat says, else the source's layout where
        the target format has one (MindFormers), else separate."""
        can_fuse = self.target_map.fusions is not None
        if self.qkv_concat and not can_fuse:
            raise ConfigError("--qkv-concat", f"format {self.target_format!r} has no fused q/k/v layout; "
                                              f"only --to mindformers stores w_qkv / w_gate_hidden")
        if self.qkv_concat is not None:
            return bool(self.qkv_concat)
        return source_fused and can_fuse

    def _fused(self, items: List[Item]) -> List[Item]:
        """The plan with each group of parts replaced by one fused item, where its first part stood."""
        fusions = self.target_map.fusions
        by_native = {item.native_name: item for item in items}
        plan, done = [], set()
        for item in items:
            fused = fusions.fused_name(item.native_name)
            if fused is None:
                plan.append(item)
                continue
            if fused in done:
                continue
            done.add(fused)
            parts = [by_native.get(name) for name in fusions.parts(fused)]
            if any(part is None for part in parts):
                absent = [name for name, part in zip(fusions.parts(fused), parts) if part is None]
                raise CheckpointError(f"{self.src}: cannot fuse {fused!r}: {', '.join(absent)} missing")
            if len({part.target_dtype for part in parts}) > 1:
                raise CheckpointError(f"{self.src}: cannot fuse {fused!r}: its parts have different dtypes "
                                      f"({', '.join(p.source_dtype for p in parts)}); pass --dtype")
            shape = fusions.fuse(fused, [np.empty(p.shape, np.uint8) for p in parts], self.config).shape
            plan.append(Item(parts[0].source_name, fused, "", tuple(shape), parts[0].source_dtype,
                             parts[0].target_dtype, parts=tuple(parts)))
        return plan

    def _check_against_config(self, items: Dict[str, Item]) -> None:
        shapes_of = self.source_map.native_shapes or self.target_map.native_shapes
        if shapes_of is None:
            return
        expected = dict(shapes_of(self.config))
        hint = " (is a consolidated.NN.pth shard missing?)" if self.source_format == "meta" else ""
        for native, item in items.items():
            where = self.source.where(item.source_name)
            if native not in expected:
                raise CheckpointError(f"{where}: tensor {item.source_name!r} ({native}) is not a parameter of this "
                                      f"{self.model_type} config (num_layers={getattr(self.config, 'num_layers', '?')})")
            if tuple(item.shape) != tuple(expected[native]):
                raise CheckpointError(f"{where}: tensor {item.source_name!r} has shape {list(item.shape)}, the config "
                                      f"({self.config_file}) needs {list(expected[native])}{hint}")
        tied = self.source_map.tied if getattr(self.config, "tie_word_embeddings", False) else {}
        missing = [n for n in expected if n not in items and n not in tied]
        if missing:
            foreign = self.source_map.from_native(missing[0]) or missing[0]
            raise CheckpointError(f"{self.src}: tensor {foreign!r} is missing ({len(missing)} missing in all); "
                                  f"a shard or file of the checkpoint may be missing or truncated")

    # -- tensors -----------------------------------------------------------------------------------
    def produce(self, item: Item) -> np.ndarray:
        if self.quantization is not None and item.target_dtype == "I8":
            return self._quantized.weight(item, lambda: self._produce_float(item))
        if self.quantization is not None and item.target_name.endswith(SCALE_SUFFIX):
            weight = item.source_name  # a scale item carries its weight's names
            return self._quantized.scale(item, lambda: self._produce_float(self._by_native[weight]))
        return self._produce_float(item)

    def _produce_float(self, item: Item) -> np.ndarray:
        if item.parts:  # each part cast on its own (their source dtypes may differ), then fused
            parts = [cast(self._native(part), part.source_dtype, item.target_dtype) for part in item.parts]
            array = self.target_map.fusions.fuse(item.native_name, parts, self.config)
        else:
            array = cast(self._native(item), item.source_dtype, item.target_dtype)
        if self.target_map.from_native_transform is not None:
            array = self.target_map.from_native_transform(item.native_name, array, self.config)
        return array

    def _native(self, item: Item) -> np.ndarray:
        """The native tensor of a one-source item: read, transformed, and split out of a fused source."""
        if item.split_index is not None:
            name, parts = self._split_cache
            if name != item.source_name:  # the parts of one fused tensor are planned together: split it once
                self._split_cache = (None, [])
                fused = self._read(item.source_name, item.source_shape)
                fused_native = self.source_map.to_native(item.source_name)
                if self.source_map.to_native_transform is not None:
                    fused = self.source_map.to_native_transform(fused_native, fused, self.config)
                parts = [np.ascontiguousarray(p) for p in
                         self.source_map.fusions.split(fused_native, fused, self.config)]
                self._split_cache = (item.source_name, parts)
            return parts[item.split_index]
        array = self._read(item.source_name, item.shape)
        if self.source_map.to_native_transform is not None:
            array = self.source_map.to_native_transform(item.native_name, array, self.config)
        return array

    def _read(self, name: str, shape) -> np.ndarray:
        array = self.source.read(name)
        if tuple(array.shape) != tuple(shape):
            raise CheckpointError(f"{self.source.where(name)}: tensor {name!r} read as {list(array.shape)}, "
                                  f"header says {list(shape)}")
        return array

    @property
    def total_bytes(self) -> int:
        return sum(item.nbytes for item in self.items)

    # -- output ------------------------------------------------------------------------------------
    def write(self, directory: Path, shard_size="5GB", ms_format: str = "safetensors", on_tensor=None) -> List[Path]:
        by_target = {item.target_name: item for item in self.items}
        plan = [(i.target_name, i.target_dtype, tuple(i.shape)) for i in self.items]

        def produce(target_name):
            return self.produce(by_target[target_name])

        if self.target_format == "meta":
            files = writers.write_torch(directory / "consolidated.00.pth", plan, produce, on_tensor)
        elif self.target_format == "mindformers" and ms_format == "ckpt":
            files = writers.write_ckpt(directory / f"{NATIVE_STEM}.ckpt", plan, produce, on_tensor)
        else:
            native = self.target_format == "mindformers"
            files = writers.write_safetensors_dir(directory, plan, produce, parse_size(shard_size, "--shard-size"),
                                                  MS_METADATA if native else HF_METADATA, on_tensor,
                                                  NATIVE_STEM if native else HF_STEM)
        self.write_config(directory)
        return files

    def write_config(self, directory: Path) -> None:
        dtypes = {i.target_dtype for i in self.items if i.target_dtype in FLOATS and not i.target_name.endswith(
            SCALE_SUFFIX)}
        stored = CONFIG_NAMES[dtypes.pop()] if len(dtypes) == 1 else None
        if self.target_format == "mindformers":
            config = copy.deepcopy(self.config)
            if stored and hasattr(config, "param_init_type"):  # MindFormers' name for the weights' dtype
                config.param_init_type = stored
            if self.quantization is not None:
                config.quantization_config = self.quantization.to_dict()
            config.save_pretrained(directory)
            return
        to_foreign = self.target_map.config_from_native
        if to_foreign is None:
            raise ConfigError("--to", f"the {self.model_type} {self.target_format!r} map cannot write a config "
                                      f"(no config_from_native)")
        data = to_foreign(self.config)
        if self.target_format == "meta":
            (directory / "params.json").write_text(json.dumps(data, indent=2) + "\n")
        else:
            if stored:
                data["torch_dtype"] = stored
            (directory / "config.json").write_text(json.dumps(data, indent=2) + "\n")

    def verify(self, directory: Path, files: List[Path]) -> None:
        """Re-read every written tensor and compare it bit for bit with a fresh conversion of its source."""
        written = readers.TensorSource([readers.open_file(f) for f in files], directory)
        expected_names = {item.target_name for item in self.items}
        if set(written.names()) != expected_names:
            odd = sorted(set(written.names()) ^ expected_names)
            raise CheckpointError(f"verify: {directory}: written tensor names differ from the plan: {odd[:5]}")
        for item in self.items:
            got = want = None  # free the previous pair first
            got = written.read(item.target_name)
            want = self.produce(item)
            if got.shape != want.shape or got.dtype != want.dtype or not _same_bytes(got, want):
                raise CheckpointError(f"verify: {written.where(item.target_name)}: tensor {item.target_name!r} "
                                      f"differs from its source {item.source_name!r}")


def _same_bytes(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 23) -> bool:
    """Bitwise equality (NaN payloads included), compared in slices to keep temporaries small."""
    a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    b = np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    return a.size == b.size and all(np.array_equal(a[i:i + chunk], b[i:i + chunk]) for i in range(0, a.size, chunk))


def convert(src, dst, source_format: Optional[str] = None, target_format: str = "mindformers",
            model_type: Optional[str] = None, dtype: Optional[str] = None, shard_size="5GB", verify: bool = False,
            config=None, ms_format: str = "safetensors", overwrite: bool = False, progress: bool = False,
            copy_tokenizer: bool = True, quantize: Optional[str] = None,
            qkv_concat: Optional[bool] = None) -> ConvertResult:
    """Convert the checkpoint at `src` into directory `dst` (written atomically: complete or not at all).

    qkv_concat: True writes MindFormers' fused w_qkv / w_gate_hidden (--to mindformers only), False the
    separate projections; None keeps the source's layout where the target format has both."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    parse_size(shard_size, "--shard-size")  # a bad size is an error before anything is read
    if dst.exists() and not dst.is_dir():
        raise ConfigError("DST", f"{dst} is a file; the destination is a directory (it will hold the weight "
                                 "files and config.json): give a directory path")
    source_dir = detect.weight_directory(src).resolve()
    if source_dir == dst.resolve() or dst.resolve() in source_dir.parents:
        raise ConfigError("DST", f"{dst} is or holds the source {src}; replacing it would destroy the source, "
                                 f"write the conversion somewhere else")
    conversion = Conversion(src, source_format, target_format, model_type, dtype, config, quantize, qkv_concat)
    bar = _progress(conversion.total_bytes, f"{conversion.source_format} -> {target_format}", progress)
    on_tensor = (lambda name, n: bar.update(n)) if bar is not None else None
    tokenizer = detect.tokenizer_files(src)
    try:
        with atomic_directory(dst, overwrite=overwrite) as tmp:
            files = conversion.write(tmp, shard_size, ms_format, on_tensor)
            for name, path in tokenizer.items():
                if copy_tokenizer:
                    shutil.copyfile(path, tmp / name)
            if verify:
                conversion.verify(tmp, files)
    finally:
        if bar is not None:
            bar.close()
    return ConvertResult(dst, conversion.source_format, target_format, conversion.model_type,
                         len(conversion.items), conversion.total_bytes, time.perf_counter() - start,
                         [f.name for f in files], sorted(tokenizer) if copy_tokenizer else [], verify)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from mfcore.utils.progress import progress_bar

    return progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc)
