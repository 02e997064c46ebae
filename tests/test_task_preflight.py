"""`mfcore run` reports every configuration problem of a task at once, before MindSpore is imported, and
refuses --options keys that are misspellings of keys mfcore reads (issue 16)."""
import subprocess
import sys
import textwrap
import time

import pytest

from mfcore.cli import build_parser
from mfcore.errors import ConfigError

BAD_TASK = """
run_mode: train
model:
  model_config:
    type: LlamaConfig
    vocab_size: 100
    hidden_size: 64
    num_layers: 2
    num_heads: 3
processor:
  tokenizer:
    type: LlamaTokenizer
    vocab_file: {missing}/tokenizer.model
"""


def test_all_problems_together_without_mindspore_in_a_second(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(BAD_TASK.format(missing=tmp_path / "nowhere"))
    code = textwrap.dedent(f"""
        import sys, time
        start = time.perf_counter()
        from mfcore.cli import main
        status = main(["run", "--config", {str(path)!r}])
        print("status", status, "seconds", time.perf_counter() - start, "mindspore", "mindspore" in sys.modules)
    """)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    assert "Traceback" not in result.stderr, result.stderr
    assert "task: 3 problems" in result.stderr
    for problem in ("train_dataset.data_loader.dataset_dir: missing", "model.model_config.num_heads: 3 must divide",
                    "processor.tokenizer.vocab_file:"):
        assert problem in result.stderr, result.stderr
    words = result.stdout.split()
    assert words[1] == "2" and words[5] == "False", result.stdout  # exit 2, MindSpore never imported
    assert float(words[3]) < 1.0 or wall < 3.0, (words[3], wall)  # measured: 0.2 s in process, 0.5 s wall


def _read(argv):
    from mfcore.tasks.spec import read_task

    return read_task(build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize("option, suggestion", [("trainer.max_stepz=3", "trainer.max_steps"),
                                                ("runner_config.epochz=2", "runner_config.epochs"),
                                                ("optimizer.learning_rat=1e-4", "optimizer.learning_rate")])
def test_a_misspelt_option_is_refused_with_the_close_match(tmp_path, option, suggestion):
    data = tmp_path / "train.mindrecord"
    with pytest.raises(ConfigError, match=f"--options {option.split('=')[0]}: no such key; did you mean "
                                          f"{suggestion}\\?"):
        _read(["--model", "llama2-tiny", "--run_mode", "train", "--train_dataset_dir", str(data),
               "--options", option])
    spec = _read(["--model", "llama2-tiny", "--run_mode", "train", "--train_dataset_dir", str(data),
                  "--options", "trainer.max_steps=3"])
    assert spec.training.max_steps == 3
