"""MindFormers task YAMLs (examples/mindformers, written from the published key layout) run with
`mfcore run --config` after only the checkpoint, tokenizer and data paths change. The tests shrink the
model dimensions to tiny ones, as the YAML would be edited for a tiny checkpoint."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import mfcore
REPO_ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = REPO_ROOT / "examples" / "mindformers"


def mfcore_cli(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "mfcore", *args], capture_output=True, text=True, cwd=cwd,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def shrink(task, **dims):
    task["model"]["model_config"].update(dims)
    return task


def test_predict_llama3_1_8b_yaml(tmp_path, testdata):
    checkpoint = tmp_path / "llama3-tiny"
    model = mfcore.AutoModelForCausalLM.from_pretrained("llama3-tiny")
    model.save_pretrained(checkpoint)
    task = yaml.safe_load((EXAMPLES / "predict_llama3_1_8b.yaml").read_text())
    task["load_checkpoint"] = str(checkpoint)
    task["processor"]["tokenizer"]["vocab_file"] = str(testdata / "llama3" / "tokenizer.model")
    shrink(task, seq_length=256, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=192)
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))

    result = mfcore_cli("run", "--config", str(tmp_path / "task.yaml"), "--predict_data", "Hello world", "Hi",
                        cwd=tmp_path)
    assert "using Llama3Tokenizer from plugin 'llama3'" in result.stderr  # auto_register of the research file
    assert "running on CPU instead" in result.stderr                       # device_target: Ascend
    rows = [json.loads(line) for line in (tmp_path / "output" / "predict_results.jsonl").read_text().splitlines()]
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama3-8b", vocab_file=str(testdata / "llama3" / "tokenizer.model"))
    # The YAML stores parameters in bfloat16 (param_init_type): the same weights, rounded as predict loads them.
    model = mfcore.AutoModelForCausalLM.from_pretrained(checkpoint, dtype="bfloat16")
    for row, prompt in zip(rows, ["Hello world", "Hi"]):
        ids = tokenizer.encode(prompt)
        # The YAML's sampling keys are honoured: do_sample False (greedy), max_decode_length 512 in total.
        expected = model.generate([ids], do_sample=False, max_new_tokens=len(row["output_ids"]))[0][len(ids):]
        assert row["output_ids"] == [int(t) for t in expected]
        assert row["prompt"] == prompt


def test_finetune_llama2_7b_yaml_then_predict_uses_the_trained_weights(tmp_path, testdata):
    vocab = testdata / "llama2" / "tokenizer.model"
    base = tmp_path / "llama2-tiny"
    mfcore.AutoModelForCausalLM.from_pretrained("llama2-tiny").save_pretrained(base)
    records = [{"instruction": f"Name a colour number {i}.", "input": "", "output": f"Colour {i} is blue."}
               for i in range(12)]
    (tmp_path / "alpaca.json").write_text(json.dumps(records))
    mfcore_cli("data", "--format", "alpaca", "--input", str(tmp_path / "alpaca.json"), "--tokenizer", str(vocab),
               "--tokenizer-type", "LlamaTokenizer", "--seq-length", "64", "--output", str(tmp_path / "alpaca.mindrecord"),
               "--quiet", cwd=tmp_path)

    task = yaml.safe_load((EXAMPLES / "finetune_llama2_7b.yaml").read_text())
    task["load_checkpoint"] = str(base)
    task["train_dataset"]["data_loader"]["dataset_dir"] = str(tmp_path / "alpaca.mindrecord")
    task["processor"]["tokenizer"]["vocab_file"] = str(vocab)
    shrink(task, seq_length=64, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=172)
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(task))
    mfcore_cli("run", "--config", str(tmp_path / "finetune.yaml"), cwd=tmp_path)
    trained = tmp_path / "output" / "model"
    assert (trained / "config.json").exists()

    before = mfcore.AutoModelForCausalLM.from_pretrained(base)
    after = mfcore.AutoModelForCausalLM.from_pretrained(trained)
    names = [p.name for p in after.get_parameters()]
    changed = [n for n, a, b in zip(names, after.get_parameters(), before.get_parameters())
               if not np.array_equal(a.asnumpy(), b.asnumpy())]
    assert changed, "finetuning changed no weight"

    result = mfcore_cli("run", "--config", str(tmp_path / "finetune.yaml"), "--run_mode", "predict",
                        "--load_checkpoint", str(trained), "--predict_data", "Name a colour", cwd=tmp_path)
    row = json.loads((tmp_path / "output" / "predict_results.jsonl").read_text().splitlines()[0])
    tokenizer = mfcore.AutoTokenizer.from_pretrained(trained)
    ids = tokenizer.encode("Name a colour")
    expected = after.generate([ids], do_sample=False, max_new_tokens=len(row["output_ids"]))[0][len(ids):]
    assert row["output_ids"] == [int(t) for t in expected]
