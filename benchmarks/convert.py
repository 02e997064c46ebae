"""Peak memory and speed of `mfcore convert` (streaming) against the naive load-everything approach.

    python benchmarks/convert.py [--layers 16] [--workdir DIR] [--keep]

Generates a Hugging Face-layout Llama checkpoint of about 1 GB (fp32, hidden 1024, FFN 2816, vocab 32000,
16 layers, sharded at 300 MB, as transformers writes it), then converts it to mfcore's native MindSpore
layout in separate processes, each reporting its own peak RSS (resource.getrusage, ru_maxrss):

- streaming: mf_convert.convert (one tensor in memory at a time), fp32, fp32 with --verify, and bf16
- naive: safetensors.numpy.load_file of every shard into one dict, rename, save_file (what a converter
  that loads the whole model does; MindFormers' own converter even loads it through torch + transformers)
- baseline: a process that only imports the same modules (the constant part of every peak)
- Meta: native -> consolidated.00.pth (torch.save: the whole model in memory, by design of the format)
  and back (torch.load(mmap=True, weights_only=True), pages released after each tensor is copied)

Both write the same tensors (checked). Speed is source bytes / wall time of the conversion call, with the
source in the page cache (the generator just wrote it). The machine is shared and noisy: compare only the
numbers of one run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

HIDDEN, FFN, VOCAB, HEADS = 1024, 2816, 32000, 16

# Peak RSS is the kernel's VmHWM of the child (ru_maxrss is not used: Linux carries the parent's peak
# across fork + exec into it). After the imports the child also records its RSS, so the table can show
# what the conversion itself added.
CHILD_PRELUDE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import safetensors.numpy
    import mfcore, mf_convert
    from mf_convert.engine import Conversion
    mfcore.get_plugins()
    options = json.loads(sys.argv[3])
    if options.pop("import_torch", False):  # so that torch's own ~180 MB count as imports, not conversion
        import torch
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / 1e6  # kB (KiB) -> MB
    after_imports_mb = status("VmRSS")
    def report(seconds, **extra):
        print(json.dumps(dict(peak_rss_mb=status("VmHWM"), after_imports_mb=after_imports_mb, seconds=seconds,
                              **extra)))
    src, dst = sys.argv[1], sys.argv[2]
""")

CHILDREN = {
    "baseline": "report(0.0)\n",
    "streaming": textwrap.dedent("""
        start = time.perf_counter()
        mf_convert.convert(src, dst, shard_size="300MB", **options)
        report(time.perf_counter() - start)
    """),
    "naive": textwrap.dedent("""
        from pathlib import Path
        from mf_llama2.weight_maps import hf_to_native
        start = time.perf_counter()
        state = {}
        for file in sorted(Path(src).glob("*.safetensors")):
            state.update(safetensors.numpy.load_file(file))
        state = {hf_to_native(name): array for name, array in state.items()}
        Path(dst).mkdir()
        safetensors.numpy.save_file(state, Path(dst) / "mindspore_model.safetensors", metadata={"format": "ms"})
        report(time.perf_counter() - start)
    """),
}


