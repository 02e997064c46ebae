"""Training-step throughput of mfcore's Trainer against transformers + torch, same config, same run.

    python benchmarks/train.py [--batch 4] [--seq 128] [--steps 20] [--accumulation 1] [--repeats 3]

One small Llama (hidden 256, 4 layers, 8 heads, 4 KV heads, FFN 688, vocab 1000; MINDSPORE-CPU.md's
config). Both sides do the same work per optimizer step: forward, next-token loss, backward,
global-norm clipping at 1.0, AdamW (weight decay on matrices) -- mfcore as the one jit-compiled step
the Trainer runs (mindspore.jit + value_and_grad), torch in eager mode with fused-free AdamW
(foreach, its default). Both start from the same weights (transformers' random init, loaded into
mfcore) and see the same batches; the first losses are compared as a sanity check. tokens/s = batch x
seq x accumulation / median step time over `--steps` steps after 3 warm-up steps (compile excluded);
the best median of `--repeats` rounds, sides taking turns. The machine is shared and noisy: compare
numbers from one run only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

# benchmarks/tokenizers.py would shadow the `tokenizers` package transformers imports.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

CONFIG = dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False)
LR, WD, BETAS, EPS, CLIP = 1e-3, 0.01, (0.9, 0.95), 1e-8, 1.0


def torch_side(hf_model, batches, steps):
    import torch

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
    return times, losses


def mfcore_side(model, batches, steps, accumulation, workdir):
    import mindspore as ms
    from mindspore import Tensor

    from mfcore.trainer import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=workdir, batch_size=batches[0][0].shape[1], gradient_accumulation_steps=accumulation,
                             learning_rate=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=WD,
                             max_grad_norm=CLIP, progress=False)
    trainer = Trainer(model, args)
    step_fn = trainer._build_train_step()  # the function Trainer.train runs each step
    times, losses = [], []
    for step in range(steps):
        ids, labels = batches[step % len(batches)]
        start = time.perf_counter()
        out = step_fn(Tensor(ids), Tensor(labels), Tensor(LR, ms.float32), Tensor(1.0, ms.float32))
        losses.append(float(out[0].asnumpy()))  # waits for the step to finish
        times.append(time.perf_counter() - start)
    return times, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    import torch
    import transformers

    import mfcore
    from mfcore import runtime

    runtime.setup(device_target="CPU", mode="pynative")
    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(**CONFIG, attn_implementation="eager")
    hf_model = transformers.LlamaForCausalLM(hf_config)
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model = mfcore.AutoModelForCausalLM.from_pretrained(tmp, dtype="float32")
        rng = np.random.default_rng(0)
        shape = (options.accumulation, options.batch, options.seq)
        batches = []
        for _ in range(4):
            ids = rng.integers(0, CONFIG["vocab_size"], shape).astype(np.int32)
            batches.append((ids, ids.copy()))
        warmup = 3
        tokens = options.batch * options.seq * options.accumulation
        best = {"mfcore": None, "torch": None}
        first = {}
        for round_ in range(options.repeats):
            for side in ("mfcore", "torch"):
                if side == "mfcore":
                    times, losses = mfcore_side(model, batches, warmup + options.steps, options.accumulation, tmp)
                else:
                    times, losses = torch_side(hf_model, batches, warmup + options.steps)
                first.setdefault(side, losses[0])
                median = statistics.median(times[warmup:])
                if best[side] is None or median < best[side]["median_s"]:
                    best[side] = {"median_s": median, "compile_or_first_step_s": times[0],
                                  "tokens_per_s": tokens / median}
    ratio = best["mfcore"]["tokens_per_s"] / best["torch"]["tokens_per_s"]
    result = {"config": CONFIG, "batch": options.batch, "seq": options.seq, "accumulation": options.accumulation,
              "first_loss": first, "mfcore": best["mfcore"], "torch": best["torch"],
              "mfcore_vs_torch_tokens_per_s": ratio,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    print(json.dumps(result, indent=2))
    print(f"\n| side | step (ms, median) | tokens/s | first step (s) |\n|---|---:|---:|---:|")
    for side in ("mfcore", "torch"):
        row = best[side]
        print(f"| {side} | {row['median_s'] * 1e3:.0f} | {row['tokens_per_s']:.0f} | {row['compile_or_first_step_s']:.2f} |")
    print(f"\nmfcore / torch tokens/s: {ratio:.2f}x; first losses {first['mfcore']:.5f} vs {first['torch']:.5f}")


if __name__ == "__main__":
    main()
