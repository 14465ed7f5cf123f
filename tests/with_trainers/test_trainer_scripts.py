"""The trainers' own training scripts, unmodified, train a tiny LoRA on this CPU machine on 1 and 2 processes
(ai-toolkit: its `python run.py`, one process).

This is the ground the runner's comparisons stand on: the same runs launched under `layersync-hooks run` and with
LayerSync added by hand (see README.md). Skipped unless MUSUBI_TUNER_SRC / SD_SCRIPTS_SRC / AI_TOOLKIT_SRC name
checkouts.
"""

import pytest
import torch
from safetensors.torch import load_file

RUNS = [
    "musubi_wan",
    "musubi_hunyuan_video",
    "musubi_flux_kontext",
    "musubi_qwen_image",
    "sd_scripts_flux",
    "sd_scripts_sd3",
    "sd_scripts_lumina",
]


def assert_trained(launched):
    """The run ended with code 0 and saved a LoRA whose up-projections (zero at the start: kohya's `lora_up`,
    ai-toolkit's saved `lora_B`) moved, all finite."""
    assert launched.returncode == 0, launched.tail()
    weights = load_file(launched.lora)
    ups = [tensor for name, tensor in weights.items() if "lora_up" in name or "lora_B" in name]
    assert ups and all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert any(tensor.abs().max() > 0 for tensor in ups)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["eval-mode DiT", "gradient checkpointing"])
@pytest.mark.parametrize("name", RUNS)
def test_the_unmodified_script_trains_a_lora(name, checkpointing, processes, request, tmp_path):
    """4 optimizer steps of the trainer's own script, as its docs launch it (less fp8/bf16/8-bit optimizers), train
    the LoRA: with the DiT in eval mode (their default without `--gradient_checkpointing`) and with checkpointing."""
    run = request.getfixturevalue(name)
    extra = ["--gradient_checkpointing"] if checkpointing else []
    launched = run.launch(tmp_path, processes=processes, extra=extra)
    assert_trained(launched)
    assert (tmp_path / "logs").is_dir()  # tensorboard, under --logging_dir/<timestamp>/network_train


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_the_same_run_twice_ends_with_the_same_lora(name, request, tmp_path):
    """A run is deterministic on one CPU process (`--seed 42`): the ground for comparing the runner with a hand
    edit to 1e-6."""
    run = request.getfixturevalue(name)
    first, second = run.launch(tmp_path / "a"), run.launch(tmp_path / "b")
    assert_trained(first)
    assert_trained(second)
    a, b = load_file(first.lora), load_file(second.lora)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ai_toolkit_run_py_trains_a_flux_lora(ai_toolkit_flux, tmp_path):
    """`python run.py job.yaml` (gradient checkpointing on, as in its example) trains the tiny FLUX.1 LoRA."""
    assert_trained(ai_toolkit_flux.launch(tmp_path))
