"""mf-llama3 passes mfcore's conformance kit on top of mf-llama2's network."""
import pytest

from mfcore import testing

TESTDATA = __import__("pathlib").Path(__file__).resolve().parents[3].parent / "shared" / "testdata"


def test_plugin_and_presets_conform(tmp_path):
    names = testing.check_presets("llama3", tmp_path)
    assert {"llama3-8b", "llama3-70b", "llama3.1-8b", "llama3.1-70b", "llama3-tiny"} <= set(names)


def test_tiny_model_conforms(tmp_path):
    model = testing.tiny_model("llama3-tiny")
    testing.check_model_forward(model)
    testing.check_save_load(model, tmp_path / "model")
    testing.check_generate(model)


def test_tokenizer_conforms(tmp_path):
    if not (TESTDATA / "llama3" / "tokenizer.model").exists():
        pytest.skip(f"reference tokenizer not found in {TESTDATA}")
    from mf_llama3 import Llama3Tokenizer

    tokenizer = Llama3Tokenizer(vocab_file=str(TESTDATA / "llama3" / "tokenizer.model"))
    testing.check_tokenizer_round_trip(tokenizer, ["Hello world", " two  spaces", "emoji 🦙 and 数字 42"], tmp_path)
