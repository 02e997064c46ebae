"""PreTrainedTokenizerFast: the shared tokenizer interface on Hugging Face's Rust `tokenizers` library.

`tokenizers` is the optional extra `mfcore[fast]`; it is imported when a Fast tokenizer is built, with
an error that says how to install it. A Fast tokenizer is built from a `tokenizer.json`
(`tokenizer_file=`) or from a ready `tokenizers.Tokenizer` (`tokenizer_object=`, what model plugins
make when they convert a slow model file). On top of the shared interface it computes offsets:
`return_offsets_mapping=True` and `BatchEncoding.char_to_token` / `token_to_chars`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mfcore.utils.atomic import atomic_write_text
from mfcore.errors import ConfigError
from .base import Offsets, PreTrainedTokenizerBase

TOKENIZER_FILE = "tokenizer.json"


def import_tokenizers():
    """The `tokenizers` module, or an ImportError that says how to get it."""
    try:
        import tokenizers
    except ImportError as exc:
        raise ImportError("Fast tokenizers need the Rust `tokenizers` library: `pip install 'mfcore[fast]'` "
                          "(or `pip install tokenizers`); the slow tokenizer classes work without it") from exc
    return tokenizers


class PreTrainedTokenizerFast(PreTrainedTokenizerBase):
    """A tokenizer whose work is done by a `tokenizers.Tokenizer` (Rust)."""

    vocab_files_names = {"tokenizer_file": TOKENIZER_FILE}
    has_offsets = True

    def __init__(self, tokenizer_object=None, tokenizer_file: Optional[str] = None, **kwargs):
        tokenizers = import_tokenizers()
        if tokenizer_object is None:
            if not tokenizer_file:
                raise ConfigError("tokenizer_file", f"{type(self).__name__} needs a tokenizer.json "
                                                    f"(tokenizer_file=...) or a tokenizers.Tokenizer (tokenizer_object=...)")
            if not Path(tokenizer_file).is_file():
                raise ConfigError("tokenizer_file", f"{tokenizer_file} does not exist")
            tokenizer_object = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer = tokenizer_object
        if "add_bos_token" not in kwargs and "add_eos_token" not in kwargs:
            # A bare tokenizer.json (Hugging Face's Llama 3 directories): its post-processor says what
            # it adds around a text; mirror that so add_special_tokens=True gives the same ids.
            kwargs.update(self._special_tokens_added_by_post_processor(kwargs))
        # Text that looks like a special token is plain text unless parse_special_tokens=True (handled
        # in Python, as for slow tokenizers), so the Rust side must never match added tokens in text.
        self._tokenizer.encode_special_tokens = True
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        super().__init__(**kwargs)

    def _special_tokens_added_by_post_processor(self, kwargs) -> Dict[str, bool]:
        plain = self._tokenizer.encode("a", add_special_tokens=False).ids
        full = self._tokenizer.encode("a", add_special_tokens=True).ids
        if not plain or plain == full:
            return {}
        start = full.index(plain[0]) if plain[0] in full else 0
        found = {}
        for attr, ids in (("bos_token", full[:start]), ("eos_token", full[start + len(plain):])):
            if len(ids) == 1:
                found[f"add_{attr[:3]}_token"] = True
                kwargs.setdefault(attr, self._tokenizer.id_to_token(ids[0]))
        return found

    @property
    def backend_tokenizer(self):
        """The underlying `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> Dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _model_special_tokens(self) -> List[str]:
        if getattr(self, "_added_special", None) is None:
            added = self._tokenizer.get_added_tokens_decoder()
            self._added_special = [added[i].content for i in sorted(added) if added[i].special]
        return self._added_special

    def _encode_plain(self, texts: List[str], want_offsets: bool) -> List[Tuple[List[int], Optional[Offsets]]]:
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        if want_offsets:
            return [(e.ids, e.offsets) for e in encodings]
        return [(e.ids, None) for e in encodings]

    def _decode_plain(self, ids: List[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def _decode_plain_batch(self, sequences: List[List[int]]) -> List[str]:
        return self._tokenizer.decode_batch(sequences, skip_special_tokens=False)

    def _decode_with_special(self, ids: List[int], special: set) -> str:
        # One Rust call: its decoder sees the whole sequence, special tokens included as text.
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def _token_to_id(self, token: str) -> Optional[int]:
        return self._tokenizer.token_to_id(token)

    def _id_to_token(self, index: int) -> str:
        return self._tokenizer.id_to_token(index)

    def _save_vocabulary(self, directory: Path) -> None:
        atomic_write_text(directory / TOKENIZER_FILE, self._tokenizer.to_str(pretty=True))
