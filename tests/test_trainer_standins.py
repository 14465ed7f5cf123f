"""The trainer stand-ins (tests/scripts/trainers/) train their tiny LoRA as written, without LayerSync, on one
process: the ground for comparing each under `layersync-hooks run` with its `--hand_edit` version."""

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

SCRIPTS = Path(__file__).parent / "scripts" / "trainers"


def run(script, out, *args):
    """`python SCRIPT --output_dir OUT ARGS` in this process."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(SCRIPTS / script), "--output_dir", str(out), *args]
    sys.path.insert(0, str(SCRIPTS))
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


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
    run(script, tmp_path, *([] if script == "ai_toolkit_like.py" else ["--logging_dir", str(tmp_path / "logs")]))
    weights = load_file(tmp_path / "tiny.safetensors")
    assert any(tensor.abs().max() > 0 for name, tensor in weights.items() if name.endswith(".up"))
    assert [row["step"] for row in rows(tmp_path / "steps.jsonl")] == [1, 2, 3, 4]
    logged = rows(tmp_path / log)
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    assert all(math.isfinite(value) for row in logged for value in row.values())
