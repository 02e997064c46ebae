"""End to end with the real pieces: `mfcore data` + `mfcore run` on the tiny Llama network and real tokenizers.

A SentencePiece model is trained here on mfcore's generated corpus (vocab 320, seconds), wrapped in
mf-llama2's LlamaTokenizer, and used for: pretraining (loss must fall clearly), a real kill at a
checkpoint and `--resume_training` (losses equal to the uninterrupted run, bit for bit), LoRA
fine-tuning on Alpaca data whose answer the model must then generate in `predict` (so predict
really uses the trained weights), eval, and the error paths.
"""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfcore.cli import demo_corpus
from mfcore.cli import main
from mfcore.data import read_mindrecord
from mfcore.data.formats import AlpacaFormat

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SEQ = 32
STEPS = 60
ANSWER = "The blue kite is in the garden."


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    return out.out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    from mf_llama2.tokenization_llama import LlamaTokenizer

    root = tmp_path_factory.mktemp("train")
    docs = demo_corpus.documents(700, seed=0)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_writer=model, vocab_size=320,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    (root / "sp.model").write_bytes(model.getvalue())
    tokenizer_dir = root / "tokenizer"
    LlamaTokenizer(vocab_file=str(root / "sp.model")).save_pretrained(tokenizer_dir)
    with open(root / "corpus.jsonl", "w") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}) + "\n")
    return root, tokenizer_dir


def pretrain_yaml(root: Path, name: str, **trainer) -> Path:
    task = yaml.safe_load((EXAMPLES / "llama2-tiny" / "pretrain.yaml").read_text())
    task["output_dir"] = str(root / name)
    task["trainer"].update({"max_steps": STEPS, "progress": False, **trainer})
    task["runner_config"]["batch_size"] = 8
    task["train_dataset"]["data_loader"]["dataset_dir"] = str(root / "train.mindrecord")
    task["callbacks"][1].update(save_checkpoint_steps=10, keep_checkpoint_max=3)
    task["model"]["model_config"].update(vocab_size=320, seq_length=SEQ)
    task["processor"]["tokenizer"]["vocab_file"] = str(root / "sp.model")
    task["do_eval"] = True
    task["eval_dataset"] = {"data_loader": {"type": "MindDataset", "dataset_dir": str(root / "eval.mindrecord")}}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


@pytest.fixture(scope="module")
def pretrained(work):
    root, tokenizer_dir = work
    for split, docs in (("train", "corpus.jsonl"), ("eval", "eval.jsonl")):
        if split == "eval":
            with open(root / docs, "w") as handle:
                for doc in demo_corpus.documents(40, seed=123):
                    handle.write(json.dumps({"text": doc}) + "\n")
        code = main(["data", "--format", "jsonl", "--input", str(root / docs), "--tokenizer", str(tokenizer_dir),
                     "--seq-length", str(SEQ), "--output", str(root / f"{split}.mindrecord"), "--quiet"])
        assert code == 0
    code = main(["run", "--config", str(pretrain_yaml(root, "pretrain"))])
    assert code == 0
    return root / "pretrain"


def losses(output_dir: Path):
    return [r["loss"] for r in map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_data_cli_packs_with_the_real_tokenizer(pretrained, work):
    root, tokenizer_dir = work
    from mf_llama2.tokenization_llama import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(tokenizer_dir)
    data = read_mindrecord(root / "train.mindrecord")
    stream = []
    for doc in demo_corpus.documents(700, seed=0):
        stream += [1] + tok.encode(doc, add_special_tokens=False) + [2]
    n = len(stream) // SEQ
    assert data["input_ids"].shape == (n, SEQ)
    np.testing.assert_array_equal(data["input_ids"].ravel(), np.array(stream[:n * SEQ], np.int32))
    np.testing.assert_array_equal(data["labels"], data["input_ids"])


def test_pretraining_drives_the_loss_down(pretrained):
    values = losses(pretrained)
    assert len(values) == STEPS
    assert np.mean(values[-5:]) < 0.5 * np.mean(values[:5]), values
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "eval_loss" in r][-1]
    assert final["eval_perplexity"] < 0.25 * np.exp(np.mean(values[:5]))
    assert {"config.json", "mindspore_model.safetensors", "tokenizer_config.json"} <= \
        {p.name for p in (pretrained / "model").iterdir()}
    kept = sorted(p.name for p in (pretrained / "checkpoint" / "rank_0").iterdir())
    assert kept == ["step_000040", "step_000050", "step_000060"]


