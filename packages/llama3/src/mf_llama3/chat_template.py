"""The Llama 3 chat layout as a dataset template (`mfcore data --format chat --template llama3-chat`).

Each message is <|start_header_id|>role<|end_header_id|>\\n\\n content.strip() <|eot_id|>, after one
<|begin_of_text|> (Meta's ChatFormat). Special tokens are emitted as ids, never as text, so a user
message that merely contains "<|eot_id|>" stays plain text. Loss is on the assistant content and its
<|eot_id|>, so the model learns to stop.
"""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

# Ids of the Llama 3 vocabulary (fixed by the released tokenizer.model), used when the tokenizer
# cannot look special tokens up by name.
SPECIAL_IDS = {"<|begin_of_text|>": 128000, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
               "<|eot_id|>": 128009}


def _special(tokenizer, token: str) -> List[int]:
    lookup = getattr(tokenizer, "convert_tokens_to_ids", None)
    if lookup is not None:
        try:
            value = lookup(token)
        except Exception:  # a tokenizer that raises for unknown tokens: fall back to the table
            value = None
        if isinstance(value, int) and value >= 0:
            return [value]
    return [SPECIAL_IDS[token]]


class Llama3ChatTemplate:
    kind = "template"
    description = "Llama 3 instruct chat layout (header / eot special tokens); loss on assistant turns"

    def render(self, messages: List[Dict[str, str]], tokenizer) -> List[Tuple[Union[str, List[int]], bool]]:
        pieces: List[Tuple[Union[str, List[int]], bool]] = [(_special(tokenizer, "<|begin_of_text|>"), False)]
        for message in messages:
            trainable = message["role"] == "assistant"
            pieces.append((_special(tokenizer, "<|start_header_id|>"), False))
            pieces.append((message["role"], False))
            pieces.append((_special(tokenizer, "<|end_header_id|>"), False))
            pieces.append(("\n\n", False))
            pieces.append((message["content"].strip(), trainable))
            pieces.append((_special(tokenizer, "<|eot_id|>"), trainable))
        return pieces
