"""mf-llama3: Llama 3 / 3.1 presets, tokenizer and chat template; the network is mf-llama2's."""
from mfcore.utils.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "Llama3Tokenizer": "mf_llama3.tokenization_llama3",
    "Llama3TokenizerFast": "mf_llama3.tokenization_llama3_fast",
}


__getattr__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = list(_LAZY)
