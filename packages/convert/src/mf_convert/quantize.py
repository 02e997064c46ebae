"""`mfcore convert --quantize int8`: linear weights written as round-to-nearest int8 with one float32
scale per output channel (mfcore.models.quantization), so that the model loads them as they are.

Every 2-D `*.weight` tensor (the projections and the output head; embeddings and norms stay as they are)
becomes an int8 tensor plus `<name>_scale`, unless its module is in `modules_to_not_convert`; config.json
records `quantization_config`. Native (mindformers) output only: the other formats have no int8 layout.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

from mfcore import ConfigError
from mfcore.models.quantization import SCALE_SUFFIX, QuantizationConfig, quantize_rtn_int8

__all__ = ["SCALE_SUFFIX", "QuantizedTensors", "quantization_for", "quantized_plan"]


def quantization_for(quantize: Optional[str], target_format: str) -> Optional[QuantizationConfig]:
    if not quantize:
        return None
    if str(quantize).lower() != "int8":
        raise ConfigError("--quantize", f"{quantize!r} is not supported; use int8 (round-to-nearest, per channel)")
    if target_format != "mindformers":
        raise ConfigError("--quantize", f"int8 weights are written only in mfcore's native format (--to "
                                        f"mindformers), not {target_format!r}")
    return QuantizationConfig()


def quantized_plan(items: List, config: QuantizationConfig) -> List:
    """The plan with each linear weight as int8, followed by its float32 scale."""
    plan = []
    for item in items:
        module = item.native_name[:-len(".weight")]
        if len(item.shape) == 2 and item.native_name.endswith(".weight") and config.converts(module):
            plan.append(dataclasses.replace(item, target_dtype="I8"))
            plan.append(dataclasses.replace(item, native_name=item.native_name + SCALE_SUFFIX,
                                            target_name=item.target_name + SCALE_SUFFIX, shape=(item.shape[0],),
                                            source_name=item.native_name, source_dtype="F32", target_dtype="F32"))
        else:
            plan.append(item)
    return plan


class QuantizedTensors:
    """Quantizes each weight once: its scale, written next, comes from the same pass."""

    def __init__(self):
        self._scales = {}

    def weight(self, item, produce_float: Callable):
        quantized, scale = quantize_rtn_int8(produce_float())  # bfloat16 arrives as its bits
        self._scales[item.target_name + SCALE_SUFFIX] = scale
        return quantized

    def scale(self, item, produce_float: Callable):
        scale = self._scales.pop(item.target_name, None)
        if scale is None:  # e.g. --verify re-reading a scale on its own
            _, scale = quantize_rtn_int8(produce_float())
        return scale

