"""examples/: the LoRA fine-tuning script trains a tiny Sana with LayerSync, as a user would run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file, save_file
from tiny_models import build

SCRIPT = Path(__file__).parents[1] / "examples" / "train_sana_lora_layersync.py"


@pytest.mark.slow
def test_lora_script_trains_with_layersync(tmp_path):
    """bf16, gradient checkpointing, PEFT LoRA, LayerSync flags: it trains, logs the similarity, saves the LoRA."""
    model, inputs = build("Sana")  # a real SanaTransformer2DModel, 4 blocks, random weights: no hub
    model.save_pretrained(tmp_path / "model" / "transformer")
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(tmp_path / "model" / "scheduler")
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(8, *inputs["hidden_states"].shape[1:], generator=generator)
    embeds = torch.randn(8, *inputs["encoder_hidden_states"].shape[1:], generator=generator)
    save_file(
        {"latents": latents, "prompt_embeds": embeds, "prompt_attention_mask": torch.ones(8, embeds.shape[1])},
        tmp_path / "cache.safetensors",
    )
    command = [
        sys.executable,
        str(SCRIPT),
        "--pretrained_model_name_or_path",
        str(tmp_path / "model"),
        "--train_data_file",
        str(tmp_path / "cache.safetensors"),
        "--output_dir",
        str(tmp_path / "out"),
        "--seed",
        "0",
        "--train_batch_size",
        "2",
        "--max_train_steps",
        "3",
        "--mixed_precision",
        "bf16",
        "--gradient_checkpointing",
        "--checkpointing_steps",
        "2",
        "--report_to",
        "none",
        "--layersync_enabled",
        "--layersync_student_block",
        "1",
        "--layersync_teacher_block",
        "3",
    ]
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "layersync_similarity" in done.stderr and "student=transformer_blocks.0" in done.stderr
    lora = load_file(tmp_path / "out" / "pytorch_lora_weights.safetensors")
    assert any("lora_B" in key and value.abs().sum() > 0 for key, value in lora.items())  # B starts at zero
    state = tmp_path / "out" / "checkpoint-2" / "layersync_state.json"  # LayerSync's own file
    assert json.loads(state.read_text())["step"] == 2