def test_killed_run_resumes_exactly(pretrained, work):
    """A real SIGKILL once the step-30 checkpoint exists; --resume_training reaches step 60 with the
    same losses as the uninterrupted run."""
    root, _ = work
    config = pretrain_yaml(root, "killed")
    out = root / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "mfcore", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    target = out / "checkpoint" / "rank_0" / "step_000030" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    steps_done = len(losses(out))
    assert 30 <= steps_done < STEPS
    saved = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoint" / "rank_0").iterdir()
                   if (p / "trainer_state.json").exists())
    assert saved and saved[-1] >= 30
    code = main(["run", "--config", str(config), "--resume_training", "true"])
    assert code == 0
    assert losses(out) == losses(pretrained)  # bit for bit, steps 1..60


def alpaca_records():
    things = [f"the {c} {t}" for c in demo_corpus.COLORS for t in demo_corpus.THINGS]
    return [{"instruction": f"Where is {thing}?", "input": "", "output": ANSWER} for thing in things]


@pytest.fixture(scope="module")
def finetuned(pretrained, work):
    root, _ = work
    (root / "alpaca.json").write_text(json.dumps(alpaca_records()))
    assert main(["data", "--format", "alpaca", "--input", str(root / "alpaca.json"), "--tokenizer",
                 str(pretrained / "model"), "--seq-length", str(SEQ), "--output", str(root / "alpaca.mindrecord"),
                 "--quiet"]) == 0
    task = yaml.safe_load((EXAMPLES / "llama2-tiny" / "finetune_alpaca.yaml").read_text())
    task["output_dir"] = str(root / "lora")
    task["load_checkpoint"] = str(pretrained / "model")
    task["trainer"].update(max_steps=40, progress=False)
    task["lr_schedule"]["learning_rate"] = 1e-2
    task["train_dataset"]["data_loader"]["dataset_dir"] = str(root / "alpaca.mindrecord")
    task["model"]["model_config"]["pet_config"]["target_modules"] = ".*wq|.*wk|.*wv|.*wo|.*w1|.*w2|.*w3"
    path = root / "lora.yaml"
    path.write_text(yaml.safe_dump(task))
    assert main(["run", "--config", str(path)]) == 0
    return root / "lora"


def test_alpaca_data_masks_the_prompt(finetuned, work):
    root, _ = work
    from mf_llama2.tokenization_llama import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(root / "tokenizer")
    ids, labels = [], []
    for record in alpaca_records():
        prompt = [1] + tok.encode(AlpacaFormat.prompt_no_input.format(instruction=record["instruction"]),
                                  add_special_tokens=False)
        answer = tok.encode(ANSWER, add_special_tokens=False) + [2]
        ids += prompt + answer
        labels += [-100] * len(prompt) + answer
    data = read_mindrecord(root / "alpaca.mindrecord")
    n = len(ids) // SEQ
    assert data["input_ids"].shape == (n, SEQ)
    np.testing.assert_array_equal(data["input_ids"].ravel(), ids[:n * SEQ])
    np.testing.assert_array_equal(data["labels"].ravel(), labels[:n * SEQ])


def test_lora_saves_only_the_adapter_and_the_merged_model(finetuned):
    adapter = {p.name for p in (finetuned / "adapter").iterdir()}
    assert adapter == {"adapter_config.json", "adapter_model.safetensors"}
    import mindspore as ms

    names = ms.load_checkpoint(str(finetuned / "adapter" / "adapter_model.safetensors"), format="safetensors")
    assert names and all("mindpet_delta_lora" in n for n in names)
    assert len(names) == 2 * 7 * 2  # 7 projections x 2 layers, A and B each
    assert (finetuned / "model" / "mindspore_model.safetensors").exists()  # merge_lora: true in the example


