"""The llama3-tiny preset's tokenizer, so that the tiny preset runs from a clean clone.

A tiktoken ranks file mfcore writes itself on first use, cached in
$MFCORE_HOME/tokenizers/llama3-tiny/tokenizer.model: the 256 single bytes (so any text encodes, one token
a byte) and unused filler tokens up to Llama 3's 128000 base tokens, so that the 256 special tokens land
at their Llama 3 ids (128000 <|begin_of_text|> ... 128009 <|eot_id|>) and the chat template works. The
fillers are at least 3 bytes long and no 2-byte token exists, so BPE can never form them. It is not
Llama 3's tokenizer (that one is not redistributed here), only one of the same layout.
"""
from __future__ import annotations

import base64


def vocab_file() -> str:
    """The ranks file of llama3-tiny, built on first use."""
    from mfcore.utils.atomic import atomic_write_text
    from mfcore.utils.paths import mfcore_home

    # imported here: the presets import this module, and `mfcore models` must not pull in numpy
    from .tokenization_llama3 import NUM_BASE_TOKENS

    target = mfcore_home() / "tokenizers" / "llama3-tiny" / "tokenizer.model"
    if not target.exists():
        tokens = [bytes([i]) for i in range(256)] + [f"<unused{i}>".encode() for i in range(256, NUM_BASE_TOKENS)]
        atomic_write_text(target, "".join(f"{base64.b64encode(token).decode()} {rank}\n"
                                          for rank, token in enumerate(tokens)))
    return str(target)
