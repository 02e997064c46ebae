"""Llama3Tokenizer / Llama3TokenizerFast against tiktoken (the vendor) and llama.cpp's vectors.

The reference encoding is a `tiktoken.Encoding` built here from tiktoken's own file loader with
Llama 3's split pattern (what Meta's tokenizer is), llama.cpp's expected ids (.out), and the chat ids
listed in the shared testdata README (made with llama-models' own Tokenizer).
"""
import json
from pathlib import Path

import pytest

from mfcore import testing

TESTDATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "testdata"
MODEL = TESTDATA / "llama3" / "tokenizer.model"
INP = TESTDATA / "llama3" / "ggml-vocab-llama-bpe.gguf.inp"
OUT = TESTDATA / "llama3" / "ggml-vocab-llama-bpe.gguf.out"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"Llama 3 tokenizer.model not found at {MODEL} "
                                                           "(shared test data is staged next to the repo)")
tiktoken = pytest.importorskip("tiktoken")

# Meta's pattern, as printed in the testdata README (Tokenizer.pat_str of llama-models)
README_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# README: system "Be brief." + user "Hi there" + generation prompt, from llama-models' Tokenizer
README_CHAT_IDS = [128000, 128006, 9125, 128007, 271, 3513, 10015, 13, 128009, 128006, 882, 128007, 271, 13347,
                   1070, 128009, 128006, 78191, 128007, 271]


def vector_texts():
    return [text for text, _ in testing.read_vocab_test_vectors(INP, OUT)]


def own_texts():
    return testing.tokenizer_stress_texts(extra=["I'm sure you'll see they've said it's 'ours' DON'T", "<|begin_of_text|> literal <|eot_id|>"], extra_alphabet="\r")


@pytest.fixture(scope="module")
def reference():
    """tiktoken.Encoding with Llama 3's ranks, pattern and special tokens (original Llama 3 names)."""
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(MODEL))
    names = (["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
             + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
             + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])
    return tiktoken.Encoding(name="llama3-reference", pat_str=README_PATTERN, mergeable_ranks=ranks,
                             special_tokens={name: 128000 + i for i, name in enumerate(names)})


@pytest.fixture(scope="module")
def slow():
    from mf_llama3 import Llama3Tokenizer

    return Llama3Tokenizer(vocab_file=str(MODEL))


@pytest.fixture(scope="module")
def fast():
    pytest.importorskip("tokenizers")
    from mf_llama3 import Llama3TokenizerFast

    return Llama3TokenizerFast(vocab_file=str(MODEL))


def test_llama_cpp_vectors_46_of_46(slow, fast):
    assert testing.check_vocab_test_vectors([slow, fast], INP, OUT) == 46


def test_ids_equal_tiktoken(reference, slow, fast):
    texts = vector_texts() + own_texts()
    expected = [reference.encode(t, allowed_special=set(), disallowed_special=()) for t in texts]
    assert [slow.encode(t, add_special_tokens=False) for t in texts] == expected
    assert fast(texts, add_special_tokens=False)["input_ids"] == expected
    assert slow.encode("Hello world") == [128000, 9906, 1917] == fast.encode("Hello world")
    assert slow.encode("This is a test sentence.", add_special_tokens=False) == [2028, 374, 264, 1296, 11914, 13]


def test_special_token_text_is_plain_unless_asked(reference, slow, fast):
    text = "<|begin_of_text|> literal"
    for tokenizer in (slow, fast):
        assert tokenizer.encode(text, add_special_tokens=False) == [27, 91, 7413, 3659, 4424, 91, 29, 24016]
        assert tokenizer.encode(text, add_special_tokens=False, parse_special_tokens=True) == [128000, 24016]
        mixed = "a<|eot_id|>b <|start_header_id|>user<|end_header_id|>\n\nc"
        assert tokenizer.encode(mixed, add_special_tokens=False, parse_special_tokens=True) == \
            reference.encode(mixed, allowed_special="all")


def test_decode_round_trip_and_equals_tiktoken(reference, slow, fast):
    texts = vector_texts() + own_texts()
    for text in texts:
        ids = reference.encode_ordinary(text)
        assert slow.decode(ids) == fast.decode(ids) == reference.decode(ids) == text
        with_special = [128000] + ids + [128009]
        assert slow.decode(with_special) == fast.decode(with_special) == reference.decode(with_special)
        assert slow.decode(with_special, skip_special_tokens=True) == fast.decode(with_special, skip_special_tokens=True) == text
    batch = [reference.encode_ordinary(t) for t in texts] + [[128000, 9906, 128009]]
    assert slow.batch_decode(batch) == fast.batch_decode(batch) == [reference.decode(b) for b in batch]
    partial = reference.encode_ordinary("😀")[:1]  # a token that is only part of a character
    assert slow.decode(partial) == fast.decode(partial) == reference.decode(partial)


