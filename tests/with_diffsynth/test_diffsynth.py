"""DiffSynth-Studio, the paper's own video setting, with no patched file: its Wan DiT's layout proven by the gradient
probe, and a tiny Wan LoRA trained through DiffSynth's own loop under `layersync-hooks run`.

These tests need `diffsynth`, which imports torchvision; they run in their own venv (.ci/run) and are not collected
where diffsynth is not installed (tests/conftest.py).
"""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.pipelines.wan_video import model_fn_wan_video
from safetensors.torch import load_file

from layersync_hooks import LayerSync
from layersync_hooks.commands.cli import main
from layersync_hooks.integrations.accelerate import METRICS_FILE
from layersync_hooks.layouts import RELEASED, lookup_layout

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' own helpers
from launch import CPU_ENV, two_processes  # noqa: E402

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

SCRIPT = Path(__file__).parent / "train_tiny_wan.py"
PAIR = ["--layersync_student_block", "1", "--layersync_teacher_block", "3"]
DIFFSYNTH_ARGS = ["--dataset_base_path", ".", "--learning_rate", "1e-2", "--num_epochs", "1",
                  "--dataset_num_workers", "0", "--use_gradient_checkpointing"]  # fmt: skip


def tiny_wan():
    from train_tiny_wan import DIT

    torch.manual_seed(0)
    dit = WanModel(**DIT)
    for parameter in dit.parameters():  # zero-initialised heads and gates re-drawn, as after some training
        if not parameter.any():
            torch.nn.init.normal_(parameter, std=0.02)
    return dit


def forward(dit, latents):
    """The training forward as DiffSynth runs it: model_fn_wan_video calls patchify, each block and head itself."""
    context = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(1))
    return model_fn_wan_video(dit=dit, latents=latents, timestep=torch.tensor([500.0]), context=context)


class Trainer(torch.nn.Module):
    """The module whose forward is the training forward (DiffSynth's training module holds the DiT)."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit

    def forward(self, latents):
        return forward(self.dit, latents)


def test_wan_dit_layout_is_proven_by_the_gradient_probe():
    """The tokens that get LayerSync's gradient in the student are exactly those through which the prediction
    depends on the last block (all video tokens), and the term equals the cosine computed here."""
    assert lookup_layout(WanModel).stacks[0].path == "blocks"
    dit = tiny_wan()
    trainer = Trainer(dit).train()
    layersync = LayerSync(dit, student_block=1, teacher_block=3, training_module=trainer)
    kept = {}
    handles = [dit.blocks[i].register_forward_hook(lambda m, a, out, i=i: kept.update({i: out})) for i in (0, 2, 3)]
    latents = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    prediction = trainer(latents)
    for out in kept.values():
        out.retain_grad()
    term = layersync.loss()
    expected = -0.2 * torch.nn.functional.cosine_similarity(kept[0], kept[2].detach(), dim=-1).mean()
    torch.testing.assert_close(term, expected)
    term.backward(retain_graph=True)
    aligned = kept[0].grad.abs().sum(-1)[0] > 0
    kept[3].grad = None
    prediction.sum().backward()
    target = kept[3].grad.abs().sum(-1)[0] > 0
    assert aligned.all() and torch.equal(aligned, target) and aligned.numel() == 32
    for handle in handles:
        handle.remove()


def test_released_wan_14b_has_the_block_count_the_docs_give():
    """Wan 2.1 14B's DiT config, built on the meta device, has the block count the table of released models gives
    (and docs/supported-models.md states)."""
    with torch.device("meta"):
        dit = WanModel(dim=5120, in_dim=16, ffn_dim=13824, out_dim=16, text_dim=4096, freq_dim=256, eps=1e-6,
                       patch_size=(1, 2, 2), num_heads=40, num_layers=40, has_image_input=False)  # fmt: skip
    (released,) = RELEASED["diffsynth.models.wan_video_dit.WanModel"]
    assert len(dit.blocks) == released.blocks["blocks"] == 40


def run_script(out, *args):
    saved = sys.argv, list(sys.path)
    sys.argv = [str(SCRIPT), *DIFFSYNTH_ARGS, "--output_path", str(out), *args]
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved


def run_runner(out, *args, options=()):
    argv = ["run", *PAIR, *options, "--", str(SCRIPT), *DIFFSYNTH_ARGS, "--output_path", str(out), *args]
    return main(argv)


def lora(out):
    return load_file(Path(out) / "lora.safetensors")


def test_diffsynth_loop_under_the_runner_equals_layersync_added_by_hand(tmp_path):
    """DiffSynth's own launch_training_task, unmodified, under the runner: the LoRA ends where the training
    module with LayerSync added by hand ends (1e-6), elsewhere than without LayerSync; the runner reports the
    metrics in the script's --output_path, since DiffSynth never calls accelerator.log."""
    assert run_runner(tmp_path / "runner", options=["--report-every", "1"]) == 0
    run_script(tmp_path / "edited", "--layersync_enabled", *PAIR)
    run_script(tmp_path / "plain")
    runner, edited, plain = lora(tmp_path / "runner"), lora(tmp_path / "edited"), lora(tmp_path / "plain")
    for name in runner:
        torch.testing.assert_close(runner[name], edited[name], atol=1e-6, rtol=0, msg=name)
    assert any(not torch.allclose(runner[n], plain[n], atol=1e-6) for n in runner)
    rows = [json.loads(line) for line in (tmp_path / "runner" / METRICS_FILE).read_text().splitlines()]
    assert [row["layersync_step"] for row in rows] == [1, 2, 3]
    assert all(-1 <= row["layersync_similarity"] <= 1 for row in rows)


@pytest.mark.slow
def test_diffsynth_on_two_processes_under_the_runner(tmp_path):
    """`accelerate launch` with 2 CPU processes runs DiffSynth's loop under the runner to the end (no hang) and
    ends where the hand edit ends."""
    outs = {}
    for name, runner in (("runner", True), ("edited", False)):
        command = two_processes()
        out = tmp_path / name
        script = [str(SCRIPT), *DIFFSYNTH_ARGS, "--output_path", str(out)]
        command += ["-m", "layersync_hooks", "run", *PAIR, "--", *script] if runner else \
            [*script, "--layersync_enabled", *PAIR]  # fmt: skip
        done = subprocess.run(command, env=CPU_ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        outs[name] = lora(out)
    for key in outs["runner"]:
        torch.testing.assert_close(outs["runner"][key], outs["edited"][key], atol=1e-6, rtol=0, msg=key)
