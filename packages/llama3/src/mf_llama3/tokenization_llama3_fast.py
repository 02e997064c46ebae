"""Llama3TokenizerFast: Llama 3's tokenizer on the Rust `tokenizers` library.

Built from a Hugging Face `tokenizer.json` when one is given, else converted from the tiktoken ranks
file (`tiktoken_to_tokenizer`): a byte-level BPE whose merges are rebuilt from the ranks, behind a
Split pre-tokenizer with Llama 3's regex. Long texts are cut exactly as the slow tokenizer cuts them
(Meta's 400k / 25k rule) before Rust sees them, so both give the same ids on any input.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mfcore.tokenization import copy_file, require_file
from mfcore.tokenization.fast import PreTrainedTokenizerFast, import_tokenizers

from .tokenization_llama3 import (PAT_STR, VOCAB_FILE, Llama3ChatTemplate, Llama3Tokenizer, load_tiktoken_ranks,
                                  special_token_names, split_long_text, token_string)


def tiktoken_to_tokenizer(ranks_file, special_tokens_version: str = "3", bos_token: Optional[str] = "<|begin_of_text|>",
                          add_bos_token: bool = True, eos_token: Optional[str] = None):
    """A `tokenizers.Tokenizer` equal to tiktoken on Llama 3's ranks.

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank. A
    merge list with every split (left, right) of every token, ordered by the rank of left+right,
    makes the BPE model take the same steps; `ignore_merges` maps a pre-token that is itself a token
    straight to it, as tiktoken does.
    """
    tokenizers = import_tokenizers()
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

    ranks = load_tiktoken_ranks(ranks_file)
    vocab = {token_string(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append(((rank, ranks[left], ranks[right]), (token_string(left), token_string(right))))
    merges.sort()
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[m for _, m in merges], ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    names = special_token_names(special_tokens_version)
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    # For users of the saved tokenizer.json (transformers): BOS/EOS as our add_*_token say.
    bos = bos_token if add_bos_token else None
    single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos_token}:0"] if eos_token else []))
    pair = single + " " + " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos_token}:1"] if eos_token else []))
    special = [(t, tokenizer.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos_token) if x)]
    tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    return tokenizer


class Llama3TokenizerFast(PreTrainedTokenizerFast):
    """Llama 3's tokenizer in Rust: same ids and text as Llama3Tokenizer, plus offsets."""

    vocab_files_names = {"vocab_file": VOCAB_FILE, "tokenizer_file": "tokenizer.json"}
    slow_tokenizer_class = Llama3Tokenizer
    default_chat_template = Llama3ChatTemplate()

    def __init__(self, vocab_file: Optional[str] = None, tokenizer_file: Optional[str] = None,
                 tokenizer_object=None, bos_token: Optional[str] = "<|begin_of_text|>",
                 eos_token: Optional[str] = "<|end_of_text|>", pad_token: Optional[str] = "<|reserved_special_token_0|>",
                 unk_token: Optional[str] = None, add_bos_token: bool = True, add_eos_token: bool = False,
                 special_tokens_version: str = "3", **kwargs):
        self.vocab_file = str(vocab_file) if vocab_file else None
        self.special_tokens_version = special_tokens_version
        if tokenizer_object is None and not tokenizer_file:
            path = require_file(vocab_file, "vocab_file", VOCAB_FILE, type(self).__name__)
            tokenizer_object = tiktoken_to_tokenizer(path, special_tokens_version, bos_token, add_bos_token,
                                                     eos_token if add_eos_token else None)
        super().__init__(tokenizer_object=tokenizer_object, tokenizer_file=tokenizer_file, bos_token=bos_token,
                         eos_token=eos_token, pad_token=pad_token, unk_token=unk_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    @property
    def eot_token_id(self) -> int:
        return self._token_to_id("<|eot_id|>")

    @property
    def stop_token_ids(self) -> List[int]:
        names = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
        return [i for i in (self._token_to_id(n) for n in names) if i is not None]

    def _encode_plain(self, texts: List[str], want_offsets: bool):
        if all(len(t) <= 25_000 for t in texts):
            return super()._encode_plain(texts, want_offsets)
        results = []
        for text in texts:
            pieces = split_long_text(text)
            ids, offsets = [], [] if want_offsets else None
            for (start, _), (piece_ids, piece_offsets) in zip(
                    pieces, super()._encode_plain([p for _, p in pieces], want_offsets)):
                ids.extend(piece_ids)
                if offsets is not None:
                    offsets.extend((s + start, e + start) for s, e in piece_offsets)
            results.append((ids, offsets))
        return results

    def _config_dict(self):
        config = super()._config_dict()
        config["special_tokens_version"] = self.special_tokens_version
        return config

    def _save_vocabulary(self, directory: Path) -> None:
        super()._save_vocabulary(directory)
        if self.vocab_file and Path(self.vocab_file).is_file():
            copy_file(self.vocab_file, directory / VOCAB_FILE)
