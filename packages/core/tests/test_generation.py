"""Generation in core: the pure logits functions (against transformers' processors), GenerationConfig,
and the generation loop on a toy model whose right answer is computed in plain Python."""
import json

import numpy as np
import pytest

from mfcore.errors import ConfigError
from mfcore.generation import (GenerationConfig, apply_repetition_penalty, apply_temperature, apply_top_k,
                               apply_top_p, bucket_length, left_pad, next_tokens, sample,
                               TOKENS_PER_CALL)

from toy_causal_lm import ToyConfig, ToyCounterLM, expected_generation

VOCAB = 11


# -- pure functions vs transformers' logits processors ---------------------------------------------

def _scores(seed=0, batch=3, vocab=50):
    return np.random.default_rng(seed).normal(size=(batch, vocab)).astype(np.float32) * 3


@pytest.fixture(scope="module")
def hf_processors():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers.generation.logits_process")


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_transformers(hf_processors, penalty):
    import torch

    scores = _scores()
    sequences = np.random.default_rng(1).integers(0, 50, (3, 9))
    expected = hf_processors.RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor(sequences),
                                                                       torch.tensor(scores)).numpy()
    np.testing.assert_allclose(apply_repetition_penalty(scores, sequences, penalty), expected, rtol=1e-6)


def test_temperature_top_k_top_p_match_transformers(hf_processors):
    import torch

    scores = _scores(2)
    np.testing.assert_allclose(apply_temperature(scores, 0.7),
                               hf_processors.TemperatureLogitsWarper(0.7)(None, torch.tensor(scores)).numpy(),
                               rtol=1e-6)
    for k in (1, 5, 49):
        expected = hf_processors.TopKLogitsWarper(k)(None, torch.tensor(scores)).numpy()
        np.testing.assert_array_equal(apply_top_k(scores, k), expected)
    for p in (0.1, 0.5, 0.9, 0.999):
        expected = hf_processors.TopPLogitsWarper(p)(None, torch.tensor(scores)).numpy()
        np.testing.assert_array_equal(np.isinf(apply_top_p(scores, p)), np.isinf(expected))


def test_sampling_follows_the_distribution_and_the_seed():
    scores = np.log(np.array([[0.1, 0.2, 0.7]], dtype=np.float32)).repeat(20000, axis=0)
    draws = sample(scores, np.random.default_rng(0))
    frequencies = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(frequencies, [0.1, 0.2, 0.7], atol=0.015)
    np.testing.assert_array_equal(draws, sample(scores, np.random.default_rng(0)))
    # top_k=1 sampling is greedy whatever the seed.
    scores = _scores(3)
    config = GenerationConfig(do_sample=True, top_k=1, temperature=0.5)
    np.testing.assert_array_equal(next_tokens(scores, np.zeros((3, 1), int), config, np.random.default_rng(5)),
                                  scores.argmax(-1))


def test_bucket_length_and_left_pad():
    assert [bucket_length(n) for n in (1, 16, 17, 33, 512, 513, 1100)] == [16, 16, 32, 64, 512, 1024, 1536]
    ids, mask = left_pad([[5, 6], [7], [1, 2, 3]], pad_token_id=9)
    np.testing.assert_array_equal(ids, [[9, 5, 6], [9, 9, 7], [1, 2, 3]])
    np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 1], [1, 1, 1]])


# -- GenerationConfig ---------------------------------------------------------------------------

def test_generation_config_round_trip_and_errors(tmp_path):
    config = GenerationConfig(max_new_tokens=7, do_sample=True, top_p=0.8, eos_token_id=[2, 5], seed=3)
    config.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path) == config
    with pytest.raises(TypeError, match="max_new_token"):
        config.update(max_new_token=3)
    with pytest.raises(ConfigError, match="top_p"):
        config.update(top_p=0)
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=0)


def test_reads_a_transformers_generation_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.GenerationConfig(max_new_tokens=12, do_sample=True, top_k=7, eos_token_id=[1, 2],
                                  pad_token_id=0, bos_token_id=1).save_pretrained(tmp_path)
    config = GenerationConfig.from_pretrained(tmp_path)
    assert (config.max_new_tokens, config.do_sample, config.top_k, config.eos_token_id, config.pad_token_id) == \
        (12, True, 7, [1, 2], 0)
    config.save_pretrained(tmp_path)  # unknown keys of the file are kept
    assert "transformers_version" in json.loads((tmp_path / "generation_config.json").read_text())


# -- the loop, on the toy model -----------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    return ToyCounterLM(ToyConfig(vocab_size=VOCAB))


@pytest.mark.parametrize("use_jit", [True, False])
def test_generation_loop_matches_reference(toy, use_jit):
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6, 5, 3], [5]]
    got = toy.generate(prompts, max_new_tokens=6, use_jit=use_jit, eos_token_id=None, pad_token_id=0)
    np.testing.assert_array_equal(got, expected_generation(prompts, VOCAB, 6))


