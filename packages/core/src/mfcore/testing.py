"""The conformance kit: checks a plugin author calls from their own test suite.

Each check raises AssertionError with a message saying what does not conform. Typical use in a
plugin's tests (pytest's tmp_path gives the directories):

    from mfcore import testing

    def test_plugin_conforms(tmp_path):
        testing.check_plugin("toy")                      # loaded through its entry point, no errors
        testing.check_presets("toy", tmp_path)           # every preset's config is valid and round-trips

    def test_model_conforms(tmp_path):
        model = testing.tiny_model("toy-tiny")
        testing.check_model_forward(model)
        testing.check_save_load(model, tmp_path)
        testing.check_generate(model)

Nothing here imports MindSpore until a model check runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from mfcore.models.auto import AutoConfig, AutoModelForCausalLM
from mfcore.plugins.manager import PluginInfo, get_plugins


def check_plugin(name: str) -> PluginInfo:
    """The plugin was discovered through its entry point and every hook ran without error."""
    plugins = get_plugins()
    assert name in plugins.info, (f"plugin {name!r} was not discovered; is the distribution installed and does "
                                  f"its pyproject declare [project.entry-points.mfcore] {name} = ...? "
                                  f"Discovered: {sorted(plugins.info)}")
    info = plugins.info[name]
    assert info.ok, f"plugin {name!r} is broken: {info.errors}"
    assert info.registered, f"plugin {name!r} registered nothing"
    for kind, names in info.registered.items():
        registry = plugins.registries[kind]
        for registered in names:
            registry.get(registered)  # import strings must resolve
    return info


def check_config_round_trip(config, directory) -> None:
    """save_pretrained -> from_pretrained (through AutoConfig) gives an equal config."""
    config.save_pretrained(directory)
    again = AutoConfig.from_pretrained(directory)
    assert type(again) is type(config), f"AutoConfig gave {type(again).__name__}, expected {type(config).__name__}"
    assert again.to_dict() == config.to_dict(), f"config changed in the round trip: {config.to_dict()} != {again.to_dict()}"


def check_presets(plugin: str, directory) -> list:
    """Every preset the plugin registered builds a valid config that round-trips; returns their names."""
    info = check_plugin(plugin)
    presets = get_plugins().presets
    names = [n for n in info.registered.get("presets", []) if presets.get(n).name == n]  # skip aliases
    for name in names:
        preset = presets.get(name)
        config = AutoConfig.from_pretrained(name)
        assert config.model_type == preset.model_type, f"preset {name}: model_type {config.model_type!r} != {preset.model_type!r}"
        check_config_round_trip(config, Path(directory) / name)
    return names


def tiny_model(preset: str, **config_overrides):
    """A randomly initialised model of a tiny preset (one with random_init_ok)."""
    return AutoModelForCausalLM.from_pretrained(preset, **config_overrides)


def _logits(model, input_ids: np.ndarray) -> np.ndarray:
    from mindspore import Tensor

    return model(Tensor(input_ids)).asnumpy()


def _random_ids(model, batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, model.config.vocab_size, (batch, length)).astype(np.int32)


def check_model_forward(model, batch: int = 2, length: int = 7) -> None:
    """logits have shape (batch, length, vocab) and are finite; labels give a finite scalar loss."""
    from mindspore import Tensor

    ids = _random_ids(model, batch, length)
    logits = _logits(model, ids)
    assert logits.shape == (batch, length, model.config.vocab_size), f"logits shape {logits.shape}"
    assert np.isfinite(logits).all(), "logits are not finite"
    loss = model(Tensor(ids), labels=Tensor(ids)).asnumpy()
    assert loss.shape == () and np.isfinite(loss), f"loss must be a finite scalar, got {loss!r}"


def check_save_load(model, directory) -> None:
    """save_pretrained -> AutoModelForCausalLM.from_pretrained reproduces the logits exactly."""
    model.save_pretrained(directory)
    again = AutoModelForCausalLM.from_pretrained(directory)
    ids = _random_ids(model, 1, 5, seed=1)
    np.testing.assert_array_equal(_logits(again, ids), _logits(model, ids),
                                  err_msg="logits differ after save_pretrained / from_pretrained")


def check_generate(model, max_new_tokens: int = 4) -> None:
    """Greedy generate keeps the prompt, adds max_new_tokens, and equals argmax of a full forward."""
    prompt = _random_ids(model, 1, 5, seed=2)
    out = np.asarray(model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=[]))
    assert out.shape == (1, 5 + max_new_tokens), f"generate returned shape {out.shape}"
    np.testing.assert_array_equal(out[:, :5], prompt, err_msg="generate must return the prompt first")
    expected = int(np.argmax(_logits(model, prompt)[0, -1]))
    assert int(out[0, 5]) == expected, "first generated token is not the argmax of the full forward"


def check_tokenizer_round_trip(tokenizer, texts: Iterable[str], directory: Optional[Path] = None) -> None:
    """decode(encode(text)) == text, and a saved + reloaded tokenizer encodes identically."""
    texts = list(texts)
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text, f"decode(encode({text!r})) = {tokenizer.decode(ids)!r}"
    if directory is not None:
        from mfcore.models.auto import AutoTokenizer

        tokenizer.save_pretrained(directory)
        again = AutoTokenizer.from_pretrained(directory)
        for text in texts:
            assert again.encode(text) == tokenizer.encode(text), f"reloaded tokenizer differs on {text!r}"


def check_converter_round_trip(model_type: str, source: str, native_names: Sequence[str]) -> None:
    """The registered weight map turns every native name into a foreign one and back unchanged."""
    weight_map = get_plugins().converter(model_type, source)
    for name in native_names:
        foreign = weight_map.from_native(name)
        assert foreign is not None, f"{model_type}:{source} has no name for native {name!r}"
        assert weight_map.to_native(foreign) == name, f"{name!r} -> {foreign!r} -> {weight_map.to_native(foreign)!r}"


# -- tokenizer test material ---------------------------------------------------------------------

def read_vocab_test_vectors(inp, out) -> list:
    """(text, ids) pairs from llama.cpp's `ggml-vocab-*.gguf.inp` / `.out` vocabulary test files.

    .inp separates texts with the line `__ggml_vocab_test__` (and ends with one); .out holds one line
    of space-separated ids per text. Texts are not stripped: several are whitespace only.
    """
    texts = Path(inp).read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    assert texts[-1] == "", f"{inp}: expected a trailing separator"
    texts = texts[:-1]
    lines = Path(out).read_text(encoding="utf-8").split("\n")[:len(texts)]
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines)]


_STRESS_ALPHABET = (" \n\t\u00a0abcdefxyzABC0123456789.,;:!?'\"()[]{}<>/\\-_=+*&^%$#@~`|éüßçñ你好世界日本ひらがな"
                    "カタカナ한국어Привет مرحبا😀🎉👍🏽\u200d\ufeff")


def tokenizer_stress_texts(extra: Sequence[str] = (), extra_alphabet: str = "", random_texts: int = 400,
                           seed: int = 1234) -> list:
    """Texts that catch tokenizer mistakes: scripts, emoji (ZWJ, flags, skin tones), numbers, code,
    whitespace runs of every length up to 39, invisible characters, long runs of one character, and
    `random_texts` random strings from a mixed alphabet. The same list for the same arguments."""
    import random

    texts = [
        "", " ", "\n", "\t", "Hello world", " Hello world", "Hello  world", "héllo wörld, naïve café",
        "日本語のテキスト、中文文本，한국어 텍스트", "Привет, мир! مرحبا بالعالم", "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
        "numbers 0 1 12 123 1234 12345 3.14159 -2e10 1,000,000 ½ ⅔", "def f(x):\n\treturn x ** 2  # square\n",
        "if (a != b) { printf(\"%d\\n\", a); }", "\u200b zero width \ufeff bom \u00a0 nbsp",
        "\r\n\r\n windows lines \r\n", "   leading and trailing   ", "a" * 1000, "ab " * 500, "\n" * 50 + "x",
        "tabs\t\t\tand\t\tmore", *extra,
    ]
    texts += [" " * n for n in range(1, 40)] + ["x" + " " * n + "y" for n in range(1, 40)]
    rng = random.Random(seed)
    alphabet = _STRESS_ALPHABET + extra_alphabet
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(random_texts)]
    return texts


def check_vocab_test_vectors(tokenizers: Sequence, inp, out) -> int:
    """Every tokenizer encodes every text of a llama.cpp vector file to its expected ids; returns the count."""
    pairs = read_vocab_test_vectors(inp, out)
    for tokenizer in tokenizers:
        wrong = [(text, ids) for text, ids in pairs if tokenizer.encode(text, add_special_tokens=False) != ids]
        assert not wrong, (f"{type(tokenizer).__name__}: {len(pairs) - len(wrong)}/{len(pairs)} texts of {inp} "
                           f"match; first mismatch {wrong[0][0]!r}")
    return len(pairs)
