"""`mfcore chat` commands and failed turns (issue 16), on a fake model and tokenizer that record what the
model is asked: /reset, /help, /exit are handled by the chat and never reach the model."""
import io

import numpy as np

from mfcore.cli.chat import chat_loop


class Tokenizer:
    """One token per character of each message, plus two per message (its header and end)."""

    @staticmethod
    def apply_chat_template(messages, add_generation_prompt=True):
        return [7] * sum(len(m["content"]) + 2 for m in messages)

    @staticmethod
    def decode(ids, skip_special_tokens=False):
        return "ok"


class Model:
    class config:
        seq_length = 40

    class generation_config:
        pad_token_id = 0

    def __init__(self):
        self.calls = []

    def generate(self, prompts, streamer=None, max_new_tokens=0, **kwargs):
        self.calls.append((len(prompts[0]), max_new_tokens))
        return np.array([prompts[0] + [5] * max_new_tokens])


def test_commands_are_handled_and_a_failed_turn_is_not_fatal(capsys):
    model = Model()
    lines = ["hello", "/help", "/reset", "world", "/bogus", "x" * 50, "again", "/exit", "never sent"]
    assert chat_loop(model, Tokenizer(), io.StringIO("\n".join(lines) + "\n"), "sys",
                     dict(max_new_tokens=8, eos_token_id=[2])) == 0
    err = capsys.readouterr().err
    assert "/reset" in err and "(conversation cleared)" in err and "unknown command '/bogus'" in err
    assert "error: message:" in err and "context of 40 tokens" in err
    system, hello, world, again = 3 + 2, 5 + 2, 5 + 2, 5 + 2
    answer = 2 + 2  # "ok" as the assistant's message
    assert model.calls == [
        (system + hello, 8),                   # hello
        (system + world, 8),                   # after /reset: hello and its answer are gone
        (system + world + answer + again, 8),  # the 50-character message failed and left no trace
    ]


def test_answers_are_shortened_to_the_context():
    model = Model()
    chat_loop(model, Tokenizer(), io.StringIO("a" * 30 + "\n"), None, dict(max_new_tokens=100, eos_token_id=[2]))
    assert model.calls == [(32, 8)]  # 40 - 32
