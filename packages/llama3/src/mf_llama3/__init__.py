"""mf-llama3: Llama 3 / 3.1 presets, tokenizer and chat template; the network is mf-llama2's."""
from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "Llama3Tokenizer": "mf_llama3.tokenization_llama3",
    "Llama3TokenizerFast": "mf_llama3.tokenization_llama3_fast",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mf_llama3' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = list(_LAZY)
