"""mf-llama2 passes mfcore's conformance kit, the same checks an outside plugin runs."""
import pytest

from mfcore import testing

TESTDATA = __import__("pathlib").Path(__file__).resolve().parents[3].parent / "shared" / "testdata"


def test_plugin_and_presets_conform(tmp_path):
    names = testing.check_presets("llama2", tmp_path)
    assert {"llama2-7b", "llama2-13b", "llama2-70b", "llama2-tiny"} <= set(names)


def test_tiny_model_conforms(tmp_path):
    model = testing.tiny_model("llama2-tiny", vocab_size=512)
    testing.check_model_forward(model)
    testing.check_save_load(model, tmp_path / "model")
    testing.check_generate(model)


def test_weight_maps_conform():
    import mfcore

    config = mfcore.AutoConfig.from_pretrained("llama2-tiny")
    names = list(mfcore.get_plugins().converter("llama", "hf").native_shapes(config))
    for source in ("hf", "meta", "mindformers"):
        testing.check_converter_round_trip("llama", source, names)


def test_tokenizer_conforms(tmp_path):
    if not (TESTDATA / "llama2" / "tokenizer.model").exists():
        pytest.skip(f"reference tokenizer not found in {TESTDATA}")
    from mf_llama2 import LlamaTokenizer

    tokenizer = LlamaTokenizer(vocab_file=str(TESTDATA / "llama2" / "tokenizer.model"))
    testing.check_tokenizer_round_trip(tokenizer, ["Hello world", " two  spaces", "emoji 🦙 and 数字 42"], tmp_path)
