"""Real-size generation speed: mfcore against transformers and llama.cpp on this CPU, same weights, same run.

    python benchmarks/realsize.py --model DIR [--model DIR2 ...] [--sides mfcore-bf16,transformers-bf16,...]
                                  [--skip-llama-cpp] [--prefill 64,512] [--decode 32] [--decode-prompt 64]
                                  [--batch4] [--repeats N] [--threads 2] [--llama-cpp DIR] [--timeout S]
                                  [--json FILE] [--prepare] [--force]

A by-hand benchmark (never part of the test suite) for checkpoints of real dimensions with random weights,
made by ../shared/tools/make-hf-llama.py (a 1.5B shape, H=2048 LAYERS=16 F=8192, and the Llama-3-8B
shape), with a tokenizer.json from ../shared/tools/llama3-tokenizer-json.py (llama.cpp's converter needs
one). Sides (`--sides`, default all of them):

- mfcore-fp32 / mfcore-bf16 / mfcore-int8: `mfcore.AutoModelForCausalLM.from_pretrained(DIR)`, with
  `dtype="bfloat16"`, or with `quantization_config={"quant_method": "rtn", "weight_dtype": "int8"}`;
  `model.generate(ids, max_new_tokens=N, do_sample=False, eos_token_id=None)`. A side whose arguments
  from_pretrained rejects, or whose loaded parameters are not of the asked type (no bfloat16 / int8
  parameter at all), is skipped with the reason (`--no-dtype-check` runs it anyway);
- transformers-fp32 / transformers-bf16: `AutoModelForCausalLM.from_pretrained(DIR, dtype=...,
  attn_implementation="sdpa")`, `torch.set_num_threads(--threads)`, `generate(min_new_tokens=N,
  max_new_tokens=N, do_sample=False)`;
- llama.cpp-f32 / llama.cpp-bf16 / llama.cpp-q8_0: `llama-bench -p 64,512 -n N -t --threads -r R -o json`
  on a GGUF made by llama.cpp's convert_hf_to_gguf.py (`--outtype f32|bf16|q8_0`), cached next to the
  checkpoint as DIR-<type>.gguf and reused when present (`--prepare` only makes the GGUF files). The
  folder of llama.cpp is `--llama-cpp`, $LLAMA_CPP_DIR, or what ../shared/tools/build-llama-cpp.sh built
  (~/.cache/llama-cpp-anchor/*/vendor/llama.cpp). Batch-4 decode needs llama-batched-bench (built beside
  llama-bench with `cmake --build $LLAMA/build --target llama-batched-bench`); without it that cell is empty.

Every side runs in its own fresh process, one after the other, so its peak RSS is its own: the larger of
the child's VmHWM (python sides, read at its end) and the ru_maxrss the kernel reports for it (os.wait4).
A side that fails (an exception, or killed, e.g. by the OOM killer) prints why and the run goes on. A side
whose weights alone would obviously not fit this machine's memory (e.g. fp32 at 8B, 32 GB) is skipped
with the estimate (`--force` runs it anyway).

Figures per side: import and load seconds (from_pretrained; llama.cpp: wall time of a run of one 8-token
prompt, which maps and touches the weights, less that prompt's time), "first calls": the first call of
each shape minus a warm one, summed over the shapes (for mfcore the graph compiles: MindSpore compiles a
graph per shape; per shape in the JSON as compile_s), prefill tokens/s at each
`--prefill` length (batch 1: prompt tokens / time of a generate with max_new_tokens=1, after a warm-up
call of that shape), decode tokens/s at batch 1 (and 4 with `--batch4`) after a `--decode-prompt`-token
prompt: batch x (N - 1) / (time from the first to the last new token), stamped by a streamer (mfcore's
decode graph hands over several tokens a call, so the stamps are the calls' ends); llama-bench's own
pp / tg figures (tg decodes N tokens from an empty context). Best of `--repeats` (default 3 below 3B
parameters, 1 above). Prompts are random token ids in [3, vocab) from a fixed seed; EOS never stops a run.

The decode bound is memory read bandwidth: a decode step reads every weight once (the input embedding
only one row), so tokens/s <= batch x read bandwidth / weight bytes per token; the bandwidth is measured
in this run (numpy reductions over a 2 GB array split over --threads threads, the faster of a float32
sum and an int64 xor, at the start and at the end, the larger kept).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Run as a script, this folder is sys.path[0]: a sibling benchmark such as tokenizers.py would shadow the
# package of the same name (transformers imports it).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from stamps import Stamps  # noqa: E402
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np

REPO = os.path.dirname(_HERE)
TOOLS = os.path.join(os.path.dirname(REPO), "shared", "tools")
RESULT_MARK = "@@realsize-result "
GB = 1e9

SIDES = ["transformers-fp32", "transformers-bf16", "mfcore-fp32", "mfcore-bf16", "mfcore-int8",
         "llama.cpp-f32", "llama.cpp-bf16", "llama.cpp-q8_0"]
# bytes per weight of each side (int8: one byte plus per-channel scales, counted as 1; q8_0: 32 int8 + fp16 scale)
WEIGHT_BYTES = {"fp32": 4.0, "f32": 4.0, "bf16": 2.0, "int8": 1.0, "q8_0": 34 / 32}
# resident memory beyond the weights, for the does-it-fit estimate only
OVERHEAD = {"transformers": 1.0 * GB, "mfcore": 2.0 * GB, "llama.cpp": 0.5 * GB}
RATIOS = [("mfcore-bf16", "llama.cpp-bf16"), ("mfcore-bf16", "transformers-bf16"),
          ("mfcore-int8", "llama.cpp-q8_0"), ("mfcore-fp32", "transformers-fp32"), ("mfcore-fp32", "llama.cpp-f32")]
MFCORE_KWARGS = {"fp32": {}, "bf16": {"dtype": "bfloat16"},
                 "int8": {"quantization_config": {"quant_method": "rtn", "weight_dtype": "int8"}}}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def side_parts(side):
    """'llama.cpp-q8_0' -> ('llama.cpp', 'q8_0')."""
    engine, kind = side.rsplit("-", 1)
    return engine, kind


def normalize_side(name):
    name = name.strip().lower().replace("llamacpp", "llama.cpp").replace("llama_cpp", "llama.cpp")
    name = name.replace("hf-", "transformers-").replace("torch-", "transformers-")
    aliases = {"llama.cpp-fp32": "llama.cpp-f32", "llama.cpp-q8": "llama.cpp-q8_0", "mfcore-q8": "mfcore-int8",
               "transformers-f32": "transformers-fp32", "mfcore-f32": "mfcore-fp32"}
    name = aliases.get(name, name)
    if name not in SIDES:
        raise SystemExit(f"unknown side {name!r}; known: {', '.join(SIDES)}")
    return name


# -- machine ------------------------------------------------------------------------------------------------
def meminfo():
    values = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) * 1024
    return values


def peak_rss_bytes():
    """VmHWM of this process: its peak resident set (reset by exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def read_bandwidth(gigabytes=2.0, threads=2, repeats=3):
    """Bytes per second read by numpy reductions over one large array split over `threads` threads.

    numpy's reductions release the GIL, so the threads run at once. Two kernels: a float32 sum (pairwise,
    some arithmetic per byte) and an int64 xor (less); the faster is the read bandwidth."""
    array = np.ones(int(gigabytes * GB) // 8, dtype=np.int64)
    parts = np.array_split(array, threads)
    floats = [p.view(np.float32) for p in parts]
    figures = {}
    for name, chunks, kernel in (("float32_sum", floats, np.sum), ("int64_xor", parts, np.bitwise_xor.reduce)):
        kernel(chunks[0][:1024])
        best = float("inf")
        for _ in range(repeats):
            workers = [threading.Thread(target=kernel, args=(chunk,)) for chunk in chunks]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            best = min(best, time.perf_counter() - start)
        figures[name] = array.nbytes / best
    del array, parts, floats
    return figures


def measure_bandwidth(gigabytes, threads):
    """read_bandwidth in a process of its own (this one stays small: see LAUNCHER)."""
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--bandwidth-child", str(gigabytes),
                             str(threads)], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.split(RESULT_MARK, 1)[1])


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -- the model --------------------------------------------------------------------------------------------
def model_shape(directory):
    """Parameter counts of a Llama checkpoint from its config.json."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    hidden, layers, ffn = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    vocab = config["vocab_size"]
    tied = bool(config.get("tie_word_embeddings", False))
    per_layer = (hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
                 + 3 * hidden * ffn + 2 * hidden)
    embedding = vocab * hidden
    total = embedding + layers * per_layer + hidden + (0 if tied else vocab * hidden)
    # A decode step reads every weight but the input embedding (of which one row); tied: the head reads it.
    read = total - (0 if tied else embedding)
    return {"config": config, "vocab_size": vocab, "parameters": total, "embedding_parameters": embedding,
            "read_parameters_per_token": read, "tied": tied}


# -- child processes: mfcore and transformers -------------------------------------------------------------------
class Skip(Exception):
    """The side cannot run here (an API that does not exist yet, weights not of the asked type)."""


def dtype_bytes(dtype) -> int:
    name = str(dtype).lower().replace("torch.", "").replace("mindspore.", "")
    for key, size in (("float64", 8), ("int64", 8), ("float32", 4), ("int32", 4), ("bfloat16", 2),
                      ("float16", 2), ("int16", 2), ("uint8", 1), ("int8", 1), ("bool", 1), ("int4", 1)):
        if key in name:
            return size
    return 4


def mfcore_engine(kind, directory, options):
    start = time.perf_counter()
    try:
        import mfcore
    except Exception as exc:  # noqa: BLE001 - any import failure means the side cannot run
        raise Skip(f"import mfcore failed: {type(exc).__name__}: {exc}") from exc
    import_s = time.perf_counter() - start
    kwargs = MFCORE_KWARGS[kind]
    start = time.perf_counter()
    try:
        model = mfcore.AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except (TypeError, ValueError, NotImplementedError, KeyError) as exc:
        if not kwargs:
            raise
        raise Skip(f"from_pretrained(DIR, {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) rejected: "
                   f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - mfcore's own errors (ConfigError, ...) for unknown arguments
        if kwargs and type(exc).__name__ in ("ConfigError", "CheckpointError", "MfcoreError"):
            raise Skip(f"from_pretrained(DIR, {kwargs}) rejected: {type(exc).__name__}: {exc}") from exc
        raise
    load_s = time.perf_counter() - start
    if hasattr(model, "set_train"):
        model.set_train(False)
    by_dtype, embedding_bytes, total = {}, 0, 0
    for name, param in model.parameters_and_names():
        size = int(np.prod(param.shape)) * dtype_bytes(param.dtype)
        key = str(param.dtype)
        by_dtype[key] = by_dtype.get(key, 0) + size
        total += size
        if "embed" in name.lower() and len(param.shape) == 2:
            embedding_bytes += size
    wanted = {"bf16": "bfloat16", "int8": "int8"}.get(kind)
    if wanted and not options.get("no_dtype_check") and not any(wanted in k.lower() for k in by_dtype):
        raise Skip(f"from_pretrained(DIR, {kwargs}) accepted the arguments but no parameter is {wanted} "
                   f"(parameter bytes by dtype: {by_dtype}): not implemented yet")
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:  # EOS / stop strings must not cut a timed run short
        for attribute in ("eos_token_id", "stop_strings"):
            if hasattr(generation_config, attribute):
                setattr(generation_config, attribute, None)

    def generate(ids, new_tokens, streamer=None):
        return model.generate(ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0,
                              streamer=streamer)

    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    info = {"import_s": import_s, "load_s": load_s, "weight_bytes": total, "weight_bytes_by_dtype": by_dtype,
            "read_bytes_per_token": total - (0 if tied else embedding_bytes),
            "mfcore_version": getattr(mfcore, "__version__", None)}
    return generate, info


def transformers_engine(kind, directory, options):
    start = time.perf_counter()
    import torch
    import transformers
    import_s = time.perf_counter() - start
    torch.set_num_threads(options["threads"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[kind]
    start = time.perf_counter()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
    except TypeError:  # transformers before 4.56 names it torch_dtype
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, torch_dtype=dtype,
                                                                  attn_implementation="sdpa")
    model.eval()
    load_s = time.perf_counter() - start
    by_dtype, total = {}, 0
    for param in model.parameters():
        size = param.numel() * param.element_size()
        by_dtype[str(param.dtype)] = by_dtype.get(str(param.dtype), 0) + size
        total += size
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embedding.data_ptr()
    read = total - (0 if tied else embedding.numel() * embedding.element_size())

    def generate(ids, new_tokens, streamer=None):
        with torch.inference_mode():
            tensor = torch.from_numpy(ids)
            return model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                  streamer=streamer).numpy()

    info = {"import_s": import_s, "load_s": load_s, "weight_bytes": total, "weight_bytes_by_dtype": by_dtype,
            "read_bytes_per_token": read, "torch_threads": torch.get_num_threads(),
            "transformers_version": transformers.__version__, "torch_version": torch.__version__}
    return generate, info


def report(result):
    """The result so far, one line on stdout: if the process is killed later, the parent keeps the last."""
    print(RESULT_MARK + json.dumps(dict(result, peak_rss_gb=peak_rss_bytes() / GB)), flush=True)


def measure(side, generate, options, vocab, result):
    """Prefill and decode figures of one engine into `result` (see the module docstring for the method)."""
    rng = np.random.default_rng(0)
    repeats, new_tokens = options["repeats"], options["decode"]
    result.update(prefill={}, decode={}, compile_s={})
    for length in options["prefill"]:
        ids = rng.integers(3, vocab, (1, length), dtype=np.int64)
        start = time.perf_counter()
        out = generate(ids, 1)
        first = time.perf_counter() - start
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = generate(ids, 1)
            best = min(best, time.perf_counter() - start)
        if np.asarray(out).shape != (1, length + 1):
            raise RuntimeError(f"generate returned shape {np.asarray(out).shape}, expected {(1, length + 1)}")
        result["prefill"][str(length)] = {"tok_s": length / best, "seconds": best, "first_call_s": first}
        result["compile_s"][f"prefill {length}"] = max(0.0, first - best)
        log(f"[{side}] prefill {length}: {length / best:.1f} tok/s ({best:.2f} s; first call {first:.2f} s)")
        report(result)
    for batch in options["batches"]:
        ids = rng.integers(3, vocab, (batch, options["decode_prompt"]), dtype=np.int64)
        best, best_total, first = None, float("inf"), None
        for attempt in range(repeats + 1):  # the first call is the warm-up (compiles the decode graph)
            stamps = Stamps()
            out = np.asarray(generate(ids, new_tokens, stamps))
            total = time.perf_counter() - stamps.start
            generated = out.shape[1] - ids.shape[1]
            if generated != new_tokens or len(stamps.times) != new_tokens:
                raise RuntimeError(f"asked for {new_tokens} new tokens, got {generated} "
                                   f"({len(stamps.times)} streamed): EOS or a stop string cut the run short")
            if attempt == 0:
                first = total
                continue
            rate = batch * (new_tokens - 1) / (stamps.times[-1] - stamps.times[0])
            prefill_rate = batch * ids.shape[1] / (stamps.times[0] - stamps.start)
            if best is None or rate > best["tok_s"]:
                best = {"tok_s": rate, "prefill_tok_s_in_run": prefill_rate}
            best_total = min(best_total, total)
        best.update(seconds=best_total, first_call_s=first, new_tokens=new_tokens, prompt=ids.shape[1])
        result["decode"][str(batch)] = best
        result["compile_s"][f"decode batch {batch}"] = max(0.0, first - best_total)
        log(f"[{side}] decode batch {batch}: {best['tok_s']:.2f} tok/s ({new_tokens} new tokens in "
            f"{best_total:.2f} s; first call {first:.2f} s)")
        report(result)
    result["compile_total_s"] = sum(result["compile_s"].values())


def child(side, directory, options):
    """One side in this (fresh) process; prints one result line."""
    engine, kind = side_parts(side)
    result = {"side": side, "status": "running", "load_average_start": load_average()}
    try:
        build = mfcore_engine if engine == "mfcore" else transformers_engine
        generate, info = build(kind, directory, options)
        result.update(info)
        result["peak_rss_after_load_gb"] = peak_rss_bytes() / GB
        log(f"[{side}] loaded in {info['load_s']:.1f} s (import {info['import_s']:.1f} s), "
            f"{info['weight_bytes'] / GB:.2f} GB of weights, RSS peak so far {result['peak_rss_after_load_gb']:.1f} GB")
        report(result)
        measure(side, generate, options, model_shape(directory)["vocab_size"], result)
        result["status"] = "ok"
    except Skip as exc:
        result.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - report and let the run go on
        import traceback

        traceback.print_exc()
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    result["load_average_end"] = load_average()
    report(result)


# -- running a process, with its peak RSS -----------------------------------------------------------------------
# A parent's size leaks into its children's ru_maxrss (the memory map a child has before its exec is
# counted), so every measured process is started by this small launcher, whose map is small, and the
# launcher reports what os.wait4 says of its own child.
LAUNCHER = r"""
import json, os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"code": process.returncode, "maxrss": usage.ru_maxrss * 1024}, f)
"""


def run_process(command, timeout, env=None):
    """(return code, stdout, wall seconds, peak RSS bytes, timed out?) of `command`, killed after `timeout` s."""
    handle, report = tempfile.mkstemp(prefix="realsize-rusage-", suffix=".json")
    os.close(handle)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, report] + list(command), stdout=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        stdout, _ = process.communicate()
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - start
    try:
        with open(report) as f:
            usage = json.load(f)
    except (OSError, ValueError):  # the launcher itself was killed
        usage = {"code": process.returncode, "maxrss": 0}
    finally:
        os.unlink(report)
    return usage["code"], stdout, wall, usage["maxrss"], timed_out.is_set()


def describe_exit(code, timed_out, timeout):
    if timed_out:
        return f"killed after the --timeout of {timeout} s"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (out of memory? see dmesg)" if -code == signal.SIGKILL else "")
    return f"exited with status {code}"


def run_python_side(side, directory, options, timeout):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.setdefault("GLOG_v", "3")  # MindSpore: errors only
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = [sys.executable, os.path.abspath(__file__), "--child", side, directory, json.dumps(options)]
    code, stdout, wall, maxrss, timed_out = run_process(command, timeout, env=env)
    result = None
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    if result is None:
        result = {"side": side, "status": "failed", "reason": describe_exit(code, timed_out, timeout)}
    elif code != 0 or result["status"] == "running":  # killed part way: keep the figures it reported
        result.update(status="failed", reason=result.get("reason") or describe_exit(code, timed_out, timeout))
    result["peak_rss_gb"] = max(result.get("peak_rss_gb", 0.0), maxrss / GB)
    result["process_wall_s"] = wall
    return result


# -- llama.cpp --------------------------------------------------------------------------------------------------
def find_llama_cpp(explicit):
    candidates = [explicit] if explicit else []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(os.environ["LLAMA_CPP_DIR"])
    home = os.environ.get("LLAMA_CPP_HOME", os.path.expanduser("~/.cache/llama-cpp-anchor"))
    candidates += sorted(glob.glob(os.path.join(home, "llama_cpp_python-*", "vendor", "llama.cpp")), reverse=True)
    for folder in candidates:
        if folder and os.access(os.path.join(folder, "build", "bin", "llama-bench"), os.X_OK):
            return os.path.abspath(folder)
    return None


def gguf_path(directory, kind):
    return os.path.abspath(directory).rstrip("/") + f"-{kind}.gguf"


def ensure_tokenizer(directory):
    if os.path.exists(os.path.join(directory, "tokenizer.json")) or \
            os.path.exists(os.path.join(directory, "tokenizer.model")):
        return
    tool = os.path.join(TOOLS, "llama3-tokenizer-json.py")
    model = os.path.join(os.path.dirname(REPO), "shared", "testdata", "llama3", "tokenizer.model")
    if not (os.path.exists(tool) and os.path.exists(model)):
        raise RuntimeError(f"{directory} has no tokenizer.json (llama.cpp's converter needs one); make it with "
                           f"{tool} {model} {directory}")
    log(f"adding tokenizer.json to {directory} ({tool})")
    subprocess.run([sys.executable, tool, model, directory], check=True, stdout=sys.stderr)


def ensure_gguf(llama, directory, kind, free_margin=2 * GB):
    """DIR-<kind>.gguf, converted once (written to a temporary name, renamed when complete)."""
    path = gguf_path(directory, kind)
    if os.path.exists(path):
        return path
    ensure_tokenizer(directory)
    parameters = model_shape(directory)["parameters"]
    need = parameters * WEIGHT_BYTES[kind]
    free = os.statvfs(os.path.dirname(path))
    free = free.f_bavail * free.f_frsize
    if need + free_margin > free:
        raise RuntimeError(f"not enough disk for {path}: needs ~{need / GB:.1f} GB, {free / GB:.1f} GB free")
    partial = path + ".partial"
    log(f"converting {directory} to {path} (~{need / GB:.1f} GB)")
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(llama, "convert_hf_to_gguf.py"), directory, "--outtype", kind,
                    "--outfile", partial], check=True, stdout=sys.stderr)
    os.replace(partial, path)
    log(f"converted in {time.perf_counter() - start:.0f} s")
    return path


def parse_jsonl_or_json(text):
    text = text.strip()
    start = min([i for i in (text.find("["), text.find("{")) if i >= 0], default=-1)
    if start < 0:
        return []
    try:
        data = json.loads(text[start:])
        return data if isinstance(data, list) else [data]
    except ValueError:
        rows = []
        for line in text[start:].splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        return rows


def run_llama_cpp_side(side, directory, options, llama, timeout):
    _, kind = side_parts(side)
    result = {"side": side, "status": "ok", "load_average_start": load_average()}
    try:
        path = ensure_gguf(llama, directory, kind)
    except Exception as exc:  # noqa: BLE001
        return dict(result, status="failed", reason=f"GGUF conversion: {type(exc).__name__}: {exc}")
    bin_dir = os.path.join(llama, "build", "bin")
    bench = os.path.join(bin_dir, "llama-bench")
    threads = str(options["threads"])
    result.update(gguf=path, gguf_bytes=os.path.getsize(path))
    # Load: a run of one short prompt without warm-up maps the file and touches every weight once.
    code, stdout, wall, maxrss, timed_out = run_process(
        [bench, "-m", path, "-p", "8", "-n", "0", "-r", "1", "--no-warmup", "-t", threads, "-o", "json"], timeout)
    rows = parse_jsonl_or_json(stdout) if code == 0 else []
    if code != 0 or not rows:
        return dict(result, status="failed", reason=f"llama-bench (load run) {describe_exit(code, timed_out, timeout)}")
    result["load_s"] = wall - sum(rows[0].get("samples_ns", [0])) / 1e9
    peak = maxrss
    command = [bench, "-m", path, "-p", ",".join(map(str, options["prefill"])), "-n", str(options["decode"]),
               "-t", threads, "-r", str(options["repeats"]), "-o", "json"]
    log(f"[{side}] {' '.join(command)}")
    code, stdout, wall, maxrss, timed_out = run_process(command, timeout)
    peak = max(peak, maxrss)
    rows = parse_jsonl_or_json(stdout) if code == 0 else []
    if code != 0 or not rows:
        return dict(result, status="failed", peak_rss_gb=peak / GB,
                    reason=f"llama-bench {describe_exit(code, timed_out, timeout)}")
    result.update(prefill={}, decode={}, compile_s={}, compile_total_s=None, llama_bench=rows)  # no graphs
    for row in rows:
        # llama-bench reports the best-known figure as avg_ts; best of the repeats from the samples
        samples = row.get("samples_ts") or [row.get("avg_ts")]
        rate = max(samples)
        if row.get("n_gen", 0) == 0 and row.get("n_prompt", 0) > 0:
            result["prefill"][str(row["n_prompt"])] = {"tok_s": rate, "avg_tok_s": row.get("avg_ts")}
            log(f"[{side}] prefill {row['n_prompt']}: {rate:.1f} tok/s")
        elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
            result["decode"]["1"] = {"tok_s": rate, "avg_tok_s": row.get("avg_ts"), "new_tokens": row["n_gen"],
                                     "prompt": 0}
            log(f"[{side}] decode batch 1: {rate:.2f} tok/s")
    result["build_commit"] = rows[0].get("build_commit")
    batched = os.path.join(bin_dir, "llama-batched-bench")
    if 4 in options["batches"]:
        if not os.access(batched, os.X_OK):
            result["decode_batch4_note"] = f"no {batched}: build it with cmake --build {llama}/build --target " \
                                           f"llama-batched-bench"
            log(f"[{side}] batch 4: {result['decode_batch4_note']}")
        else:
            prompt, new = options["decode_prompt"], options["decode"]
            command = [batched, "-m", path, "-c", str(4 * (prompt + new) + 64), "-b", "2048", "-ub", "512",
                       "-npp", str(prompt), "-ntg", str(new), "-npl", "1,4", "-t", threads, "--output-format", "jsonl"]
            log(f"[{side}] {' '.join(command)}")
            code, stdout, wall, maxrss, timed_out = run_process(command, timeout)
            peak = max(peak, maxrss)
            rows = [r for r in parse_jsonl_or_json(stdout) if "s_tg" in r or "speed_tg" in r]
            by_batch = {row.get("pl"): row for row in rows}
            if code == 0 and 4 in by_batch:
                rate = by_batch[4]["speed_tg"]
                result["decode"]["4"] = {"tok_s": rate, "new_tokens": new, "prompt": prompt, "raw": by_batch[4]}
                if 1 in by_batch and "1" in result["decode"]:  # after the same prompt (llama-bench's: none)
                    result["decode"]["1"]["batched_bench_tok_s"] = by_batch[1]["speed_tg"]
                log(f"[{side}] decode batch 4: {rate:.2f} tok/s (llama-batched-bench; batch 1 there: "
                    f"{by_batch.get(1, {}).get('speed_tg', float('nan')):.2f})")
            else:
                result["decode_batch4_note"] = f"llama-batched-bench {describe_exit(code, timed_out, timeout)}"
    result["peak_rss_gb"] = peak / GB
    result["load_average_end"] = load_average()
    return result


# -- the run ------------------------------------------------------------------------------------------------
def estimated_rss(side, shape):
    engine, kind = side_parts(side)
    return shape["parameters"] * WEIGHT_BYTES[kind] + OVERHEAD[engine]


def bound(result, shape, side, bandwidth, batch):
    _, kind = side_parts(side)
    read = result.get("read_bytes_per_token") or shape["read_parameters_per_token"] * WEIGHT_BYTES[kind]
    return batch * bandwidth / read


def bench_model(directory, args, bandwidth):
    shape = model_shape(directory)
    repeats = args.repeats or (3 if shape["parameters"] < 3e9 else 1)
    options = {"prefill": args.prefill, "decode": args.decode, "decode_prompt": args.decode_prompt,
               "batches": [1, 4] if args.batch4 else [1], "repeats": repeats, "threads": args.threads,
               "no_dtype_check": args.no_dtype_check}
    memory = meminfo()
    llama = None if args.skip_llama_cpp else find_llama_cpp(args.llama_cpp)
    log(f"== {directory}: {shape['parameters'] / 1e9:.2f} B parameters "
        f"({shape['read_parameters_per_token'] / 1e9:.2f} B read per decode step), repeats {repeats}")
    results = {}
    for side in args.sides:
        engine, kind = side_parts(side)
        estimate = estimated_rss(side, shape)
        if engine == "llama.cpp" and args.skip_llama_cpp:
            continue
        if engine == "llama.cpp" and llama is None:
            results[side] = {"side": side, "status": "skipped", "reason": "llama.cpp not found: build it with "
                             f"{os.path.join(TOOLS, 'build-llama-cpp.sh')} or pass --llama-cpp DIR"}
        elif estimate > 0.9 * memory["MemTotal"] and not args.force:
            results[side] = {"side": side, "status": "skipped", "reason": f"would not fit: ~{estimate / GB:.1f} GB "
                             f"resident (weights + overhead) vs {memory['MemTotal'] / GB:.1f} GB of memory"}
        else:
            available = meminfo()["MemAvailable"]
            if estimate > available:
                log(f"[{side}] warning: ~{estimate / GB:.1f} GB expected, {available / GB:.1f} GB available now")
            log(f"[{side}] starting ({time.strftime('%H:%M:%S')}, load average {load_average():.2f})")
            start = time.perf_counter()
            if engine == "llama.cpp":
                results[side] = run_llama_cpp_side(side, directory, options, llama, args.timeout)
            else:
                results[side] = run_python_side(side, directory, options, args.timeout)
            results[side]["side_wall_s"] = time.perf_counter() - start
        result = results[side]
        result["estimated_rss_gb"] = estimate / GB
        for batch, row in result.get("decode", {}).items():
            row["bound_tok_s"] = bound(result, shape, side, bandwidth, int(batch))
            row["of_bound"] = row["tok_s"] / row["bound_tok_s"] if row.get("tok_s") else None
        if result["status"] != "ok":
            log(f"[{side}] {result['status'].upper()}: {result.get('reason')}")
        else:
            log(f"[{side}] done in {result.get('side_wall_s', 0):.0f} s, peak RSS {result['peak_rss_gb']:.2f} GB")
    return {"model": os.path.abspath(directory), "shape": {k: v for k, v in shape.items() if k != "config"},
            "config": shape["config"], "options": options, "llama_cpp": llama, "sides": results,
            "ratios": ratios(results)}


def figure(result, group, key):
    row = (result or {}).get(group, {}).get(key)
    return row.get("tok_s") if row else None


def ratios(results):
    rows = []
    for ours, reference in RATIOS:
        a, b = results.get(ours), results.get(reference)
        if not (a and b and a["status"] == "ok" and b["status"] == "ok"):
            continue
        row = {"ours": ours, "reference": reference}
        for group in ("prefill", "decode"):
            for key in a.get(group, {}):
                x, y = figure(a, group, key), figure(b, group, key)
                if x and y:
                    row[f"{group} {key}" if group == "prefill" else f"decode b{key}"] = x / y
        if a.get("peak_rss_gb") and b.get("peak_rss_gb"):
            row["peak RSS"] = a["peak_rss_gb"] / b["peak_rss_gb"]
        rows.append(row)
    return rows


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def table(model_result, args):
    sides = model_result["sides"]
    prefill = [str(p) for p in args.prefill]
    batches = ["1", "4"] if args.batch4 else ["1"]
    head = (["side", "load s", "first calls s", "peak RSS GB", "GB read/token"]
            + [f"prefill {p} tok/s" for p in prefill] + [f"decode b{b} tok/s" for b in batches]
            + [f"b{b} bound tok/s (share)" for b in batches] + ["load avg"])
    lines = [f"### {model_result['model']} ({model_result['shape']['parameters'] / 1e9:.2f} B parameters)", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    notes = []
    for side, result in sides.items():
        if result["status"] != "ok":
            notes.append(f"- {side}: {result['status']}: {result.get('reason')}")
            if not (result.get("prefill") or result.get("decode")):
                continue
        name = side if result["status"] == "ok" else f"{side} ({result['status']}, part)"
        read = result.get("read_bytes_per_token") or (model_result["shape"]["read_parameters_per_token"]
                                                       * WEIGHT_BYTES[side_parts(side)[1]])
        cells = [name, fmt(result.get("load_s")), fmt(result.get("compile_total_s")), fmt(result.get("peak_rss_gb"), 2),
                 fmt(read / GB, 2)]
        cells += [fmt(figure(result, "prefill", p)) for p in prefill]
        cells += [fmt(figure(result, "decode", b), 2) for b in batches]
        for b in batches:
            row = result.get("decode", {}).get(b)
            cells.append(f"{row['bound_tok_s']:.2f} ({100 * row['of_bound']:.0f}%)" if row and row.get("of_bound")
                         else "-")
        cells.append(fmt(result.get("load_average_start"), 1))
        lines.append("| " + " | ".join(cells) + " |")
        if result.get("decode_batch4_note"):
            notes.append(f"- {side}: batch 4: {result['decode_batch4_note']}")
    if model_result["ratios"]:
        keys = [f"prefill {p}" for p in prefill] + [f"decode b{b}" for b in batches] + ["peak RSS"]
        lines += ["", "| ratio | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for row in model_result["ratios"]:
            lines.append(f"| {row['ours']} / {row['reference']} | "
                         + " | ".join(fmt(row.get(k), 2) for k in keys) + " |")
    return "\n".join(lines + ([""] + notes if notes else []))


def write_json(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    handle, partial = tempfile.mkstemp(dir=directory, prefix=".realsize-", suffix=".json")
    with os.fdopen(handle, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, directory, options = sys.argv[2:5]
        return child(side, directory, json.loads(options))
    if len(sys.argv) > 1 and sys.argv[1] == "--bandwidth-child":
        print(RESULT_MARK + json.dumps(read_bandwidth(float(sys.argv[2]), int(sys.argv[3]))))
        return None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a Hugging Face Llama directory (repeatable)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--skip-llama-cpp", action="store_true")
    parser.add_argument("--prefill", default="64,512", help="prompt lengths timed for prefill (batch 1)")
    parser.add_argument("--decode", type=int, default=32, help="new tokens of a decode run")
    parser.add_argument("--decode-prompt", type=int, default=64, help="prompt tokens before a decode run")
    parser.add_argument("--batch4", action="store_true", help="also decode at batch 4")
    parser.add_argument("--repeats", type=int, default=None, help="best of; default 3 below 3B parameters, else 1")
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads, bandwidth threads")
    parser.add_argument("--llama-cpp", help="llama.cpp folder (with build/bin/llama-bench, convert_hf_to_gguf.py)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a side may take before it is killed")
    parser.add_argument("--bandwidth-gb", type=float, default=2.0, help="array size of the bandwidth measure")
    parser.add_argument("--force", action="store_true", help="run sides whose weights would not fit the memory")
    parser.add_argument("--no-dtype-check", action="store_true",
                        help="run mfcore-bf16/int8 even when no parameter is of that type")
    parser.add_argument("--prepare", action="store_true", help="only make the GGUF files of the llama.cpp sides")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    args.sides = [normalize_side(s) for s in args.sides.split(",") if s.strip()]
    args.prefill = [int(p) for p in args.prefill.split(",") if p.strip()]
    if args.decode < 2:
        parser.error("--decode needs at least 2 new tokens")
    for directory in args.model:
        if not os.path.exists(os.path.join(directory, "config.json")):
            parser.error(f"{directory} has no config.json")

    if args.prepare:
        llama = find_llama_cpp(args.llama_cpp)
        if llama is None:
            raise SystemExit(f"llama.cpp not found: build it with {os.path.join(TOOLS, 'build-llama-cpp.sh')}")
        memory = meminfo()
        for directory in args.model:
            shape = model_shape(directory)
            for side in args.sides:
                engine, kind = side_parts(side)
                if engine != "llama.cpp":
                    continue
                if estimated_rss(side, shape) > 0.9 * memory["MemTotal"] and not args.force:
                    log(f"{directory}: {side} would not fit the memory; no GGUF made")
                    continue
                print(ensure_gguf(llama, directory, kind), flush=True)
        return

    log(f"read bandwidth: {args.bandwidth_gb:.1f} GB array, {args.threads} threads ...")
    first = measure_bandwidth(args.bandwidth_gb, args.threads)
    log("  " + ", ".join(f"{k} {v / GB:.1f} GB/s" for k, v in first.items()))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    models = [bench_model(directory, args, max(first.values())) for directory in args.model]
    last = measure_bandwidth(args.bandwidth_gb, args.threads)
    bandwidth = max(max(first.values()), max(last.values()))
    # the bound figures used the first measure; recompute them with the larger of both
    for model_result in models:
        shape = model_result["shape"]
        for side, result in model_result["sides"].items():
            for batch, row in result.get("decode", {}).items():
                row["bound_tok_s"] = bound(result, shape, side, bandwidth, int(batch))
                row["of_bound"] = row["tok_s"] / row["bound_tok_s"] if row.get("tok_s") else None
    summary = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "machine": {"cpus": os.cpu_count(), "memory_gb": meminfo()["MemTotal"] / GB,
                           "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                        if l.startswith("model name")), None)},
               "read_bandwidth_gb_s": bandwidth / GB,
               "read_bandwidth_measures_gb_s": {"start": {k: v / GB for k, v in first.items()},
                                                "end": {k: v / GB for k, v in last.items()}},
               "threads": args.threads, "models": models}
    print()
    print(f"Read bandwidth {bandwidth / GB:.1f} GB/s (start: "
          + ", ".join(f"{k} {v / GB:.1f}" for k, v in first.items()) + "; end: "
          + ", ".join(f"{k} {v / GB:.1f}" for k, v in last.items()) + " GB/s); decode bound = batch x bandwidth / "
          "weight bytes read per token (all weights but the input embedding).")
    for model_result in models:
        print()
        print(table(model_result, args))
    if args.json:
        write_json(args.json, summary)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
