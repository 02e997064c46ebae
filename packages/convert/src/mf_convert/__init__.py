"""mf-convert: checkpoint conversion for mfcore (`mfcore convert`).

    from mf_convert import convert
    convert("Llama-2-7b-hf", "llama2-7b-ms", target_format="mindformers", dtype="bf16", verify=True)
"""
from .engine import Conversion, ConvertResult, convert

__version__ = "0.1.0"
__all__ = ["convert", "Conversion", "ConvertResult"]
