"""Training-step throughput of mfcore's Trainer against transformers + torch, same config, same run.

    python benchmarks/train.py [--sizes tiny,small] [--batch 4] [--seq 128] [--steps 10] [--repeats 3]
                               [--mindspore-threads N]

Two Llama sizes: tiny (hidden 256, 4 layers, 8 heads, 4 KV heads, FFN 688, vocab 1000; MINDSPORE-CPU.md's
config) and small (hidden 768, 12 layers, 12 heads, 4 KV heads, FFN 1536, vocab 32000: ~110 M
parameters; fewer steps and rounds). Both sides do the same work per optimizer step: forward,
next-token loss, backward, global-norm clipping at 1.0, AdamW (weight decay on matrices) -- mfcore as
the one jit-compiled step the Trainer runs (mindspore.jit + value_and_grad), torch in eager mode with
torch.optim.AdamW (foreach, its default). Both start from the same weights (transformers' random init,
loaded into mfcore) and see the same batches; the first losses are printed side by side as a check.

Each side of each round runs in its own process (so peak RSS is that side's alone), the sides taking
turns; a round reports the median step over `--steps` steps after the warm-up steps, and the best
round is kept (the machine is shared and noisy: compare numbers from one run only).
`--mindspore-threads` sets the Trainer's `cpu_threads` (MindSpore's CPU kernel threads) for mfcore. mfcore's first
step includes compiling the graph: "compile" is that first step minus the median step.

The data path is measured in the mfcore process: the training batches written to a MindRecord file
and read back by the Trainer's reader (`mfcore.data.read_mindrecord`), and the Trainer's per-step
batch assembly (row order from the seed + gather + Tensor), both in samples/s against the step rate.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# benchmarks/tokenizers.py would shadow the `tokenizers` package transformers imports.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

SIZES = {
    "tiny": dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False),
    "small": dict(vocab_size=32000, hidden_size=768, intermediate_size=1536, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=2048,
                  tie_word_embeddings=False),
}
# steps after warm-up, warm-up steps, rounds: the small model is ~30x the work of the tiny one
SCHEDULE = {"tiny": (None, 3, None), "small": (3, 1, 2)}
LR, WD, BETAS, EPS, CLIP = 1e-3, 0.01, (0.9, 0.95), 1e-8, 1.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_batches(vocab, accumulation, batch, seq, count=4):
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(count):
        ids = rng.integers(0, vocab, (accumulation, batch, seq)).astype(np.int32)
        batches.append((ids, ids.copy()))
    return batches


def torch_side(weights, batches, steps):
    import torch
    import transformers

    hf_model = transformers.LlamaForCausalLM.from_pretrained(weights, attn_implementation="eager",
                                                             dtype=torch.float32)
    decay = [p for n, p in hf_model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in hf_model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR, betas=BETAS, eps=EPS)
    hf_model.train()
    times, losses = [], []
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        start = time.perf_counter()
        total = 0.0
        for micro_ids, micro_labels in zip(ids, labels):
            loss = hf_model(input_ids=torch.from_numpy(micro_ids).long(), labels=torch.from_numpy(micro_labels).long()).loss
            (loss / len(ids)).backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(hf_model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(total / len(ids))
    return {"times": times, "losses": losses, "threads": torch.get_num_threads()}


def data_path_rate(trainer, batches, workdir):
    """samples/s of (a) MindRecord -> arrays (the Trainer's reader) and (b) the per-step batch assembly."""
    from mindspore import Tensor

    from mfcore.data import read_mindrecord, write_mindrecord

    ids = np.concatenate([b[0].reshape(-1, b[0].shape[-1]) for b in batches])
    ids = np.concatenate([ids] * max(1, 2048 // len(ids)))  # a file of ~2k sequences
    path = os.path.join(workdir, "train.mindrecord")
    write_mindrecord(path, ((row, row) for row in ids), ids.shape[1])
    start = time.perf_counter()
    data = read_mindrecord(path)
    read_s = time.perf_counter() - start
    assert np.array_equal(data["input_ids"], ids)
    trainer.train_data = data
    steps = trainer.steps_per_epoch()
    start = time.perf_counter()
    for step in range(steps):
        rows = trainer.batch_rows(step)
        Tensor(data["input_ids"][rows]), Tensor(data["labels"][rows])
    batch_s = time.perf_counter() - start
    return {"mindrecord_read_samples_per_s": len(ids) / read_s, "batch_assembly_samples_per_s":
            steps * trainer.global_batch / batch_s, "rows": len(ids)}


def mfcore_side(weights, batches, steps, workdir, cpu_threads=0):
    import mindspore as ms
    from mindspore import Tensor

    import mfcore
    from mfcore.utils import runtime
    from mfcore.training.trainer import Trainer, TrainingArguments

    runtime.setup(device_target="CPU", mode="pynative")
    model = mfcore.AutoModelForCausalLM.from_pretrained(weights, dtype="float32")
    accumulation, batch = batches[0][0].shape[:2]
    args = TrainingArguments(output_dir=workdir, batch_size=batch, gradient_accumulation_steps=accumulation,
                             learning_rate=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=WD,
                             max_grad_norm=CLIP, progress=False, shuffle=True, cpu_threads=cpu_threads)
    trainer = Trainer(model, args)
    step_fn = trainer._build_train_step()  # the function Trainer.train runs each step
    times, losses = [], []
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        start = time.perf_counter()
        out = step_fn(Tensor(ids), Tensor(labels), Tensor(LR, ms.float32), Tensor(1.0, ms.float32))
        losses.append(float(out[0].asnumpy()))  # waits for the step to finish
        times.append(time.perf_counter() - start)
    return {"times": times, "losses": losses, "data": data_path_rate(trainer, batches, workdir)}


def child(options):
    """One side, one round, in this process: prints one JSON line."""
    config = SIZES[options.size]
    batches = make_batches(config["vocab_size"], options.accumulation, options.batch, options.seq)
    with tempfile.TemporaryDirectory() as tmp:
        if options.side == "torch":
            out = torch_side(options.weights, batches, options.total_steps)
        else:
            out = mfcore_side(options.weights, batches, options.total_steps, tmp, options.mindspore_threads)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))


def run_child(side, size, weights, total_steps, options):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", side, "--size", size, "--weights", weights,
           "--total-steps", str(total_steps), "--batch", str(options.batch), "--seq", str(options.seq),
           "--accumulation", str(options.accumulation), "--mindspore-threads", str(options.mindspore_threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{side} ({size}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def bench_size(size, options):
    import torch
    import transformers

    config = SIZES[size]
    steps, warmup, repeats = SCHEDULE[size]
    steps, repeats = steps or options.steps, repeats or options.repeats
    tokens = options.batch * options.seq * options.accumulation
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config, attn_implementation="eager"))
    n_params = sum(p.numel() for p in hf_model.parameters())
    best, rounds = {}, {"mfcore": [], "torch": []}
    with tempfile.TemporaryDirectory() as weights:
        hf_model.save_pretrained(weights)
        del hf_model
        for _ in range(repeats):
            for side in ("mfcore", "torch"):
                out = run_child(side, size, weights, warmup + steps, options)
                median = statistics.median(out["times"][warmup:])
                row = {"median_s": median, "tokens_per_s": tokens / median, "first_step_s": out["times"][0],
                       "compile_s": out["times"][0] - median, "peak_rss_mb": out["peak_rss_mb"],
                       "first_loss": out["losses"][0]}
                if "data" in out:
                    row.update(out["data"])
                rounds[side].append(round(row["tokens_per_s"], 1))
                if side not in best or median < best[side]["median_s"]:
                    best[side] = row
    ratio = best["mfcore"]["tokens_per_s"] / best["torch"]["tokens_per_s"]
    per_round = [m / t for m, t in zip(rounds["mfcore"], rounds["torch"])]
    return {"size": size, "config": config, "parameters": n_params, "batch": options.batch, "seq": options.seq,
            "accumulation": options.accumulation, "steps": steps, "warmup": warmup, "repeats": repeats,
            "mfcore": best["mfcore"], "torch": best["torch"], "tokens_per_s_by_round": rounds,
            "ratio_best": ratio, "ratio_by_round": [round(r, 2) for r in per_round]}


def report(result):
    m, t = result["mfcore"], result["torch"]
    print(f"\n#### {result['size']}: {result['parameters'] / 1e6:.1f} M parameters, batch {result['batch']} x seq "
          f"{result['seq']} x accumulation {result['accumulation']}; median of {result['steps']} steps, "
          f"best of {result['repeats']} rounds\n")
    print("| side | step (ms, median) | tokens/s | first step (s) | compile (s) | peak RSS (MB) | first loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in (("mfcore (jit)", m), ("transformers + torch (eager)", t)):
        compile_s = f"{row['compile_s']:.2f}" if name.startswith("mfcore") else "-"
        print(f"| {name} | {row['median_s'] * 1e3:.0f} | {row['tokens_per_s']:.0f} | {row['first_step_s']:.2f} | "
              f"{compile_s} | {row['peak_rss_mb']:.0f} | {row['first_loss']:.5f} |")
    step_rate = result["batch"] * result["accumulation"] / m["median_s"]
    print(f"\nmfcore / torch tokens/s: **{result['ratio_best']:.2f}x** (best rounds; per round: "
          f"{', '.join(f'{r:.2f}x' for r in result['ratio_by_round'])})")
    print(f"data path: MindRecord read {m['mindrecord_read_samples_per_s']:,.0f} samples/s "
          f"({m['mindrecord_read_samples_per_s'] / step_rate:,.0f}x the step rate of {step_rate:.1f} samples/s); "
          f"batch assembly {m['batch_assembly_samples_per_s']:,.0f} samples/s "
          f"({m['batch_assembly_samples_per_s'] / step_rate:,.0f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (tiny; small uses 3)")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="rounds (tiny; small uses 2)")
    parser.add_argument("--mindspore-threads", type=int, default=0,
                        help="TrainingArguments.cpu_threads for mfcore (0: MindSpore's default pool)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", choices=("mfcore", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--total-steps", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        options.side = options.child
        child(options)
        return

    import mindspore
    import torch
    import transformers

    sizes = [s.strip() for s in options.sizes.split(",") if s.strip()]
    for size in sizes:
        if size not in SIZES:
            parser.error(f"--sizes: unknown size {size!r}; choose from {', '.join(SIZES)}")
    results = []
    for size in sizes:
        result = bench_size(size, options)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    print(f"\nMindSpore {mindspore.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{os.cpu_count()} CPUs, mfcore cpu_threads={options.mindspore_threads or 'default'}, "
          f"torch threads {torch.get_num_threads()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for result in results:
        report(result)
    if options.json:
        from mfcore.utils.atomic import atomic_write_text

        atomic_write_text(options.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
