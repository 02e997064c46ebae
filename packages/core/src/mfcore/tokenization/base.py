"""Tokenizer base classes: one interface for pure-Python tokenizers and the Rust-backed ones.

`PreTrainedTokenizerBase` holds everything that does not depend on the model file: special tokens,
`__call__`/`encode`/`batch_encode` with truncation, padding (left/right, longest/max_length),
attention masks and `return_tensors` ("np", "ms"), `decode`/`batch_decode`, chat templates and
`save_pretrained`/`from_pretrained`. A concrete tokenizer supplies five primitives:

    _encode_plain(texts, want_offsets) -> [(ids, offsets or None)]   # text -> ids, no special tokens
    _decode_plain(ids) -> str                                         # ids without special tokens -> text
    _token_to_id(token) -> int | None, _id_to_token(id) -> str, vocab_size
    _save_vocabulary(directory)                                       # write the model file(s)

`PreTrainedTokenizer` is the base for pure-Python tokenizers (sentencepiece, tiktoken);
`PreTrainedTokenizerFast` (mfcore.tokenization.fast) the base for `tokenizers`-backed ones.
Nothing here imports MindSpore; `return_tensors="ms"` imports it on use.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from mfcore.utils.atomic import atomic_write_text
from mfcore.errors import ConfigError

logger = logging.getLogger(__name__)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
SPECIAL_TOKEN_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token")
# Keys Hugging Face / MindFormers tokenizer configs carry that mean nothing to us (kept, not warned).
_IGNORED_CONFIG_KEYS = {
    "added_tokens_decoder", "clean_up_tokenization_spaces", "legacy", "sp_model_kwargs", "auto_map",
    "use_default_system_prompt", "spaces_between_special_tokens", "name_or_path", "type", "errors",
    "tokenizer_file", "auto_register", "model_input_names", "num_reserved_special_tokens",
    "add_prefix_space", "use_fast", "split_special_tokens", "extra_special_tokens", "backend", "is_local",
    "local_files_only", "tokenizer_type", "processor_class",
}

Offsets = List[Tuple[int, int]]
TextInput = Union[str, Sequence[str]]
# A chat template renders messages into segments: (text, True) is one special token given by its
# text, (text, False) is plain text that is encoded without looking for special tokens in it.
ChatSegments = List[Tuple[str, bool]]


class ChatTemplate:
    """A chat layout written in Python. `render` returns segments; see ChatSegments above.

    Rendering to segments instead of one string keeps special tokens out of reach of user text:
    a message containing the text "<|eot_id|>" stays plain text, as in Meta's reference code.
    """

    name = "chat"

    def render(self, messages: Sequence[Dict[str, str]], add_generation_prompt: bool, tokenizer) -> ChatSegments:
        raise NotImplementedError


class BatchEncoding(dict):
    """What `__call__` returns: a dict (input_ids, attention_mask, ...) with attribute access.

    Also answers char <-> token questions from the offsets the tokenizer computed (Fast tokenizers
    always have them; slow ones do not know offsets and raise).
    """

    def __init__(self, data: Dict[str, Any], offsets: Optional[List[Optional[Offsets]]] = None,
                 batched: bool = True, offsets_fn=None):
        super().__init__(data)
        self._offsets = offsets
        self._offsets_fn = offsets_fn  # computes offsets on first lookup (they cost a third of encoding)
        self._batched = batched

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self):  # picklable (data loader workers): the lazy offsets closure is dropped
        return BatchEncoding, (dict(self), self._offsets, self._batched)

    @property
    def is_batched(self) -> bool:
        return self._batched

    def _sequence_offsets(self, batch_index: int) -> Offsets:
        if self._offsets is None and self._offsets_fn is not None:
            self._offsets, self._offsets_fn = self._offsets_fn(), None
        if self._offsets is None or self._offsets[batch_index] is None:
            raise ValueError("char <-> token lookups need offsets; only Fast tokenizers compute them "
                             "(use the ...Fast tokenizer class or AutoTokenizer.from_pretrained(..., use_fast=True))")
        return self._offsets[batch_index]

    def _indices(self, first: int, second: Optional[int]) -> Tuple[int, int]:
        if second is None:
            if self._batched and len(self["input_ids"]) > 1:
                raise ValueError("this encoding holds a batch: pass (batch_index, index)")
            return 0, first
        return first, second

    def char_to_token(self, batch_or_char_index: int, char_index: Optional[int] = None) -> Optional[int]:
        """Index of the first token covering character `char_index`, or None (whitespace eaten, padding)."""
        batch_index, char_index = self._indices(batch_or_char_index, char_index)
        for token_index, (start, end) in enumerate(self._sequence_offsets(batch_index)):
            if start <= char_index < end:
                return token_index
        return None

    def token_to_chars(self, batch_or_token_index: int, token_index: Optional[int] = None) -> Optional[Tuple[int, int]]:
        """(start, end) character span of a token; None for special and padding tokens."""
        batch_index, token_index = self._indices(batch_or_token_index, token_index)
        start, end = self._sequence_offsets(batch_index)[token_index]
        return None if start == end else (start, end)


def _to_tensor(rows: List[List[int]], return_tensors: Optional[str], name: str):
    if return_tensors is None:
        return rows
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"return_tensors={return_tensors!r}: the sequences of {name!r} have different "
                         f"lengths {sorted(lengths)}; pass padding=True (or padding='max_length')")
    width = len(rows[0]) if rows else 0
    if return_tensors == "np":
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), width)
    if return_tensors == "ms":
        import mindspore  # lazy: tokenizers must not import MindSpore unless asked to

        return mindspore.Tensor(np.asarray(rows, dtype=np.int32).reshape(len(rows), width), mindspore.int32)
    raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'np', 'ms' or None")


def _special_token_content(value) -> Optional[str]:
    """A special token given as a string or as Hugging Face's AddedToken dict {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"a special token must be a string, got {value!r}")
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    return str(value)


