"""MindFormers task / model_config keys: each one is honoured, refused by name, or accepted with the reason
it changes nothing here (issue 15, item 8). The r1.5.0 files' own values run in test_mindformers_r150.py."""
import pytest
import yaml

import mfcore
from mfcore import ConfigError
from mfcore.tasks import spec as task_spec

# Read by validate_task / training_arguments / the runner (their values change the run).
HONOURED = {
    "seed", "output_dir", "load_checkpoint", "resume_training", "run_mode", "trainer", "runner_config", "optimizer",
    "lr_schedule", "train_dataset", "eval_dataset", "do_eval", "eval_step_interval", "use_parallel",
    "parallel_config", "callbacks", "eval_callbacks", "context", "model", "processor", "runner_wrapper",
    "merge_lora", "predict_data", "max_new_tokens", "do_sample", "tokenizer", "predict_batch_size", "temperature",
    "top_k", "top_p", "repetition_penalty", "lm_eval",
}


def test_every_known_top_level_key_is_honoured_refused_or_explained():
    refused, inert, accepted = task_spec.REFUSED_WHEN_SET, task_spec.INERT_TOP_LEVEL, task_spec.ACCEPTED_TOP_LEVEL
    groups = [HONOURED, set(refused), set(inert), set(accepted)]
    assert set().union(*groups) == task_spec.KNOWN_TOP_LEVEL
    assert sum(len(g) for g in groups) == len(task_spec.KNOWN_TOP_LEVEL)  # each key in one group only
    assert all(inert[key] in refused for key in inert)  # inert only with a feature that is refused when on
    assert all(len(why) > 20 for why in accepted.values())


def _task(**top):
    task = {"run_mode": "train", "output_dir": "out", "train_dataset": {"data_loader": {"dataset_dir": "d"}},
            "model": {"model_config": {"type": "LlamaConfig"}}}
    task.update(top)
    return task


@pytest.mark.parametrize("key,value", [("ignore_data_skip", True), ("data_skip_steps", 10), ("use_legacy", False)])
def test_keys_that_change_a_mindformers_run_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        task_spec.validate_task(_task(**{key: value}))
    task_spec.validate_task(_task(**{key: {"ignore_data_skip": False, "data_skip_steps": None,
                                           "use_legacy": True}[key]}))  # the off value runs


def test_eval_epoch_interval_with_do_eval_is_refused():
    task = _task(do_eval=True, eval_epoch_interval=50, eval_dataset={"data_loader": {"dataset_dir": "e"}})
    with pytest.raises(ConfigError, match="^eval_epoch_interval: "):
        task_spec.validate_task(task)
    task_spec.validate_task(dict(task, do_eval=False))  # as all r1.5.0 files have it


def test_ignore_token_id_other_than_minus_100_is_refused():
    mfcore.AutoConfig.for_model("llama", ignore_token_id=-100, hidden_size=32, num_heads=4, num_layers=1)
    with pytest.raises(ConfigError, match="^ignore_token_id: 0"):
        mfcore.AutoConfig.for_model("llama", ignore_token_id=0, hidden_size=32, num_heads=4, num_layers=1)


def test_model_config_inert_keys_each_say_why():
    config_class = type(mfcore.AutoConfig.for_model("llama", hidden_size=32, num_heads=4, num_layers=1))
    assert "embedding_init_type" not in config_class.inert_keys  # honoured: the embedding table's dtype
    assert all(len(why) > 20 for why in config_class.inert_keys.values())


def test_embedding_init_type_is_the_embedding_tables_dtype():
    """MindFormers' bf16 files: param_init_type float16 with embedding_init_type bfloat16."""
    pytest.importorskip("mindspore")
    import mindspore as ms

    path = next((p for p in __import__("test_mindformers_r150").r150_files()
                 if p.name == "finetune_llama2_7b_bf16.yaml"), None)
    if path is None:
        pytest.skip("the r1.5.0 files are not beside the repo")
    mc = yaml.safe_load(path.read_text())["model"]["model_config"]
    assert (mc["param_init_type"], mc["embedding_init_type"]) == ("float16", "bfloat16")
    config = mfcore.AutoConfig.for_model("llama", vocab_size=64, hidden_size=32, num_heads=4, num_layers=1,
                                         intermediate_size=48, param_init_type=mc["param_init_type"],
                                         embedding_init_type=mc["embedding_init_type"])
    model = mfcore.AutoModelForCausalLM.from_config(config)
    assert model.model.tok_embeddings.embedding_weight.dtype == ms.bfloat16
    assert model.model.layers[0].attention.wq.weight.dtype == ms.float16
    assert model.model.norm_out.weight.dtype == ms.float16
