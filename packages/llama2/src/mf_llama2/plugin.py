"""mf-llama2's plugin module: what it registers with mfcore (found through the `mfcore` entry point).

Classes are registered as import strings so that discovery does not import MindSpore.
"""
from mfcore import hookimpl

from .presets import PRESETS


@hookimpl
def register_configs(register):
    register("llama", "mf_llama2.configuration_llama:LlamaConfig")


@hookimpl
def register_models(register):
    register("llama", "mf_llama2.modeling_llama:LlamaForCausalLM")


@hookimpl
def register_tokenizers(register):
    register("LlamaTokenizer", "mf_llama2.tokenization_llama:LlamaTokenizer")
    register("LlamaTokenizerFast", "mf_llama2.tokenization_llama_fast:LlamaTokenizerFast")


@hookimpl
def register_presets(register):
    for preset in PRESETS:
        register(preset)


@hookimpl
def register_converters(register):
    from .weight_maps import HF_WEIGHT_MAP, META_WEIGHT_MAP, MINDFORMERS_WEIGHT_MAP

    register(HF_WEIGHT_MAP)
    register(META_WEIGHT_MAP)
    register(MINDFORMERS_WEIGHT_MAP)
