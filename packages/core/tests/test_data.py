"""mfcore data: formats, packing, label masking and MindRecord output (core only: a toy tokenizer).

The toy tokenizer maps each character to its code point + 3 (bos 1, eos 2), so every expected id
below is computed independently of the code under test. Real tokenizers: tests/test_train_data.py.
"""
import json
import os

import numpy as np
import pytest

from mfcore.cli import main
from mfcore.data import IGNORE_INDEX, Packer, expand_inputs, pack_files, read_mindrecord, write_mindrecord
from mfcore.data.formats import AlpacaFormat, ChatFormat, ChatMLTemplate, JsonlFormat, TextFormat, WikitextFormat
from mfcore.errors import ConfigError


class CharTokenizer:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + [ord(c) + 3 for c in text]


def ids(text):
    return [ord(c) + 3 for c in text]


TOK = CharTokenizer()


def test_packing_puts_eos_between_documents_and_cuts_full_sequences():
    packer = Packer(seq_length=5)
    out = []
    for text in ("ab", "cde", "f"):
        out += list(packer.add(TextFormat().segments(text, TOK)))
    packer.finish()
    stream = [1] + ids("ab") + [2] + [1] + ids("cde") + [2] + [1] + ids("f") + [2]
    assert [list(s[0]) for s in out] == [stream[0:5], stream[5:10]]
    assert all(list(s[0]) == list(s[1]) for s in out)  # text is trained on everywhere
    assert packer.stats.documents == 3 and packer.stats.tokens == len(stream) == 12
    assert packer.stats.sequences == 2 and packer.stats.dropped_tokens == 2


def test_alpaca_masks_the_prompt_and_trains_on_response_and_eos():
    record = {"instruction": "Say hi", "input": "", "output": "hi"}
    segments = AlpacaFormat().segments(record, TOK, "x:1")
    prompt = AlpacaFormat.prompt_no_input.format(instruction="Say hi")
    assert segments == [([1] + ids(prompt), False), (ids("hi") + [2], True)]
    with_input = AlpacaFormat().segments({"instruction": "A", "input": "B", "output": "C"}, TOK)
    assert "### Input:\nB" in "".join(chr(i - 3) for i in with_input[0][0][1:])
    packer = Packer(seq_length=len(segments[0][0]) + 3)
    (seq,) = list(packer.add(segments))
    n = len(segments[0][0])
    assert list(seq[1][:n]) == [IGNORE_INDEX] * n and list(seq[1][n:]) == ids("hi") + [2]


def test_alpaca_missing_key_names_the_record():
    with pytest.raises(ConfigError, match=r"data.json:7.*'output'"):
        AlpacaFormat().segments({"instruction": "x"}, TOK, "data.json:7")


def test_wikitext_splits_articles_and_undoes_its_tokenization(tmp_path):
    raw = (" \n = Apple = \n \n The apple @-@ tree grew 1 @,@ 000 apples , 2 @.@ 5 kg .\n"
           " = = History = = \n Old .\n = Banana = \n Yellow .\n")
    path = tmp_path / "wiki.train.raw"
    path.write_text(raw)
    fmt = WikitextFormat()
    articles = [fmt.clean(text) for _, text in fmt.records(path)]
    assert articles == ["= Apple =\nThe apple-tree grew 1,000 apples , 2.5 kg .\n= = History = =\nOld .",
                        "= Banana =\nYellow ."]


def test_chat_template_masks_everything_but_assistant_turns():
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    segments = ChatFormat(ChatMLTemplate()).segments(record, TOK, "c:1")
    trained = [i for seg, train in segments if train for i in seg]
    assert trained == ids("yo") + [2]
    masked = [i for seg, train in segments if not train for i in seg]
    assert masked == [1] + ids("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") + ids("<|im_end|>\n")


def test_sharegpt_roles_are_normalized_and_bad_roles_named():
    fmt = ChatFormat(ChatMLTemplate())
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    assert [i for s, t in fmt.segments(record, TOK) if t for i in s] == ids("b") + [2]
    with pytest.raises(ConfigError, match=r"f:3.messages\[0\].role"):
        fmt.segments({"messages": [{"role": "robot", "content": "x"}]}, TOK, "f:3")


