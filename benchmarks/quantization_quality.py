"""Quality of int8 weight-only quantization (RTN, per-channel) against float32, on a model that learned
something: the demo's tiny Llama, trained by `mfcore demo`, and held-out text from the demo's grammar.

    python benchmarks/quantization_quality.py [--demo-dir mfcore-demo] [--documents 200]

Reports, for int8 (float32 activations and the default prompt path) and bfloat16 weights against the
float32 model: the largest and mean absolute logit difference, how often the greedy next token agrees,
and the perplexity of each on held-out documents (a seed the training corpus did not use). Runs the demo
first when --demo-dir holds no trained model (~2 min).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="mfcore-demo")
    parser.add_argument("--documents", type=int, default=200)
    args = parser.parse_args()
    demo = Path(args.demo_dir)
    model_dir = demo / "native"
    if not (model_dir / "config.json").exists():
        subprocess.run([sys.executable, "-m", "mfcore", "demo", "--output-dir", str(demo)], check=True)
    warnings.simplefilter("ignore")
    import mindspore
    import mfcore
    from mfcore.cli.demo_corpus import documents

    tokenizer = mfcore.AutoTokenizer.from_pretrained(model_dir)
    texts = documents(count=args.documents, seed=12345)  # the demo trains on seed 0
    rows = [tokenizer.encode(text)[:64] for text in texts]
    variants = {
        "float32": dict(),
        "bfloat16": dict(dtype="bfloat16"),
        "int8 (float32 activations)": dict(quantization_config={"quant_method": "rtn", "weight_dtype": "int8"},
                                           dtype="float32", env="1"),
        "int8": dict(quantization_config={"quant_method": "rtn", "weight_dtype": "int8"}, dtype="float32"),
    }
    results, reference = {}, None
    for name, kwargs in variants.items():
        env = kwargs.pop("env", None)
        if env:
            os.environ["MFCORE_FLOAT32_ACTIVATIONS"] = env
        else:
            os.environ.pop("MFCORE_FLOAT32_ACTIVATIONS", None)
        model = mfcore.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        logits = [model(mindspore.Tensor(np.asarray([row], dtype=np.int32))).asnumpy()[0] for row in rows]
        nll, count = 0.0, 0
        for row, out in zip(rows, logits):
            shifted = out[:-1] - out[:-1].max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll -= float(log_probs[np.arange(len(row) - 1), row[1:]].sum())
            count += len(row) - 1
        entry = {"perplexity": math.exp(nll / count)}
        if reference is None:
            reference = logits
        else:
            diffs = np.concatenate([np.abs(a - b).reshape(-1) for a, b in zip(logits, reference)])
            agree = np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(logits, reference)])
            entry.update(max_abs_logit_diff=float(diffs.max()), mean_abs_logit_diff=float(diffs.mean()),
                         greedy_agreement=float(agree.mean()))
        results[name] = entry
        print(f"{name:28s} " + "  ".join(f"{k} {v:.4g}" for k, v in entry.items()), flush=True)
    print(json.dumps({"tokens": sum(len(r) - 1 for r in rows), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