def predict(capsys, checkpoint, prompt, tmp_path):
    # The Alpaca prompt (~100 tokens) is longer than the SEQ-token context the tiny model trained at (its data
    # kept each example's last SEQ tokens); generation refuses to run past the configured context, so the
    # predict run widens it (rotary positions extend; the answer follows the prompt's tail, as in training).
    out = run_cli(["run", "--run_mode", "predict", "--load_checkpoint", checkpoint, "--predict_data", prompt,
                   "--max_new_tokens", "12", "--output_dir", tmp_path, "--options",
                   "model.model_config.seq_length=128", "model.model_config.max_position_embedding=128"], capsys)
    result = json.loads((Path(tmp_path) / "predict_results.jsonl").read_text().splitlines()[0])
    assert out.startswith(prompt)
    return result["text"], out


def test_predict_after_finetune_uses_the_trained_weights(finetuned, pretrained, capsys, tmp_path):
    prompt = AlpacaFormat.prompt_no_input.format(instruction="Where is the white ball?")
    adapted, streamed = predict(capsys, finetuned / "adapter", prompt, tmp_path / "a")
    assert adapted.startswith(ANSWER), adapted
    assert ANSWER in streamed  # streamed text is the same answer
    merged, _ = predict(capsys, finetuned / "model", prompt, tmp_path / "m")
    assert merged == adapted
    base, _ = predict(capsys, pretrained / "model", prompt, tmp_path / "b")
    assert not base.startswith(ANSWER)


