"""Bad input gets a clear error and leaves everything usable (issue 16): generate() requests on llama2-tiny.

Without the host-side checks, one out-of-vocabulary id fed to the compiled graph breaks every later
generate() of the process ("Invalid output number for flatten stub output nodes"); the test asserts the
good call after the bad one still returns the same tokens.
"""
import math
import re

import numpy as np
import pytest

import mfcore
from mfcore.errors import ConfigError


@pytest.fixture(scope="module")
def tiny():
    return mfcore.AutoModelForCausalLM.from_pretrained("llama2-tiny")


def test_bad_generate_requests_fail_clearly_and_leave_the_model_usable(tiny):
    prompt = [[1, 5, 9]]
    good = tiny.generate(prompt, max_new_tokens=3, eos_token_id=None)
    bad_requests = [
        (dict(input_ids=[[1, 40000, 9]]), "40000.*outside this model's vocabulary \\[0, 32000\\)"),
        (dict(input_ids=[[1, -3, 9]]), "-3.*outside"),
        (dict(input_ids=[[1, 5], [32000]]), "32000 \\(row 1"),
        (dict(temperature=math.nan, do_sample=True), "temperature"),
        (dict(temperature=math.inf, do_sample=True), "temperature"),
        (dict(temperature=-1.0, do_sample=True), "temperature"),
        (dict(top_p=0.0, do_sample=True), "top_p"),
        (dict(top_p=1.5, do_sample=True), "top_p"),
        (dict(top_p=math.nan, do_sample=True), "top_p"),
        (dict(top_k=-1, do_sample=True), "top_k"),
        (dict(max_new_tokens=True), "max_new_tokens.*True"),
        (dict(max_new_tokens=2.0), "max_new_tokens"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=300), "3 tokens \\+ 300 new tokens = 303 is past this model's context of 256"),
        (dict(input_ids=[list(range(1, 250))], max_new_tokens=10), "at most 7 new tokens"),
        (dict(repetition_penalty=math.nan), "repetition_penalty"),
        (dict(attention_mask=np.array([[2, 2, 2]])), "attention_mask"),
    ]
    for kwargs, message in bad_requests:
        kwargs = dict(kwargs)
        ids = kwargs.pop("input_ids", prompt)
        kwargs.setdefault("max_new_tokens", 3)
        with pytest.raises(ConfigError, match=message):
            tiny.generate(ids, eos_token_id=None, **kwargs)
        np.testing.assert_array_equal(tiny.generate(prompt, max_new_tokens=3, eos_token_id=None), good)


def test_max_length_is_the_total_length(tiny):
    out = tiny.generate([[1, 5, 9]], max_length=12, eos_token_id=None)
    assert out.shape == (1, 12)
    # max_new_tokens, when given too, wins (transformers' rule).
    assert tiny.generate([[1, 5, 9]], max_length=12, max_new_tokens=2, eos_token_id=None).shape == (1, 5)


# -- the command line: one line naming the file / line / flag, exit status 2, no traceback ------------------

def _cli_error(capsys, argv):
    from mfcore.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("mfcore: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _data(tmp_path, testdata, source, fmt="text", tokenizer=None, output=None, seq_length="8"):
    return ["data", "--format", fmt, "--tokenizer", str(tokenizer or testdata / "llama2" / "tokenizer.model"),
            "--tokenizer-type", "LlamaTokenizer", "--seq-length", seq_length, "--quiet", "--input", str(source),
            "--output", str(output or tmp_path / "out.mindrecord")]


def test_mfcore_data_bad_inputs_are_one_line_errors(tmp_path, testdata, capsys):
    text = tmp_path / "latin1.txt"
    text.write_bytes(b"line one\nline two \xe9t\xe9\nline three\n")
    assert f"{text}:2: is not valid UTF-8" in _cli_error(capsys, _data(tmp_path, testdata, text))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "b\xffd"}\n')
    assert f"{jsonl}:3: is not valid UTF-8" in _cli_error(capsys, _data(tmp_path, testdata, jsonl, "jsonl"))
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "ok"}\n{"text": "a \\ud800 b"}\n')
    assert f"{surrogate}:2: text:" in _cli_error(capsys, _data(tmp_path, testdata, surrogate, "jsonl"))
    good = tmp_path / "good.txt"
    good.write_text("hello world " * 20)
    (tmp_path / "a_directory").mkdir()
    assert "--output:" in _cli_error(capsys, _data(tmp_path, testdata, good, output=tmp_path / "a_directory"))
    for name, content in (("garbage.model", bytes(range(256)) * 3), ("empty.model", b"")):
        (tmp_path / name).write_bytes(content)
        line = _cli_error(capsys, _data(tmp_path, testdata, good, tokenizer=tmp_path / name))
        assert f"{tmp_path / name} is not a SentencePiece model" in line
    assert "--seq-length" in _cli_error(capsys, _data(tmp_path, testdata, good, seq_length="1"))
    assert not (tmp_path / "out.mindrecord").exists()


