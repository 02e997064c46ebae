"""Parity of mf-llama2's LlamaForCausalLM with Hugging Face transformers (the independent reference).

Each tiny config is built in transformers (fp32, eager attention), its weights randomised (norm
weights too, so a wrong norm shows), saved with save_pretrained (safetensors) and loaded with our
from_pretrained; logits, loss and greedy generation must then agree.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mindspore  # noqa: E402
from mindspore import Tensor  # noqa: E402

from mfcore import AutoModelForCausalLM  # noqa: E402
from mfcore.generation.decoding import _step_function, bucket_length  # noqa: E402

CONFIGS = {
    "mha-untied-theta1e4": dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0,
                                tie_word_embeddings=False),
    "gqa-tied-theta5e5": dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=8, num_key_value_heads=2, rope_theta=500000.0,
                              tie_word_embeddings=True),
    "gqa-llama3-scaling": dict(vocab_size=89, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
                               num_attention_heads=6, num_key_value_heads=3, rope_theta=500000.0,
                               rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                 high_freq_factor=4.0, original_max_position_embeddings=32),
                               tie_word_embeddings=False),
    "odd-mqa-tied-scaled": dict(vocab_size=61, hidden_size=40, intermediate_size=67, num_hidden_layers=3,
                                num_attention_heads=5, num_key_value_heads=1, rope_theta=10000.0,
                                rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0,
                                                  high_freq_factor=2.0, original_max_position_embeddings=16),
                                tie_word_embeddings=True),
}
NEW_TOKENS = 32
PARITY = {}  # config name -> max abs logits difference (printed by the last test, for the report)


def hf_config(values):
    values = dict(values)
    scaling = values.pop("rope_scaling", None)
    theta = values.pop("rope_theta")
    rope = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        values["rope_parameters"] = rope
    else:
        values["rope_theta"] = theta
        values["rope_scaling"] = scaling
    return transformers.LlamaConfig(initializer_range=0.06, rms_norm_eps=1e-5, attn_implementation="eager",
                                    **values)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    """(name, transformers model, our model loaded from the transformers directory)."""
    name = request.param
    torch.manual_seed(sum(map(ord, name)))
    hf = transformers.LlamaForCausalLM(hf_config(CONFIGS[name])).eval()
    with torch.no_grad():
        for param_name, param in hf.named_parameters():
            if "norm" in param_name:
                param.copy_(1.0 + 0.5 * torch.randn_like(param))
    directory = tmp_path_factory.mktemp(name)
    hf.save_pretrained(directory, safe_serialization=True)
    ours = AutoModelForCausalLM.from_pretrained(directory)
    ours.set_train(False)
    return name, hf, ours


def hf_logits(hf, ids, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask)}
        return hf(torch.tensor(ids), **kwargs).logits.numpy()


def hf_generate(hf, ids, mask=None, **kwargs):
    mask = np.ones_like(ids) if mask is None else mask
    with torch.no_grad():
        return hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                           max_new_tokens=NEW_TOKENS, pad_token_id=0, **kwargs).numpy()


def test_logits_match_transformers(pair):
    name, hf, ours = pair
    vocab = hf.config.vocab_size
    ids = np.random.default_rng(1).integers(0, vocab, (2, 19))
    logits = ours(Tensor(ids.astype(np.int32))).asnumpy()
    diff = float(np.abs(logits - hf_logits(hf, ids)).max())
    PARITY[name] = diff
    assert logits.shape == (2, 19, vocab)
    assert diff <= 1e-4


def test_logits_with_padding_mask_match_transformers(pair):
    _, hf, ours = pair
    ids = np.random.default_rng(2).integers(0, hf.config.vocab_size, (2, 11))
    mask = np.ones_like(ids)
    mask[1, :4] = 0  # row 1 left-padded
    ours_logits = ours(Tensor(ids.astype(np.int32)), attention_mask=Tensor(mask.astype(np.int32))).asnumpy()
    ref = hf_logits(hf, ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours_logits[real] - ref[real]).max() <= 1e-4


def test_loss_matches_transformers(pair):
    _, hf, ours = pair
    rng = np.random.default_rng(3)
    ids = rng.integers(0, hf.config.vocab_size, (3, 17))
    labels = ids.copy()
    labels[0, :5] = -100
    labels[2, 9:] = -100
    loss = float(ours(Tensor(ids.astype(np.int32)), labels=Tensor(labels.astype(np.int32))).asnumpy())
    with torch.no_grad():
        ref = hf(torch.tensor(ids), labels=torch.tensor(labels)).loss.item()
    assert abs(loss - ref) <= 1e-5

    # A loss mask counts only the marked tokens: the same as labelling the others -100.
    loss_mask = (rng.random(ids.shape) < 0.6).astype(np.int32)
    masked = float(ours(Tensor(ids.astype(np.int32)), loss_mask=Tensor(loss_mask)).asnumpy())
    with torch.no_grad():
        ref_masked = hf(torch.tensor(ids), labels=torch.tensor(np.where(loss_mask == 1, ids, -100))).loss.item()
    assert abs(masked - ref_masked) <= 1e-5


def test_greedy_generation_matches_transformers(pair):
    _, hf, ours = pair
    prompt = np.random.default_rng(4).integers(3, hf.config.vocab_size, (1, 7))
    expected = hf_generate(hf, prompt, eos_token_id=None, min_new_tokens=NEW_TOKENS)
    got = ours.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    assert got.shape == (1, 7 + NEW_TOKENS)
    np.testing.assert_array_equal(got, expected)


def test_batched_left_padded_generation_matches_one_by_one(pair):
    _, hf, ours = pair
    rng = np.random.default_rng(5)
    prompts = [list(rng.integers(3, hf.config.vocab_size, n)) for n in (3, 13, 8)]
    singles = [ours.generate([p], max_new_tokens=NEW_TOKENS, eos_token_id=None)[0] for p in prompts]
    batched = ours.generate(prompts, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0)
    width = max(map(len, prompts))
    mask = np.zeros((3, width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        mask[row, width - len(prompt):] = 1
        np.testing.assert_array_equal(batched[row, width - len(prompt):], singles[row])
        assert (batched[row, :width - len(prompt)] == 0).all()
    np.testing.assert_array_equal(batched, hf_generate(hf, batched[:, :width], mask, eos_token_id=None,
                                                       min_new_tokens=NEW_TOKENS))

    # Stop on EOS per row: make a token row 0 produces early the EOS; that row then pads, others go on.
    eos = int(singles[0][3 + 4])
    with_eos = ours.generate(prompts, max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(with_eos, hf_generate(hf, batched[:, :width], mask, eos_token_id=eos))
    first = list(with_eos[0, width:]).index(eos)
    assert first <= 4 and (with_eos[0, width + first + 1:] == 0).all()


def test_chunked_prefill_matches_transformers(pair):
    """A long left-padded prompt taken in chunks through the cache (4 chunks of 16 tokens, the rest masked
    padding) gives transformers' greedy continuation, and the same tokens as the prompt in one call."""
    _, hf, ours = pair
    rng = np.random.default_rng(9)
    prompts = [list(rng.integers(3, hf.config.vocab_size, n)) for n in (61, 40)]
    chunked = ours.generate(prompts, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
                            prefill_chunk_size=16)
    whole = ours.generate(prompts, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
                          prefill_chunk_size=0)
    np.testing.assert_array_equal(chunked, whole)
    mask = np.zeros((2, 61), dtype=np.int64)
    mask[0], mask[1, 21:] = 1, 1
    np.testing.assert_array_equal(chunked, hf_generate(hf, chunked[:, :61], mask, eos_token_id=None,
                                                       min_new_tokens=NEW_TOKENS))


