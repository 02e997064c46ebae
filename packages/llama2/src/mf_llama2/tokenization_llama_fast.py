"""LlamaTokenizerFast: Llama 2's tokenizer on the Rust `tokenizers` library.

Built from a Hugging Face `tokenizer.json` when one is given, else converted from the same
SentencePiece `tokenizer.model` the slow LlamaTokenizer reads (`sentencepiece_to_tokenizer`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mfcore.tokenization.base import load_sentencepiece
from mfcore.tokenization import copy_file, require_file
from mfcore.tokenization.fast import PreTrainedTokenizerFast, import_tokenizers

from .tokenization_llama import VOCAB_FILE, Llama2ChatTemplate, LlamaTokenizer

SPIECE_UNDERLINE = "▁"


def sentencepiece_to_tokenizer(model_file, bos_token: Optional[str] = "<s>", eos_token: Optional[str] = None,
                               add_bos_token: bool = True):
    """A `tokenizers.Tokenizer` that encodes and decodes exactly as the SentencePiece BPE model does.

    - model: BPE over the sentencepiece pieces with byte fallback (<0x00>..<0xFF>) and unk fusing;
      merges are every split of a piece into two pieces, ranked by the merged piece's score (highest
      first), which is the order sentencepiece merges in.
    - normalizer: prepend the dummy prefix "▁" and turn spaces into "▁" (the model's identity
      normalizer with add_dummy_prefix), applied to each text between special tokens.
    - decoder: "▁" -> " ", bytes -> text, then drop the dummy prefix's one leading space.
    """
    tokenizers = import_tokenizers()
    from tokenizers import AddedToken, decoders, models, normalizers

    sp = load_sentencepiece(model_file)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, index in vocab.items():
        if len(piece) < 2 or sp.is_control(index) or sp.is_byte(index) or sp.is_unknown(index):
            continue
        score = sp.get_score(index)
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append(((-score, index, vocab[left], vocab[right]), (left, right)))
    merges.sort()
    unk = sp.id_to_piece(sp.unk_id())
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[m for _, m in merges], unk_token=unk,
                                                fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(SPIECE_UNDERLINE),
                                                 normalizers.Replace(" ", SPIECE_UNDERLINE)])
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # For users of the saved tokenizer.json (transformers): BOS/EOS as our add_*_token say.
    _set_post_processor(tokenizer, bos_token if add_bos_token else None, eos_token)
    return tokenizer


def _set_post_processor(tokenizer, bos: Optional[str], eos: Optional[str]) -> None:
    from tokenizers import processors

    single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
    pair = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else [])
                    + ([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
    special = [(t, tokenizer.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


class LlamaTokenizerFast(PreTrainedTokenizerFast):
    """Llama 2's tokenizer in Rust: same ids and text as LlamaTokenizer, plus offsets."""

    vocab_files_names = {"vocab_file": VOCAB_FILE, "tokenizer_file": "tokenizer.json"}
    slow_tokenizer_class = LlamaTokenizer
    default_chat_template = Llama2ChatTemplate()

    def __init__(self, vocab_file: Optional[str] = None, tokenizer_file: Optional[str] = None,
                 tokenizer_object=None, unk_token: Optional[str] = "<unk>", bos_token: Optional[str] = "<s>",
                 eos_token: Optional[str] = "</s>", pad_token: Optional[str] = "<unk>",
                 add_bos_token: bool = True, add_eos_token: bool = False, **kwargs):
        self.vocab_file = str(vocab_file) if vocab_file else None
        if tokenizer_object is None and not tokenizer_file:
            path = require_file(vocab_file, "vocab_file", VOCAB_FILE, type(self).__name__)
            tokenizer_object = sentencepiece_to_tokenizer(path, bos_token, eos_token if add_eos_token else None,
                                                          add_bos_token)
        super().__init__(tokenizer_object=tokenizer_object, tokenizer_file=tokenizer_file, unk_token=unk_token,
                         bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    def _encode_plain(self, texts, want_offsets: bool):
        results = super()._encode_plain(texts, want_offsets)
        if want_offsets:
            # A first token that is the bare dummy prefix "▁" stands for no character of the text
            # (tokenizers aligns it with the first character, which the next token also covers).
            dummy = self._tokenizer.token_to_id(SPIECE_UNDERLINE)
            for ids, offsets in results:
                if ids and ids[0] == dummy:
                    offsets[0] = (0, 0)
        return results

    def _save_vocabulary(self, directory: Path) -> None:
        super()._save_vocabulary(directory)
        if self.vocab_file and Path(self.vocab_file).is_file():
            copy_file(self.vocab_file, directory / VOCAB_FILE)
