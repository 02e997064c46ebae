"""Llama 2 presets: the published configurations, plus tiny ones for tests and demos."""
from mfcore import Preset

from .tiny_tokenizer import vocab_file as tiny_vocab_file

_LLAMA2 = dict(vocab_size=32000, seq_length=4096, rms_norm_eps=1e-5, theta=10000.0,
               bos_token_id=1, eos_token_id=2, pad_token_id=0)
_TOKENIZER = {"type": "LlamaTokenizer"}
# A small tokenizer mfcore makes itself (see tiny_tokenizer.py), built on first use, so that the tiny preset
# runs from a clean clone.
_TINY_TOKENIZER = {"type": "LlamaTokenizer", "vocab_file": tiny_vocab_file}

PRESETS = [
    Preset(name="llama2-7b", model_type="llama", aliases=("llama2_7b",), tokenizer=_TOKENIZER,
           description="Llama 2 7B (meta-llama/Llama-2-7b-hf)",
           config=dict(_LLAMA2, hidden_size=4096, num_layers=32, num_heads=32, n_kv_heads=32,
                       intermediate_size=11008)),
    Preset(name="llama2-13b", model_type="llama", aliases=("llama2_13b",), tokenizer=_TOKENIZER,
           description="Llama 2 13B (meta-llama/Llama-2-13b-hf)",
           config=dict(_LLAMA2, hidden_size=5120, num_layers=40, num_heads=40, n_kv_heads=40,
                       intermediate_size=13824)),
    Preset(name="llama2-70b", model_type="llama", aliases=("llama2_70b",), tokenizer=_TOKENIZER,
           description="Llama 2 70B (meta-llama/Llama-2-70b-hf), grouped-query attention with 8 KV heads",
           config=dict(_LLAMA2, hidden_size=8192, num_layers=80, num_heads=64, n_kv_heads=8,
                       intermediate_size=28672)),
    Preset(name="llama2-tiny", model_type="llama", random_init_ok=True, tokenizer=_TINY_TOKENIZER,
           description="tiny Llama 2 shape for tests and demos (random weights are fine); its tokenizer is a "
                       "small SentencePiece model mfcore makes itself (mf_llama2/tiny_tokenizer.py)",
           config=dict(_LLAMA2, seq_length=256, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=4,
                       intermediate_size=172)),
]
