"""mf-llama2: the Llama family for mfcore. Heavy modules (network, tokenizer) load on first access."""
from importlib import import_module

from .configuration_llama import LlamaConfig

__version__ = "0.1.0"

_LAZY = {
    "LlamaForCausalLM": "mf_llama2.modeling_llama",
    "LlamaTokenizer": "mf_llama2.tokenization_llama",
    "LlamaTokenizerFast": "mf_llama2.tokenization_llama_fast",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mf_llama2' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = ["LlamaConfig", *_LAZY]
