"""Streamers: `generate(..., streamer=...)` calls `put(ids)` with the prompt, then with each step's new
tokens, and `end()` when it is done (transformers' streamer protocol)."""
import sys


class TextStreamer:
    """Prints the text of new tokens as they come (decoding the whole answer each time keeps
    SentencePiece spaces and multi-byte characters right)."""

    def __init__(self, tokenizer, stream=None):
        self.tokenizer = tokenizer
        self.stream = stream or sys.stdout
        self.ids = []
        self.printed = ""
        self.prompt_seen = False

    def put(self, ids):
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in list(ids.reshape(-1)))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.printed) and not text.endswith("\ufffd"):
            self.stream.write(text[len(self.printed):])
            self.stream.flush()
            self.printed = text

    def end(self):
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.startswith(self.printed):
            self.stream.write(text[len(self.printed):])
        self.stream.write("\n")
        self.stream.flush()