def test_tokens_and_special_tokens(slow, fast):
    for tokenizer in (slow, fast):
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id) == \
            (128000, 128001, 128002, None)
        assert tokenizer.eot_token_id == 128009 and tokenizer.stop_token_ids == [128001, 128009]
        assert len(tokenizer) == tokenizer.vocab_size == 128256
        assert len(tokenizer.all_special_ids) == 256 and set(tokenizer.all_special_ids) == set(range(128000, 128256))
        assert tokenizer.convert_ids_to_tokens([128000, 128255, 9906, 1917]) == \
            ["<|begin_of_text|>", "<|reserved_special_token_250|>", "Hello", "Ġworld"]
        assert tokenizer.convert_tokens_to_ids(["Hello", "Ġworld", "<|eot_id|>", "Ċ"]) == [9906, 1917, 128009, 198]
        assert tokenizer.convert_tokens_to_ids("no such token") is None
    assert slow.get_vocab() == fast.get_vocab()


def test_llama31_special_token_names():
    from mf_llama3 import Llama3Tokenizer

    tokenizer = Llama3Tokenizer(vocab_file=str(MODEL), special_tokens_version="3.1")
    names = {128004: "<|finetune_right_pad_id|>", 128005: "<|step_id|>", 128008: "<|eom_id|>",
             128010: "<|python_tag|>", 128011: "<|image|>", 128255: "<|reserved_special_token_245|>"}
    assert {i: tokenizer.convert_ids_to_tokens(i) for i in names} == names
    assert tokenizer.stop_token_ids == [128001, 128008, 128009]


def meta_split(text, chunk=400_000, run_limit=25_000):
    """Meta's rule, written out character by character: 400k-char chunks, then whitespace /
    non-whitespace runs cut after every `run_limit` characters."""
    pieces = []
    for i in range(0, len(text), chunk):
        part = text[i:i + chunk]
        start, run_len, run_space = 0, 0, part[0].isspace() if part else False
        for j, ch in enumerate(part):
            if ch.isspace() != run_space:
                run_space, run_len = ch.isspace(), 1
            else:
                run_len += 1
                if run_len > run_limit:
                    pieces.append(part[start:j])
                    start, run_len = j, 1
        pieces.append(part[start:])
    return pieces


def test_long_inputs_are_cut_like_metas_tokenizer(reference, slow, fast):
    from mf_llama3.tokenization_llama3 import split_long_text

    texts = ["a" * 60_000 + " " * 30_000 + "b\u3000" * 30_000, "x" * 1_000_000, " " * 1_000_000,
             ("word " * 50_000) + "z" * 26_000, "\n" * 70_000 + "end"]
    for text in texts:
        pieces = meta_split(text)
        assert [p for _, p in split_long_text(text)] == pieces
        expected = [i for p in pieces for i in reference.encode_ordinary(p)]
        assert slow.encode(text, add_special_tokens=False) == expected
        assert fast.encode(text, add_special_tokens=False) == expected
        assert slow.decode(expected) == text
    enc = fast(texts[0], add_special_tokens=False, return_offsets_mapping=True)
    assert enc["offset_mapping"][-1] == (len(texts[0]) - 1, len(texts[0]))


def test_fast_equals_slow_with_padding_truncation_and_tensors(slow, fast):
    texts = ["Hello world", "a much longer sentence with several more words in it", ""]
    for kwargs in [dict(padding=True), dict(padding="max_length", max_length=16), dict(truncation=True, max_length=5),
                   dict(padding=True, padding_side="left"), dict(padding=True, truncation=True, max_length=6),
                   dict(add_special_tokens=False, padding=True, pad_to_multiple_of=8)]:
        assert dict(slow(texts, **kwargs)) == dict(fast(texts, **kwargs)), kwargs
    truncated = slow(texts, truncation=True, max_length=4)["input_ids"]
    assert truncated[1] == [128000] + slow.encode(texts[1], add_special_tokens=False)[:3]
    enc = fast(texts, padding=True, return_tensors="np")
    assert enc["input_ids"][2].tolist()[:2] == [128000, 128002] and enc["attention_mask"][2].tolist()[:2] == [1, 0]


