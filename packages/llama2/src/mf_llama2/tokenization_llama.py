"""LlamaTokenizer: Llama 2's SentencePiece tokenizer on the `sentencepiece` library.

Encoding is sentencepiece's own `encode` (BPE with byte fallback, dummy-prefix "▁"), so ids equal the
vendor's. Special tokens: unk <unk> 0, bos <s> 1, eos </s> 2; Llama 2 has no pad token, so pad is
<unk> (0) as in MindFormers. Accepts MindFormers' keyword arguments (`vocab_file=`, `add_bos_token`,
`add_eos_token`, `pad_token`, ...) and loads a Hugging Face Llama tokenizer directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mfcore.tokenization.base import load_sentencepiece
from mfcore.tokenization import ChatSegments, ChatTemplate, PreTrainedTokenizer, copy_file, require_file

VOCAB_FILE = "tokenizer.model"


class Llama2ChatTemplate(ChatTemplate):
    """Llama 2 chat's [INST] layout, as Meta's `chat_completion` builds it.

    Every user/assistant pair is `<s>[INST] {user} [/INST] {assistant} </s>`; a final user turn is
    `<s>[INST] {user} [/INST]`; a leading system message is wrapped in <<SYS>> into the first user
    turn. The prompt ends where the assistant answers, so add_generation_prompt changes nothing.
    """

    name = "llama2-chat"
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"

    def render(self, messages, add_generation_prompt, tokenizer) -> ChatSegments:
        messages = list(messages)
        if messages and messages[0]["role"] == "system":
            if len(messages) < 2:
                raise ValueError("Llama 2 chat: a system message must be followed by a user message")
            merged = self.B_SYS + messages[0]["content"] + self.E_SYS + messages[1]["content"]
            messages = [{"role": messages[1]["role"], "content": merged}] + messages[2:]
        for number, message in enumerate(messages):
            expected = "user" if number % 2 == 0 else "assistant"
            if message["role"] != expected:
                raise ValueError(f"Llama 2 chat: message {number} has role {message['role']!r}, expected "
                                 f"{expected!r} (an optional system message, then user/assistant alternating)")
        bos, eos = tokenizer.bos_token, tokenizer.eos_token
        segments: ChatSegments = []
        for number in range(0, len(messages), 2):
            user = messages[number]["content"].strip()
            if number + 1 < len(messages):
                answer = messages[number + 1]["content"].strip()
                segments += [(bos, True), (f"{self.B_INST} {user} {self.E_INST} {answer} ", False), (eos, True)]
            else:
                segments += [(bos, True), (f"{self.B_INST} {user} {self.E_INST}", False)]
        return segments


class LlamaTokenizer(PreTrainedTokenizer):
    """Llama 2's SentencePiece tokenizer (pure Python API over the sentencepiece C++ library)."""

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    default_chat_template = Llama2ChatTemplate()

    def __init__(self, vocab_file: Optional[str] = None, unk_token: Optional[str] = "<unk>",
                 bos_token: Optional[str] = "<s>", eos_token: Optional[str] = "</s>",
                 pad_token: Optional[str] = "<unk>", add_bos_token: bool = True, add_eos_token: bool = False,
                 **kwargs):
        self.vocab_file = str(require_file(vocab_file, "vocab_file", VOCAB_FILE, type(self).__name__))
        self.sp_model = load_sentencepiece(self.vocab_file)
        super().__init__(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> Dict[str, int]:
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def _encode_plain(self, texts: List[str], want_offsets: bool):
        if want_offsets:
            raise NotImplementedError("LlamaTokenizer has no offsets; use LlamaTokenizerFast")
        return [(ids, None) for ids in self.sp_model.encode(texts)]

    def _decode_plain(self, ids: Sequence[int]) -> str:
        return self.sp_model.decode(list(ids))

    def _decode_plain_batch(self, sequences: List[List[int]]) -> List[str]:
        return self.sp_model.decode(sequences) if sequences else []

    def _decode_run(self, ids: List[int], continuing: bool) -> str:
        if not continuing:
            return self.sp_model.decode(list(ids))
        # sentencepiece drops the leading "▁" of the first piece it decodes (the dummy prefix); after
        # a special token that space is real text, so decode behind a one-letter sentinel piece.
        sentinel = self.sp_model.piece_to_id("a")
        return self.sp_model.decode([sentinel] + list(ids))[1:]

    def _token_to_id(self, token: str) -> Optional[int]:
        index = self.sp_model.piece_to_id(token)
        # sentencepiece answers unk_id for pieces it does not know
        if index == self.sp_model.unk_id() and token != self.sp_model.id_to_piece(index):
            return None
        return index

    def _id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def _save_vocabulary(self, directory: Path) -> None:
        copy_file(self.vocab_file, directory / VOCAB_FILE)
