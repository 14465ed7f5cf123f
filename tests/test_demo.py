"""`layersync-hooks demo`: its outputs, and the same optimizer steps on 1 or 2 processes, under FSDP, with
gradient accumulation and after a resume.

Every run trains 3 steps on the same global batch of 8 images per step (1 process x 8, 2 processes x 4, or
4 x 2 accumulation steps); the 1-process `accelerate launch` run is the reference the others must match.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from helpers import read_cells
from launch import free_port
from safetensors.torch import load_file

from layersync_hooks.commands.cli import main
from layersync_hooks.commands.demo.data import CLASSES, ShapesData, draw_shapes
from layersync_hooks.commands.demo.sample import SAMPLES_PER_CLASS

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

STEPS, GLOBAL_BATCH = 3, 8
COMMON = ["--steps", str(STEPS), "--eval-every", str(STEPS), "--report-to", "none"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(*arguments, env=ENV):
    """Run `accelerate launch ... -m layersync_hooks demo`; returns its stdout."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *arguments,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def curves(history):
    return [(row["loss"], row["layersync_similarity"]) for row in history]


def assert_same_steps(history, reference):
    """The same losses and similarities, step by step (float32 sums in another order: 1e-5)."""
    assert [row["step"] for row in history] == [row["step"] for row in reference]
    for (loss, similarity), (loss_ref, similarity_ref) in zip(curves(history), curves(reference)):
        assert loss == pytest.approx(loss_ref, rel=1e-5) and similarity == pytest.approx(similarity_ref, rel=1e-5)


def assert_same_weights(run_dir, reference_dir):
    """The same trained weights (the baseline's differ from LayerSync's by ~4e-3 after 3 steps)."""
    weights, expected = (
        load_file(Path(d) / "model" / "diffusion_pytorch_model.safetensors") for d in (run_dir, reference_dir)
    )
    assert weights.keys() == expected.keys()
    assert max((weights[k] - expected[k]).abs().max().item() for k in weights) < 2e-5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`accelerate launch -m layersync_hooks demo --compare` on one process, global batch 8."""
    out = tmp_path_factory.mktemp("reference")
    stdout = launch(
        "--num_processes",
        "1",
        "-m",
        "layersync_hooks",
        "demo",
        "--compare",
        *COMMON,
        "--batch-size",
        str(GLOBAL_BATCH),
        "--output-dir",
        str(out),
    )
    return out, stdout


def final_samples(run_dir):
    """The run's samples.png, read back cell by cell: (rows = samples per class, columns = classes, 3, 16, 16)."""
    return read_cells(Path(run_dir) / "samples.png", SAMPLES_PER_CLASS, len(CLASSES))[0]


@pytest.mark.slow
def test_one_process_launch_writes_every_output(reference):
    """Metrics (JSON, CSV), a loadable safetensors checkpoint, curves, samples, state, and the comparison, all
    printed."""
    from diffusers import PixArtTransformer2DModel

    out, stdout = reference
    for run in ("layersync", "baseline"):
        for name in (
            "metrics.json",
            "metrics.csv",
            "curves.png",
            "samples.png",
            "samples_per_step.png",
            "model/diffusion_pytorch_model.safetensors",
            "state/model.safetensors",
        ):
            assert (out / run / name).is_file(), name
            if name.endswith(".png"):
                assert str(out / run / name) in stdout
        assert str(out / run / "metrics.json") in stdout
    summary = metrics(out / "layersync")
    assert summary["num_processes"] == 1 and summary["steps"] == STEPS and "val_loss" in summary["history"][-1]
    assert (out / "compare.png").stat().st_size > 10_000 and set(json.loads((out / "compare.json").read_text())) == {
        "layersync",
        "baseline",
        "timing",
    }
    model = PixArtTransformer2DModel.from_pretrained(out / "layersync" / "model")
    assert model.config.num_layers == 12
    # LayerSync changed the training: the baseline drifts from it by far more than the 1e-5 the tests allow.
    loss, baseline = summary["history"][-1]["loss"], metrics(out / "baseline")["history"][-1]["loss"]
    assert abs(loss - baseline) > 1e-4 * loss
    with pytest.raises(AssertionError):
        assert_same_weights(out / "baseline", out / "layersync")
    assert "layersync_loss" in summary["history"][0] and "layersync_loss" not in metrics(out / "baseline")["history"][0]