def test_bad_mindrecord_files_are_named(tmp_path):
    from mfcore.data import read_mindrecord, write_mindrecord

    good = tmp_path / "good.mindrecord"
    write_mindrecord(good, [(np.arange(4, dtype=np.int32), np.arange(4, dtype=np.int32))] * 3, 4)
    assert read_mindrecord(good)["input_ids"].shape == (3, 4)
    for name, content in (("zero.mindrecord", b""), ("garbage.mindrecord", bytes(range(256)) * 40)):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=f"{name}: its index"):
            read_mindrecord(tmp_path / name)  # no .db beside it
        (tmp_path / f"{name}.db").write_bytes((tmp_path / "good.mindrecord.db").read_bytes())
        with pytest.raises(ConfigError, match=f"{name}: is not a readable MindRecord file"):
            read_mindrecord(tmp_path / name)


def test_out_of_range_ids_do_not_decode(testdata):
    tokenizer = mfcore.AutoTokenizer.tokenizer_class("LlamaTokenizer")(
        vocab_file=str(testdata / "llama2" / "tokenizer.model"))
    assert tokenizer.decode([15043, 3186]) == "Hello world"
    for bad in (40000, 32000, -1):
        with pytest.raises(ConfigError, match=f"token id {bad} is outside the vocabulary \\[0, 32000\\)"):
            tokenizer.decode([15043, bad])
        with pytest.raises(ConfigError, match=f"token id {bad}"):
            tokenizer.batch_decode([[15043], [bad]])


def test_convert_destination_and_shard_size_errors(tmp_path, capsys):
    pytest.importorskip("mf_convert")
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "a_file").write_text("x")
    assert "DST:" in _cli_error(capsys, ["convert", str(source), str(tmp_path / "a_file"), "--no-progress"])
    for size in ("abc", "0", "-5GB", "5XB"):
        line = _cli_error(capsys, ["convert", str(source), str(tmp_path / "dst"), f"--shard-size={size}",
                                   "--no-progress"])
        assert f"--shard-size: " in line and repr(size) in line


