"""The shared tokenizer interface (mfcore.tokenization / tokenization_fast) on a toy character tokenizer.

The toy has one token per character, so every expected id below follows from the vocabulary file
written in the fixture; a Rust twin (a merge-less BPE over the same characters) must agree with it.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfcore.errors import ConfigError
from mfcore.tokenization import PreTrainedTokenizer, require_file

VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", " "] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
ID = {t: i for i, t in enumerate(VOCAB)}


class CharTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "vocab.txt"}

    def __init__(self, vocab_file=None, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                 add_bos_token=True, **kwargs):
        self.vocab_file = require_file(vocab_file, "vocab_file", "vocab.txt", "CharTokenizer")
        self.tokens = self.vocab_file.read_text(encoding="utf-8").split("\n")
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        super().__init__(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, unk_token=unk_token,
                         add_bos_token=add_bos_token, **kwargs)

    @property
    def vocab_size(self):
        return len(self.tokens)

    def get_vocab(self):
        return dict(self.ids)

    def _encode_plain(self, texts, want_offsets):
        return [([self.ids.get(c, self.ids["<unk>"]) for c in text], None) for text in texts]

    def _decode_plain(self, ids):
        return "".join(self.tokens[i] for i in ids)

    def _token_to_id(self, token):
        return self.ids.get(token)

    def _id_to_token(self, index):
        return self.tokens[index]

    def _save_vocabulary(self, directory):
        (directory / "vocab.txt").write_text("\n".join(self.tokens), encoding="utf-8")


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB), encoding="utf-8")
    return path


@pytest.fixture
def slow(vocab_file):
    return CharTokenizer(vocab_file=str(vocab_file))


@pytest.fixture
def fast():
    pytest.importorskip("tokenizers")
    from tokenizers import AddedToken, Tokenizer, decoders, models

    from mfcore.tokenization.fast import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=dict(ID), merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VOCAB[:4]])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True)


def ids(text):
    return [ID[c] for c in text]


def test_call_and_encode(slow):
    assert slow.encode("ab c") == [ID["<bos>"]] + ids("ab c")
    assert slow.encode("ab c", add_special_tokens=False) == ids("ab c")
    single = slow("ab")
    assert single == {"input_ids": [1] + ids("ab"), "attention_mask": [1, 1, 1]} and single.input_ids[0] == 1
    batch = slow.batch_encode(["ab", "c"])
    assert batch["input_ids"] == [[1] + ids("ab"), [1] + ids("c")]
    assert slow("a?")["input_ids"] == [1, ID["a"], ID["<unk>"]]
    with pytest.raises(TypeError, match="list of str"):
        slow(["a", 3])


def test_padding_and_truncation(slow):
    texts = ["abcdef", "ab", ""]
    right = slow(texts, padding=True)
    assert right["input_ids"] == [[1] + ids("abcdef"), [1] + ids("ab") + [0] * 4, [1] + [0] * 6]
    assert right["attention_mask"] == [[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6]
    left = slow(texts, padding="longest", padding_side="left")
    assert left["input_ids"][1] == [0] * 4 + [1] + ids("ab") and left["attention_mask"][1] == [0] * 4 + [1] * 3
    assert slow(["ab"], padding="max_length", max_length=5)["input_ids"] == [[1] + ids("ab") + [0, 0]]
    assert len(slow(["ab"], padding=True, pad_to_multiple_of=8)["input_ids"][0]) == 8
    truncated = slow(texts, truncation=True, max_length=4)
    assert truncated["input_ids"][0] == [1] + ids("abc")
    assert slow(texts, truncation=True, max_length=4, add_special_tokens=False)["input_ids"][0] == ids("abcd")
    eos = CharTokenizer(vocab_file=slow.vocab_file, add_eos_token=True, truncation_side="left")
    assert eos("abcdef", truncation=True, max_length=4)["input_ids"] == [1] + ids("ef") + [2]
    assert eos.num_special_tokens_to_add() == 2
    with pytest.raises(ValueError, match="max_length"):
        slow("abc", truncation=True)
    limited = CharTokenizer(vocab_file=slow.vocab_file, model_max_length=3)
    assert limited("abcdef", truncation=True)["input_ids"] == [1] + ids("ab")
    with pytest.raises(ValueError, match="padding"):
        slow("a", padding="sideways")
    with pytest.raises(ValueError, match="padding_side"):
        CharTokenizer(vocab_file=slow.vocab_file, padding_side="middle")


def test_no_pad_token_is_a_clear_error(vocab_file):
    tokenizer = CharTokenizer(vocab_file=str(vocab_file), pad_token=None)
    with pytest.raises(ValueError, match="no pad_token"):
        tokenizer(["a", "abc"], padding=True)
    assert tokenizer(["ab", "cd"], padding=True)["input_ids"] == [[1] + ids("ab"), [1] + ids("cd")]


def test_return_tensors(slow):
    out = slow(["abc", "a"], padding=True, return_tensors="np", return_length=True)
    assert out["input_ids"].dtype == np.int64 and out["input_ids"].shape == (2, 4)
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]] and out["length"].tolist() == [4, 2]
    assert slow("abc", return_tensors="np")["input_ids"].shape == (1, 4)
    assert slow("", add_special_tokens=False, return_tensors="np")["input_ids"].shape == (1, 0)
    with pytest.raises(ValueError, match="padding=True"):
        slow(["abc", "a"], return_tensors="np")
    with pytest.raises(ValueError, match="'pt'"):
        slow("abc", return_tensors="pt")


def test_return_tensors_ms(slow):
    ms = pytest.importorskip("mindspore")
    out = slow(["abc", "a"], padding=True, return_tensors="ms")
    assert isinstance(out["input_ids"], ms.Tensor) and out["input_ids"].dtype == ms.int32
    assert out["input_ids"].asnumpy().tolist() == [[1] + ids("abc"), [1, ID["a"], 0, 0]]
    assert slow.batch_decode(out["input_ids"], skip_special_tokens=True) == ["abc", "a"]


def test_decode_and_tokens(slow):
    sequence = [1] + ids("hi") + [2, 0]
    assert slow.decode(sequence) == "<bos>hi<eos><pad>"
    assert slow.decode(sequence, skip_special_tokens=True) == "hi"
    assert slow.decode(np.array(sequence), skip_special_tokens=True) == "hi"
    assert slow.batch_decode(np.array([sequence, sequence]), skip_special_tokens=True) == ["hi", "hi"]
    assert slow.convert_ids_to_tokens(sequence, skip_special_tokens=True) == ["h", "i"]
    assert slow.convert_ids_to_tokens(1) == "<bos>"
    assert slow.convert_tokens_to_ids(["a", "zz", "<eos>"]) == [ID["a"], ID["<unk>"], 2]
    assert slow.tokenize("ab") == ["a", "b"] and slow.convert_tokens_to_string(["a", "b"]) == "ab"
    with pytest.raises(ValueError, match="out of range"):
        slow.convert_ids_to_tokens([999])
    with pytest.raises(ValueError, match="batch_decode"):
        slow.decode(np.zeros((2, 2), dtype=np.int64))


def test_special_tokens(slow, vocab_file):
    assert (slow.bos_token_id, slow.eos_token_id, slow.pad_token_id, slow.unk_token_id) == (1, 2, 0, 3)
    assert slow.all_special_tokens == ["<bos>", "<eos>", "<unk>", "<pad>"] and sorted(slow.all_special_ids) == [0, 1, 2, 3]
    assert slow.special_tokens_map == {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
    # text that looks like a special token is text, unless asked
    assert slow.encode("<eos>", add_special_tokens=False) == ids("") + [3, ID["e"], ID["o"], ID["s"], 3]
    assert slow.encode("a<eos>b", add_special_tokens=False, parse_special_tokens=True) == [ID["a"], 2, ID["b"]]
    slow.pad_token = "<eos>"  # changing a special token takes effect at once
    assert slow.pad_token_id == 2 and slow(["a", "ab"], padding=True)["input_ids"][0][-1] == 2
    with pytest.raises(ConfigError, match="bos_token"):
        CharTokenizer(vocab_file=str(vocab_file), bos_token="<s>")
    with pytest.raises(ConfigError, match="additional_special_tokens"):
        CharTokenizer(vocab_file=str(vocab_file), additional_special_tokens=["<sep>"])
    extra = CharTokenizer(vocab_file=str(vocab_file), additional_special_tokens=["z"])
    assert extra.decode(ids("az"), skip_special_tokens=True) == "a" and 30 in extra.all_special_ids
    with pytest.raises(ConfigError, match="vocab_file.*vocab.txt"):
        CharTokenizer()
    with pytest.raises(ConfigError, match="does not exist"):
        CharTokenizer(vocab_file=str(vocab_file) + ".missing")


def test_slow_has_no_offsets(slow):
    with pytest.raises(NotImplementedError, match="Fast"):
        slow("ab", return_offsets_mapping=True)
    with pytest.raises(ValueError, match="Fast"):
        slow("ab").char_to_token(0)


def test_jinja_chat_template(slow):
    pytest.importorskip("jinja2")
    template = "{{ bos_token }}{% for m in messages %}{{ m['role'][0] }} {{ m['content'] }}{{ eos_token }}{% endfor %}"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert slow.apply_chat_template(messages, chat_template=template, tokenize=False) == "<bos>u hi<eos>a yo<eos>"
    assert slow.apply_chat_template(messages, chat_template=template) == [1] + ids("u hi") + [2] + ids("a yo") + [2]
    slow.chat_template = template
    assert slow.apply_chat_template(messages, return_tensors="np").shape == (1, 11)
    with pytest.raises(ValueError, match="role"):
        slow.apply_chat_template([{"content": "no role"}])


def test_batch_encoding_pickles_and_empty_batches(fast):
    import pickle

    enc = fast(["ab", "c"], padding=True)
    again = pickle.loads(pickle.dumps(enc))
    assert dict(again) == dict(enc) and again.input_ids == enc.input_ids
    assert fast([], return_tensors="np")["input_ids"].shape == (0, 0)


def test_no_chat_template_is_a_clear_error(slow):
    with pytest.raises(ValueError, match="no chat template"):
        slow.apply_chat_template([{"role": "user", "content": "hi"}])


def test_save_and_load(tmp_path, slow):
    slow.chat_template = "{{ bos_token }}"
    files = slow.save_pretrained(tmp_path / "saved")
    assert sorted(Path(f).name for f in files) == ["special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "CharTokenizer" and config["add_bos_token"] is True
    loaded = CharTokenizer.from_pretrained(tmp_path / "saved")
    assert loaded.encode("abc") == slow.encode("abc") and loaded.chat_template == "{{ bos_token }}"
    assert CharTokenizer.from_pretrained(tmp_path / "saved", add_bos_token=False).encode("a") == ids("a")
    # Hugging Face writes special tokens as AddedToken dicts and a huge model_max_length
    config.update(bos_token={"content": "<eos>", "lstrip": False}, add_eos_token=True,
                  model_max_length=1000000000000000019884624838656, legacy=False)
    (tmp_path / "saved" / "tokenizer_config.json").write_text(json.dumps(config))
    hf = CharTokenizer.from_pretrained(tmp_path / "saved")
    assert hf.encode("a") == [2, ID["a"], 2] and hf.model_max_length is None
    # a model file path works too
    assert CharTokenizer.from_pretrained(tmp_path / "saved" / "vocab.txt").encode("a") == [2, ID["a"], 2]
    with pytest.raises(FileNotFoundError):
        CharTokenizer.from_pretrained(tmp_path / "nowhere")


def test_fast_matches_slow(slow, fast):
    texts = ["hello world", "ab", "", "a?b"]
    for kwargs in [{}, dict(padding=True), dict(padding=True, padding_side="left"), dict(truncation=True, max_length=3),
                   dict(padding="max_length", max_length=14, return_tensors="np"), dict(add_special_tokens=False)]:
        a, b = slow(texts, **kwargs), fast(texts, **kwargs)
        as_lists = lambda enc: {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in enc.items()}  # noqa: E731
        assert as_lists(a) == as_lists(b), kwargs
    sequence = [1] + ids("hi") + [2, 0]
    assert fast.decode(sequence) == slow.decode(sequence) and fast.decode(sequence, skip_special_tokens=True) == "hi"
    assert fast.convert_tokens_to_ids(["a", "<eos>"]) == [ID["a"], 2] and fast.vocab_size == len(VOCAB)
    assert fast.encode("a<eos>", add_special_tokens=False) == slow.encode("a<eos>", add_special_tokens=False)
    assert fast.encode("a<eos>", parse_special_tokens=True) == [1, ID["a"], 2]


def test_fast_offsets(fast):
    enc = fast(["hello world", "ab"], padding=True, return_offsets_mapping=True)
    assert enc["offset_mapping"][0][:3] == [(0, 0), (0, 1), (1, 2)]
    assert enc["offset_mapping"][1] == [(0, 0), (0, 1), (1, 2)] + [(0, 0)] * 9
    lazy = fast(["hello world", "ab"], padding=True, padding_side="left")  # offsets computed on demand
    assert lazy.char_to_token(1, 0) == 10 and lazy.token_to_chars(1, 11) == (1, 2) and lazy.token_to_chars(1, 0) is None
    with pytest.raises(ValueError, match="batch_index"):
        lazy.char_to_token(0)
    single = fast("hello")
    assert single.char_to_token(4) == 5 and single.char_to_token(99) is None
    arrays = fast(["ab", "c"], padding=True, return_offsets_mapping=True, return_tensors="np")
    assert arrays["offset_mapping"].shape == (2, 3, 2)


def test_fast_save_and_load(tmp_path, fast):
    from mfcore.tokenization.fast import PreTrainedTokenizerFast

    fast.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert loaded.encode("hello") == fast.encode("hello") and loaded.pad_token_id == 0


def test_fast_without_tokenizers_says_how_to_install(monkeypatch):
    from mfcore.tokenization.fast import PreTrainedTokenizerFast

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"mfcore\[fast\]"):
        PreTrainedTokenizerFast(tokenizer_file="tokenizer.json")


def test_tokenizer_modules_do_not_import_mindspore():
    code = ("import sys, mfcore, mfcore.tokenization, mfcore.tokenization.fast; "
            "print('mindspore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
