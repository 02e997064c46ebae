"""mf-llama2: the Llama family for mfcore. Heavy modules (network, tokenizer) load on first access."""
from mfcore.utils.lazy import lazy_exports

from .configuration_llama import LlamaConfig

__version__ = "0.1.0"

_LAZY = {
    "LlamaForCausalLM": "mf_llama2.modeling_llama",
    "LlamaTokenizer": "mf_llama2.tokenization_llama",
    "LlamaTokenizerFast": "mf_llama2.tokenization_llama_fast",
}


__getattr__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = ["LlamaConfig", *_LAZY]
