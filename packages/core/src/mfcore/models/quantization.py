"""Weight-only quantization: round-to-nearest int8 with one float32 scale per output channel.

Named as MindFormers' golden-stick RTN YAMLs name it, under `model_config.quantization_config`:

    quantization_config: {quant_method: rtn, weight_dtype: int8, modules_to_not_convert: [lm_head]}

or `from_pretrained(dir, quantization_config={"quant_method": "rtn", "weight_dtype": "int8"})`. A float
checkpoint is quantized while it loads, tensor by tensor; a saved quantized model (int8 weights plus
`<name>_scale`) loads as it is. The model computes x . Wq^T * scale in float32 (kernels/csrc).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from mfcore.errors import ConfigError

SCALE_SUFFIX = "_scale"  # model.layers.0.attention.wq.weight -> model.layers.0.attention.wq.weight_scale
ROWS_PER_CHUNK = 1024    # quantize this many output channels at a time (bounds the float32 temporary)


@dataclass
class QuantizationConfig:
    quant_method: str = "rtn"
    weight_dtype: str = "int8"
    modules_to_not_convert: List[str] = field(default_factory=list)

    @classmethod
    def from_value(cls, value: Any, where: str = "quantization_config") -> Optional["QuantizationConfig"]:
        """None, a mapping (YAML / config.json) or a QuantizationConfig -> a validated config or None."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be a mapping like {{quant_method: rtn, weight_dtype: int8}}, got {value!r}")
        known = {"quant_method", "weight_dtype", "modules_to_not_convert"}
        unknown = sorted(set(value) - known - {"activation_dtype", "kvcache_dtype", "outliers_suppression"})
        if unknown:
            raise ConfigError(where, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(quant_method=str(value.get("quant_method", "rtn")).lower(),
                     weight_dtype=str(value.get("weight_dtype", "int8")).lower(),
                     modules_to_not_convert=list(value.get("modules_to_not_convert") or []))
        if config.quant_method != "rtn":
            raise ConfigError(f"{where}.quant_method", f"{config.quant_method!r} is not supported; use rtn "
                                                       "(round-to-nearest, per-channel int8 weights)")
        if config.weight_dtype != "int8":
            raise ConfigError(f"{where}.weight_dtype", f"{config.weight_dtype!r} is not supported; use int8")
        for extra in ("activation_dtype", "kvcache_dtype"):
            if value.get(extra) not in (None, "none", "None"):
                raise ConfigError(f"{where}.{extra}", "only weight-only quantization is supported on CPU; "
                                                      "remove it (activations and the KV cache stay float32)")
        return config

    def to_dict(self) -> dict:
        return {"quant_method": self.quant_method, "weight_dtype": self.weight_dtype,
                "modules_to_not_convert": list(self.modules_to_not_convert)}

    def converts(self, module_name: str) -> bool:
        """Whether the linear layer at `module_name` (e.g. model.layers.0.attention.wq) is quantized."""
        parts = module_name.split(".")
        return not any(skip == module_name or skip in parts for skip in self.modules_to_not_convert)


def quantize_rtn_int8(weight) -> Tuple[Any, Any]:
    """(N, K) float weights -> int8 (N, K) and float32 scales (N,) with weight ~= q * scale[:, None].

    `weight` is float16/32/64, or bfloat16 as its uint16 bits (how safetensors' BF16 is read). scale = max
    |w| of the row / 127 (rows of zeros get scale 1), q = round(w / scale). Done in chunks of rows, widened
    to float32 chunk by chunk, so the temporary stays small whatever the weight's size."""
    import numpy as np  # here: the config side of this module is imported by `import mfcore`

    from .safetensors_reader import bf16_to_f32

    if weight.ndim != 2:
        raise ConfigError("quantization_config", f"int8 weights must be 2-D (out, in), got shape {weight.shape}")
    rows = weight.shape[0]
    quantized = np.empty(weight.shape, dtype=np.int8)
    scales = np.empty(rows, dtype=np.float32)
    for start in range(0, rows, ROWS_PER_CHUNK):
        block = weight[start:start + ROWS_PER_CHUNK]
        block = bf16_to_f32(block) if block.dtype == np.uint16 else np.asarray(block, dtype=np.float32)
        absmax = np.abs(block).max(axis=1)
        scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
        quantized[start:start + ROWS_PER_CHUNK] = np.clip(np.rint(block / scale[:, None]), -127, 127)
        scales[start:start + ROWS_PER_CHUNK] = scale
    return quantized, scales
