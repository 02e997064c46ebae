"""Bad input gets a clear error and leaves everything usable (issue 16): generate() requests on llama2-tiny.

Without the host-side checks, one out-of-vocabulary id fed to the compiled graph breaks every later
generate() of the process ("Invalid output number for flatten stub output nodes"); the test asserts the
good call after the bad one still returns the same tokens.
"""
import math

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
