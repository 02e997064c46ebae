"""Fuzz (issue 16): random bytes, truncations, byte flips and wrong value types at the config.json, task
YAML, safetensors, MindRecord and tokenizer readers end in a clear mfcore error or a successful read:
never another exception (a traceback), never a hang or a crash (the driver runs in a subprocess with a
timeout). Seeded and bounded: about 430 cases in ~10 s."""
import json
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).with_name("fuzz_readers.py")


def test_readers_never_traceback_or_hang(tmp_path, testdata):
    out = tmp_path / "fuzz.json"
    result = subprocess.run([sys.executable, str(DRIVER), "16", "40", str(testdata), str(out)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    tally = json.loads(out.read_text())
    tracebacks = tally.pop("tracebacks", [])
    assert not tracebacks, "\n".join(tracebacks[:10])
    assert set(tally) >= {"config.json bytes", "config.json types", "task yaml bytes", "task yaml types",
                          "safetensors", "mindrecord", "tokenizer spm", "tokenizer tiktoken"}
    assert sum(t["clear"] for t in tally.values()) > 200  # the mutations did reach the error paths
    assert max(t["slowest_s"] for t in tally.values()) < 10