def test_kv_cache_decode_matches_full_recompute(pair):
    """Logits of the incremental cache path at every step equal a full forward over the sequence.

    Shapes (3 rows, prompt 16, cache 64) are those generate uses for the batched test, so the compiled
    graphs are shared; the op-by-op path is checked on one config (it is slow).
    """
    name, hf, ours = pair
    vocab = hf.config.vocab_size
    rng = np.random.default_rng(6)
    length, steps, pads = 16, 12, (0, 3, 7)
    tokens = rng.integers(0, vocab, (3, length + steps))
    mask = np.ones_like(tokens)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    full = [ours(Tensor(tokens[row:row + 1, pad:].astype(np.int32))).asnumpy()[0] for row, pad in enumerate(pads)]
    for use_jit in (True, False) if name == "gqa-llama3-scaling" else (True,):
        step = _step_function(ours, use_jit)
        cache_length = bucket_length(length + NEW_TOKENS, minimum=32)
        caches = [mindspore.ops.zeros(shape, dtype) for shape, dtype in ours.kv_cache_shapes(3, cache_length)]
        fed, past = tokens[:, :length], 0
        for index in range(steps):
            inputs = ours.prepare_inputs_for_generation(fed, mask, cache_length, past)
            logits, *caches = step(*(Tensor(inputs[key]) for key in
                                     ("input_ids", "position_ids", "attention_bias", "cache_slot")), *caches)
            past += fed.shape[1]
            logits = logits.asnumpy()
            for row, pad in enumerate(pads):
                expected = full[row][past - 1 - pad]
                assert np.abs(logits[row] - expected).max() <= 1e-4, (use_jit, index, row)
            fed = tokens[:, past:past + 1]


def test_sharded_hf_directory_loads(tmp_path):
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config(CONFIGS["gqa-llama3-scaling"])).eval()
    hf.save_pretrained(tmp_path, max_shard_size="30KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = np.random.default_rng(8).integers(0, hf.config.vocab_size, (1, 10))
    assert np.abs(ours(Tensor(ids.astype(np.int32))).asnumpy() - hf_logits(hf, ids)).max() <= 1e-4


def test_report_parity_figures():
    """Prints the max abs logits difference of every config (run with -s to see it)."""
    if not PARITY:
        pytest.skip("parity tests did not run")
    for name, diff in sorted(PARITY.items()):
        print(f"parity {name}: max |logits - transformers| = {diff:.3e}")
    assert max(PARITY.values()) <= 1e-4
