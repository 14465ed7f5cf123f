"""Run under `accelerate launch` with 2 processes: each rank trains on different data and writes its metrics
to OUT_DIR/rank<N>.json (files, not stdout: the ranks' prints interleave)."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import build  # noqa: E402

from layersync_hooks import LayerSync  # noqa: E402

accelerator = Accelerator()
model, inputs = build("PixArt", seed=0)
layersync = LayerSync(model, student_block=1, teacher_block=3)  # before prepare, as in the README
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
model, optimizer = accelerator.prepare(model, optimizer)
rank = accelerator.process_index
inputs["hidden_states"] = inputs["hidden_states"] + rank  # different data per rank
pred = model(**inputs, return_dict=False)[0]
loss = pred.pow(2).mean() + layersync.loss()
accelerator.backward(loss)
optimizer.step()
local = layersync._sums.tolist()
row = {
    "rank": rank,
    "world": accelerator.num_processes,
    "distributed": str(accelerator.distributed_type),
    "local": local,
    "metrics": layersync.metrics(),
}
(Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(row))
# Tear the gloo group down before exit: left to interpreter shutdown, a rank can abort with
# "terminate called without an active exception" (SIGABRT) after its work is done.
accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
