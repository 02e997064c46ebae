"""Llama3Tokenizer: Llama 3's tiktoken tokenizer, and the Llama 3 chat layout.

The model file (`tokenizer.model`) holds 128,000 lines `base64(token bytes) rank`. On top come 256
special tokens at ids 128000-128255: bos <|begin_of_text|> 128000, eos <|end_of_text|> 128001, pad
<|reserved_special_token_0|> 128002 (MindFormers / the migration guide), <|start_header_id|> 128006,
<|end_header_id|> 128007, <|eot_id|> 128009 (end of a chat turn).
`special_tokens_version="3.1"` uses the Llama 3.1 names for the same ids (<|eom_id|>, <|python_tag|>...).

Text is encoded exactly as Meta's reference tokenizer does: tiktoken with Llama 3's split pattern,
special-token-looking text kept as plain text, and long inputs cut first into 400k-character chunks
and then into runs of at most 25k whitespace / non-whitespace characters, so that a million
characters of one kind cannot stall the regex or the BPE (tiktoken's own advice).
"""
from __future__ import annotations

import base64
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mfcore.errors import ConfigError
from mfcore.tokenization import ChatSegments, ChatTemplate, PreTrainedTokenizer, copy_file, require_file

VOCAB_FILE = "tokenizer.model"
PAT_STR = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_BASE_TOKENS = 128000
NUM_SPECIAL_TOKENS = 256
MAX_ENCODE_CHARS = 400_000        # Meta's TIKTOKEN_MAX_ENCODE_CHARS
MAX_RUN_CHARS = 25_000            # Meta's MAX_NO_WHITESPACES_CHARS
_RUNS = re.compile(r"\s+|\S+")    # Python's \s is str.isspace(), the test Meta's code uses


def special_token_names(version: str = "3") -> List[str]:
    """The 256 special tokens in id order from 128000, with Llama 3 or Llama 3.1 names."""
    if version == "3":
        head = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
        first_reserved = 5
    elif version == "3.1":
        head = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
                "<|image|>"]
        first_reserved = 2
    else:
        raise ConfigError("special_tokens_version", f"must be '3' or '3.1', got {version!r}")
    reserved = [f"<|reserved_special_token_{i}|>"
                for i in range(first_reserved, first_reserved + NUM_SPECIAL_TOKENS - len(head))]
    return head + reserved


def load_tiktoken_ranks(path) -> Dict[bytes, int]:
    """Read a tiktoken ranks file (`base64 rank` per line), with errors naming the line."""
    ranks: Dict[bytes, int] = {}
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}", f"not a tiktoken ranks line ('base64 rank'): {exc}; is "
                                                      f"this Llama 3's tokenizer.model?") from exc
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ConfigError(str(path), "ranks are not 0..n-1 without gaps; the file is damaged")
    return ranks


@lru_cache(maxsize=1)
def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte -> printable character table, used for token strings ("ĠHello") in both Llama 3
    tokenizers so that slow and Fast agree on convert_ids_to_tokens."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_string(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def split_long_text(text: str) -> List[Tuple[int, str]]:
    """(start, piece) pieces as Meta's reference tokenizer cuts text before tiktoken sees it.

    400k-character chunks; inside each, a run of whitespace or of non-whitespace longer than 25k
    characters is cut every 25k characters (counted from the start of the run).
    """
    if len(text) <= MAX_RUN_CHARS:
        return [(0, text)]
    pieces: List[Tuple[int, str]] = []
    for chunk_start in range(0, len(text), MAX_ENCODE_CHARS):
        chunk = text[chunk_start:chunk_start + MAX_ENCODE_CHARS]
        cuts = [0]
        for run in _RUNS.finditer(chunk):
            cuts.extend(range(run.start() + MAX_RUN_CHARS, run.end(), MAX_RUN_CHARS))
        cuts.append(len(chunk))
        pieces.extend((chunk_start + a, chunk[a:b]) for a, b in zip(cuts, cuts[1:]))
    return pieces


