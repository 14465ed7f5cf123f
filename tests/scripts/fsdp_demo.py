"""Run under `torchrun --nproc_per_node 2` (CPU, gloo): the demo's training steps with the model sharded by FSDP.

Written the way a user writes an FSDP script: LayerSync attached to the plain model, then the blocks and the
root wrapped. Both wrappers run in turn: FSDP1 (`FullyShardedDataParallel`, what accelerate's FSDP plugin uses)
and FSDP2 (`fully_shard`). Each process trains on its half of the demo's global batch and writes its numbers to
OUT_DIR/<mode>-rank<N>.json. Usage: fsdp_demo.py OUT_DIR STEPS GLOBAL_BATCH
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from diffusers.models.attention import BasicTransformerBlock
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.distributed.tensor import DTensor

from layersync_hooks import LayerSync
from layersync_hooks.commands.demo.data import ShapesData
from layersync_hooks.commands.demo.train import DEFAULT_PRESET, build_model, flow_matching_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: launch
from launch import end_processes  # noqa: E402


def shard(model, mode):
    """Wrap every block, then the root; returns the model to train and how many block parameters are sharded."""
    if mode == "fsdp1":
        model = FullyShardedDataParallel(
            model,
            auto_wrap_policy=ModuleWrapPolicy({BasicTransformerBlock}),
            device_id=torch.device("cpu"),
            use_orig_params=True,
        )
        units = [m for m in model.modules() if isinstance(m, FullyShardedDataParallel)]
        return model, len(units) - 1  # one unit per block, plus the root
    for block in model.transformer_blocks:
        fully_shard(block)
    fully_shard(model)
    return model, sum(isinstance(p, DTensor) for p in model.transformer_blocks.parameters())


def train(mode, out_dir, steps, global_batch):
    rank, world = dist.get_rank(), dist.get_world_size()
    data = ShapesData(seed=0)
    model = build_model(seed=0)
    layersync = LayerSync(model, DEFAULT_PRESET)  # on the plain model, before wrapping
    model, sharded = shard(model, mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    rows = []
    for step in range(steps):
        [batch] = data.micro_batches(
            step, rank=rank, batch_size=global_batch // world, num_processes=world, accumulation=1
        )
        loss = flow_matching_loss(model, batch)
        (loss + layersync.loss()).backward()
        if mode == "fsdp1":
            model.clip_grad_norm_(1.0)  # FSDP1 needs its own: the flat shards' norms differ per rank
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        rows.append({"step": step + 1, "loss": mean.item() / world, **layersync.metrics()})
    result = {
        "rank": rank,
        "world": world,
        "backend": dist.get_backend(),
        "wrapper": type(model).__name__,
        "sharded": sharded,
        "history": rows,
    }
    (Path(out_dir) / f"{mode}-rank{rank}.json").write_text(json.dumps(result))
    layersync.remove()


if __name__ == "__main__":
    dist.init_process_group("gloo")
    for mode in ("fsdp1", "fsdp2"):
        train(mode, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    end_processes()