def test_offsets_point_at_the_right_characters(reference, fast):
    for text in vector_texts() + own_texts():
        enc = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = enc["offset_mapping"]
        if not text:
            assert spans == []
            continue
        # spans move forward without gaps and cover the text (a token holding part of a multi-byte
        # character shares that character with the next token, so spans may overlap by one)
        assert spans[0][0] == 0 and spans[-1][1] == len(text), repr(text)
        assert all(a[0] <= b[0] <= a[1] <= b[1] for a, b in zip(spans, spans[1:])), repr(text)
        for token_id, (start, end) in zip(enc["input_ids"], spans):
            token_bytes = reference.decode_single_token_bytes(token_id)
            piece = text[start:end].encode("utf-8")
            try:
                token_bytes.decode("utf-8")
            except UnicodeDecodeError:  # cuts a character: the span holds the whole character(s)
                assert token_bytes in piece, (text, token_id)
            else:  # whole characters: the span is exactly them
                assert piece == token_bytes, (text, token_id)
    enc = fast(["Hello world", "a 😀"])
    assert enc.char_to_token(0, 7) == 2 and enc.token_to_chars(0, 2) == (5, 11) and enc.token_to_chars(0, 0) is None
    assert enc.char_to_token(1, 2) == 2 and enc.token_to_chars(1, 2)[0] == 1


def test_chat_template_equals_the_reference_ids(slow, fast):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    for tokenizer in (slow, fast):
        assert tokenizer.apply_chat_template(messages, add_generation_prompt=True) == README_CHAT_IDS
        assert tokenizer.apply_chat_template(messages, add_generation_prompt=False) == README_CHAT_IDS[:-4]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n")
        # the rendered text, parsed with special tokens, gives the same ids
        assert tokenizer.encode(text, add_special_tokens=False, parse_special_tokens=True) == README_CHAT_IDS
        # user text that looks like a special token stays text
        sneaky = tokenizer.apply_chat_template([{"role": "user", "content": "<|eot_id|>"}])
        assert 128009 in sneaky and sneaky.count(128009) == 1
        array = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np")
        assert array.shape == (1, len(README_CHAT_IDS))


def test_jinja_chat_template(slow):
    pytest.importorskip("jinja2")
    template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert slow.apply_chat_template(messages, add_generation_prompt=True, chat_template=template) == README_CHAT_IDS


def test_save_load_and_auto_tokenizer(tmp_path, slow, fast):
    from mfcore import AutoTokenizer
    from mfcore.errors import ConfigError
    from mf_llama3 import Llama3Tokenizer, Llama3TokenizerFast

    text = "Save me: héllo 😀\n"
    for tokenizer in (slow, fast):
        directory = tmp_path / type(tokenizer).__name__
        tokenizer.save_pretrained(directory)
        assert json.loads((directory / "tokenizer_config.json").read_text())["tokenizer_class"] == type(tokenizer).__name__
        loaded = AutoTokenizer.from_pretrained(directory)
        assert type(loaded) is type(tokenizer) and loaded.encode(text) == tokenizer.encode(text)
        assert (directory / "tokenizer.model").read_bytes() == MODEL.read_bytes()
    from_json = Llama3TokenizerFast(tokenizer_file=str(tmp_path / "Llama3TokenizerFast" / "tokenizer.json"))
    assert from_json.encode(text) == slow.encode(text)
    with pytest.raises(ConfigError, match="tokenizer.model"):
        AutoTokenizer.from_pretrained("llama3-8b")
    assert type(AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(MODEL))) is Llama3Tokenizer
    # MindFormers' predict YAML: tokenizer {type: Llama3Tokenizer, vocab_file, add_bos_token: False}
    mf = Llama3Tokenizer(vocab_file=str(MODEL), add_bos_token=False, pad_token="<|reserved_special_token_0|>")
    assert mf.encode("Hello world") == [9906, 1917]


def test_hugging_face_tokenizer_json_directory(tmp_path, reference):
    """A directory holding only tokenizer.json + tokenizer_config.json naming PreTrainedTokenizerFast
    (how Hugging Face ships Llama 3), here made by transformers' own tiktoken converter."""
    pytest.importorskip("transformers")
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from mfcore import AutoTokenizer

    names = [reference.decode([i]) for i in range(128000, 128256)]
    converted = TikTokenConverter(vocab_file=str(MODEL), extra_special_tokens=names).converted()
    from tokenizers import processors

    converted.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 128000)])
    converted.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "model_max_length": 1000000000000000019884624838656, "clean_up_tokenization_spaces": True}))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for text in vector_texts():
        assert tokenizer.encode(text) == [128000] + reference.encode_ordinary(text)
    assert tokenizer.eos_token_id == 128009


def test_tokenizer_modules_do_not_import_mindspore():
    import subprocess
    import sys

    code = ("import sys; import mf_llama2.tokenization_llama, mf_llama2.tokenization_llama_fast, "
            "mf_llama3.tokenization_llama3, mf_llama3.tokenization_llama3_fast; from mfcore import AutoTokenizer; "
            f"t = AutoTokenizer.from_pretrained('llama3-8b', vocab_file={str(MODEL)!r}); t('hi', return_tensors='np'); "
            "print('mindspore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