class Llama3ChatTemplate(ChatTemplate):
    """Meta's Llama 3 ChatFormat: <|begin_of_text|>, then per message <|start_header_id|>role
    <|end_header_id|>"\\n\\n" content.strip() <|eot_id|>; the generation prompt is the assistant header."""

    name = "llama3-chat"

    def render(self, messages, add_generation_prompt, tokenizer) -> ChatSegments:
        segments: ChatSegments = [("<|begin_of_text|>", True)]
        for message in messages:
            segments += self._header(message["role"])
            segments += [(message["content"].strip(), False), ("<|eot_id|>", True)]
        if add_generation_prompt:
            segments += self._header("assistant")
        return segments

    @staticmethod
    def _header(role: str) -> ChatSegments:
        return [("<|start_header_id|>", True), (role, False), ("<|end_header_id|>", True), ("\n\n", False)]


class Llama3Tokenizer(PreTrainedTokenizer):
    """Llama 3's tiktoken BPE (pure Python API over tiktoken's Rust core)."""

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    default_chat_template = Llama3ChatTemplate()

    def __init__(self, vocab_file: Optional[str] = None, bos_token: Optional[str] = "<|begin_of_text|>",
                 eos_token: Optional[str] = "<|end_of_text|>", pad_token: Optional[str] = "<|reserved_special_token_0|>",
                 unk_token: Optional[str] = None, add_bos_token: bool = True, add_eos_token: bool = False,
                 special_tokens_version: str = "3", **kwargs):
        import tiktoken

        self.vocab_file = str(require_file(vocab_file, "vocab_file", VOCAB_FILE, type(self).__name__))
        self.special_tokens_version = special_tokens_version
        ranks = load_tiktoken_ranks(self.vocab_file)
        self._special = {name: len(ranks) + i for i, name in enumerate(special_token_names(special_tokens_version))}
        self._encoding = tiktoken.Encoding(name=Path(self.vocab_file).name, pat_str=PAT_STR,
                                           mergeable_ranks=ranks, special_tokens=self._special)
        self._id_to_bytes = [b""] * len(ranks)
        for token, rank in ranks.items():
            self._id_to_bytes[rank] = token
        self._special_names = list(self._special)
        self._string_to_id: Optional[Dict[str, int]] = None  # built on first token-string lookup
        super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, unk_token=unk_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self._encoding.n_vocab

    @property
    def eot_token_id(self) -> int:
        """<|eot_id|>: ends a chat turn; generation for chat stops on it."""
        return self._special["<|eot_id|>"]

    @property
    def stop_token_ids(self) -> List[int]:
        """Ids that end generation: <|end_of_text|>, <|eot_id|> (and <|eom_id|> with 3.1 names)."""
        names = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")
        return [self._special[n] for n in names if n in self._special]

    def _model_special_tokens(self) -> List[str]:
        return self._special_names

    def get_vocab(self) -> Dict[str, int]:
        return dict(self._strings())

    def _strings(self) -> Dict[str, int]:
        if self._string_to_id is None:
            table = {token_string(b): i for i, b in enumerate(self._id_to_bytes)}
            table.update(self._special)
            self._string_to_id = table
        return self._string_to_id

    def _encode_plain(self, texts: List[str], want_offsets: bool):
        if want_offsets:
            raise NotImplementedError("Llama3Tokenizer has no offsets; use Llama3TokenizerFast")
        pieces, owners = [], []
        for number, text in enumerate(texts):
            for _, piece in split_long_text(text):
                pieces.append(piece)
                owners.append(number)
        results: List[Tuple[List[int], None]] = [([], None) for _ in texts]
        encoded = self._encoding.encode_ordinary_batch(pieces) if len(pieces) > 1 else \
            [self._encoding.encode_ordinary(p) for p in pieces]
        for owner, ids in zip(owners, encoded):
            results[owner][0].extend(ids)
        return results

    def _decode_plain(self, ids: List[int]) -> str:
        return self._encoding.decode(ids)

    def _token_to_id(self, token: str) -> Optional[int]:
        if token in self._special:
            return self._special[token]
        return self._strings().get(token)

    def _id_to_token(self, index: int) -> str:
        if index < len(self._id_to_bytes):
            return token_string(self._id_to_bytes[index])
        return self._special_names[index - len(self._id_to_bytes)]

    def _config_dict(self):
        config = super()._config_dict()
        config["special_tokens_version"] = self.special_tokens_version
        return config

    def _save_vocabulary(self, directory: Path) -> None:
        copy_file(self.vocab_file, directory / VOCAB_FILE)
