"""LlamaTokenizer / LlamaTokenizerFast against sentencepiece (the vendor) and llama.cpp's vectors.

References are independent of our code: `sentencepiece.SentencePieceProcessor.encode/decode` on the
real Llama 2 tokenizer.model, llama.cpp's expected ids (.out), Meta's chat_completion layout
rebuilt here with sentencepiece calls, and transformers for Hugging Face tokenizer.json files.
"""
import json
from pathlib import Path

import pytest

from mfcore import testing

TESTDATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "testdata"
MODEL = TESTDATA / "llama2" / "tokenizer.model"
INP = TESTDATA / "llama2" / "ggml-vocab-llama-spm.gguf.inp"
OUT = TESTDATA / "llama2" / "ggml-vocab-llama-spm.gguf.out"

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"Llama 2 tokenizer.model not found at {MODEL} "
                                                           "(shared test data is staged next to the repo)")
spm = pytest.importorskip("sentencepiece")


def vector_texts():
    return [text for text, _ in testing.read_vocab_test_vectors(INP, OUT)]


def own_texts():
    return testing.tokenizer_stress_texts(extra=["<s> and </s> and <unk> are plain text here"])


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(MODEL))


@pytest.fixture(scope="module")
def slow():
    from mf_llama2 import LlamaTokenizer

    return LlamaTokenizer(vocab_file=str(MODEL))


@pytest.fixture(scope="module")
def fast():
    pytest.importorskip("tokenizers")
    from mf_llama2 import LlamaTokenizerFast

    return LlamaTokenizerFast(vocab_file=str(MODEL))


def test_llama_cpp_vectors_46_of_46(slow, fast):
    assert testing.check_vocab_test_vectors([slow, fast], INP, OUT) == 46


def test_ids_equal_sentencepiece(sp, slow, fast):
    texts = vector_texts() + own_texts()
    expected = sp.encode(texts)
    assert [slow.encode(t, add_special_tokens=False) for t in texts] == expected
    assert fast(texts, add_special_tokens=False)["input_ids"] == expected
    # add_special_tokens: BOS in front, as Llama 2 was trained
    assert slow.encode("Hello world") == [1, 15043, 3186] == fast.encode("Hello world")
    assert slow.encode("Once upon a time") == [1] + sp.encode("Once upon a time")


def test_decode_round_trip_and_equals_sentencepiece(sp, slow, fast):
    texts = vector_texts() + own_texts()
    for text in texts:
        ids = sp.encode(text)
        reference = sp.decode(ids)
        assert slow.decode(ids) == reference
        assert fast.decode(ids) == reference
        assert slow.decode([1] + ids + [2], skip_special_tokens=True) == reference
        assert fast.decode([1] + ids + [2], skip_special_tokens=True) == reference
        if reference == text:
            assert slow.decode(slow.encode(text), skip_special_tokens=True) == text
    assert sum(sp.decode(sp.encode(t)) == t for t in vector_texts()) == 46
    mixed = [[1, 15043, 3186, 2, 1, 15043], [29871, 13, 2, 29871, 13, 1]]
    assert slow.batch_decode(mixed) == fast.batch_decode(mixed)
    assert slow.batch_decode(mixed, skip_special_tokens=True) == [sp.decode(m) for m in mixed]


def test_long_inputs(sp, slow, fast):
    for text in ["a" * 200_000, " " * 200_000, "word " * 40_000, "😀" * 20_000]:
        expected = sp.encode(text)
        assert slow.encode(text, add_special_tokens=False) == expected
        assert fast.encode(text, add_special_tokens=False) == expected


def test_tokens_and_special_tokens(sp, slow, fast):
    for tokenizer in (slow, fast):
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id) == (1, 2, 0, 0)
        assert len(tokenizer) == tokenizer.vocab_size == 32000
        assert tokenizer.tokenize("Hello world") == [sp.id_to_piece(i) for i in sp.encode("Hello world")]
        assert tokenizer.convert_tokens_to_ids(["▁Hello", "<0x0A>", "<s>"]) == [15043, 13, 1]
        assert tokenizer.convert_tokens_to_ids("no-such-piece") == 0  # unk
        assert tokenizer.convert_ids_to_tokens([1, 15043, 2], skip_special_tokens=True) == ["▁Hello"]
        # special-token text is plain text unless asked (sentencepiece's behaviour)
        assert tokenizer.encode("<s>hi", add_special_tokens=False) == sp.encode("<s>hi")
        assert tokenizer.encode("<s>hi</s>", add_special_tokens=False, parse_special_tokens=True) == [1] + sp.encode("hi") + [2]
        assert tokenizer.get_vocab()["▁Hello"] == 15043