def make_checkpoint(directory: Path, layers: int, shard_bytes: int = 300 * 10**6) -> int:
    """A Hugging Face Llama directory with random fp32 weights, written shard by shard."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (VOCAB, HIDDEN)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes.update({p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
                       p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                       p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                       p + "mlp.down_proj.weight": (HIDDEN, FFN), p + "input_layernorm.weight": (HIDDEN,),
                       p + "post_attention_layernorm.weight": (HIDDEN,)})
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 4
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += nbytes
    shards.append(current)
    directory.mkdir(parents=True)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shard.items()},
                  directory / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(int(np.prod(s)) * 4 for s in shapes.values())
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                         "weight_map": weight_map}))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": VOCAB,
              "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": layers,
              "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": False}
    (directory / "config.json").write_text(json.dumps(config))
    return total


def run_child(kind: str, src: Path, dst: Path, options=None, repeats: int = 1) -> dict:
    """Run one conversion in a fresh process `repeats` times; keep the highest peak and the best time."""
    script = CHILD_PRELUDE + CHILDREN[kind]
    best = None
    for _ in range(repeats):
        shutil.rmtree(dst, ignore_errors=True)
        args = [sys.executable, "-c", script, str(src), str(dst), json.dumps(options or {})]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        if best is not None:
            row["peak_rss_mb"] = max(row["peak_rss_mb"], best["peak_rss_mb"])
            row["seconds"] = min(row["seconds"], best["seconds"])
        best = row
    return best


def same_tensors(a: Path, b: Path) -> bool:
    from mf_convert.readers import TensorSource, open_file, weight_files

    left = TensorSource([open_file(f) for f in weight_files(a)], a)
    right = TensorSource([open_file(f) for f in weight_files(b)], b)
    return sorted(left.names()) == sorted(right.names()) and all(
        np.array_equal(left.read(n), right.read(n)) for n in left.names())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--workdir", help="where to write the checkpoints (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each conversion (best time is kept)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="mf-convert-bench-"))
    try:
        src = work / "hf"
        total = make_checkpoint(src, args.layers)
        largest = VOCAB * HIDDEN * 4
        print(f"checkpoint: {total / 1e6:.0f} MB in {len(list(src.glob('*.safetensors')))} shards, "
              f"largest tensor {largest / 1e6:.0f} MB")
        rows = {"baseline": run_child("baseline", src, work / "unused")}
        meta = work / "meta"
        runs = [("streaming fp32", "streaming", src, {}),
                ("streaming fp32 --verify", "streaming", src, {"verify": True}),
                ("streaming bf16", "streaming", src, {"dtype": "bf16"}),
                ("naive fp32", "naive", src, {}),
                ("to meta (torch.save)", "streaming", src, {"target_format": "meta", "import_torch": True}),
                ("from meta .pth (mmap)", "streaming", meta, {"import_torch": True})]
        for label, kind, source, options in runs:
            dst = meta if "to meta" in label else work / label.replace(" ", "_").replace("-", "")
            rows[label] = run_child(kind, source, dst, options, args.repeats)
            if label in ("naive fp32", "from meta .pth (mmap)"):
                rows[label]["same_tensors_as_streaming"] = same_tensors(work / "streaming_fp32", dst)
            if label not in ("streaming fp32", "to meta (torch.save)"):
                shutil.rmtree(dst)
        base = rows["baseline"]["peak_rss_mb"]
        print(f"\n{'run':<26}{'peak RSS MB':>12}{'added by the conversion':>25}{'seconds':>9}{'MB/s':>8}")
        for label, row in rows.items():
            speed = total / 1e6 / row["seconds"] if row["seconds"] else float("nan")
            print(f"{label:<26}{row['peak_rss_mb']:>12.0f}{row['peak_rss_mb'] - row['after_imports_mb']:>25.0f}"
                  f"{row['seconds']:>9.2f}{speed:>8.0f}")
        stream, naive = rows["streaming fp32"]["peak_rss_mb"], rows["naive fp32"]["peak_rss_mb"]
        summary = {"checkpoint_mb": total / 1e6, "largest_tensor_mb": largest / 1e6, "baseline_rss_mb": base,
                   "peak_ratio_naive_over_streaming": naive / stream,
                   "added_ratio_naive_over_streaming":
                       (naive - rows["naive fp32"]["after_imports_mb"]) /
                       (stream - rows["streaming fp32"]["after_imports_mb"]),
                   "streaming_mb_per_s": total / 1e6 / rows["streaming fp32"]["seconds"],
                   "naive_same_tensors": rows["naive fp32"]["same_tensors_as_streaming"],
                   "meta_same_tensors": rows["from meta .pth (mmap)"]["same_tensors_as_streaming"], "runs": rows}
        print(json.dumps(summary, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
