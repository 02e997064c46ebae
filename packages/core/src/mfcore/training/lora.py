"""LoRA: low-rank adapters on a model's linear layers (Hu et al. 2021), as MindFormers' pet_config.

`inject_lora(model, LoraConfig(rank=8, alpha=16, dropout=0.05, target_modules=".*wq|.*wv"))`
replaces each matching linear cell by a `LoRALinear` that keeps the *same* weight Parameter (so
checkpoint names do not change) and adds `mindpet_delta_lora_a` [rank, in] and
`mindpet_delta_lora_b` [out, rank] (MindFormers' names). Only the adapters train; `save_adapter`
writes only them; `merge_lora` folds W += alpha/rank * B @ A into the base weights and restores the
plain linear cells, so the merged model saves like any other.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from mfcore.errors import CheckpointError, ConfigError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = r".*\.(wq|wk|wv|wo)$"


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # A regex matched against the full cell name (MindFormers' '.*wq|.*wv'), or a list of names that
    # cell names end with (["wq", "wv"]).
    target_modules: Union[str, List[str]] = DEFAULT_TARGETS
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict, where: str = "model.model_config.pet_config") -> "LoraConfig":
        # MindFormers spells them lora_rank / lora_alpha / lora_dropout.
        aliases = {"lora_rank": "rank", "r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}
        values = {}
        for key, value in data.items():
            if key in ("pet_type", "type"):
                if str(value).lower() != "lora":
                    raise ConfigError(f"{where}.{key}", f"only 'lora' is supported, got {value!r}")
                continue
            name = aliases.get(key, key)
            if name not in cls.__dataclass_fields__:
                raise ConfigError(f"{where}.{key}", "unknown key; use lora_rank, lora_alpha, lora_dropout, "
                                                    "target_modules")
            values[name] = value
        config = cls(**values)
        config.validate(where)
        return config

    def validate(self, where: str = "pet_config") -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank <= 0:
            raise ConfigError(f"{where}.lora_rank", f"must be a positive integer, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ConfigError(f"{where}.lora_alpha", f"must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.lora_dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.target_modules, (str, list)) or not self.target_modules:
            raise ConfigError(f"{where}.target_modules", "must be a regex string or a list of module names")

    @property
    def scaling(self) -> float:
        return float(self.alpha) / self.rank

    def matches(self, cell_name: str) -> bool:
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, cell_name) is not None
        return any(cell_name == t or cell_name.endswith("." + t) for t in self.target_modules)


class LoRALinear(nn.Cell):
    """y = x W^T + b + scaling * dropout(x) A^T B^T, with W, b the wrapped layer's own Parameters."""

    def __init__(self, base: nn.Cell, config: LoraConfig, rng: np.random.Generator):
        super().__init__()
        weight = base.weight
        out_features, in_features = weight.shape
        self.weight = weight
        self.bias = getattr(base, "bias", None)
        self.has_bias = self.bias is not None
        self.scaling = config.scaling
        # PEFT's init: A ~ kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0 (no change at start).
        bound = 1.0 / math.sqrt(in_features)
        a = rng.uniform(-bound, bound, size=(config.rank, in_features)).astype(np.float32)
        self.mindpet_delta_lora_a = Parameter(Tensor(a), name="mindpet_delta_lora_a")
        self.mindpet_delta_lora_b = Parameter(Tensor(np.zeros((out_features, config.rank), np.float32)),
                                              name="mindpet_delta_lora_b")
        self.use_dropout = config.dropout > 0
        # nn.Dropout (not mint.nn.Dropout: its DropoutExt kernel does not exist on CPU)
        self.dropout = nn.Dropout(p=config.dropout) if self.use_dropout else None
        # The original cell, restored by merge_lora; kept outside MindSpore's cell tracking.
        object.__setattr__(self, "base_cell", base)
        # Never fused: a model's fused decode kernels (mfcore.kernels.cpu) read a layer's `weight` directly,
        # which here would drop the adapter; models check `gemv` and `bf16_fusable` before fusing a layer.
        self.gemv = None
        self.bf16_fusable = False
        self.packed = False

    def construct(self, x):
        dtype = x.dtype
        y = mint.matmul(x, self.weight.astype(dtype).T)
        if self.has_bias:
            y = y + self.bias.astype(dtype)
        h = self.dropout(x) if self.use_dropout else x
        delta = mint.matmul(mint.matmul(h, self.mindpet_delta_lora_a.astype(dtype).T),
                            self.mindpet_delta_lora_b.astype(dtype).T)
        return y + delta * self.scaling

    def merged_weight(self) -> np.ndarray:
        a = self.mindpet_delta_lora_a.asnumpy().astype(np.float32)
        b = self.mindpet_delta_lora_b.asnumpy().astype(np.float32)
        w = self.weight.asnumpy()
        return (w.astype(np.float32) + self.scaling * (b @ a)).astype(w.dtype)


