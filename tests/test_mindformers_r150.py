"""MindFormers r1.5.0's own Llama task YAMLs (../shared/mindformers-r1.5.0, byte for byte from the tag) run
with `mfcore run`, each in the run mode its file name says, changed only as that folder's README allows:
paths (load_checkpoint, dataset_dir, vocab_file, output_dir), model dimensions shrunk to a tiny model
(the 70B files keep multiple_of / ffn_dim_multiplier, so their FFN rule is exercised), batch sizes (batch_size
2; gradient_accumulation_steps, the micro-batches of one step, at most 2: each is a copy of the forward and
backward in the compiled step), and on
CPU only what this MindSpore CPU build cannot do: bfloat16 compute (-> float32; bfloat16 *storage* stays),
device_target Ascend (-> CPU), msrun for use_parallel (-> one process; one data-parallel file also
runs under msrun with 2 CPU workers, data_parallel 8 -> 2, at the end) and model / pipeline parallel (-> 1).

TABLE says, per file, the run mode and the outcome: RUNS, or refused with the key the error names (only
for what is not implemented; each reason is in the error message). The files share one tiny dataset per
tokenizer and one tiny checkpoint per model shape. SAME_TASK lists files whose prepared task means exactly
what another's does (equal validated TaskSpec, output_dir aside): they are read and validated, and the
equality is asserted, but only the other one is run (a second identical run proves nothing more).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import mfcore
from mfcore.cli import main
from mfcore.data import write_mindrecord

REPO = Path(__file__).resolve().parents[1]
R150 = REPO.parent / "shared" / "mindformers-r1.5.0"
SEQ = 16
TINY = dict(hidden_size=32, num_layers=1, num_heads=4, seq_length=SEQ)  # one layer: the compile dominates
RUNS = "runs"
NEW_TOKENS = 2  # a prefill and one cached decode step

# file -> (run mode of its name, outcome). "msrun-covered": use_parallel with data parallel only, the kind
# of file test_data_parallel_file_under_msrun runs under msrun with 2 CPU workers (MSRUN_COVERS).
TABLE = {
    "finetune_llama2_13b.yaml": ("finetune", RUNS),  # msrun-covered
    "finetune_llama2_13b_bf16.yaml": ("finetune", RUNS),  # msrun-covered
    "finetune_llama2_70b.yaml": ("finetune", RUNS),
    "finetune_llama2_70b_bf16_32p.yaml": ("finetune", RUNS),
    "finetune_llama2_70b_bf16_64p.yaml": ("finetune", RUNS),
    "finetune_llama2_7b.yaml": ("finetune", RUNS),  # msrun: runs under msrun, 2 workers
    "finetune_llama2_7b_bf16.yaml": ("finetune", RUNS),  # msrun-covered
    "finetune_llama2_7b_prefixtuning.yaml": ("finetune", RUNS),  # msrun-covered
    "finetune_llama2_7b_ptuning2.yaml": ("finetune", RUNS),  # msrun-covered
    "lora_llama2_13b.yaml": ("finetune", RUNS),  # msrun-covered
    "lora_llama2_7b.yaml": ("finetune", RUNS),  # msrun-covered
    "predict_llama2_13b.yaml": ("predict", RUNS),
    "predict_llama2_13b_ptq.yaml": ("predict", "model.model_config.quantization_config.quant_method"),
    "predict_llama2_13b_rtn.yaml": ("predict", RUNS),
    "predict_llama2_13b_smooth_quant.yaml": ("predict", "model.model_config.quantization_config.quant_method"),
    "predict_llama2_70b.yaml": ("predict", RUNS),
    "predict_llama2_70b_rtn.yaml": ("predict", RUNS),
    "predict_llama2_70b_smooth_quant.yaml": ("predict", "model.model_config.quantization_config.quant_method"),
    "predict_llama2_7b.yaml": ("predict", RUNS),
    "predict_llama2_7b_prefixtuning.yaml": ("predict", RUNS),
    "predict_llama2_7b_ptuning2.yaml": ("predict", RUNS),   # its use_parallel: Flase is refused as is (below)
    "predict_llama2_7b_slora.yaml": ("predict", "model.model_config.pet_config.pet_type"),
    "pretrain_llama2_13b.yaml": ("train", RUNS),  # msrun-covered
    "pretrain_llama2_13b_auto_parallel.yaml": ("train", RUNS),  # msrun-covered
    "pretrain_llama2_13b_bf16.yaml": ("train", RUNS),  # msrun-covered
    "pretrain_llama2_70b.yaml": ("train", RUNS),
    "pretrain_llama2_70b_auto_parallel.yaml": ("train", RUNS),
    "pretrain_llama2_70b_bf16_32p.yaml": ("train", RUNS),
    "pretrain_llama2_70b_bf16_64p.yaml": ("train", RUNS),
    "pretrain_llama2_7b.yaml": ("train", RUNS),  # msrun-covered
    "pretrain_llama2_7b_auto_parallel.yaml": ("train", RUNS),  # msrun-covered
    "pretrain_llama2_7b_bf16.yaml": ("train", RUNS),  # msrun-covered
    "finetune_llama3_70b.yaml": ("finetune", RUNS),
    "predict_llama3_70b.yaml": ("predict", RUNS),
    "pretrain_llama3_70b.yaml": ("train", RUNS),
    "finetune_llama3_8b.yaml": ("finetune", RUNS),  # msrun-covered
    "predict_llama3_8b.yaml": ("predict", RUNS),
}


# file -> the file whose prepared task is the same TaskSpec (the *_auto_parallel files differ only in
# parallel.parallel_mode / parallel_config.mem_coeff: distributed settings, one process here).
SAME_TASK = {
    "pretrain_llama2_7b_auto_parallel.yaml": "pretrain_llama2_7b.yaml",
    "pretrain_llama2_13b_auto_parallel.yaml": "pretrain_llama2_13b.yaml",
    "pretrain_llama2_70b_auto_parallel.yaml": "pretrain_llama2_70b.yaml",
}


def r150_files():
    return sorted(R150.glob("configs/llama2/*.yaml")) + sorted(R150.glob("research/llama3/*/*.yaml"))


def test_the_table_covers_every_file():
    if not R150.is_dir():
        pytest.skip(f"{R150} not found (the shared/ folder beside the repo)")
    assert sorted(p.name for p in r150_files()) == sorted(TABLE)
    assert len(TABLE) == 37


# -- the allowed changes ------------------------------------------------------------------------------

def is_llama3(task) -> bool:
    return task["model"]["model_config"].get("vocab_size") == 128256


def shrink(task: dict, data_parallel: int = 1) -> dict:
    """Tiny dimensions, batch 2, CPU: float32 compute for bfloat16, no model parallel, and one process
    (or, with data_parallel 2, the file's use_parallel kept for 2 msrun workers)."""
    mc = task["model"]["model_config"]
    mc.update(TINY)
    if "n_kv_heads" in mc:
        mc["n_kv_heads"] = 2
    if mc.get("intermediate_size") is not None:
        mc["intermediate_size"] = 64
    if mc.get("max_position_embedding"):
        mc["max_position_embedding"] = SEQ
    if mc.get("compute_dtype") == "bfloat16":
        mc["compute_dtype"] = "float32"
    for key in ("runner_config", "train_dataset", "eval_dataset"):
        if isinstance(task.get(key), dict) and "batch_size" in task[key]:
            task[key]["batch_size"] = 2
    runner = task.get("runner_config") or {}
    if (runner.get("gradient_accumulation_steps") or 1) > 2:
        runner["gradient_accumulation_steps"] = 2
    if isinstance(task.get("context"), dict):  # Ascend -> CPU (a separate process would fall back itself)
        task["context"]["device_target"] = "CPU"
    if task.get("use_parallel") is True and data_parallel == 1:
        task["use_parallel"] = False
    if isinstance(task.get("parallel_config"), dict):
        task["parallel_config"].update(data_parallel=data_parallel, model_parallel=1, pipeline_stage=1)
    return task


def _data(directory: Path, vocab: int, finetune: bool, count: int) -> Path:
    """`count` sequences of SEQ tokens (one global batch: one optimizer step per epoch)."""
    path = directory / f"{'sft' if finetune else 'pt'}_{vocab}_{count}.mindrecord"
    if not path.exists():
        rng = np.random.default_rng(0)
        rows = []
        for ids in rng.integers(3, min(vocab, 30000), (count, SEQ)).astype(np.int32):
            labels = ids.copy()
            if finetune:
                labels[:SEQ // 2] = -100  # the prompt half is masked, as `mfcore data --format alpaca` does
            rows.append((ids, labels))
        write_mindrecord(path, iter(rows), SEQ)
    return path


def _checkpoint(directory: Path, task: dict, ckpt_file: bool) -> Path:
    """A tiny random checkpoint of the task's (shrunk) model_config, in MindFormers' own layout (fused
    w_qkv / w_gate_hidden when qkv_concat) and, for predict, as one .ckpt file as MindFormers writes."""
    config = {k: v for k, v in task["model"]["model_config"].items()
              if k not in ("pet_config", "quantization_config")}
    key = json.dumps(config, sort_keys=True, default=str)
    target = directory / f"ckpt_{abs(hash(key))}_{int(ckpt_file)}"
    if not target.exists():
        model = mfcore.AutoModelForCausalLM.from_config(mfcore.AutoConfig.for_model("llama", **{
            k: v for k, v in config.items() if k != "type"}))
        model.save_pretrained(target, format="ckpt" if ckpt_file else "safetensors")
    return target / "mindspore_model.ckpt" if ckpt_file else target


def _prefix_adapter(directory: Path, task: dict, base: Path) -> Path:
    """What a prefix-tuning / P-tuning v2 finetune writes to output_dir/adapter, for the predict files."""
    from mfcore.training.prefix import PrefixConfig, inject_prefix, save_prefix_adapter

    pet = task["model"]["model_config"]["pet_config"]
    target = directory / f"adapter_{pet['pet_type']}"
    if not target.exists():
        model = mfcore.AutoModelForCausalLM.from_pretrained(base)
        inject_prefix(model, PrefixConfig.from_dict(pet))
        save_prefix_adapter(model, target, base_model=str(base.resolve()))
    return target


def prepared(name: str, work: Path, testdata: Path, data_parallel: int = 1) -> Path:
    """The file with the allowed changes applied, written beside the run's output."""
    source = next(p for p in r150_files() if p.name == name)
    task = shrink(yaml.safe_load(source.read_text(encoding="utf-8")), data_parallel)
    mode = TABLE[name][0]
    llama3 = is_llama3(task)
    vocab_file = testdata / ("llama3" if llama3 else "llama2") / "tokenizer.model"
    stem = name.replace(".yaml", "") + (f"_dp{data_parallel}" if data_parallel > 1 else "")
    out = work / stem
    task["output_dir"] = str(out)
    tokenizer = (task.get("processor") or {}).get("tokenizer")
    if isinstance(tokenizer, dict):
        tokenizer["vocab_file"] = str(vocab_file)
    vocab = task["model"]["model_config"]["vocab_size"]
    if mode in ("train", "finetune"):
        global_batch = 2 * int(task.get("runner_config", {}).get("gradient_accumulation_steps", 1)) * data_parallel
        task["train_dataset"]["data_loader"]["dataset_dir"] = str(_data(work, vocab, mode == "finetune",
                                                                        global_batch))
    if mode == "train":
        task["load_checkpoint"] = ""
    else:
        task["load_checkpoint"] = str(_checkpoint(work, task, ckpt_file=mode == "predict"))
        pet = task["model"]["model_config"].get("pet_config") or {}
        if mode == "predict" and pet.get("pet_type") in ("prefixtuning", "ptuning2"):
            task["load_checkpoint"] = str(_prefix_adapter(work, task, Path(task["load_checkpoint"]).parent))
    path = work / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(task), encoding="utf-8")
    return path


def run_file(path: Path, mode: str, *extra) -> int:
    args = ["run", "--config", str(path), "--run_mode", mode]
    if mode == "predict":
        args += ["--predict_data", "I love Beijing, because", "--max_new_tokens", str(NEW_TOKENS)]
    return main(args + list(extra))


def effective_task(path: Path, mode: str) -> dict:
    """What a run of the prepared file does: its validated TaskSpec, output_dir aside."""
    import dataclasses

    from mfcore.tasks.spec import validate_task

    task = yaml.safe_load(path.read_text(encoding="utf-8"))
    task.update(run_mode=mode, output_dir="OUT")
    if mode == "predict":
        task.update(predict_data="I love Beijing, because", max_new_tokens=NEW_TOKENS)
    spec = dataclasses.asdict(validate_task(task))
    spec.pop("task")
    return spec


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("r150")


@pytest.mark.parametrize("name", sorted(TABLE))
def test_mindformers_r150_file(name, work, testdata, capsys):
    if not R150.is_dir():
        pytest.skip(f"{R150} not found")
    mode, outcome = TABLE[name]
    path = prepared(name, work, testdata)
    if name in SAME_TASK:
        twin = prepared(SAME_TASK[name], work, testdata)
        assert TABLE[SAME_TASK[name]] == (mode, outcome)
        assert effective_task(path, mode) == effective_task(twin, mode), f"{name} now differs from its twin"
        return
    if name == "predict_llama2_7b_ptuning2.yaml":  # MindFormers' own typo, refused as it stands
        task = yaml.safe_load(path.read_text())
        assert task["use_parallel"] == "Flase"
        assert run_file(path, mode) == 2
        assert "use_parallel: must be true or false, got 'Flase'" in capsys.readouterr().err
        task["use_parallel"] = False  # what the author meant (and what a CPU run needs)
        path.write_text(yaml.safe_dump(task))
    start = time.perf_counter()
    code = run_file(path, mode)
    captured = capsys.readouterr()
    if outcome != RUNS:
        assert code == 2, captured.err[-3000:]
        assert f"{outcome}:" in captured.err, captured.err[-3000:]
        return
    assert code == 0, captured.err[-4000:]
    out = Path(yaml.safe_load(path.read_text())["output_dir"])
    if mode == "predict":
        rows = [json.loads(line) for line in (out / "predict_results.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and len(rows[0]["output_ids"]) >= 1
    else:
        result = json.loads([line for line in captured.out.splitlines() if '"result": ' in line][-1])["result"]
        assert result["step"] >= 1 and np.isfinite(result["loss"]), result
        pet = yaml.safe_load(path.read_text())["model"]["model_config"].get("pet_config")
        assert (out / ("adapter" if pet else "model") / ("adapter_config.json" if pet else "config.json")).exists()
    print(f"{name}: {mode} {time.perf_counter() - start:.1f}s")


# The published FFN widths (Hugging Face configs of Llama 2 7B / 13B / 70B, Llama 3 8B / 70B).
PUBLISHED_FFN = {4096: {11008, 14336}, 5120: {13824}, 8192: {28672}}


def test_ffn_width_at_real_dims_equals_mindformers_rule():
    """Every file's model_config at its real size (config only, no weights) and every real preset get the
    published width: MindFormers' rule (+0.01 on ffn_dim_multiplier) gives 28672 for the 70B files."""
    if not R150.is_dir():
        pytest.skip(f"{R150} not found")
    for path in r150_files():
        mc = yaml.safe_load(path.read_text())["model"]["model_config"]
        mc = {k: v for k, v in mc.items() if k not in ("type", "pet_config", "quantization_config")}
        config = mfcore.AutoConfig.for_model("llama", **mc)
        assert config.intermediate_size in PUBLISHED_FFN[config.hidden_size], path.name
    for name in ("llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3.1-8b", "llama3.1-70b"):
        config = mfcore.AutoConfig.from_pretrained(name)
        assert config.intermediate_size in PUBLISHED_FFN[config.hidden_size], name
        rule = mfcore.AutoConfig.from_pretrained(name, intermediate_size=None,
                                                 ffn_dim_multiplier=1.3 if config.hidden_size == 8192 else None)
        if config.hidden_size != 4096 or name.startswith("llama2"):  # Llama 3 8B gives it explicitly
            assert rule.intermediate_size == config.intermediate_size, name


# -- msrun ----------------------------------------------------------------------------------------------
# Files whose use_parallel: True + parallel_config is data parallel only (model_parallel 1, pipeline_stage 1)
# run as they say under msrun, with 2 CPU workers instead of their 4 or 8 devices. One of them runs here
# (each msrun start costs two MindSpore imports and compiles); the others differ from it only in keys
# that the one-process runs above cover.
MSRUN_COVERS = sorted([
    "finetune_llama2_7b.yaml", "finetune_llama2_7b_bf16.yaml", "finetune_llama2_7b_prefixtuning.yaml",
    "finetune_llama2_7b_ptuning2.yaml", "finetune_llama2_13b.yaml", "finetune_llama2_13b_bf16.yaml",
    "lora_llama2_7b.yaml", "lora_llama2_13b.yaml", "pretrain_llama2_7b.yaml", "pretrain_llama2_7b_auto_parallel.yaml",
    "pretrain_llama2_7b_bf16.yaml", "pretrain_llama2_13b.yaml", "pretrain_llama2_13b_auto_parallel.yaml",
    "pretrain_llama2_13b_bf16.yaml", "finetune_llama3_8b.yaml"])
MSRUN_FILE = "finetune_llama2_7b.yaml"
BIN = Path(sys.executable).parent


def test_msrun_covers_the_data_parallel_files():
    if not R150.is_dir():
        pytest.skip(f"{R150} not found")
    for path in r150_files():
        task = yaml.safe_load(path.read_text())
        pc = task.get("parallel_config") or {}
        data_parallel_only = task.get("use_parallel") is True and TABLE[path.name][0] != "predict" and \
            pc.get("model_parallel", 1) == 1 and pc.get("pipeline_stage", 1) == 1 and pc.get("data_parallel", 1) > 1
        assert data_parallel_only == (path.name in MSRUN_COVERS), path.name


@pytest.mark.skipif(not (BIN / "msrun").exists(), reason="msrun (MindSpore's launcher) is not installed")
def test_data_parallel_file_under_msrun(work, testdata):
    """finetune_llama2_7b.yaml (use_parallel: True, data_parallel 8 -> 2) under msrun, 2 CPU workers: both
    finish every step and report the same gradient norm (averaged over the workers by the all-reduce)."""
    import os
    import socket
    import subprocess

    if not R150.is_dir():
        pytest.skip(f"{R150} not found")
    path = prepared(MSRUN_FILE, work, testdata, data_parallel=2)
    task = yaml.safe_load(path.read_text())
    assert task["use_parallel"] is True and task["parallel_config"]["data_parallel"] == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logs = work / "msrun_logs"
    # MINDSPORE-CPU.md: the workers find MindSpore only when the environment's bin/ is first on PATH
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(BIN / "msrun"), "--worker_num=2", "--local_worker_num=2", f"--master_port={port}", "--join=True",
               f"--log_dir={logs}", str(BIN / "mfcore"), "run", "--config", str(path), "--run_mode", "finetune"]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=400)
    texts = {p.name: p.read_text(errors="replace") for p in logs.glob("worker_*.log")}
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:], {k: v[-2000:] for k, v in texts.items()})
    results = {}
    for rank in (0, 1):
        lines = [line for line in texts[f"worker_{rank}.log"].splitlines() if line.startswith('{"rank"')
                 or '"result": ' in line]
        record = json.loads(lines[-1])
        assert record["rank"] == rank
        results[rank] = record["result"]
    epochs = int(task["runner_config"]["epochs"])
    assert results[0]["step"] == results[1]["step"] == epochs  # one global batch of 2 x 2 sequences per epoch
    assert results[0]["grad_norm"] == pytest.approx(results[1]["grad_norm"], rel=1e-6)
    assert (Path(task["output_dir"]) / "model" / "config.json").exists()
