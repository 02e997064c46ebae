"""`mfcore demo`: the whole workflow at tiny scale, on data mfcore writes itself (no download).

corpus -> tokenizer -> `mfcore data` (MindRecord) -> `mfcore run` (train a tiny Llama, ~1 minute on
2 CPU cores) -> checkpoint -> `mfcore convert` round trip (native -> Hugging Face -> native, compared
bit for bit) -> generate from a prompt, before and after training.

It runs the real commands (in-process, through the same CLI entry points a user types) and prints
each one with what it did. Needs a Llama plugin (mf-llama2) and mf-convert for the round trip.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from mfcore.errors import MfcoreError
from mfcore.plugins.manager import get_plugins
from mfcore.utils.atomic import atomic_write_text

from .demo_corpus import documents

PROMPTS = ["Anna saw a", "Every morning Ben"]
TASK_TEMPLATE = """\
# Written by `mfcore demo`: a MindFormers-layout task YAML for a tiny Llama.
seed: 0
output_dir: {output_dir}
run_mode: train
trainer: {{type: CausalLanguageModelingTrainer, model_name: demo_llama, max_steps: {steps}}}
runner_config: {{epochs: 100, batch_size: 16, sink_mode: false}}
optimizer: {{type: AdamW, beta1: 0.9, beta2: 0.95, eps: 1.e-8, weight_decay: 0.01}}
lr_schedule: {{type: CosineWithWarmUpLR, learning_rate: 3.e-3, lr_end: 3.e-4, warmup_steps: 20, total_steps: -1}}
runner_wrapper: {{type: MFTrainOneStepCell, use_clip_grad: true, max_grad_norm: 1.0}}
train_dataset:
  data_loader: {{type: MindDataset, dataset_dir: {data}, shuffle: true}}
  input_columns: [input_ids, labels]
callbacks:
  - {{type: MFLossMonitor, per_print_times: 10}}
  - {{type: CheckpointMonitor, prefix: demo_llama, save_checkpoint_steps: {save_every}, keep_checkpoint_max: 2}}
context: {{mode: 1, device_target: CPU}}
parallel_config: {{data_parallel: 1, model_parallel: 1, pipeline_stage: 1}}
model:
  model_config:
    type: LlamaConfig
    seq_length: {seq_length}
    hidden_size: 128
    num_layers: 3
    num_heads: 4
    n_kv_heads: 2
    intermediate_size: 344
    vocab_size: {vocab_size}
    bos_token_id: 1
    eos_token_id: 2
    pad_token_id: 0
    theta: 10000.0
    compute_dtype: float32
    param_init_type: float32
  arch: {{type: LlamaForCausalLM}}
processor:
  tokenizer: {{type: LlamaTokenizer, vocab_file: {vocab_file}}}
"""


def step(number: int, title: str, command: str = "") -> float:
    print(f"\n[{number}] {title}" + (f"\n    $ {command}" if command else ""), flush=True)
    return time.perf_counter()


def done(started: float, what: str) -> None:
    print(f"    -> {what} ({time.perf_counter() - started:.1f} s)", flush=True)


def cli(run_command, *argv: str) -> None:
    """Run `mfcore ARGV` in-process through the dispatcher `mfcore` gave the demo."""
    code = run_command(list(argv))
    if code:
        raise MfcoreError(f"`mfcore {' '.join(argv)}` failed with exit code {code}")


def train_tokenizer(corpus: Path, directory: Path, vocab_size: int):
    """A SentencePiece BPE model trained on the demo corpus, wrapped as the registered LlamaTokenizer."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / "spm"), vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    tokenizer_cls = get_plugins().tokenizers.get("LlamaTokenizer")
    tokenizer = tokenizer_cls(vocab_file=str(directory / "spm.model"))
    tokenizer.save_pretrained(directory)
    (directory / "spm.model").unlink()
    (directory / "spm.vocab").unlink()
    return tokenizer


def complete(model, tokenizer, prompts, max_new_tokens: int = 24):
    out = model.generate([tokenizer.encode(p) for p in prompts], max_new_tokens=max_new_tokens, do_sample=False)
    texts = []
    for prompt, row in zip(prompts, out):
        ids = [int(t) for t in row if int(t) != 0]  # drop left padding (pad id 0)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def show(texts) -> None:
    for text in texts:
        print(f"      {text!r}")


