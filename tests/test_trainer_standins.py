"""The trainer stand-ins (tests/scripts/trainers/) train their tiny LoRA as written, without LayerSync, on one
process: the ground for comparing each under `layersync-hooks run` with its `--hand_edit` version."""

import json
import math
from pathlib import Path

import pytest
from helpers import run_stand_in
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize(
    "script,log",
    [
        ("musubi_like.py", "logs.jsonl"),  # accelerator.log, where trackers exist (--logging_dir, main process)
        ("sd_scripts_like.py", "logs.jsonl"),  # the tracker's own log(), where trackers exist
        ("ai_toolkit_like.py", "log.jsonl"),  # its own logger
    ],
    ids=["musubi", "sd-scripts", "ai-toolkit"],
)
def test_each_stand_in_trains_its_lora_and_logs_every_step(script, log, tmp_path):
    """4 optimizer steps: the LoRA's up-projections (zero at the start) moved, every step's task loss is recorded,
    and the trainer's own log has a loss at steps 1 to 4."""
    logging = [] if script == "ai_toolkit_like.py" else ["--logging_dir", str(tmp_path / "logs")]
    run_stand_in(script, tmp_path, *logging)
    weights = load_file(tmp_path / "tiny.safetensors")
    assert any(tensor.abs().max() > 0 for name, tensor in weights.items() if name.endswith(".up"))
    assert [row["step"] for row in rows(tmp_path / "steps.jsonl")] == [1, 2, 3, 4]
    logged = rows(tmp_path / log)
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(value) for row in logged for value in row.values())