def test_eval_mode_reports_loss_and_perplexity(pretrained, work, capsys):
    root, _ = work
    out = run_cli(["run", "--run_mode", "eval", "--load_checkpoint", pretrained / "model", "--eval_dataset_dir",
                   root / "eval.mindrecord", "--output_dir", root / "eval_out"], capsys)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["eval_perplexity"] == pytest.approx(np.exp(result["eval_loss"]))
    assert result["PerplexityMetric"] == {"loss": result["eval_loss"], "PPL": result["eval_perplexity"]}  # MindFormers' name
    final = [json.loads(x) for x in (pretrained / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x][-1]
    assert result["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


def test_a_preset_alone_predicts(testdata, capsys, tmp_path):
    from mf_llama2.tokenization_llama import LlamaTokenizer

    tokenizer_dir = tmp_path / "llama2_tokenizer"  # the released 32000-piece tokenizer the preset's vocab fits
    LlamaTokenizer(vocab_file=str(testdata / "llama2" / "tokenizer.model")).save_pretrained(tokenizer_dir)
    out = run_cli(["run", "--model", "llama2-tiny", "--predict_data", "Anna saw", "--tokenizer", tokenizer_dir,
                   "--max_new_tokens", "5", "--output_dir", tmp_path], capsys)
    assert out.startswith("Anna saw")
    result = json.loads((tmp_path / "predict_results.jsonl").read_text())
    assert len(result["output_ids"]) == 5


def test_a_real_size_preset_without_weights_says_how_to_convert(capsys, tmp_path):
    code = main(["run", "--model", "llama2-7b", "--predict_data", "hi", "--output_dir", str(tmp_path)])
    assert code == 2
    assert "mfcore convert" in capsys.readouterr().err


def test_predict_without_weights_is_a_clear_error(work, capsys, tmp_path):
    root, _ = work
    code = main(["run", "--config", str(pretrain_yaml(root, "noweights")), "--run_mode", "predict",
                 "--predict_data", "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert "load_checkpoint: missing; run_mode predict needs trained weights" in err and "mfcore convert" in err


def test_bfloat16_training_on_cpu_is_refused_by_name(work, capsys):
    root, _ = work
    code = main(["run", "--config", str(pretrain_yaml(root, "bf16")), "--options",
                 "model.model_config.compute_dtype=bfloat16"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.model_config.compute_dtype: bfloat16 computation is not available on MindSpore's CPU" in err


def test_llama3_tiny_examples_pretrain_then_predict(testdata, tmp_path, capsys):
    """The shipped Llama 3 example tasks run as they are (a few steps), with the released tokenizer."""
    texts = demo_corpus.documents(30, seed=7)
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main(["data", "--format", "jsonl", "--input", str(tmp_path / "corpus.jsonl"), "--tokenizer",
                 str(testdata / "llama3" / "tokenizer.model"), "--tokenizer-type", "Llama3Tokenizer",
                 "--seq-length", "16", "--output", str(tmp_path / "l3.mindrecord"), "--quiet"]) == 0
    out_dir = tmp_path / "l3"
    run_cli(["run", "--config", EXAMPLES / "llama3-tiny" / "pretrain.yaml", "--train_dataset_dir",
             tmp_path / "l3.mindrecord", "--output_dir", out_dir, "--batch_size", "2", "--options",
             "trainer.max_steps=2", "trainer.progress=false", "model.model_config.seq_length=16",
             f"processor.tokenizer.vocab_file={testdata / 'llama3' / 'tokenizer.model'}"], capsys)
    config = json.loads((out_dir / "model" / "config.json").read_text())
    assert (config["vocab_size"], config["theta"], config["n_kv_heads"]) == (128256, 500000.0, 2)
    assert json.loads((out_dir / "model" / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "Llama3Tokenizer"
    out = run_cli(["run", "--config", EXAMPLES / "llama3-tiny" / "predict.yaml", "--load_checkpoint",
                   out_dir / "model", "--output_dir", tmp_path / "p", "--max_new_tokens", "3",
                   "--predict_data", "Emma saw"], capsys)
    assert out.startswith("Emma saw")
    result = json.loads((tmp_path / "p" / "predict_results.jsonl").read_text())
    assert len(result["output_ids"]) == 3
    # chat fine-tune with the Llama 3 template (LoRA with dropout), as examples/llama3-tiny/finetune_chat.yaml
    chat = [{"messages": [{"role": "user", "content": f"Where is {t}?"}, {"role": "assistant", "content": t}]}
            for t in texts]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chat))
    assert main(["data", "--format", "chat", "--template", "llama3-chat", "--input", str(tmp_path / "chat.jsonl"),
                 "--tokenizer", str(out_dir / "model"), "--seq-length", "16", "--output",
                 str(tmp_path / "chat.mindrecord"), "--quiet"]) == 0
    run_cli(["run", "--config", EXAMPLES / "llama3-tiny" / "finetune_chat.yaml", "--load_checkpoint", out_dir / "model",
             "--train_dataset_dir", tmp_path / "chat.mindrecord", "--output_dir", tmp_path / "chat", "--batch_size",
             "2", "--gradient_accumulation_steps", "1", "--options", "trainer.max_steps=2", "trainer.progress=false"],
            capsys)
    assert {p.name for p in (tmp_path / "chat" / "adapter").iterdir()} == {"adapter_config.json",
                                                                           "adapter_model.safetensors"}


def test_batched_predict_equals_one_prompt_at_a_time(pretrained, capsys, tmp_path):
    prompts = ["Anna saw a red", "The dog"]
    common = ["run", "--run_mode", "predict", "--load_checkpoint", pretrained / "model", "--max_new_tokens", "6"]
    out = run_cli(common + ["--predict_data", *prompts, "--predict_batch_size", "2", "--output_dir", tmp_path / "b"],
                  capsys)
    batched = [json.loads(x) for x in (tmp_path / "b" / "predict_results.jsonl").read_text().splitlines()]
    run_cli(common + ["--predict_data", *prompts, "--output_dir", tmp_path / "s"], capsys)
    single = [json.loads(x) for x in (tmp_path / "s" / "predict_results.jsonl").read_text().splitlines()]
    assert [r["output_ids"] for r in batched] == [r["output_ids"] for r in single]
    assert all(0 < len(r["output_ids"]) <= 6 for r in batched)
    assert out.splitlines()[:2] == [p + r["text"] for p, r in zip(prompts, batched)]


def test_float16_training_with_loss_scaling(pretrained, work, capsys):
    """compute_dtype float16 (fp32 master weights) trains with dynamic loss scaling; its first loss is the
    fp32 run's first loss to fp16 precision (same seed, same batch)."""
    root, _ = work
    config = pretrain_yaml(root, "fp16")
    run_cli(["run", "--config", config, "--options", "trainer.max_steps=3", "model.model_config.compute_dtype=float16"],
            capsys)
    records = [json.loads(x) for x in (root / "fp16" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["skipped"] for r in records] == [False, False, False]
    assert records[0]["loss_scale"] == 65536.0
    assert records[0]["loss"] == pytest.approx(losses(pretrained)[0], rel=2e-3)
    assert json.loads((root / "fp16" / "model" / "config.json").read_text())["compute_dtype"] == "float16"