def test_disk_full_names_the_file_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import errno

    import mfcore.utils.atomic as atomic
    from mfcore.cli import main

    real_fdopen = atomic.os.fdopen

    def full_disk(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        return Full()

    monkeypatch.setattr(atomic.os, "fdopen", full_disk)
    target = tmp_path / "out" / "config.json"
    with pytest.raises(OSError, match=f"No space left on device.*{target.name}"):
        atomic.atomic_write_text(target, "{}")
    assert list((tmp_path / "out").iterdir()) == []  # no temporary left behind
    # Through the CLI: one line naming the file, exit 2; MFCORE_DEBUG=1 re-raises for a traceback.
    from mfcore.cli import models

    monkeypatch.setattr(models, "cmd_models", lambda args: atomic.atomic_write_text(target, "{}"))
    assert str(target) in _cli_error(capsys, ["models"])
    monkeypatch.setenv("MFCORE_DEBUG", "1")
    with pytest.raises(OSError):
        main(["models"])


def test_torch_dtype_is_the_dtype(tiny, tmp_path):
    """from_pretrained(dir, torch_dtype="float16") (transformers' spelling) loads float16 weights."""
    tiny.save_pretrained(tmp_path)
    for spelling in ("float16", "torch.float16"):
        model = mfcore.AutoModelForCausalLM.from_pretrained(str(tmp_path), torch_dtype=spelling)
        assert model.config.param_init_type == "float16"
        assert {str(p.dtype) for p in model.get_parameters()} >= {"Float16"}
        assert not hasattr(model.config, "torch_dtype") or model.config.torch_dtype != spelling


def test_mindspore_recompile_noise_is_filtered(monkeypatch):
    """MindSpore's "compiled again" warning (mfcore compiles per shape bucket on purpose) is hidden."""
    import logging

    import mindspore
    from mindspore import log as ms_log

    from mfcore.utils import runtime

    monkeypatch.delenv("MFCORE_DEBUG", raising=False)
    runtime.setup()
    seen = []

    class Record(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Record()
    ms_log._get_logger().addHandler(handler)  # sees what passes the logger's filters, as stderr would
    try:
        for _ in range(3):  # a new function object at the same place each time: "compiled again"
            def plus_one(x):
                return x + 1

            mindspore.jit(plus_one)(mindspore.Tensor(np.ones(2, np.float32)))
        assert not [m for m in seen if "compiled again" in m]
        monkeypatch.setattr(runtime, "MINDSPORE_NOISE", ())  # the same without the filter: the warning shows
        for _ in range(2):
            def plus_two(x):
                return x + 2

            mindspore.jit(plus_two)(mindspore.Tensor(np.ones(2, np.float32)))
        assert [m for m in seen if "compiled again" in m]
    finally:
        ms_log._get_logger().removeHandler(handler)


def test_training_data_that_does_not_fit_the_model_is_refused_before_training(tmp_path, capsys):
    from mfcore.data import write_mindrecord

    out_of_vocab = tmp_path / "ids.mindrecord"
    rows = [(np.full(16, 40000, np.int32), np.full(16, 40000, np.int32))] * 2
    write_mindrecord(out_of_vocab, rows, 16)
    too_long = tmp_path / "long.mindrecord"
    write_mindrecord(too_long, [(np.ones(300, np.int32), np.ones(300, np.int32))] * 2, 300)
    for data, message in ((out_of_vocab, "token id 40000 .* outside the model's vocabulary \\[0, 32000\\)"),
                          (too_long, "sequences of 300 tokens are longer than the model's context of 256")):
        line = _cli_error(capsys, ["run", "--model", "llama2-tiny", "--run_mode", "train", "--train_dataset_dir",
                                   str(data), "--output_dir", str(tmp_path / "out")])
        assert re.search(message, line) and str(data) in line, line
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_the_convert_advice_is_installable(capsys, monkeypatch):
    """mf-llama2 (so mf-llama3) brings mf-convert, whose `mfcore convert` the no-weights error advises;
    without it, `mfcore convert` says what to install instead of argparse's "invalid choice"."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "packages" / "llama2" / "pyproject.toml")
                            .read_text())
    assert any(dep.startswith("mf-convert") for dep in project["project"]["dependencies"])
    monkeypatch.setenv("MFCORE_PLUGINS", "llama2")
    mfcore.reset_plugins()
    try:
        assert "pip install mf-convert" in _cli_error(capsys, ["convert", "a", "b"])
    finally:
        monkeypatch.delenv("MFCORE_PLUGINS")
        mfcore.reset_plugins()


def test_the_tiny_preset_and_the_readme_snippet_run_from_a_clean_clone(tiny, tmp_path, monkeypatch):
    """llama2-tiny's tokenizer is one mfcore makes itself (built on first use in $MFCORE_HOME): the README's
    Python snippet runs with it, no download."""
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path / "home"))
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama2-tiny")
    assert len(tokenizer) == tiny.config.vocab_size == 32000
    assert (tmp_path / "home" / "tokenizers" / "llama2-tiny" / "tokenizer.model").is_file()
    text = "Anna saw a red cat. Ünïcödé 😀"
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text  # byte fallback
    ids = tokenizer.encode("Anna saw")
    out = tiny.generate([ids], max_new_tokens=4, eos_token_id=None)
    assert isinstance(tokenizer.decode(out[0]), str) and len(out[0]) == len(ids) + 4
    tokenizer.save_pretrained(tmp_path / "tok")
    assert mfcore.AutoTokenizer.from_pretrained(str(tmp_path / "tok")).encode(text) == tokenizer.encode(text)


def test_a_bare_tokenizer_file_is_read_by_the_class_that_can(testdata, tmp_path):
    """--tokenizer path/to/tokenizer.model (no tokenizer_config.json beside it) was refused; now the registered
    classes that read such a file are tried: SentencePiece and tiktoken files each pick their own."""
    for family, class_name, expected in (("llama2", "LlamaTokenizer", [1, 15043, 3186]),
                                         ("llama3", "Llama3Tokenizer", [128000, 9906, 1917])):
        tokenizer = mfcore.AutoTokenizer.from_pretrained(str(testdata / family / "tokenizer.model"))
        assert type(tokenizer).__name__ == class_name and tokenizer.encode("Hello world") == expected
    (tmp_path / "tokenizer.model").write_bytes(b"not a tokenizer")
    with pytest.raises(ConfigError, match="no installed tokenizer reads this file"):
        mfcore.AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer.model"))


def test_the_llama3_tiny_tokenizer_is_made_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama3-tiny")
    assert len(tokenizer) == 128256 and tokenizer.stop_token_ids == [128001, 128009]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert ids[:2] == [128000, 128006] and ids[-4:-2] == [116, 128007]  # ...assistant<|end_header_id|>\n\n
    text = "Hello wörld 😀"
    assert tokenizer.encode(text, add_special_tokens=False) == list(text.encode("utf-8"))  # one token a byte
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text