def test_eos_stops_each_row_and_pads(toy):
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6, 5, 3], [5]]
    free = expected_generation(prompts, VOCAB, 20)
    eos = int(free[0, 7 + 2])  # row 0's third new token
    got = toy.generate(prompts, max_new_tokens=20, eos_token_id=eos, pad_token_id=0)
    expected = expected_generation(prompts, VOCAB, 20, eos=eos, pad=0)
    np.testing.assert_array_equal(got, expected)
    first = list(got[0, 7:]).index(eos)
    assert (got[0, 7 + first + 1:] == 0).all()


def test_input_forms_and_streamer(toy):
    prompt = np.array([[2, 7, 1, 8]])
    expected = expected_generation([[2, 7, 1, 8]], VOCAB, 5)
    streamed = []
    np.testing.assert_array_equal(toy.generate(prompt, max_new_tokens=5, eos_token_id=None,
                                               streamer=streamed.append), expected)
    np.testing.assert_array_equal(np.concatenate(streamed), expected[0, 4:])

    class Streamer:  # transformers' protocol: put(prompt), put(new tokens)..., end()
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(np.asarray(value).copy())

        def end(self):
            self.calls.append("end")

    streamer = Streamer()
    toy.generate([2, 7, 1, 8], max_new_tokens=5, eos_token_id=None, streamer=streamer)
    np.testing.assert_array_equal(streamer.calls[0], prompt)
    assert len(streamer.calls) == 7 and streamer.calls[-1] == "end"
    # A padded batch with an explicit mask gives the same rows as ragged lists.
    ids = np.array([[0, 0, 3, 1], [2, 7, 1, 8]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(toy.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None),
                                  expected_generation([[3, 1], [2, 7, 1, 8]], VOCAB, 4))
    # max_new_tokens=0 returns the prompt.
    np.testing.assert_array_equal(toy.generate(prompt, max_new_tokens=0), prompt)


def test_stop_strings_end_rows(toy):
    class Letters:  # token t decodes to the letter chr(97 + t)
        @staticmethod
        def decode(ids):
            return "".join(chr(97 + t) for t in ids)

    prompts = [[1, 5, 9, 2, 6, 5, 3], [2, 7]]
    free = expected_generation(prompts, VOCAB, 12)
    stop = Letters.decode(free[0, 7 + 2:7 + 4])  # what row 0 writes at its 3rd and 4th steps
    assert stop not in Letters.decode(free[0, 7:7 + 3]) and stop not in Letters.decode(free[1, 7:])
    got = toy.generate(prompts, max_new_tokens=12, eos_token_id=None, pad_token_id=0, stop_strings=[stop],
                       tokenizer=Letters())
    np.testing.assert_array_equal(got[0, :7 + 4], free[0, :7 + 4])
    assert (got[0, 7 + 4:] == 0).all()  # stopped after the token that completed the stop string
    np.testing.assert_array_equal(got[1], free[1])  # the other row runs on
    with pytest.raises(ValueError, match="tokenizer"):
        toy.generate(prompts, max_new_tokens=2, stop_strings=["x"])


def test_generation_input_errors(toy):
    with pytest.raises(ValueError, match="left-padded"):
        toy.generate(np.array([[1, 2, 0]]), attention_mask=np.array([[1, 1, 0]]), max_new_tokens=2)
    with pytest.raises(TypeError, match="unknown argument"):
        toy.generate(np.array([[1, 2]]), max_tokens=2)
    with pytest.raises(ValueError, match="no real token"):
        toy.generate(np.array([[1, 2]]), attention_mask=np.array([[0, 0]]), max_new_tokens=2)


def test_sampling_is_reproducible_with_a_seed(toy):
    # The toy's logits are one-hot (0/1): sampling at high temperature picks other tokens too.
    kwargs = dict(max_new_tokens=12, do_sample=True, temperature=5.0, top_k=0, eos_token_id=None)
    first = toy.generate([[1, 2, 3]], seed=11, **kwargs)
    np.testing.assert_array_equal(first, toy.generate([[1, 2, 3]], seed=11, **kwargs))
    assert not np.array_equal(first, expected_generation([[1, 2, 3]], VOCAB, 12))


def test_one_bucket_compiles_two_graphs_once(monkeypatch):
    """Prompts of different lengths in one bucket share the prompt graph and the one-token graph."""
    api = pytest.importorskip("mindspore.graph.api")
    executor = getattr(api, "_JitExecutor", None)
    if executor is None or not hasattr(executor, "compile"):
        pytest.skip("this MindSpore has no _JitExecutor.compile to observe")
    phases = []
    original = executor.compile

    def compile(self, *args, **kwargs):
        phase = original(self, *args, **kwargs)
        phases.append(phase)
        return phase

    monkeypatch.setattr(executor, "compile", compile)
    toy = ToyCounterLM(ToyConfig(vocab_size=VOCAB))
    for length, new in ((3, 5), (9, 7), (14, 2)):
        prompt = [[1 + i % (VOCAB - 1) for i in range(length)]]  # ids inside the vocabulary
        got = toy.generate(prompt, max_new_tokens=new, eos_token_id=None)
        np.testing.assert_array_equal(got, expected_generation(prompt, VOCAB, new))
    # One prompt call per generate, then greedy decode calls of TOKENS_PER_CALL tokens each.
    decode_calls = sum(-(-(new - 1) // TOKENS_PER_CALL) for new in (5, 7, 2))
    assert len(phases) == 3 + decode_calls
    assert len(set(phases)) == 2  # compiled: the prompt graph and the decode graph, once each
    phases.clear()
    toy.generate([[4, 4, 4, 4, 4]], max_new_tokens=9, eos_token_id=None)  # a later call: nothing new
    assert len(phases) == 1 + 2 and len(set(phases)) == 2
    # Sampling adds one decode graph (top-k is part of it); a new temperature or seed compiles nothing.
    for temperature, seed in ((2.0, 1), (0.5, 2), (0.5, 3)):
        toy.generate([[4, 4, 4]], max_new_tokens=5, do_sample=True, temperature=temperature, top_k=0, seed=seed)
    assert len(set(phases)) == 3


@pytest.mark.parametrize("top_k", [0, 4])
def test_sampling_in_the_graph_equals_the_host_choice(toy, top_k):
    """Sampling inside the decode graph (3 steps a call) draws what the host path draws from the same seed."""
    kwargs = dict(max_new_tokens=16, do_sample=True, temperature=3.0, top_k=top_k, eos_token_id=None,
                  pad_token_id=0)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    host = toy.generate(prompts, seed=5, choice_in_graph=False, **kwargs)
    graph = toy.generate(prompts, seed=5, tokens_per_call=3, **kwargs)
    np.testing.assert_array_equal(graph, host)
    assert not np.array_equal(host, expected_generation(prompts, VOCAB, 16))  # it did sample
    assert not np.array_equal(host, toy.generate(prompts, seed=6, choice_in_graph=False, **kwargs))
    # Another temperature is an argument of the same decode graph: equal to the host again.
    cooler = dict(kwargs, temperature=0.5)
    np.testing.assert_array_equal(toy.generate(prompts, seed=5, tokens_per_call=3, **cooler),
                                  toy.generate(prompts, seed=5, choice_in_graph=False, **cooler))


@pytest.mark.parametrize("tokens_per_call", [1, 3])
def test_tokens_per_call_and_host_choice_agree(toy, tokens_per_call):
    """Greedy chosen in the graph, several steps a call (EOS inside a call), equals the reference; so does
    the host path (a repetition penalty of 1 + tiny keeps the one-hot argmax, but goes through the host)."""
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6, 5, 3], [5]]
    free = expected_generation(prompts, VOCAB, 10)
    eos = int(free[0, 7 + 4])
    expected = expected_generation(prompts, VOCAB, 10, eos=eos, pad=0)
    got = toy.generate(prompts, max_new_tokens=10, eos_token_id=eos, pad_token_id=0,
                       tokens_per_call=tokens_per_call)
    np.testing.assert_array_equal(got, expected)
    host = toy.generate(prompts, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, repetition_penalty=1.0001)
    np.testing.assert_array_equal(host, expected)


def test_generation_config_refuses_what_every_comparison_lets_through():
    """NaN passes `<= 0` and `True` is an int: each is refused by name (issue 16)."""
    for kwargs, field in ((dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
                          (dict(top_p=float("nan")), "top_p"), (dict(max_new_tokens=True), "max_new_tokens"),
                          (dict(max_new_tokens=3.0), "max_new_tokens"), (dict(max_length=-2), "max_length"),
                          (dict(top_k=True), "top_k"), (dict(seed="x"), "seed"), (dict(do_sample="no"), "do_sample"),
                          (dict(eos_token_id=[2, "x"]), "eos_token_id")):
        with pytest.raises(ConfigError, match=field):
            GenerationConfig().update(**kwargs)
    # max_length alone is the total length; with max_new_tokens too, max_new_tokens counts (transformers).
    assert GenerationConfig().update(max_length=12).max_new_tokens is None
    assert GenerationConfig().update(max_length=12, max_new_tokens=3).max_new_tokens == 3


def test_out_of_vocabulary_ids_are_refused_before_the_graph(toy):
    with pytest.raises(ConfigError, match=f"token id {VOCAB} \\(row 0, position 1\\).*\\[0, {VOCAB}\\)"):
        toy.generate([[1, VOCAB, 2]], max_new_tokens=2)
    np.testing.assert_array_equal(toy.generate([[1, 2]], max_length=6, eos_token_id=None),
                                  expected_generation([[1, 2]], VOCAB, 4))
