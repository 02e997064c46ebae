"""The YAML's `parallel_config` onto MindSpore's own distributed stack (workers started by `msrun`).

data_parallel only -> ParallelMode.DATA_PARALLEL with gradients averaged by nn.DistributedGradReducer
inside the compiled train step; model_parallel / pipeline_stage > 1 -> SEMI_AUTO_PARALLEL with
MindSpore's pipeline stages (that needs sharding strategies in the network and a backend with those
kernels: Ascend). No home-made communication.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict

from mfcore.errors import ConfigError
from .trainer import ParallelInfo


def parallel_context(data_parallel: int, model_parallel: int, pipeline_stage: int, world: int) -> Dict[str, Any]:
    """Keyword arguments of mindspore.set_auto_parallel_context for these degrees (a pure function)."""
    from mindspore import ParallelMode

    if data_parallel * model_parallel * pipeline_stage != world:
        raise ConfigError("parallel_config", f"data_parallel x model_parallel x pipeline_stage = "
                                             f"{data_parallel} x {model_parallel} x {pipeline_stage} = "
                                             f"{data_parallel * model_parallel * pipeline_stage}, but {world} "
                                             f"worker(s) were started (msrun --worker_num)")
    if model_parallel == 1 and pipeline_stage == 1:
        return {"parallel_mode": ParallelMode.DATA_PARALLEL, "gradients_mean": True, "device_num": world}
    return {"parallel_mode": ParallelMode.SEMI_AUTO_PARALLEL, "gradients_mean": True, "device_num": world,
            "pipeline_stages": pipeline_stage, "full_batch": True}


def setup_parallel(spec) -> ParallelInfo:
    """Initialise communication when `use_parallel` is set; returns this process's rank and group size."""
    degrees = spec.data_parallel * spec.model_parallel * spec.pipeline_stage
    if not spec.use_parallel:
        if degrees > 1:
            warnings.warn("parallel_config asks for several workers but use_parallel is false: running on one "
                          "process (set use_parallel: true and start the run with msrun)", UserWarning, stacklevel=2)
        return ParallelInfo()
    if "MS_WORKER_NUM" not in os.environ and "RANK_SIZE" not in os.environ:
        raise ConfigError("use_parallel", "true, but this process was not started by msrun; launch with "
                                          "`msrun --worker_num=N --local_worker_num=N --master_port=PORT --join=True "
                                          "$(which mfcore) run --config task.yaml`")
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, world = get_rank(), get_group_size()
    ms.set_auto_parallel_context(**parallel_context(spec.data_parallel, spec.model_parallel,
                                                    spec.pipeline_stage, world))
    if spec.model_parallel > 1 or spec.pipeline_stage > 1:
        # Measured with MindSpore 2.10 under msrun on CPU: compiling the train step in this context fails
        # with "RuntimeError: Invalid backend: CPU" (pipeline_split_utils.cc, GetWorldGroup).
        where = ("MindSpore's CPU backend cannot compile it (it reports `RuntimeError: Invalid backend: CPU`)"
                 if ms.get_context("device_target") == "CPU" else
                 "the mf-llama2 network declares no sharding strategies yet")
        raise ConfigError("parallel_config", f"model_parallel {spec.model_parallel} / pipeline_stage "
                                             f"{spec.pipeline_stage} map to SEMI_AUTO_PARALLEL (set), but {where}; "
                                             "use data_parallel only")
    return ParallelInfo(rank=rank, world=world)
