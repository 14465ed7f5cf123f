"""Run under `accelerate launch` with 2 processes: each rank trains on different data and writes its metrics
to OUT_DIR/rank<N>.json (files, not stdout: the ranks' prints interleave). Then metrics() where only rank 0 ran a
training forward, and where no rank did: it must return on every rank, not hang."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launch import end_processes  # noqa: E402
from tiny_models import build  # noqa: E402

from layersync_hooks import LayerSync  # noqa: E402


def main():
    accelerator = Accelerator()
    model, inputs = build("PixArt", seed=0)
    layersync = LayerSync(model, student_block=1, teacher_block=3)  # before prepare, as in the README
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    rank = accelerator.process_index
    inputs["hidden_states"] = inputs["hidden_states"] + rank  # different data per rank

    def training_forward(module=model):
        return module(**inputs, return_dict=False)[0].pow(2).mean() + layersync.loss()

    training_forward()
    local = layersync.metrics(sync=False)  # this rank's values alone (the same weights and data as the next forward)
    loss = training_forward()
    accelerator.backward(loss)
    optimizer.step()
    row = {"rank": rank, "world": accelerator.num_processes, "distributed": str(accelerator.distributed_type)}
    row.update(local=local, metrics=layersync.metrics())
    # Ranks that differ: only rank 0 runs a training forward (of the unwrapped model: DDP's own forward would wait for
    # rank 1 to broadcast buffers); every rank still joins metrics()'s one all-reduce.
    if rank == 0:
        training_forward(accelerator.unwrap_model(model))
    row["only_rank0"] = layersync.metrics()
    row["nobody"] = layersync.metrics()  # no loss() anywhere since the last call
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(row))


if __name__ == "__main__":
    main()
    end_processes()
