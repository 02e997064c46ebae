"""Prefix-tuning (Li & Liang 2021) and P-tuning v2 (Liu et al. 2022), as MindFormers' pet_config.

Both learn, for every layer, keys and values of P virtual tokens that each attention prepends to its own
(after rotary embedding, which the prefix does not get); the base model stays frozen. MindFormers builds
them with one encoder (mindformers/pet/tuners/prefix_tuning_adapter.py, ptuning2_adapter.py), and so do
we: an embedding table of P rows, each 2 * num_layers * num_heads * head_dim wide, optionally through a
two-layer tanh MLP (`prefix_projection`, projection_dim wide), dropout, then split per layer into
(key, value). The widths use num_heads as MindFormers does; a grouped-query model reads each row as
num_heads / n_kv_heads prefix positions (its _cat_prefix reshape), so MindFormers' checkpoints fit.

    prefixtuning: {pet_type: prefixtuning, prefix_token_num: 16, mid_dim: 512, dropout_rate: 0.01}
                  (always projected, mid_dim wide)
    ptuning2:     {pet_type: ptuning2, pre_seq_len: 16, prefix_projection: False, projection_dim: 128,
                   dropout_prob: 0.01}

A model supports a prefix when it has a `prefix_encoder` attribute (None until inject_prefix sets it)
and passes the encoder's per-layer output to its attention (mf-llama2 does). Parameter names follow
MindFormers': mindpet_delta_prefixtuning_embedding.embedding_table, ..._dense_in.weight, ... The adapter
directory holds only them (adapter_model.safetensors + adapter_config.json), as a LoRA adapter does.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from mfcore.errors import CheckpointError, ConfigError

from .lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS

PET_TYPES = ("prefixtuning", "ptuning2")
# MindFormers' key names per pet type: (length, projection width, dropout); prefix-tuning always projects.
_KEYS = {"prefixtuning": ("prefix_token_num", "mid_dim", "dropout_rate"),
         "ptuning2": ("pre_seq_len", "projection_dim", "dropout_prob")}


@dataclass
class PrefixConfig:
    pet_type: str = "prefixtuning"
    length: int = 16
    projection: bool = True
    projection_dim: int = 512
    dropout: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict, where: str = "model.model_config.pet_config") -> "PrefixConfig":
        pet_type = str(data.get("pet_type", "")).lower()
        if pet_type not in PET_TYPES:
            raise ConfigError(f"{where}.pet_type", f"{pet_type!r} is not a prefix method; use one of {PET_TYPES}")
        length_key, width_key, dropout_key = _KEYS[pet_type]
        known = {"pet_type", length_key, width_key, dropout_key}
        if pet_type == "ptuning2":
            known.add("prefix_projection")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", f"unknown key for pet_type {pet_type}; known: "
                                                      f"{', '.join(sorted(known))}")
        projection = True if pet_type == "prefixtuning" else data.get("prefix_projection", False)
        config = cls(pet_type=pet_type, length=data.get(length_key, 16), projection=projection,
                     projection_dim=data.get(width_key, 512 if pet_type == "prefixtuning" else 128),
                     dropout=data.get(dropout_key, 0.0))
        for name, key in (("length", length_key), ("projection_dim", width_key)):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}.{key}", f"must be a positive integer, got {value!r}")
        if not isinstance(config.projection, bool):
            raise ConfigError(f"{where}.prefix_projection", f"must be true or false, got {config.projection!r}")
        if isinstance(config.dropout, bool) or not isinstance(config.dropout, (int, float)) or \
                not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"{where}.{dropout_key}", f"must be in [0, 1), got {config.dropout!r}")
        return config

    @property
    def stem(self) -> str:
        return f"mindpet_delta_{self.pet_type}"


class PrefixEncoder(nn.Cell):
    """Per-layer prefix keys and values: construct(batch) -> num_layers tensors (2, batch, P, heads * D)."""

    def __init__(self, config: PrefixConfig, num_layers: int, num_heads: int, head_dim: int):
        super().__init__()
        self.config = config
        self.num_layers, self.length = num_layers, config.length
        self.width = num_heads * head_dim
        out = 2 * num_layers * self.width
        rng = np.random.default_rng(config.seed)
        # MindSpore's 'normal' initializer (sigma 0.01) for the table; nn.Dense's defaults for the MLP.
        table = rng.normal(0.0, 0.01, (config.length, out)).astype(np.float32)
        self.embedding_table = Parameter(Tensor(table))
        self.dense_in_weight = self.dense_in_bias = self.dense_out_weight = self.dense_out_bias = None
        if config.projection:
            hidden = config.projection_dim
            self.dense_in_weight = Parameter(Tensor(_uniform(rng, (hidden, out), out)))
            self.dense_in_bias = Parameter(Tensor(_uniform(rng, (hidden,), out)))
            self.dense_out_weight = Parameter(Tensor(_uniform(rng, (out, hidden), hidden)))
            self.dense_out_bias = Parameter(Tensor(_uniform(rng, (out,), hidden)))
        self.use_dropout = config.dropout > 0
        # nn.Dropout (mint's DropoutExt has no CPU kernel); active only in training mode
        self.dropout = nn.Dropout(p=config.dropout) if self.use_dropout else None

    def positions(self, kv_width: int) -> int:
        """Key/value positions per layer for a model whose key rows are kv_width wide."""
        return self.length * self.width // kv_width

    def construct(self, batch: int):
        values = self.embedding_table  # every row of the batch sees the same prefix tokens 0..P-1
        if self.dense_in_weight is not None:
            hidden = ops.tanh(mint.nn.functional.linear(values, self.dense_in_weight, self.dense_in_bias))
            values = mint.nn.functional.linear(hidden, self.dense_out_weight, self.dense_out_bias)
        values = values.reshape(1, self.length, 2 * self.num_layers, self.width)
        values = values.broadcast_to((batch, self.length, 2 * self.num_layers, self.width))
        if self.use_dropout:
            values = self.dropout(values)
        values = values.permute(2, 0, 1, 3)  # (2 * layers, B, P, W): rows 2i, 2i + 1 are layer i's k, v
        return tuple(values[2 * i:2 * i + 2] for i in range(self.num_layers))


_MINDFORMERS_NAMES = {"embedding_table": "_embedding.embedding_table", "dense_in_weight": "_dense_in.weight",
                      "dense_in_bias": "_dense_in.bias", "dense_out_weight": "_dense_out.weight",
                      "dense_out_bias": "_dense_out.bias"}


def _uniform(rng, shape, fan_in: int) -> np.ndarray:
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def supports_prefix(model) -> bool:
    return hasattr(model, "prefix_encoder")


def inject_prefix(model: nn.Cell, config: PrefixConfig) -> PrefixEncoder:
    """Give `model` a trainable prefix encoder and freeze everything else."""
    if not supports_prefix(model):
        raise ConfigError("model.model_config.pet_config.pet_type",
                          f"{config.pet_type}: {type(model).__name__} takes no prefix keys/values (it has no "
                          "prefix_encoder); use pet_type lora")
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_heads
    for param in model.get_parameters():
        param.requires_grad = False
    encoder = PrefixEncoder(config, cfg.num_layers, cfg.num_heads, head_dim)
    model.prefix_encoder = encoder
    for attr, suffix in _MINDFORMERS_NAMES.items():  # MindFormers' names (MindSpore renames on setattr)
        param = getattr(encoder, attr)
        if param is not None:
            param.name = f"{config.stem}{suffix}"
            param.requires_grad = True
    model.prefix_config = config
    return encoder


def prefix_parameters(model: nn.Cell) -> List[Parameter]:
    encoder = getattr(model, "prefix_encoder", None)
    return list(encoder.get_parameters()) if encoder is not None else []


def save_prefix_adapter(model: nn.Cell, directory: Path, base_model: Optional[str] = None) -> None:
    """Only the prefix encoder's tensors (+ adapter_config.json) into `directory`."""
    from .checkpointing import save_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(prefix_parameters(model), directory / ADAPTER_WEIGHTS)
    info = dict(asdict(model.prefix_config), base_model=base_model)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def prefix_config_from_adapter(info: dict) -> PrefixConfig:
    fields = {k: info[k] for k in ("pet_type", "length", "projection", "projection_dim", "dropout") if k in info}
    return PrefixConfig(**fields)


def load_prefix_tensors(model: nn.Cell, tensors: dict, where: str) -> None:
    """Assign prefix tensors by name (all of the encoder's must be there, nothing else)."""
    from .checkpointing import assign_tensors

    params = prefix_parameters(model)
    if not params:
        raise CheckpointError(f"{where}: prefix tensors, but the model has no prefix encoder")
    extra = sorted(set(tensors) - {p.name for p in params})
    if extra:
        raise CheckpointError(f"{where}: tensors the prefix encoder has no parameter for: {extra[:3]}")
    assign_tensors(params, tensors, Path(where))


def load_prefix_adapter(model: nn.Cell, directory: Path) -> None:
    from .checkpointing import load_tensors

    load_prefix_tensors(model, load_tensors(Path(directory) / ADAPTER_WEIGHTS), str(directory))
