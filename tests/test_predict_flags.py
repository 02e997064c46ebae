"""`mfcore run --predict_data A B ...` batches the prompts and honours the generation flags."""
import json
import subprocess
import sys

import mfcore


def test_batched_prompts_with_sampling_flags_equal_generate(tmp_path, testdata):
    directory = tmp_path / "model"
    model = mfcore.AutoModelForCausalLM.from_pretrained("llama2-tiny")
    model.save_pretrained(directory)
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama2-7b", vocab_file=str(testdata / "llama2" / "tokenizer.model"))
    tokenizer.save_pretrained(directory)
    prompts = ["Once upon a time", "Hello"]
    flags = dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3)
    result = subprocess.run(
        [sys.executable, "-m", "mfcore", "run", "--load_checkpoint", str(directory), "--run_mode", "predict",
         "--predict_data", *prompts, "--do_sample", "true", "--seed", "7", "--max_new_tokens", "6",
         "--output_dir", str(tmp_path / "out"), *[f"--{k}={v}" for k, v in flags.items()]],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out" / "predict_results.jsonl").read_text().splitlines()]
    ids = [tokenizer.encode(p) for p in prompts]
    out = model.generate(ids, max_new_tokens=6, do_sample=True, seed=7, **flags)
    width = max(len(i) for i in ids)
    assert [r["output_ids"] for r in rows] == [[int(t) for t in row[width:]] for row in out]
    greedy = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert [r["output_ids"] for r in rows] != [[int(t) for t in row[width:]] for row in greedy]
