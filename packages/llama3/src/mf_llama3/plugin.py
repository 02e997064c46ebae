"""mf-llama3's plugin module: Llama 3 presets on mf-llama2's `llama` model type."""
from mfcore import hookimpl

from .presets import PRESETS


@hookimpl
def register_tokenizers(register):
    register("Llama3Tokenizer", "mf_llama3.tokenization_llama3:Llama3Tokenizer")
    register("Llama3TokenizerFast", "mf_llama3.tokenization_llama3_fast:Llama3TokenizerFast")


@hookimpl
def register_presets(register):
    for preset in PRESETS:
        register(preset)


@hookimpl
def register_datasets(register):
    register("llama3-chat", "mf_llama3.chat_template:Llama3ChatTemplate")
