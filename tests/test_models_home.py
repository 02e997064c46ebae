"""`--model PRESET` finds weights converted into $MFCORE_HOME/models/PRESET; without them it fails at once."""
import json
import subprocess
import sys

import mfcore


def run_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "mfcore", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_real_preset_without_weights_fails_at_once_saying_how_to_convert(tmp_path, monkeypatch):
    import os

    env = dict(os.environ, MFCORE_HOME=str(tmp_path / "home"))
    result = run_cli("run", "--model", "llama3-8b", "--predict_data", "hello", env=env)
    assert result.returncode != 0
    assert "mfcore convert" in result.stderr and "models/llama3-8b" in result.stderr
    assert "Traceback" not in result.stderr


def test_preset_loads_weights_from_mfcore_home(tmp_path, monkeypatch, testdata):
    import os

    home = tmp_path / "home"
    target = home / "models" / "llama2-7b"
    # Stand-in weights with the preset's name but tiny dimensions: what matters is where they are found.
    model = mfcore.AutoModelForCausalLM.from_pretrained("llama2-tiny")
    model.save_pretrained(target)
    tokenizer = mfcore.AutoTokenizer.from_pretrained("llama2-7b", vocab_file=str(testdata / "llama2" / "tokenizer.model"))
    tokenizer.save_pretrained(target)
    monkeypatch.setenv("MFCORE_HOME", str(home))
    assert mfcore.AutoModelForCausalLM.from_pretrained("llama2-7b").config.hidden_size == 64
    assert mfcore.AutoTokenizer.from_pretrained("llama2-7b").encode("Hello world") == tokenizer.encode("Hello world")

    env = dict(os.environ, MFCORE_HOME=str(home))
    result = run_cli("run", "--model", "llama2-7b", "--predict_data", "Hello", "--max_new_tokens", "5",
                     "--output_dir", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "out" / "predict_results.jsonl").read_text().splitlines()[0])
    ids = tokenizer.encode("Hello")
    assert row["output_ids"] == [int(t) for t in model.generate([ids], max_new_tokens=5, do_sample=False)[0][len(ids):]]
