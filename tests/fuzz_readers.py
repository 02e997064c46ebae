"""Fuzz driver (run by tests/test_fuzz_readers.py in a subprocess, so that a hang or a crash is caught).

`python fuzz_readers.py SEED CASES_PER_READER TESTDATA OUT.json`: random bytes, truncations, byte flips
and wrong value types thrown at the readers of config.json, task YAML, safetensors, MindRecord and the
tokenizers. Each case ends as "ok" (read), "clear" (an mfcore error naming what is wrong) or
"traceback" (any other exception: a bug). Writes the tally and the tracebacks as JSON.
"""
import argparse
import json
import random
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from mfcore.errors import MfcoreError

WRONG_VALUES = ["big", -1, 0, 1e30, float("nan"), None, True, [], [1, "x"], {"a": 1}, "", 2 ** 70]


def mutate(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(5)
    if kind == 0 or not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if kind == 1:
        return data[:rng.randrange(len(data))]
    out = bytearray(data)
    if kind == 2:
        for _ in range(rng.randrange(1, 9)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 3:
        at = rng.randrange(len(out))
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    else:
        at = rng.randrange(len(out))
        del out[at:at + rng.randrange(1, 64)]
    return bytes(out)


def wrong_types(rng: random.Random, node):
    """A copy of a JSON-like tree with one random leaf replaced by a value of the wrong type."""
    paths = []

    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + [key])
        elif path:
            paths.append(path)

    walk(node, [])
    node = json.loads(json.dumps(node))
    if paths:
        path = rng.choice(paths)
        target = node
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = rng.choice(WRONG_VALUES)
    return node


def safetensors_bytes() -> bytes:
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int32)}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": {"float32": "F32", "int32": "I32"}[str(array.dtype)], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("seed", type=int)
    parser.add_argument("cases", type=int)
    parser.add_argument("testdata")
    parser.add_argument("out")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mfcore-fuzz-"))
    testdata = Path(args.testdata)
    results = {}

    def attempt(reader, function):
        started = time.perf_counter()
        try:
            function()
            outcome = "ok"
        except MfcoreError:
            outcome = "clear"
        except Exception as exc:  # noqa: BLE001 - this is what the fuzzer looks for
            outcome = "traceback"
            results.setdefault("tracebacks", []).append(
                f"{reader}: {type(exc).__name__}: {exc}"[:400] + " | " + traceback.format_exc(limit=-2)[-400:])
        tally = results.setdefault(reader, {"ok": 0, "clear": 0, "traceback": 0, "slowest_s": 0.0})
        tally[outcome] += 1
        tally["slowest_s"] = max(tally["slowest_s"], round(time.perf_counter() - started, 3))

    import mfcore
    from mfcore.cli import build_parser
    from mfcore.models.safetensors_reader import SafetensorsFile
    from mfcore.tasks.spec import read_task

    # config.json
    base_config = mfcore.AutoConfig.from_pretrained("llama2-tiny").to_dict()
    config_dir = work / "config"
    config_dir.mkdir()
    for _ in range(args.cases):
        (config_dir / "config.json").write_bytes(mutate(rng, json.dumps(base_config).encode()))
        attempt("config.json bytes", lambda: mfcore.AutoConfig.from_pretrained(str(config_dir)))
        (config_dir / "config.json").write_text(json.dumps(wrong_types(rng, base_config)))
        attempt("config.json types", lambda: mfcore.AutoConfig.from_pretrained(str(config_dir)))
    # task YAML
    import yaml

    example = Path(__file__).resolve().parents[1] / "examples" / "llama2-tiny" / "pretrain.yaml"
    text = example.read_bytes()
    task = yaml.safe_load(text)
    task_path = work / "task.yaml"
    for _ in range(args.cases):
        task_path.write_bytes(mutate(rng, text))
        attempt("task yaml bytes", lambda: read_task(build_parser().parse_args(["run", "--config", str(task_path)])))
        task_path.write_text(yaml.safe_dump(wrong_types(rng, task)))
        attempt("task yaml types", lambda: read_task(build_parser().parse_args(["run", "--config", str(task_path)])))
    # safetensors
    good = safetensors_bytes()
    tensor_path = work / "model.safetensors"
    for _ in range(args.cases * 2):
        tensor_path.write_bytes(mutate(rng, good))

        def read_all():
            file = SafetensorsFile(tensor_path)
            for name in file.names():
                np.asarray(file.map(name)).sum()

        attempt("safetensors", read_all)
    # tokenizers
    from mfcore.plugins.manager import get_plugins

    for reader, family, class_name in (("tokenizer spm", "llama2", "LlamaTokenizer"),
                                       ("tokenizer tiktoken", "llama3", "Llama3Tokenizer")):
        model_file = testdata / family / "tokenizer.model"
        if not model_file.exists():
            continue
        cls = get_plugins().tokenizers.get(class_name)
        data = model_file.read_bytes()
        for _ in range(max(2, args.cases // 4)):
            path = work / f"{family}.model"
            path.write_bytes(mutate(rng, data))

            def load_and_use():
                tokenizer = cls(vocab_file=str(path))
                ids = tokenizer.encode("Hello wörld 😀")
                tokenizer.decode(ids)

            attempt(reader, load_and_use)
        tokenizer = cls(vocab_file=str(model_file))
        for _ in range(args.cases):
            ids = [rng.choice([rng.randrange(-5, 5), rng.randrange(len(tokenizer) + 100), 2 ** 40])
                   for _ in range(rng.randrange(1, 6))]
            attempt(f"{reader} decode", lambda: tokenizer.decode(ids))
            chars = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF),
                                            rng.randrange(0xD800, 0xDFFF)])) for _ in range(8))
            attempt(f"{reader} encode", lambda: tokenizer.encode(chars))
    # MindRecord (MindSpore's reader, last: it is the slowest)
    from mfcore.data.mindrecord import read_mindrecord, write_mindrecord

    record = work / "good.mindrecord"
    write_mindrecord(record, [(np.arange(8, dtype=np.int32), np.arange(8, dtype=np.int32))] * 4, 8)
    data, index = record.read_bytes(), Path(f"{record}.db").read_bytes()
    for number in range(max(2, args.cases // 4)):
        path = work / f"bad{number}.mindrecord"
        path.write_bytes(mutate(rng, data))
        Path(f"{path}.db").write_bytes(index if number % 2 == 0 else mutate(rng, index))
        attempt("mindrecord", lambda: read_mindrecord(path))
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