class PreTrainedTokenizerBase:
    """The shared interface; see the module docstring for what a subclass implements."""

    # file attribute -> file name in a saved directory, e.g. {"vocab_file": "tokenizer.model"}
    vocab_files_names: Dict[str, str] = {}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    # The chat layout used when no Jinja `chat_template` string is configured.
    default_chat_template: Optional[ChatTemplate] = None

    def __init__(self, bos_token: Optional[str] = None, eos_token: Optional[str] = None,
                 unk_token: Optional[str] = None, pad_token: Optional[str] = None,
                 additional_special_tokens: Sequence[str] = (), add_bos_token: bool = False,
                 add_eos_token: bool = False, model_max_length: Optional[int] = None,
                 padding_side: Optional[str] = None, truncation_side: Optional[str] = None,
                 chat_template: Optional[str] = None, **kwargs):
        self.bos_token = _special_token_content(bos_token)
        self.eos_token = _special_token_content(eos_token)
        self.unk_token = _special_token_content(unk_token)
        self.pad_token = _special_token_content(pad_token)
        self.additional_special_tokens = [_special_token_content(t) for t in additional_special_tokens]
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self.model_max_length = int(model_max_length) if model_max_length else None
        if padding_side is not None:
            self.padding_side = _check_side("padding_side", padding_side)
        if truncation_side is not None:
            self.truncation_side = _check_side("truncation_side", truncation_side)
        # A Jinja string (Hugging Face's tokenizer_config.json) or the class's Python layout.
        self.chat_template = chat_template if chat_template is not None else self.default_chat_template
        unknown = sorted(k for k in kwargs if k not in _IGNORED_CONFIG_KEYS and not k.endswith("_token"))
        if unknown:
            logger.warning("%s: ignoring unknown tokenizer arguments %s", type(self).__name__, unknown)
        self.init_kwargs = dict(kwargs)
        self.name_or_path: Optional[str] = None
        for attr in SPECIAL_TOKEN_ATTRIBUTES:
            token = getattr(self, attr)
            if token is not None and self._token_to_id(token) is None:
                raise ConfigError(attr, f"{token!r} is not in the vocabulary of {type(self).__name__}")
        for token in self.additional_special_tokens:
            if self._token_to_id(token) is None:
                raise ConfigError("additional_special_tokens", f"{token!r} is not in the vocabulary of "
                                                               f"{type(self).__name__}")
        self._special_pattern: Optional[Tuple[tuple, re.Pattern]] = None

    # -- what a subclass provides ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _encode_plain(self, texts: List[str], want_offsets: bool) -> List[Tuple[List[int], Optional[Offsets]]]:
        raise NotImplementedError

    def _decode_plain(self, ids: List[int]) -> str:
        raise NotImplementedError

    def _token_to_id(self, token: str) -> Optional[int]:
        raise NotImplementedError

    def _id_to_token(self, index: int) -> str:
        raise NotImplementedError

    def get_vocab(self) -> Dict[str, int]:
        raise NotImplementedError

    def _save_vocabulary(self, directory: Path) -> None:
        raise NotImplementedError

    def _model_special_tokens(self) -> List[str]:
        """Special tokens of the model file beyond bos/eos/unk/pad (e.g. Llama 3's 256)."""
        return []

    # -- special tokens -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.vocab_size

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._token_to_id(self.bos_token) if self.bos_token is not None else None

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._token_to_id(self.eos_token) if self.eos_token is not None else None

    @property
    def unk_token_id(self) -> Optional[int]:
        return self._token_to_id(self.unk_token) if self.unk_token is not None else None

    @property
    def pad_token_id(self) -> Optional[int]:
        return self._token_to_id(self.pad_token) if self.pad_token is not None else None

    @property
    def all_special_tokens(self) -> List[str]:
        tokens = [getattr(self, attr) for attr in SPECIAL_TOKEN_ATTRIBUTES]
        tokens += self.additional_special_tokens + self._model_special_tokens()
        return list(dict.fromkeys(t for t in tokens if t is not None))

    @property
    def all_special_ids(self) -> List[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    def _special_id_set(self) -> set:
        """all_special_ids as a set, cached until a special-token attribute changes."""
        key = (self.bos_token, self.eos_token, self.unk_token, self.pad_token, tuple(self.additional_special_tokens))
        if getattr(self, "_special_ids_key", None) != key:
            self._special_ids_key, self._special_ids = key, set(self.all_special_ids)
        return self._special_ids

    @property
    def special_tokens_map(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {a: getattr(self, a) for a in SPECIAL_TOKEN_ATTRIBUTES if getattr(self, a) is not None}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    def num_special_tokens_to_add(self) -> int:
        return len(self.build_inputs_with_special_tokens([]))

    def build_inputs_with_special_tokens(self, ids: List[int]) -> List[int]:
        """BOS + ids + EOS as add_bos_token / add_eos_token say."""
        prefix = [self.bos_token_id] if self.add_bos_token and self.bos_token is not None else []
        suffix = [self.eos_token_id] if self.add_eos_token and self.eos_token is not None else []
        return prefix + list(ids) + suffix

    # -- tokens <-> ids -------------------------------------------------------------------------
    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]):
        """Token string(s) -> id(s); an unknown token gives unk_token_id (None when there is no unk)."""
        if isinstance(tokens, str):
            index = self._token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]], skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(self._check_id(int(ids)))
        special = self._special_id_set() if skip_special_tokens else ()
        return [self._id_to_token(self._check_id(int(i))) for i in ids if int(i) not in special]

    def tokenize(self, text: str, parse_special_tokens: bool = False) -> List[str]:
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=False,
                                                      parse_special_tokens=parse_special_tokens))

    def _check_id(self, index: int) -> int:
        if not 0 <= index < self.vocab_size:
            raise ValueError(f"token id {index} is out of range for {type(self).__name__} "
                             f"(vocabulary of {self.vocab_size})")
        return index

    # -- encoding ---------------------------------------------------------------------------------
    def _encode_segments(self, texts: List[str], parse_special_tokens: bool, want_offsets: bool):
        """Encode texts without adding BOS/EOS; with parse_special_tokens, "<s>" in text is a token."""
        for text in texts:
            _check_encodable(text)
        if not parse_special_tokens:
            return self._encode_plain(texts, want_offsets)
        results = []
        for text in texts:
            ids: List[int] = []
            offsets: Optional[Offsets] = [] if want_offsets else None
            for start, piece, is_special in self._split_special(text):
                if is_special:
                    ids.append(self._token_to_id(piece))
                    if offsets is not None:
                        offsets.append((start, start + len(piece)))
                    continue
                piece_ids, piece_offsets = self._encode_plain([piece], want_offsets)[0]
                ids.extend(piece_ids)
                if offsets is not None:
                    offsets.extend((s + start, e + start) for s, e in piece_offsets)
            results.append((ids, offsets))
        return results

    def _split_special(self, text: str) -> Iterable[Tuple[int, str, bool]]:
        tokens = tuple(sorted(self.all_special_tokens, key=len, reverse=True))
        if self._special_pattern is None or self._special_pattern[0] != tokens:
            pattern = re.compile("|".join(re.escape(t) for t in tokens)) if tokens else re.compile("(?!)")
            self._special_pattern = (tokens, pattern)
        position = 0
        for match in self._special_pattern[1].finditer(text):
            if match.start() > position:
                yield position, text[position:match.start()], False
            yield match.start(), match.group(), True
            position = match.end()
        if position < len(text):
            yield position, text[position:], False

    def encode(self, text: str, add_special_tokens: bool = True, truncation: Union[bool, str] = False,
               max_length: Optional[int] = None, parse_special_tokens: bool = False) -> List[int]:
        """Text -> list of ids (BOS/EOS per add_bos_token/add_eos_token when add_special_tokens)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a string, got {type(text).__name__}; use batch_encode for lists")
        return self(text, add_special_tokens=add_special_tokens, truncation=truncation, max_length=max_length,
                    parse_special_tokens=parse_special_tokens, return_attention_mask=False)["input_ids"]

    def batch_encode(self, texts: Sequence[str], **kwargs) -> BatchEncoding:
        """Like `__call__` on a list of texts (always batched)."""
        return self(list(texts), **kwargs)

    batch_encode_plus = batch_encode  # transformers' name

    def __call__(self, text: TextInput, add_special_tokens: bool = True,
                 padding: Union[bool, str] = False, truncation: Union[bool, str, None] = None,
                 max_length: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                 padding_side: Optional[str] = None, return_tensors: Optional[str] = None,
                 return_attention_mask: bool = True, return_offsets_mapping: bool = False,
                 return_length: bool = False, parse_special_tokens: bool = False) -> BatchEncoding:
        """Encode one text or a batch.

        padding: False / "do_not_pad", True / "longest", "max_length". truncation: True / "longest_first"
        cuts each sequence to max_length (or model_max_length) on `truncation_side`, keeping BOS/EOS.
        return_tensors: None (lists), "np" (int64) or "ms" (mindspore int32); a single text then gets a
        batch dimension of 1, as in transformers.
        """
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"tokenizer input must be str or a list of str, got an item of type {type(t).__name__}")
        if return_offsets_mapping and not self.has_offsets:
            raise NotImplementedError(f"{type(self).__name__} cannot return offsets; use its Fast twin")
        want_offsets = return_offsets_mapping
        encoded = self._encode_segments(texts, parse_special_tokens, want_offsets)

        padding_strategy = _padding_strategy(padding)
        truncate = truncation not in (None, False, "do_not_truncate")
        if max_length is None and (truncate or padding_strategy == "max_length"):
            max_length = self.model_max_length
            if max_length is None:
                raise ValueError("truncation / padding='max_length' need max_length (or model_max_length)")

        rows: List[List[int]] = []
        row_offsets: List[Optional[Offsets]] = []
        for ids, offsets in encoded:
            if truncate:
                room = max_length - (self.num_special_tokens_to_add() if add_special_tokens else 0)
                if room < 0:
                    raise ValueError(f"max_length={max_length} leaves no room after the special tokens")
                if len(ids) > room:
                    keep = slice(0, room) if self.truncation_side == "right" else slice(len(ids) - room, len(ids))
                    ids = ids[keep]
                    offsets = offsets[keep] if offsets is not None else None
            if add_special_tokens:
                full = self.build_inputs_with_special_tokens(ids)
                if offsets is not None:
                    lead = 1 if self.add_bos_token and self.bos_token is not None else 0
                    tail = len(full) - len(ids) - lead
                    offsets = [(0, 0)] * lead + list(offsets) + [(0, 0)] * tail
                ids = full
            rows.append(list(ids))
            row_offsets.append(offsets)

        masks = [[1] * len(r) for r in rows]
        if padding_strategy != "do_not_pad":
            target = max_length if padding_strategy == "max_length" else max((len(r) for r in rows), default=0)
            if pad_to_multiple_of:
                target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
            side = _check_side("padding_side", padding_side) if padding_side else self.padding_side
            if any(len(r) < target for r in rows) and self.pad_token_id is None:
                raise ValueError(f"{type(self).__name__} has no pad_token; set one "
                                 f"(e.g. tokenizer.pad_token = tokenizer.eos_token) before padding")
            for i, row in enumerate(rows):
                gap = target - len(row)
                if gap <= 0:
                    continue
                fill, zeros, blank = [self.pad_token_id] * gap, [0] * gap, [(0, 0)] * gap
                if side == "right":
                    rows[i], masks[i] = row + fill, masks[i] + zeros
                    if row_offsets[i] is not None:
                        row_offsets[i] = row_offsets[i] + blank
                else:
                    rows[i], masks[i] = fill + row, zeros + masks[i]
                    if row_offsets[i] is not None:
                        row_offsets[i] = blank + row_offsets[i]

        data: Dict[str, Any] = {"input_ids": rows}
        if return_attention_mask:
            data["attention_mask"] = masks
        if return_offsets_mapping:
            data["offset_mapping"] = row_offsets
        if return_length:
            data["length"] = [sum(m) for m in masks]
        if return_tensors is not None:
            for key in list(data):
                if key == "offset_mapping":
                    data[key] = np.asarray(row_offsets, dtype=np.int64).reshape(len(rows), -1, 2)
                elif key == "length":
                    data[key] = np.asarray(data[key], dtype=np.int64)
                else:
                    data[key] = _to_tensor(data[key], return_tensors, key)
        elif not batched:
            data = {key: value[0] for key, value in data.items()}
        offsets_fn = None
        if self.has_offsets and not want_offsets:
            def offsets_fn():
                again = self(texts, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                             max_length=max_length, pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                             return_attention_mask=False, return_offsets_mapping=True,
                             parse_special_tokens=parse_special_tokens)
                return again["offset_mapping"]
        return BatchEncoding(data, offsets=row_offsets if want_offsets else None,
                             batched=batched or return_tensors is not None, offsets_fn=offsets_fn)

    has_offsets = False

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Ids -> text. Special tokens appear as their text unless skip_special_tokens.

        Without special tokens the model decodes the ids in one call (sentencepiece / tiktoken /
        tokenizers), so the text equals the vendor's decode of the same ids.
        """
        ids = _as_id_list(ids)
        self._check_ids(ids)
        special = self._special_id_set()
        if skip_special_tokens:
            return self._decode_plain([i for i in ids if i not in special])
        if not special.intersection(ids):
            return self._decode_plain(ids)
        return self._decode_with_special(ids, special)

    def _check_ids(self, ids: List[int]) -> None:
        """Out-of-range ids are an error naming the id (the vendors raise IndexError, or return '' silently)."""
        if not ids:
            return
        low, high = min(ids), max(ids)
        size = max(len(self), max(self._special_id_set(), default=-1) + 1)
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ConfigError("ids", f"token id {bad} is outside the vocabulary [0, {size}) of "
                                     f"{type(self).__name__}; were these ids made by another model's tokenizer?")

    def _decode_with_special(self, ids: List[int], special: set) -> str:
        out: List[str] = []
        run: List[int] = []
        for i in ids + [None]:
            if i is not None and i not in special:
                run.append(i)
                continue
            if run:
                out.append(self._decode_run(run, continuing=bool(out)))
                run = []
            if i is not None:
                out.append(self._id_to_token(i))
        return "".join(out)

    def _decode_run(self, ids: List[int], continuing: bool) -> str:
        """Decode ordinary ids that follow other text when `continuing` (see LlamaTokenizer)."""
        return self._decode_plain(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> List[str]:
        if isinstance(sequences, np.ndarray) or hasattr(sequences, "asnumpy"):
            sequences = _as_numpy(sequences).tolist()
        sequences = [_as_id_list(s) for s in sequences]
        for sequence in sequences:
            self._check_ids(sequence)
        special = self._special_id_set()
        if skip_special_tokens:
            sequences = [[i for i in s if i not in special] for s in sequences]
        out: List[Optional[str]] = [None] * len(sequences)
        plain = [k for k, s in enumerate(sequences) if skip_special_tokens or not special.intersection(s)]
        for k, text in zip(plain, self._decode_plain_batch([sequences[k] for k in plain])):
            out[k] = text
        for k, s in enumerate(sequences):
            if out[k] is None:
                out[k] = self._decode_with_special(s, special)
        return out

    def _decode_plain_batch(self, sequences: List[List[int]]) -> List[str]:
        """Decode many sequences without special tokens; subclasses use the library's batch call."""
        return [self._decode_plain(s) for s in sequences]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self.decode([self._token_to_id(t) for t in tokens])

    # -- chat -------------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Dict[str, str]], add_generation_prompt: bool = False,
                            tokenize: bool = True, return_tensors: Optional[str] = None,
                            chat_template: Optional[str] = None):
        """Lay a conversation out as the model was trained on; ids (tokenize=True) or the text.

        A Jinja `chat_template` string (argument or tokenizer_config.json, as in Hugging Face) is
        rendered with jinja2 and its text encoded with special tokens parsed; otherwise the
        tokenizer's Python template is used, whose special tokens are ids and whose message text is
        never parsed for special tokens.
        """
        for number, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"messages[{number}] must be a dict with 'role' and 'content', got {message!r}")
        template = chat_template or self.chat_template or self.default_chat_template
        if isinstance(template, str):
            text = self._render_jinja(template, messages, add_generation_prompt)
            if not tokenize:
                return text
            ids = self.encode(text, add_special_tokens=False, parse_special_tokens=True)
        else:
            if template is None:
                raise ValueError(f"{type(self).__name__} has no chat template; pass chat_template= (a Jinja string)")
            segments = template.render(messages, add_generation_prompt, self)
            if not tokenize:
                return "".join(text for text, _ in segments)
            ids = []
            plain = [text for text, special in segments if not special and text]
            plain_ids = iter(self._encode_plain(plain, False))
            for text, special in segments:
                if special:
                    index = self._token_to_id(text)
                    if index is None:
                        raise ValueError(f"chat template uses {text!r}, which is not a token of {type(self).__name__}")
                    ids.append(index)
                elif text:
                    ids.extend(next(plain_ids)[0])
        return _to_tensor([ids], return_tensors, "input_ids") if return_tensors else ids

    def _render_jinja(self, template: str, messages, add_generation_prompt: bool) -> str:
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:
            raise ImportError("a Jinja chat_template needs jinja2: `pip install jinja2`") from exc

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                **self.special_tokens_map)

    # -- save / load ----------------------------------------------------------------------------
    def _config_dict(self) -> Dict[str, Any]:
        config: Dict[str, Any] = {"tokenizer_class": type(self).__name__}
        config.update(self.special_tokens_map)
        config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token,
                      padding_side=self.padding_side, truncation_side=self.truncation_side)
        if self.model_max_length:
            config["model_max_length"] = self.model_max_length
        if isinstance(self.chat_template, str):
            config["chat_template"] = self.chat_template
        return config

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> List[str]:
        """Write the model file(s), tokenizer_config.json (naming tokenizer_class) and special_tokens_map.json."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_vocabulary(directory)
        atomic_write_text(directory / TOKENIZER_CONFIG_FILE,
                          json.dumps(self._config_dict(), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(directory / SPECIAL_TOKENS_MAP_FILE,
                          json.dumps(self.special_tokens_map, indent=2, ensure_ascii=False) + "\n")
        return sorted(str(p) for p in directory.iterdir() if p.is_file())

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], **kwargs):
        """Load from a directory (ours or a Hugging Face one) or from the model file itself.

        tokenizer_config.json supplies defaults; keyword arguments override them.
        """
        path = Path(name_or_path)
        if path.is_file():
            directory, files = path.parent, {cls._file_attribute_for(path): str(path)}
        elif path.is_dir():
            directory, files = path, {}
        else:
            raise FileNotFoundError(f"{name_or_path}: no such tokenizer directory or file")
        config = _read_tokenizer_config(directory)
        config.pop("tokenizer_class", None)
        for attr, file_name in cls.vocab_files_names.items():
            if attr not in files and (directory / file_name).exists():
                files[attr] = str(directory / file_name)
        arguments = {**config, **files, **kwargs}
        tokenizer = cls(**arguments)
        tokenizer.name_or_path = str(name_or_path)
        return tokenizer

    @classmethod
    def _file_attribute_for(cls, path: Path) -> str:
        for attr, file_name in cls.vocab_files_names.items():
            if path.name == file_name:
                return attr
        return next(iter(cls.vocab_files_names), "vocab_file")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"special_tokens={self.special_tokens_map}, add_bos_token={self.add_bos_token}, "
                f"add_eos_token={self.add_eos_token}, padding_side={self.padding_side!r})")


class PreTrainedTokenizer(PreTrainedTokenizerBase):
    """Base of pure-Python tokenizers on a model file (SentencePiece, tiktoken). No offsets."""

    has_offsets = False


def load_sentencepiece(path: Union[str, os.PathLike], argument: str = "vocab_file"):
    """A SentencePieceProcessor for `path`; a file that is not a SentencePiece model is a clear error."""
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as exc:
        raise ConfigError(argument, f"{path} is not a SentencePiece model ({exc}); give the tokenizer.model "
                                    "of the model, as downloaded (not a Git LFS pointer or an HTML page)") from None


def require_file(path: Optional[Union[str, os.PathLike]], argument: str, file_name: str, cls_name: str) -> Path:
    """The model file a tokenizer needs, or an error that says how to provide it."""
    if not path:
        raise ConfigError(argument, f"{cls_name} needs its model file {file_name}: pass {argument}='/path/to/"
                                    f"{file_name}' or load a directory holding {file_name} with "
                                    f"{cls_name}.from_pretrained(dir) / AutoTokenizer.from_pretrained(dir)")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(argument, f"{path} does not exist; {cls_name} needs the model's {file_name}")
    return path


def copy_file(source: Union[str, os.PathLike], target: Path) -> None:
    """Copy a model file into a save directory (atomically; nothing to do when it is already there)."""
    source = Path(source)
    if source.resolve() == target.resolve():
        return
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _read_tokenizer_config(directory: Path) -> Dict[str, Any]:
    file = directory / TOKENIZER_CONFIG_FILE
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(str(file), f"is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(file), "must hold a JSON object")
    # Hugging Face writes special tokens either as strings or as AddedToken dicts.
    for key in list(data):
        if key.endswith("_token") and not key.startswith("add_"):
            data[key] = _special_token_content(data[key])
    if "additional_special_tokens" in data:
        data["additional_special_tokens"] = [_special_token_content(t) for t in data["additional_special_tokens"]]
    if data.get("model_max_length") and data["model_max_length"] > 1e12:  # HF's "no limit" sentinel
        del data["model_max_length"]
    return data


def _padding_strategy(padding) -> str:
    if padding in (False, None, "do_not_pad"):
        return "do_not_pad"
    if padding in (True, "longest"):
        return "longest"
    if padding == "max_length":
        return "max_length"
    raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")


def _check_side(name: str, side: str) -> str:
    if side not in ("left", "right"):
        raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
    return side


def _as_numpy(value):
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def _check_encodable(text) -> None:
    """A str that is not valid Unicode (a lone surrogate such as "\ud800", from JSON escapes or
    surrogateescape decoding) is an error naming the character; the vendors raise TypeError or worse."""
    if not isinstance(text, str):
        raise ConfigError("text", f"must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError("text", f"holds {text[exc.start:exc.end]!r} at character {exc.start}, which is not a "
                                  "character (a lone UTF-16 surrogate); fix or drop it") from None


def _as_id_list(ids) -> List[int]:
    if type(ids) is list and (not ids or type(ids[0]) is int):  # the common case, kept cheap
        return ids
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if isinstance(ids, np.ndarray) or hasattr(ids, "asnumpy"):
        array = _as_numpy(ids)
        if array.ndim > 1:
            raise ValueError(f"decode expects one sequence, got shape {array.shape}; use batch_decode")
        return [int(i) for i in array.tolist()]
    return [int(i) for i in ids]