def test_mindrecord_round_trip_is_exact_and_output_atomic(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(rng.integers(0, 1000, 8).astype(np.int32), rng.integers(-100, 1000, 8).astype(np.int32))
            for _ in range(5)]
    out = tmp_path / "sub" / "train.mindrecord"
    assert write_mindrecord(out, iter(rows), 8) == 5
    back = read_mindrecord(out)
    np.testing.assert_array_equal(back["input_ids"], np.stack([r[0] for r in rows]))
    np.testing.assert_array_equal(back["labels"], np.stack([r[1] for r in rows]))
    assert back["input_ids"].dtype == np.int32
    assert os.path.getsize(out) < 4 << 20  # small pages: small data stays small

    def failing():
        yield rows[0]
        raise RuntimeError("tokenizer crashed")

    broken = tmp_path / "broken.mindrecord"
    with pytest.raises(RuntimeError):
        write_mindrecord(broken, failing(), 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no partial file, no temp dir left


def test_too_little_data_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="fewer than 64 tokens"):
        write_mindrecord(tmp_path / "x.mindrecord", iter([]), 64)
    assert list(tmp_path.iterdir()) == []


def test_pack_files_reads_jsonl_and_counts(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["abc", "", "defgh"]) + "\n")
    sequences, stats = pack_files(JsonlFormat(), [path], TOK, 3, progress=False)
    got = [list(s[0]) for s in sequences]
    stream = [1] + ids("abc") + [2, 1] + ids("defgh") + [2]
    assert got == [stream[i:i + 3] for i in range(0, 12, 3)]
    assert (stats.documents, stats.empty, stats.tokens, stats.dropped_tokens) == (2, 1, 12, 0)


def test_expand_inputs_errors_on_a_pattern_without_files(tmp_path):
    with pytest.raises(ConfigError, match=r"--input.*matches no file"):
        expand_inputs([str(tmp_path / "*.jsonl")])


def test_cli_lists_builtin_formats(capsys):
    assert main(["data", "--list"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    for name in ("text", "jsonl", "wikitext", "alpaca", "chat"):
        assert listed[name] == "format"
    assert listed["chatml"] == "template"


def test_cli_unknown_format_is_named(capsys):
    code = main(["data", "--format", "nope", "--input", "x", "--tokenizer", "t", "--seq-length", "8",
                 "--output", "o"])
    assert code == 2 and "unknown dataset format 'nope'" in capsys.readouterr().err


def test_plugin_formats_are_used_by_the_cli(make_distribution, tmp_path, capsys):
    make_distribution("mf-upper", entry_points={"upper": "mf_upper_plugin"}, modules={"mf_upper_plugin": """
        from mfcore import hookimpl

        class Upper:
            kind = "format"
            description = "one document per line, upper-cased"
            def records(self, path):
                for n, line in enumerate(open(path), 1):
                    yield f"{path}:{n}", line.strip()
            def segments(self, record, tokenizer, where=""):
                return [(tokenizer.encode(record.upper(), add_special_tokens=False), True)]

        @hookimpl
        def register_datasets(register):
            register("upper", Upper)
    """})
    assert main(["data", "--list"]) == 0
    assert "upper" in capsys.readouterr().out


def _pack_seconds(tokens, seq_length=128):
    """The best of 3 timings of packing one document of `tokens` tokens."""
    import time

    ids_list = list(range(tokens))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in Packer(seq_length).add([(ids_list, True)]):
            pass
        best = min(best, time.perf_counter() - start)
    return best


def test_packing_is_linear_in_the_document_length():
    """4x the tokens costs about 4x the time (measured: 5x linear; the old front-deleting list, 30x)."""
    small, large = _pack_seconds(400_000), _pack_seconds(1_600_000)
    assert large < 14 * small + 0.05, (small, large)


def test_a_multi_megabyte_single_line_document_packs_exactly(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(3_000_000))  # one 3 MB line
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    sequences, stats = pack_files(TextFormat(), [tmp_path / "big.txt"], TOK, seq_length=1000, progress=False)
    got = np.concatenate([ids for ids, _ in sequences])
    stream = np.asarray([1] + ids(text) + [2], dtype=np.int32)
    assert stats.sequences == len(stream) // 1000 and stats.dropped_tokens == len(stream) % 1000
    np.testing.assert_array_equal(got, stream[:len(got)])
