"""Accelerate: attach before prepare, accumulate, bf16, checkpointing, and metrics averaged over 2 processes."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from launch import CPU_ENV, two_processes
from tiny_models import build

from layersync_hooks import LayerSync, LayerSyncError

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test


def test_prepared_model_accumulate_and_bf16():
    """Attached before prepare, used on the prepared bf16 model inside `accumulate`: a finite float32 term whose
    gradient reaches the student block and no block after it."""
    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2, cpu=True)
    model, inputs = build("Flux")
    layersync = LayerSync(model, student_block=2, teacher_block=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    for _ in range(4):
        with accelerator.accumulate(model):
            pred = model(**inputs, return_dict=False)[0]
            assert pred.dtype == torch.float32  # accelerate converts outputs back
            term = layersync.loss()
            assert term.dtype == torch.float32 and torch.isfinite(term)
            accelerator.backward(pred.float().pow(2).mean() + term)
            optimizer.step()
            optimizer.zero_grad()
    metrics = layersync.metrics()
    assert set(metrics) == {"layersync_loss", "layersync_similarity"}
    assert all(isinstance(v, float) for v in metrics.values()) and -1 <= metrics["layersync_similarity"] <= 1
    assert metrics["layersync_loss"] == pytest.approx(-0.2 * metrics["layersync_similarity"], rel=1e-5)
    assert layersync.step == 2 and layersync.metrics() == {}  # optimizer steps: 4 micro-batches / 2
    with accelerator.accumulate(model):  # the term alone: it trains the student and the blocks before it only
        model(**inputs, return_dict=False)
        accelerator.backward(layersync.loss())
    grads = {n: p.grad for n, p in accelerator.unwrap_model(model).named_parameters()}
    assert grads["transformer_blocks.1.attn.to_q.weight"].abs().sum() > 0  # the student (depth 2)
    assert all(g is None or not g.any() for n, g in grads.items() if n.startswith("single_transformer_blocks"))


def test_register_for_checkpointing_round_trip(tmp_path):
    """`save_state` / `load_state` save and restore LayerSync's state."""
    accelerator = Accelerator(cpu=True)
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    model = accelerator.prepare(model)
    accelerator.register_for_checkpointing(layersync)
    for _ in range(3):
        model(**inputs, return_dict=False)
        layersync.loss()
    accelerator.save_state(str(tmp_path))
    layersync.load_state_dict({**layersync.state_dict(), "step": 0})
    accelerator.load_state(str(tmp_path))
    assert layersync.step == 3
    assert layersync.state_dict() == {
        "step": 3,
        "pairs": [["transformer_blocks.0", "transformer_blocks.2"]],
        "weight": 0.2,
    }
    with pytest.warns(UserWarning, match="saved for blocks"):
        layersync.load_state_dict(
            {**layersync.state_dict(), "pairs": [["transformer_blocks.0", "transformer_blocks.3"]]}
        )


def test_register_with_keeps_the_step_in_its_own_file(tmp_path):
    """`register_with`: `layersync_state.json` beside accelerate's files, read back by `load_state`; a checkpoint
    without it resumes at step 0; a damaged one is a clear error naming the file."""
    accelerator = Accelerator(cpu=True)
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    model = accelerator.prepare(model)
    accelerator.save_state(str(tmp_path / "before"))  # written without LayerSync's file
    handles = layersync.register_with(accelerator)
    for _ in range(3):
        model(**inputs, return_dict=False)
        layersync.loss()
    accelerator.save_state(str(tmp_path / "with"))
    assert json.loads((tmp_path / "with" / "layersync_state.json").read_text())["step"] == 3
    accelerator.load_state(str(tmp_path / "before"))
    assert layersync.step == 0
    accelerator.load_state(str(tmp_path / "with"))
    assert layersync.step == 3
    (tmp_path / "with" / "layersync_state.json").write_text('{"step": 3')
    with pytest.raises(LayerSyncError, match=r"Cannot read LayerSync's state .*layersync_state.json.*delete it"):
        accelerator.load_state(str(tmp_path / "with"))
    for handle in handles:
        handle.remove()


def test_disabled_registers_nothing():
    """`layersync_enabled: false` gives loss() == 0, no hooks and no metrics."""
    model, inputs = build("PixArt")
    layersync = LayerSync.from_config(model, {"layersync_enabled": False})
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model(**inputs, return_dict=False)
    assert layersync.loss().item() == 0 and layersync.metrics() == {}
    assert "disabled" in repr(layersync)


@pytest.mark.slow
def test_metrics_are_averaged_over_two_processes(tmp_path):
    """Under `accelerate launch` with 2 CPU processes, metrics() returns the mean over ranks on every rank, and
    returns on every rank when only one rank (or none) called loss() since the last metrics()."""
    script = Path(__file__).parent / "scripts" / "ddp_metrics.py"
    command = two_processes(str(script), str(tmp_path))
    done = subprocess.run(command, env=CPU_ENV, capture_output=True, text=True, timeout=300)  # a hang fails here
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    rows = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in rows) == [0, 1] and all(r["world"] == 2 for r in rows)
    assert all(r["distributed"] == "DistributedType.MULTI_CPU" for r in rows)
    keys = ("layersync_loss", "layersync_similarity")
    assert rows[0]["local"] != rows[1]["local"]
    for row in rows:
        for key in keys:
            assert row["metrics"][key] == pytest.approx((rows[0]["local"][key] + rows[1]["local"][key]) / 2, rel=1e-6)
        # Only rank 0 had a loss() since the last call: every rank returns (no hang) with rank 0's values.
        assert row["only_rank0"] == pytest.approx(rows[0]["only_rank0"]) and set(row["only_rank0"]) == set(keys)
        assert row["nobody"] == {}
