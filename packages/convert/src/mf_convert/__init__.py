"""mf-convert: checkpoint conversion for mfcore (`mfcore convert`).

    from mf_convert import convert
    convert("Llama-2-7b-hf", "llama2-7b-ms", target_format="mindformers", dtype="bf16", verify=True)

The engine (numpy) loads on first access: loading the plugin for `mfcore --help` stays light.
"""
from mfcore.utils.lazy import lazy_exports

__version__ = "0.1.0"
__getattr__ = lazy_exports(__name__, globals(), {name: "mf_convert.engine"
                                                  for name in ("convert", "Conversion", "ConvertResult")})
__all__ = ["convert", "Conversion", "ConvertResult"]