def run_demo(args) -> int:
    for needed, package in (("LlamaTokenizer", "mf-llama2"),):
        if needed not in get_plugins().tokenizers:
            raise MfcoreError(f"the demo needs {needed}: `pip install {package}`")
    out = Path(args.output_dir).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    total = time.perf_counter()
    print(f"mfcore demo: the whole workflow at tiny scale, in {out}")

    started = step(1, "write a corpus (mfcore's own grammar of short English sentences)")
    docs = documents(count=args.documents, seed=0)
    corpus = out / "corpus"
    corpus.mkdir()
    atomic_write_text(corpus / "train.jsonl", "".join(json.dumps({"text": d}) + "\n" for d in docs))
    atomic_write_text(corpus / "train.txt", "\n".join(docs) + "\n")
    done(started, f"{len(docs)} documents, {sum(len(d) for d in docs):,} characters; e.g. {docs[0][:70]!r}...")

    started = step(2, "train a SentencePiece tokenizer on it (LlamaTokenizer format)")
    tokenizer = train_tokenizer(corpus / "train.txt", out / "tokenizer", args.vocab_size)
    done(started, f"vocabulary of {tokenizer.vocab_size}; 'Anna saw a' -> {tokenizer.encode('Anna saw a')}")

    data = out / "data" / "train.mindrecord"
    started = step(3, "tokenize and pack into MindRecord",
                   f"mfcore data --format jsonl --input {corpus / 'train.jsonl'} --tokenizer {out / 'tokenizer'} "
                   f"--seq-length {args.seq_length} --output {data}")
    cli(args.run_command, "data", "--format", "jsonl", "--input", str(corpus / "train.jsonl"), "--tokenizer", str(out / "tokenizer"),
        "--seq-length", str(args.seq_length), "--output", str(data), "--quiet")
    done(started, f"wrote {data.name}")

    task = out / "pretrain.yaml"
    atomic_write_text(task, TASK_TEMPLATE.format(
        output_dir=out / "train", steps=args.steps, save_every=max(args.steps // 2, 1), data=data,
        seq_length=args.seq_length, vocab_size=tokenizer.vocab_size, vocab_file=out / "tokenizer" / "tokenizer.model"))

    started = step(4, "before training: a randomly initialised tiny Llama completes the prompts")
    from mfcore.models.auto import AutoConfig, AutoModelForCausalLM
    from mfcore.tasks.spec import load_task_yaml

    config_dict = load_task_yaml(str(task))["model"]["model_config"]
    untrained = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(task))
    before = complete(untrained, tokenizer, PROMPTS)
    show(before)
    done(started, f"{sum(p.size for p in untrained.get_parameters()):,} parameters "
                  f"(hidden {config_dict['hidden_size']}, {config_dict['num_layers']} layers, GQA "
                  f"{config_dict['num_heads']}/{config_dict['n_kv_heads']} heads)")

    started = step(5, f"train for {args.steps} steps", f"mfcore run --config {task}")
    cli(args.run_command, "run", "--config", str(task))
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    done(started, f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; model saved to {out / 'train' / 'model'}")

    model_dir = out / "train" / "model"
    if "convert" in get_plugins().info and get_plugins().info["convert"].ok:
        started = step(6, "convert round trip: native -> Hugging Face -> native, compared bit for bit",
                       f"mfcore convert {model_dir} {out / 'hf'} --to hf && "
                       f"mfcore convert {out / 'hf'} {out / 'native'} --to mindformers --verify")
        cli(args.run_command, "convert", str(model_dir), str(out / "hf"), "--to", "hf", "--no-progress")
        cli(args.run_command, "convert", str(out / "hf"), str(out / "native"), "--to", "mindformers", "--verify", "--no-progress")
        compared = compare_weights(model_dir, out / "native")
        done(started, f"{compared} tensors identical after the round trip")
        final_dir = out / "native"
        shutil.copytree(out / "tokenizer", final_dir, dirs_exist_ok=True)
    else:
        print("\n[6] convert round trip skipped: mf-convert is not installed (`pip install mf-convert`)")
        final_dir = model_dir
        compared = 0

    started = step(7, "after training: the model (loaded back from the converted checkpoint) completes the prompts",
                   f"mfcore run --model {final_dir} ...")
    trained = AutoModelForCausalLM.from_pretrained(final_dir)
    after = complete(trained, tokenizer, PROMPTS)
    show(after)
    done(started, "compare with step 4")
    summary = {"before": before, "after": after, "first_loss": losses[0], "last_loss": losses[-1],
               "round_trip_tensors": compared, "seconds": round(time.perf_counter() - total, 1)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nmfcore demo finished in {summary['seconds']:.0f} s. Before training:")
    show(before)
    print("after training:")
    show(after)
    return 0


def compare_weights(first: Path, second: Path) -> int:
    """Number of tensors, after checking both directories hold the same names with identical bytes."""
    from safetensors.numpy import load_file

    def tensors(directory: Path):
        merged = {}
        for file in sorted(directory.glob("*.safetensors")):
            merged.update(load_file(str(file)))
        return merged

    a, b = tensors(first), tensors(second)
    if sorted(a) != sorted(b):
        raise MfcoreError(f"round trip changed the tensor names: {sorted(set(a) ^ set(b))}")
    for name in a:
        if a[name].dtype != b[name].dtype or a[name].tobytes() != b[name].tobytes():
            raise MfcoreError(f"round trip changed tensor {name}")
    return len(a)


def add_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="the whole workflow at tiny scale on an embedded corpus (~2 min)")
    parser.add_argument("--output-dir", "--output_dir", default="mfcore-demo", help="work directory (replaced)")
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--documents", type=int, default=3000, help="documents in the generated corpus")
    parser.add_argument("--vocab-size", "--vocab_size", type=int, default=400)
    parser.add_argument("--seq-length", "--seq_length", type=int, default=64)
    parser.set_defaults(func=run_demo)
