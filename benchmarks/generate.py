"""Generation speed of mfcore against transformers + torch on this CPU, same weights, same run.

    python benchmarks/generate.py [--sizes tiny,small] [--batches 1,8] [--prompt 64] [--new-tokens 32]
                                  [--repeats 3] [--threads 1,2] [--json FILE]

For each size (tiny: hidden 256, 4 layers, vocab 1000; small: hidden 768, 12 layers, 12 heads, FFN 2048,
vocab 32000, tied embeddings, ~110M parameters) one Llama is built in transformers with random weights,
saved, and loaded by mfcore. Then, at each batch size, greedy generation of `--new-tokens` tokens after a
`--prompt`-token prompt is timed for:

- mfcore `generate` (compiled prompt graph, compiled decode graph with the argmax inside);
- transformers `generate`, attn_implementation "eager" and "sdpa";
- a hand-written torch loop (sdpa model called with its KV cache, argmax, no generate machinery).

Every engine is timed with a streamer that stamps each new token: prefill tokens/s = batch * prompt /
(time to the first new token), decode tokens/s = batch * (N - 1) / (time from the first to the last new
token). Engines take turns inside each repeat (a burst of load from other jobs hits all of them) and the
best of `--repeats` is kept; torch is timed with each of `--threads` and the faster count is used
(on a busy 2-core machine its spinning threads can make 1 thread faster than 2). Each side runs in its own
worker process, driven in turn by this one, with OMP_WAIT_POLICY=PASSIVE: an idle side's OpenMP threads
must not spin on the 2 cores while the other side is timed (spinning made every side 3-10x slower). Compile time is the first mfcore call minus a warm one.
Peak RSS is each worker's high-water mark (VmHWM) at the end; the torch worker holds one model and
switches its attention implementation. The decode bound is memory bandwidth: one decode step reads every parameter once, so
tokens/s <= batch * copy bandwidth / parameter bytes (copy bandwidth measured here with numpy).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Run as a script, this folder is sys.path[0]: a sibling benchmark such as tokenizers.py would shadow the
# package of the same name.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from stamps import Stamps  # noqa: E402
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np

SIZES = {
    "tiny": dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False),
    "small": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, rope_theta=10000.0, max_position_embeddings=2048,
                  tie_word_embeddings=True),
}


def copy_bandwidth(megabytes=256, repeats=5):
    """Bytes per second moved by a large numpy copy (read + write), best of `repeats`."""
    src = np.ones(megabytes * 2 ** 20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def build(size, directory):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SIZES[size])).eval()
    hf.save_pretrained(directory)
    return hf


def torch_engines(directory, threads):
    """name -> function(prompt, new_tokens, streamer) for the torch side (one model, attention switched)."""
    import torch
    import transformers

    model = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()

    def hf_generate(impl, count):
        def run(prompt, new_tokens, streamer):
            torch.set_num_threads(count)
            model.set_attn_implementation(impl)
            with torch.inference_mode():
                ids = torch.tensor(prompt)
                return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                      streamer=streamer).numpy()
        return run

    def hand_loop(count):
        def run(prompt, new_tokens, streamer):
            torch.set_num_threads(count)
            model.set_attn_implementation("sdpa")
            with torch.inference_mode():
                ids = torch.tensor(prompt)
                streamer.put(ids)
                out = model(ids, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                tokens = [token]
                streamer.put(token[:, 0])
                for _ in range(new_tokens - 1):
                    out = model(token, past_key_values=cache, use_cache=True)
                    cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
                    tokens.append(token)
                    streamer.put(token[:, 0])
                return np.concatenate([prompt, torch.cat(tokens, 1).numpy()], axis=1)
        return run

    engines = {}
    for count in threads:
        engines[f"transformers_eager_{count}t"] = hf_generate("eager", count)
        engines[f"transformers_sdpa_{count}t"] = hf_generate("sdpa", count)
        engines[f"torch_hand_loop_{count}t"] = hand_loop(count)
    return engines


def mfcore_engines(directory):
    import mfcore

    model = mfcore.AutoModelForCausalLM.from_pretrained(directory)
    model.set_train(False)

    def run(prompt, new_tokens, streamer):
        return model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                              do_sample=False, streamer=streamer)
    return {"mfcore": run}


def timed(engine, prompt, new_tokens):
    stamps = Stamps()
    out = engine(prompt, new_tokens, stamps)
    batch, length = prompt.shape
    prefill = stamps.times[0] - stamps.start
    decode = stamps.times[-1] - stamps.times[0]
    return out, batch * length / prefill, batch * (new_tokens - 1) / decode


def peak_rss_mb():
    with open("/proc/self/status") as status:  # VmHWM: this process's peak resident set (reset by exec)
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(side, directory, threads):
    """A side's process: reads one JSON request a line (engine, prompt, new tokens, first?), answers one."""
    engines = mfcore_engines(directory) if side == "mfcore" else torch_engines(directory, threads)
    print(json.dumps({"engines": list(engines)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
            return
        prompt = np.asarray(request["prompt"], dtype=np.int64)
        start = time.perf_counter()
        out, prefill, decode = timed(engines[request["engine"]], prompt, request["new_tokens"])
        print(json.dumps({"out": out.tolist(), "seconds": time.perf_counter() - start, "prefill": prefill,
                          "decode": decode}), flush=True)


class Side:
    """A worker process of one side."""

    def __init__(self, side, directory, threads):
        command = [sys.executable, os.path.abspath(__file__), "--worker", side, directory,
                   ",".join(map(str, threads))]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_WAIT_POLICY="PASSIVE"))
        self.engines = self._read()["engines"]

    def _read(self):
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("a benchmark worker died; run it alone to see its error")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, engine, prompt, new_tokens):
        self.process.stdin.write(json.dumps({"engine": engine, "prompt": prompt.tolist(),
                                             "new_tokens": new_tokens}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.write(json.dumps({"quit": True}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        self.process.wait()
        return answer["peak_rss_mb"]


def bench_size(size, args, bandwidth):
    directory = tempfile.mkdtemp(prefix=f"mfcore-bench-{size}-")
    hf = build(size, directory)
    parameter_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    del hf
    sides = {"mfcore": Side("mfcore", directory, args.threads), "torch": Side("torch", directory, args.threads)}
    owner = {engine: side for side in sides.values() for engine in side.engines}
    result = {"size": size, "config": SIZES[size], "parameters": parameter_bytes // 4,
              "parameter_mb": parameter_bytes / 2 ** 20, "batches": {}}
    for batch in args.batches:
        prompt = np.random.default_rng(batch).integers(3, SIZES[size]["vocab_size"], (batch, args.prompt))
        first = owner["mfcore"].run("mfcore", prompt, args.new_tokens)
        warm = owner["mfcore"].run("mfcore", prompt, args.new_tokens)
        compile_s = first["seconds"] - warm["seconds"]
        reference = np.asarray(warm["out"])
        outputs_equal = {}
        for name in owner:  # warm up; greedy outputs should agree with ours
            if name != "mfcore":
                outputs_equal[name] = bool((np.asarray(owner[name].run(name, prompt, args.new_tokens)["out"])
                                            == reference).all())
        best = {name: [0.0, 0.0] for name in owner}
        for _ in range(args.repeats):
            for name, side in owner.items():
                answer = side.run(name, prompt, args.new_tokens)
                best[name] = [max(best[name][0], answer["prefill"]), max(best[name][1], answer["decode"])]
        row = {"compile_s": compile_s, "greedy_equal_to_mfcore": outputs_equal, "tokens_per_s": best}
        for kind in ("transformers_eager", "transformers_sdpa", "torch_hand_loop"):
            faster = max((f"{kind}_{t}t" for t in args.threads), key=lambda n: best[n][1])
            row[f"vs_{kind}"] = {"threads": faster.rsplit("_", 1)[1],
                                 "prefill_ratio": best["mfcore"][0] / best[faster][0],
                                 "decode_ratio": best["mfcore"][1] / best[faster][1]}
        bound = batch * bandwidth / parameter_bytes
        row["decode_bound_tok_s"] = bound
        row["mfcore_decode_of_bound"] = best["mfcore"][1] / bound
        result["batches"][batch] = row
        print(json.dumps({size: {batch: row}}), flush=True)
    result["peak_rss_mb"] = {name: side.close() for name, side in sides.items()}
    return result


def table(results):
    lines = ["| size | batch | vs | prefill ratio | decode ratio | mfcore prefill / decode tok/s | ref prefill / "
             "decode tok/s |", "|---|---:|---|---:|---:|---:|---:|"]
    for result in results:
        for batch, row in result["batches"].items():
            ours = row["tokens_per_s"]["mfcore"]
            for kind in ("transformers_eager", "transformers_sdpa", "torch_hand_loop"):
                vs = row[f"vs_{kind}"]
                ref = row["tokens_per_s"][f"{kind}_{vs['threads']}"]
                lines.append(f"| {result['size']} | {batch} | {kind} ({vs['threads']}) | {vs['prefill_ratio']:.2f} | "
                             f"{vs['decode_ratio']:.2f} | {ours[0]:.0f} / {ours[1]:.0f} | {ref[0]:.0f} / {ref[1]:.0f} |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        side, directory, threads = sys.argv[2:5]
        return worker(side, directory, [int(t) for t in threads.split(",")])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to try; the faster is compared")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.threads = [int(t) for t in args.threads.split(",")]
    bandwidth = copy_bandwidth()
    results = [bench_size(size, args, bandwidth) for size in args.sizes.split(",")]
    summary = {"copy_bandwidth_gb_s": bandwidth / 1e9, "results": results}
    print(json.dumps(summary, indent=1))
    print(table(results))
    for result in results:
        for batch, row in result["batches"].items():
            print(f"{result['size']} batch {batch}: compile {row['compile_s']:.2f} s; decode bound "
                  f"{row['decode_bound_tok_s']:.0f} tok/s ({result['parameter_mb']:.0f} MB of parameters at "
                  f"{bandwidth / 1e9:.1f} GB/s), mfcore at {100 * row['mfcore_decode_of_bound']:.0f}% of it")
        print(f"{result['size']} peak RSS (MB): {result['peak_rss_mb']}")
    if args.json:
        from mfcore.utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