def test_fast_equals_slow_with_padding_truncation_and_tensors(slow, fast):
    texts = ["Hello world", "a much longer sentence with several more words in it", ""]
    for kwargs in [dict(padding=True), dict(padding="max_length", max_length=16), dict(truncation=True, max_length=5),
                   dict(padding=True, padding_side="left"), dict(padding=True, truncation=True, max_length=6),
                   dict(add_special_tokens=False, padding=True, pad_to_multiple_of=8)]:
        a, b = slow(texts, **kwargs), fast(texts, **kwargs)
        assert dict(a) == dict(b), kwargs
    enc = slow(texts, padding=True, truncation=True, max_length=6)
    assert enc["input_ids"][0] == [1, 15043, 3186, 0, 0, 0] and enc["attention_mask"][0] == [1, 1, 1, 0, 0, 0]
    assert enc["input_ids"][1][0] == 1 and len(enc["input_ids"][1]) == 6  # BOS kept when truncating
    left = slow(texts, padding=True, padding_side="left")
    assert left["input_ids"][0][-3:] == [1, 15043, 3186] and left["attention_mask"][0][0] == 0
    longest = max(len(ids) for ids in fast(texts)["input_ids"])
    array = fast(texts, padding=True, return_tensors="np")["input_ids"]
    assert array.shape == (3, longest) and array.dtype.name == "int64"
    assert slow("Hello world", return_tensors="np")["input_ids"].tolist() == [[1, 15043, 3186]]
    with pytest.raises(ValueError, match="padding=True"):
        slow(texts, return_tensors="np")


def test_offsets_point_at_the_right_characters(fast):
    sp_texts = vector_texts() + own_texts()
    for text in sp_texts:
        enc = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens = fast.convert_ids_to_tokens(enc["input_ids"])
        spans = enc["offset_mapping"]
        if not text:
            assert spans == []
            continue
        distinct = [s for i, s in enumerate(spans) if s[0] < s[1] and (i == 0 or s != spans[i - 1])]
        assert distinct[0][0] == 0 and distinct[-1][1] == len(text), repr(text)
        assert all(a[1] == b[0] for a, b in zip(distinct, distinct[1:])), repr(text)
        for index, (token, (start, end)) in enumerate(zip(tokens, spans)):
            piece = text[start:end]
            if token.startswith("<0x"):
                assert int(token[3:5], 16) in piece.encode("utf-8")
            elif index > 0:
                assert piece == token.replace("▁", " "), (text, token, piece)
            elif token == "▁":  # the bare dummy prefix has no character of its own
                assert (start, end) == (0, 0)
            else:  # the first token carries the dummy prefix
                assert token.replace("▁", " ")[1:] == piece, (text, token, piece)
    enc = fast(["Hello world", "ab 😀"])
    assert enc.char_to_token(0, 7) == 2 and enc.token_to_chars(0, 2) == (5, 11) and enc.token_to_chars(0, 0) is None
    assert fast("Hello world").char_to_token(0) == 1