def _parent_and_attr(model: nn.Cell, name: str):
    parent = model
    parts = name.split(".")
    for part in parts[:-1]:
        parent = parent._cells[part]
    return parent, parts[-1]


def _fix_names(model: nn.Cell) -> None:
    """Parameter names = their full attribute path (MindSpore prefixes only the last attribute on setattr)."""
    for name, param in model.parameters_and_names():
        if param.name != name:
            param.name = name


def lora_cells(model: nn.Cell) -> List[tuple]:
    return [(name, cell) for name, cell in model.cells_and_names() if isinstance(cell, LoRALinear)]


def inject_lora(model: nn.Cell, config: LoraConfig) -> List[str]:
    """Wrap every matching linear layer; freeze everything but the adapters. Returns the wrapped names."""
    config.validate()
    targets = [(name, cell) for name, cell in model.cells_and_names()
               if name and config.matches(name) and isinstance(getattr(cell, "weight", None), Parameter)
               and len(cell.weight.shape) == 2 and not isinstance(cell, LoRALinear)]
    if not targets:
        linear = [n for n, c in model.cells_and_names() if isinstance(getattr(c, "weight", None), Parameter)
                  and len(c.weight.shape) == 2]
        raise ConfigError("pet_config.target_modules", f"{config.target_modules!r} matches no linear layer; "
                                                       f"layers are named like {linear[:4]}")
    rng = np.random.default_rng(config.seed)
    for param in model.get_parameters():
        param.requires_grad = False
    for name, cell in targets:
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, LoRALinear(cell, config, rng))
    _fix_names(model)
    for _, cell in lora_cells(model):
        cell.mindpet_delta_lora_a.requires_grad = True
        cell.mindpet_delta_lora_b.requires_grad = True
    model.lora_config = config
    return [name for name, _ in targets]


def adapter_parameters(model: nn.Cell) -> List[Parameter]:
    params = []
    for _, cell in lora_cells(model):
        params += [cell.mindpet_delta_lora_a, cell.mindpet_delta_lora_b]
    return params


def save_adapter(model: nn.Cell, directory: Path, base_model: Optional[str] = None) -> None:
    """Only the adapter tensors (+ adapter_config.json) into `directory`."""
    from .checkpointing import save_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: LoraConfig = model.lora_config
    save_tensors(adapter_parameters(model), directory / ADAPTER_WEIGHTS)
    info = dict(asdict(config), pet_type="lora", base_model=base_model)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


def read_adapter_config(directory: Path) -> dict:
    return json.loads((Path(directory) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def load_adapter(model: nn.Cell, directory: Path) -> None:
    """Load adapter tensors saved by save_adapter into an injected model (names must all match)."""
    from .checkpointing import assign_tensors, load_tensors

    params = adapter_parameters(model)
    if not params:
        raise CheckpointError(f"{directory}: an adapter checkpoint, but the model has no LoRA layers")
    loaded = load_tensors(Path(directory) / ADAPTER_WEIGHTS)
    extra = sorted(set(loaded) - {p.name for p in params})
    if extra:
        raise CheckpointError(f"{directory}: adapter tensors the model has no layer for: {extra[:3]}")
    assign_tensors(params, loaded, Path(directory))


def merge_lora(model: nn.Cell) -> List[str]:
    """Fold the adapters into the base weights and put the original linear cells back."""
    merged = []
    for name, cell in lora_cells(model):
        cell.weight.set_data(Tensor(cell.merged_weight()))
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, cell.base_cell)
        merged.append(name)
    _fix_names(model)
    for param in model.get_parameters():
        param.requires_grad = True
    if hasattr(model, "lora_config"):
        del model.lora_config
    return merged
