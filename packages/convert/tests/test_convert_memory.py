"""Streaming: converting a checkpoint adds about one tensor to the process's peak memory, not the model."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("mf_llama2", reason="mf-llama2 provides the Llama weight maps")
if not sys.platform.startswith("linux"):
    pytest.skip("peak RSS is read from /proc/self/status", allow_module_level=True)

HIDDEN, FFN, VOCAB, LAYERS = 512, 1408, 8000, 8

CHILD = textwrap.dedent("""
    import json, sys
    import mf_convert, mfcore
    mfcore.get_plugins()
    mf_convert.convert  # the engine loads lazily: import it before measuring, as the conversion itself is measured
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    before = status("VmRSS")
    mf_convert.convert(sys.argv[1], sys.argv[2], shard_size="40MB", **json.loads(sys.argv[3]))
    print(json.dumps({"added": status("VmHWM") - before}))
""")


def _checkpoint(directory):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    directory.mkdir()
    state = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "lm_head.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        state.update({p + f"self_attn.{x}_proj.weight": (HIDDEN, HIDDEN) for x in "qkvo"})
        state.update({p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                      p + "mlp.down_proj.weight": (HIDDEN, FFN), p + "input_layernorm.weight": (HIDDEN,),
                      p + "post_attention_layernorm.weight": (HIDDEN,)})
    save_file({k: rng.standard_normal(s, dtype=np.float32) for k, s in state.items()}, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": 8, "rms_norm_eps": 1e-5}))
    return sum(int(np.prod(s)) * 4 for s in state.values())


@pytest.mark.parametrize("options", [{}, {"dtype": "bf16"}, {"verify": True}])
def test_peak_memory_is_about_one_tensor(tmp_path, options):
    total = _checkpoint(tmp_path / "hf")
    largest = VOCAB * HIDDEN * 4
    run = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "hf"), str(tmp_path / "out"), json.dumps(options)],
                         capture_output=True, text=True, check=True)
    added = json.loads(run.stdout.strip().splitlines()[-1])["added"]
    # one largest tensor (two with --verify or a cast: source and result) plus slices of compares and
    # casts; loading the whole model would add more than `total`
    assert added < 2 * largest + 24 * 2**20, (added, largest)
    assert added < total / 2, (added, total)
