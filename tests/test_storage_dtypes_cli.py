"""The real-size paths at tiny dims, through the commands a user types: weights converted to bfloat16 or
int8 (`mfcore convert --dtype bf16 | --quantize int8`) predict and chat in their storage dtype, with
the same tokens as `generate` on the model loaded from the same directory."""
import argparse
import io
import json
import subprocess
import sys

import numpy as np
import pytest

import mindspore
import mfcore
from mfcore.cli import main
from mfcore.cli.chat import run_chat
from mfcore.kernels import decode_kernels, status

STORAGE = {"bf16": (["--dtype", "bf16"], mindspore.bfloat16), "int8": (["--quantize", "int8"], mindspore.int8)}


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fp32") / "model"
    model = mfcore.AutoModelForCausalLM.from_pretrained("llama3-tiny")
    rng = np.random.default_rng(0)
    for name, param in model.parameters_and_names():  # norms away from 1 so that a lost norm shows
        if param.ndim == 1:
            param.set_data(mindspore.Tensor((1 + 0.3 * rng.standard_normal(param.shape)).astype(np.float32)))
    model.save_pretrained(directory)
    return directory


@pytest.fixture
def converted(fp32_dir, tmp_path, testdata, request):
    if decode_kernels() is None:
        pytest.skip(f"mfcore's CPU kernels are off here: {status()}")
    flags, dtype = STORAGE[request.param]
    directory = tmp_path / request.param
    assert main(["convert", str(fp32_dir), str(directory), "--no-progress", *flags]) == 0
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(testdata / "llama3" / "tokenizer.model"))
    tokenizer.save_pretrained(directory)
    model = mfcore.AutoModelForCausalLM.from_pretrained(directory)
    assert model.model.layers[0].attention.wq.weight.dtype == dtype  # kept in its storage dtype
    return directory, model, tokenizer


@pytest.mark.parametrize("converted", ["bf16", "int8"], indirect=True)
def test_predict_in_the_storage_dtype(converted, tmp_path):
    directory, model, tokenizer = converted
    prompts = ["Once upon a time", "Hello"]
    result = subprocess.run(
        [sys.executable, "-m", "mfcore", "run", "--load_checkpoint", str(directory), "--run_mode", "predict",
         "--predict_data", *prompts, "--max_new_tokens", "6", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "predict_results.jsonl").read_text().splitlines()]
    ids = [tokenizer.encode(p) for p in prompts]
    width = max(len(i) for i in ids)
    out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert [r["output_ids"] for r in rows] == [[int(t) for t in row[width:]] for row in out]


@pytest.mark.parametrize("converted", ["bf16", "int8"], indirect=True)
def test_chat_in_the_storage_dtype(converted, capsys):
    directory, model, tokenizer = converted
    args = argparse.Namespace(model=None, config=None, load_checkpoint=str(directory), tokenizer=None,
                              register_path=None, system=None, max_new_tokens=5, do_sample=None,
                              temperature=None, top_k=None, top_p=None, repetition_penalty=None, seed=None)
    assert run_chat(args, stdin=io.StringIO("Hi there\n")) == 0
    printed = capsys.readouterr().out
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], add_generation_prompt=True)
    stops = [128001, 128009]
    new = [int(t) for t in model.generate([prompt], max_new_tokens=5, eos_token_id=stops)[0][len(prompt):]]
    while new and new[-1] in stops + [model.generation_config.pad_token_id]:
        new.pop()
    assert printed == tokenizer.decode(new, skip_special_tokens=True) + "\n"
