"""Test-only: FSDP and DeepSpeed through `accelerate launch` on CPU processes (gloo). Never part of the package.

Python imports `sitecustomize` at start-up from any folder on PYTHONPATH, so a test that puts this folder there runs
the same, unmodified script (and `-m layersync_hooks run`) under every engine. It acts only in a launched process
(LOCAL_RANK is set) and only with LAYERSYNC_TEST_CPU_ENGINE=1:

- accelerate turns FSDP and DeepSpeed on only for a GPU-type backend; on a CPU it finds none, so FSDP wraps nothing
  and DeepSpeed runs its 2 processes while accelerate reports 1 on each (both act as the main process).
  `PartialState` is told ("gloo", MULTI_GPU) instead; `ACCELERATE_TORCH_DEVICE=cpu` (set by the test) keeps the
  device on the CPU. For DeepSpeed alone, `Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])`
  in the script does the same.
- FSDP1's full state dict (`accelerator.get_state_dict`, a FULL_STATE_DICT `save_state`) with
  `offload_to_cpu=True` segfaults in torch when the parameters already are on the CPU: accelerate's
  `FullStateDictConfig(offload_to_cpu=True, ...)` is built without the offload (a no-op on a CPU anyway).
- DeepSpeed's first communication init compiles a shared-memory reduction op with g++ (about 95 s, once);
  replacing `deepspeed.comm.torch.build_shm_op` with a no-op skips it, and gloo does the reductions.
"""

import importlib
import os


def _gpu_type_backend_on_cpu() -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        return "gloo", DistributedType.MULTI_GPU

    PartialState._prepare_backend = prepare_backend


def _full_state_dict_without_offload() -> None:
    import torch.distributed.fsdp as fsdp

    original = fsdp.FullStateDictConfig

    def full_state_dict_config(offload_to_cpu=False, rank0_only=False):
        return original(offload_to_cpu=False, rank0_only=rank0_only)

    fsdp.FullStateDictConfig = full_state_dict_config


def _no_shared_memory_op() -> None:
    # by module name: the attribute `deepspeed.comm.torch` is the torch package (deepspeed.comm imports it)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


if os.environ.get("LAYERSYNC_TEST_CPU_ENGINE") == "1" and "LOCAL_RANK" in os.environ:
    _gpu_type_backend_on_cpu()
    _full_state_dict_without_offload()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        _no_shared_memory_op()
