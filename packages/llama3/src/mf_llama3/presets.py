"""Llama 3 / 3.1 presets: Llama 2's network with other values (GQA, vocab 128256, theta 500000...)."""
from mfcore import Preset

from .tiny_tokenizer import vocab_file as tiny_vocab_file

_LLAMA3 = dict(vocab_size=128256, seq_length=8192, rms_norm_eps=1e-5, theta=500000.0,
               bos_token_id=128000, eos_token_id=128001, pad_token_id=128002)
_LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192}
_TOKENIZER = {"type": "Llama3Tokenizer"}
# A tokenizer mfcore makes itself, built on first use, so that the tiny preset runs from a clean clone.
_TINY_TOKENIZER = {"type": "Llama3Tokenizer", "vocab_file": tiny_vocab_file}
_8B = dict(hidden_size=4096, num_layers=32, num_heads=32, n_kv_heads=8, intermediate_size=14336)
_70B = dict(hidden_size=8192, num_layers=80, num_heads=64, n_kv_heads=8, intermediate_size=28672)

PRESETS = [
    Preset(name="llama3-8b", model_type="llama", aliases=("llama3_8b",), tokenizer=_TOKENIZER,
           description="Llama 3 8B (meta-llama/Meta-Llama-3-8B)", config=dict(_LLAMA3, **_8B)),
    Preset(name="llama3-70b", model_type="llama", aliases=("llama3_70b",), tokenizer=_TOKENIZER,
           description="Llama 3 70B (meta-llama/Meta-Llama-3-70B)", config=dict(_LLAMA3, **_70B)),
    Preset(name="llama3.1-8b", model_type="llama", aliases=("llama3_1_8b",), tokenizer=_TOKENIZER,
           description="Llama 3.1 8B, 128k context through llama3 rope scaling",
           config=dict(_LLAMA3, **_8B, seq_length=131072, rope_scaling=_LLAMA31_SCALING)),
    Preset(name="llama3.1-70b", model_type="llama", aliases=("llama3_1_70b",), tokenizer=_TOKENIZER,
           description="Llama 3.1 70B, 128k context through llama3 rope scaling",
           config=dict(_LLAMA3, **_70B, seq_length=131072, rope_scaling=_LLAMA31_SCALING)),
    Preset(name="llama3-tiny", model_type="llama", random_init_ok=True, tokenizer=_TINY_TOKENIZER,
           description="tiny Llama 3 shape (GQA, theta 500000, full vocab) for tests and demos; its tokenizer "
                       "is a byte-level one of Llama 3's layout mfcore makes itself (mf_llama3/tiny_tokenizer.py)",
           config=dict(_LLAMA3, seq_length=256, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2,
                       intermediate_size=192)),
]
