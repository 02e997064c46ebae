"""`mfcore data` with the released tokenizers (../shared/testdata): Llama 3 chat template and Llama 2 Alpaca.

Reference ids for the Llama 3 chat layout come from testdata/README.md (built with Meta's llama-models
wheel); the Llama 2 ids come from sentencepiece itself.
"""
import json

import numpy as np
import pytest

from mfcore.cli import main
from mfcore.data import read_mindrecord
from mfcore.data.formats import AlpacaFormat, ChatFormat, resolve_format

# testdata/README.md: system "Be brief." + user "Hi there" + the assistant header (generation prompt)
README_CHAT_PROMPT = [128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882, 128007, 271, 13347,
                      1070, 128009, 128006, 78191, 128007, 271]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}]


@pytest.fixture
def llama3_tokenizer(testdata):
    from mf_llama3.tokenization_llama3 import Llama3Tokenizer

    return Llama3Tokenizer(vocab_file=str(testdata / "llama3" / "tokenizer.model"))


def test_llama3_chat_template_matches_meta_layout_and_masks_the_prompt(llama3_tokenizer):
    fmt = resolve_format("chat", "llama3-chat")
    segments = fmt.segments({"messages": MESSAGES}, llama3_tokenizer, "x:1")
    ids = [i for seg, _ in segments for i in seg]
    trained = [i for seg, train in segments if train for i in seg]
    assert ids[:len(README_CHAT_PROMPT)] == README_CHAT_PROMPT
    hello = llama3_tokenizer._encoding.encode("Hello!")
    assert trained == hello + [128009]
    assert ids == README_CHAT_PROMPT + hello + [128009]
    # the tokenizer's own template, masked by prefix differences, gives the same ids and labels
    generic = ChatFormat().segments({"messages": MESSAGES}, llama3_tokenizer, "x:1")
    assert [i for s, _ in generic for i in s] == ids
    assert [i for s, t in generic if t for i in s] == trained


def test_special_token_text_in_a_message_stays_plain_text(llama3_tokenizer):
    fmt = resolve_format("chat", "llama3-chat")
    messages = [{"role": "user", "content": "<|eot_id|>"}, {"role": "assistant", "content": "ok"}]
    ids = [i for seg, _ in fmt.segments({"messages": messages}, llama3_tokenizer) for i in seg]
    assert ids.count(128009) == 2  # only the two the template itself emits


def test_data_cli_with_llama3_chat(testdata, llama3_tokenizer, tmp_path, capsys):
    records = [{"messages": MESSAGES}] * 6
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code = main(["data", "--format", "chat", "--template", "llama3-chat", "--input", str(path), "--tokenizer",
                 str(testdata / "llama3" / "tokenizer.model"), "--tokenizer-type", "Llama3Tokenizer",
                 "--seq-length", "16", "--output", str(tmp_path / "chat.mindrecord"), "--quiet", "--stats-json"])
    out = capsys.readouterr().out
    assert code == 0, out
    stats = json.loads(out.strip().splitlines()[-1])
    data = read_mindrecord(tmp_path / "chat.mindrecord")
    answer = llama3_tokenizer._encoding.encode("Hello!") + [128009]  # tiktoken itself on the released ranks
    one = README_CHAT_PROMPT + answer
    stream = one * 6
    n = len(stream) // 16
    assert stats["tokens"] == len(stream) and stats["sequences"] == n and stats["documents"] == 6
    np.testing.assert_array_equal(data["input_ids"].ravel(), stream[:n * 16])
    labels = ([-100] * len(README_CHAT_PROMPT) + answer) * 6
    np.testing.assert_array_equal(data["labels"].ravel(), labels[:n * 16])


def test_llama2_alpaca_with_the_released_tokenizer(testdata, tmp_path, capsys):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(testdata / "llama2" / "tokenizer.model"))
    records = [{"instruction": "Name a color.", "input": "", "output": "Blue."},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records))
    code = main(["data", "--format", "alpaca", "--input", str(path), "--tokenizer",
                 str(testdata / "llama2" / "tokenizer.model"), "--tokenizer-type", "LlamaTokenizer",
                 "--seq-length", "8", "--output", str(tmp_path / "a.mindrecord"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    ids, labels = [], []
    for record in records:
        template = AlpacaFormat.prompt_with_input if record["input"] else AlpacaFormat.prompt_no_input
        prompt = [1] + sp.encode(template.format(**record))
        answer = sp.encode(record["output"]) + [2]
        ids += prompt + answer
        labels += [-100] * len(prompt) + answer
    data = read_mindrecord(tmp_path / "a.mindrecord")
    n = len(ids) // 8
    np.testing.assert_array_equal(data["input_ids"].ravel(), ids[:n * 8])
    np.testing.assert_array_equal(data["labels"].ravel(), labels[:n * 8])