@pytest.mark.slow
def test_compare_draws_both_runs_from_the_same_noise(reference):
    """compare_samples.png holds each run's final grid side by side (printed); one evaluation, one row per step."""
    out, stdout = reference
    assert str(out / "compare_samples.png") in stdout
    both = read_cells(out / "compare_samples.png", SAMPLES_PER_CLASS, len(CLASSES), panels=2)
    layersync, baseline = final_samples(out / "layersync"), final_samples(out / "baseline")
    assert torch.equal(both[0], layersync) and torch.equal(both[1], baseline)
    assert not torch.equal(layersync, baseline)  # same noise, different weights
    per_step = read_cells(out / "layersync" / "samples_per_step.png", 1, SAMPLES_PER_CLASS * len(CLASSES))[0]
    assert torch.equal(per_step[0].view(SAMPLES_PER_CLASS, len(CLASSES), 3, 16, 16), layersync)


@pytest.mark.slow
def test_two_processes_match_one(reference, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 ... --compare` on CPU: 2 ranks (MULTI_CPU), both runs
    interleaved in each process, the same steps as 1 process (and the first run's end leaves the second's process
    group alone)."""
    launch(
        "--multi_gpu",
        "--num_processes",
        "2",
        "-m",
        "layersync_hooks",
        "demo",
        "--compare",
        *COMMON,
        "--batch-size",
        str(GLOBAL_BATCH // 2),
        "--output-dir",
        str(tmp_path),
        env={**ENV, "ACCELERATE_USE_CPU": "1"},
    )
    for run in ("layersync", "baseline"):
        summary, expected = metrics(tmp_path / run), metrics(reference[0] / run)
        assert summary["num_processes"] == 2 and summary["distributed_type"] == "DistributedType.MULTI_CPU"
        assert_same_steps(summary["history"], expected["history"])
        assert_same_weights(tmp_path / run, reference[0] / run)
        for key in ("val_loss", "linear_probe_student", "linear_probe_teacher"):
            assert summary["history"][-1][key] == pytest.approx(expected["history"][-1][key], rel=1e-5)


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_one(reference, tmp_path):
    """FSDP1 and FSDP2 (`fully_shard`) on 2 gloo processes: hooks on sharded blocks give the same steps."""
    script = Path(__file__).parent / "scripts" / "fsdp_demo.py"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(script),
        str(tmp_path),
        str(STEPS),
        str(GLOBAL_BATCH),
    ]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    expected = metrics(reference[0] / "layersync")["history"]
    for mode, wrapper in (("fsdp1", "FullyShardedDataParallel"), ("fsdp2", "FSDPPixArtTransformer2DModel")):
        rows = [json.loads((tmp_path / f"{mode}-rank{rank}.json").read_text()) for rank in (0, 1)]
        assert [(r["rank"], r["world"], r["backend"], r["wrapper"]) for r in rows] == [
            (0, 2, "gloo", wrapper),
            (1, 2, "gloo", wrapper),
        ]
        assert all(r["sharded"] > 0 for r in rows)
        for row in rows:
            assert_same_steps(row["history"], expected)


@pytest.mark.slow
def test_gradient_accumulation_matches_the_large_batch(reference, tmp_path, one_thread):
    """Batch 4 x 2 accumulation steps takes the same optimizer steps as batch 8."""
    assert (
        main(
            [
                "demo",
                *COMMON,
                "--batch-size",
                str(GLOBAL_BATCH // 2),
                "--gradient-accumulation-steps",
                "2",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert_same_steps(metrics(tmp_path / "layersync")["history"], metrics(reference[0] / "layersync")["history"])
    assert_same_weights(tmp_path / "layersync", reference[0] / "layersync")


@pytest.mark.slow
def test_resume_continues_the_curves(reference, tmp_path, one_thread):
    """Stopping after step 2 and resuming to step 3 gives the uninterrupted curves, and LayerSync's step count."""
    arguments = [
        "demo",
        "--eval-every",
        str(STEPS),
        "--report-to",
        "none",
        "--batch-size",
        str(GLOBAL_BATCH),
        "--output-dir",
        str(tmp_path),
    ]
    assert main([*arguments, "--steps", str(STEPS - 1)]) == 0
    AcceleratorState._reset_state(True)
    assert main([*arguments, "--steps", str(STEPS), "--resume"]) == 0
    history = metrics(tmp_path / "layersync")["history"]
    assert_same_steps(history, metrics(reference[0] / "layersync")["history"])
    assert_same_weights(tmp_path / "layersync", reference[0] / "layersync")
    # LayerSync's step is in its own file (register_with), not among accelerate's counted custom objects
    state_dir = tmp_path / "layersync" / "state"
    assert json.loads((state_dir / "layersync_state.json").read_text())["step"] == STEPS
    assert not (state_dir / "custom_checkpoint_1.pkl").exists()
    # The sample grids continue too: a row for the first part's last step, one for the resumed run's; the same
    # seed and weights draw the same pixels as the uninterrupted run (off by one at most: float rounding).
    rows = read_cells(tmp_path / "layersync" / "samples_per_step.png", 2, SAMPLES_PER_CLASS * len(CLASSES))[0]
    same = final_samples(tmp_path / "layersync").int() - final_samples(reference[0] / "layersync").int()
    assert torch.equal(rows[1].view(SAMPLES_PER_CLASS, len(CLASSES), 3, 16, 16), final_samples(tmp_path / "layersync"))
    assert same.abs().max() <= 1 and not torch.equal(rows[0], rows[1])


def test_bad_input_fails_before_training(tmp_path, capsys):
    """A config that turns LayerSync off, a resume without a saved state, or --steps 0: clear errors, no run."""
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"layersync_enabled": False}))
    assert main(["demo", "--config", str(off), "--output-dir", str(tmp_path)]) == 2
    assert re.search("^error: --config .* turns LayerSync off.*--no-layersync", capsys.readouterr().err)
    assert main(["demo", "--resume", "--output-dir", str(tmp_path / "fresh")]) == 2
    assert "error: --resume: no saved training state" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])
    with pytest.raises(SystemExit):
        main(["demo", "--checkpoint-every", "-1"])
    assert not (tmp_path / "layersync").exists()


def test_a_stop_step_ends_alignment_mid_run(tmp_path, one_thread):
    """With `layersync_stop_step` the hooks go after that step; the run goes on and logs no similarity after."""
    config = tmp_path / "stop.json"
    config.write_text(
        json.dumps(
            {
                "layersync_enabled": True,
                "layersync_student_block": 3,
                "layersync_teacher_block": 6,
                "layersync_stop_step": 2,
            }
        )
    )
    assert main(["demo", *COMMON, "--batch-size", "4", "--config", str(config), "--output-dir", str(tmp_path)]) == 0
    result = metrics(tmp_path / "layersync")
    assert ["layersync_similarity" in row for row in result["history"]] == [True, True, False]
    assert result["final"]["loss"] > 0


def test_generated_images_are_fixed_by_the_seed():
    """The same seed draws the same images; the micro-batches of all processes tile the global batch."""
    images, labels = draw_shapes(16, seed=3)
    again, same_labels = draw_shapes(16, seed=3)
    assert torch.equal(images, again) and torch.equal(labels, same_labels)
    assert not torch.equal(images, draw_shapes(16, seed=4)[0]) and images.min() >= -1 and images.max() <= 1
    data = ShapesData(seed=0, train_size=64, val_size=8)
    whole = data.global_batch(5, 8)
    shares = [data.micro_batches(5, rank=rank, batch_size=2, num_processes=2, accumulation=2) for rank in (0, 1)]
    parts = [shares[rank][micro_step] for micro_step in range(2) for rank in (0, 1)]  # micro-step, then rank
    assert all(torch.equal(torch.cat([p[i] for p in parts]), whole[i]) for i in range(4))


def test_curves_are_smoothed_with_a_trailing_mean():
    """The plot's moving average: each point is the mean of the last `window` values seen so far."""
    from layersync_hooks.commands.demo.plot import smooth

    assert smooth([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert smooth([5.0], 10) == [5.0]