def test_chat_template_is_metas_layout(sp, slow, fast):
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi there "},
              {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is 2+2?"}]
    # Meta's chat_completion, written out with sentencepiece calls
    first = "<<SYS>>\nBe brief.\n<</SYS>>\n\n Hi there "
    expected = [1] + sp.encode(f"[INST] {first.strip()} [/INST] Hello! ") + [2]
    expected += [1] + sp.encode("[INST] What is 2+2? [/INST]")
    for tokenizer in (slow, fast):
        assert tokenizer.apply_chat_template(dialog) == expected
        assert tokenizer.apply_chat_template(dialog, tokenize=False) == (
            f"<s>[INST] {first.strip()} [/INST] Hello! </s><s>[INST] What is 2+2? [/INST]")
    with pytest.raises(ValueError, match="role"):
        slow.apply_chat_template([{"role": "assistant", "content": "x"}])


def test_save_and_load_round_trip(tmp_path, slow, fast):
    from mfcore import AutoTokenizer
    from mf_llama2 import LlamaTokenizer, LlamaTokenizerFast

    text = "Save me: héllo 😀\n"
    for tokenizer in (slow, fast):
        directory = tmp_path / type(tokenizer).__name__
        tokenizer.save_pretrained(directory)
        config = json.loads((directory / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == type(tokenizer).__name__
        loaded = AutoTokenizer.from_pretrained(directory)
        assert type(loaded) is type(tokenizer)
        assert loaded.encode(text) == tokenizer.encode(text)
        assert (directory / "tokenizer.model").exists()
    assert (tmp_path / "LlamaTokenizerFast" / "tokenizer.json").exists()
    assert type(AutoTokenizer.from_pretrained(tmp_path / "LlamaTokenizer", use_fast=True)) is LlamaTokenizerFast
    assert type(AutoTokenizer.from_pretrained(tmp_path / "LlamaTokenizerFast", use_fast=False)) is LlamaTokenizer
    # a Fast tokenizer rebuilt from its own tokenizer.json only
    only_json = LlamaTokenizerFast(tokenizer_file=str(tmp_path / "LlamaTokenizerFast" / "tokenizer.json"))
    assert only_json.encode(text) == slow.encode(text)


def test_hugging_face_directory_and_mindformers_kwargs(tmp_path, sp):
    from mfcore import AutoTokenizer
    from mf_llama2 import LlamaTokenizer

    # A Hugging Face Llama 2 directory: tokenizer.model + tokenizer_config.json with AddedToken dicts
    (tmp_path / "tokenizer.model").write_bytes(MODEL.read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False},
        "eos_token": {"__type": "AddedToken", "content": "</s>"}, "unk_token": "<unk>", "pad_token": None,
        "model_max_length": 1000000000000000019884624838656, "clean_up_tokenization_spaces": False,
        "sp_model_kwargs": {}}))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(tokenizer) is LlamaTokenizer and tokenizer.pad_token is None and tokenizer.bos_token == "<s>"
    assert tokenizer.encode("Hello world") == [1, 15043, 3186]
    with pytest.raises(ValueError, match="pad_token"):
        tokenizer(["a", "a b c"], padding=True)
    # MindFormers: LlamaTokenizer(vocab_file=..., add_bos_token=..., add_eos_token=..., pad_token=...)
    mf = LlamaTokenizer(vocab_file=str(MODEL), add_bos_token=True, add_eos_token=True, pad_token="<unk>")
    assert mf.encode("Hello world") == [1] + sp.encode("Hello world") + [2]
    assert mf("Hello", padding="max_length", max_length=6)["input_ids"] == [1, 15043, 2, 0, 0, 0]


def test_preset_needs_a_vocab_file(sp):
    from mfcore import AutoTokenizer
    from mfcore.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer.model.*vocab_file="):
        AutoTokenizer.from_pretrained("llama2-7b")
    with pytest.raises(ConfigError, match="does not exist"):
        AutoTokenizer.from_pretrained("llama2-7b", vocab_file="/nonexistent/tokenizer.model")
    tokenizer = AutoTokenizer.from_pretrained("llama2-7b", vocab_file=str(MODEL))
    assert tokenizer.encode("Hello world") == [1, 15043, 3186]


def test_loads_a_transformers_tokenizer_json(tmp_path):
    """A tokenizer.json written by transformers encodes as transformers encodes it."""
    transformers = pytest.importorskip("transformers")
    from mf_llama2 import LlamaTokenizerFast

    source = tmp_path / "src"
    source.mkdir()
    (source / "tokenizer.model").write_bytes(MODEL.read_bytes())
    reference = transformers.LlamaTokenizer.from_pretrained(str(source))
    reference.save_pretrained(str(tmp_path / "hf"))
    ours = LlamaTokenizerFast.from_pretrained(tmp_path / "hf")
    for text in vector_texts() + own_texts()[:100]:
        assert ours.encode(text, add_special_tokens=False, parse_special_tokens=True) == \
            reference.encode(text, add_special_tokens=False), repr(text)
        assert ours.decode(reference.encode(text)) == reference.decode(reference.encode(text)), repr(text)


def test_return_tensors_ms(slow):
    ms = pytest.importorskip("mindspore")
    out = slow(["Hello world", "Hi"], padding=True, return_tensors="ms")
    assert isinstance(out["input_ids"], ms.Tensor) and out["input_ids"].dtype == ms.int32
    assert out["input_ids"].asnumpy().tolist() == [[1, 15043, 3186], [1, 6324, 0]]
    assert slow.batch_decode(out["input_ids"], skip_special_tokens=True) == ["Hello world", "Hi"]
