"""A DiffSynth-Studio Wan LoRA training script, tiny: DiffSynth's own training loop (`launch_training_task`), its
parsers, its `WanVideoPipeline` and `WanModel`, with random weights and cached inputs (no VAE, text encoder or
download). Its training module is written the way DiffSynth's examples/wanvideo/model_training/train.py writes
`WanTrainingModule`.

Run it unmodified under `layersync-hooks run`; or with `--layersync_enabled ...` for LayerSync added by hand in the
training module (the comparison the tests make). It writes the LoRA weights (`lora.safetensors`).
"""

import argparse
import os
import sys
from pathlib import Path

import accelerate
import torch
from diffsynth.diffusion import (
    DiffusionTrainingModule,
    FlowMatchSFTLoss,
    ModelLogger,
    add_general_config,
    add_video_size_config,
    launch_training_task,
)
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.pipelines.wan_video import WanVideoPipeline
from safetensors.torch import save_file

from layersync_hooks import LayerSync

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: launch
from launch import end_processes  # noqa: E402

# head_dim = dim / num_heads must split into Wan's 3-D RoPE: 8 works (16 does not).
DIT = dict(dim=16, in_dim=4, ffn_dim=32, out_dim=4, text_dim=8, freq_dim=16, eps=1e-6, patch_size=(1, 2, 2),
           num_heads=2, num_layers=4, has_image_input=False)  # fmt: skip
LATENTS, CONTEXT = (1, 4, 2, 8, 8), (1, 6, 8)  # 2 x 4 x 4 = 32 video tokens


class TinyWanTrainingModule(DiffusionTrainingModule):
    def __init__(self, args):
        super().__init__()
        self.pipe = WanVideoPipeline(device="cpu", torch_dtype=torch.float32)
        torch.manual_seed(0)  # the same DiT and LoRA on every process and in every run
        self.pipe.dit = WanModel(**DIT)
        self.pipe = self.split_pipeline_units("sft:train", self.pipe, None, "dit")
        self.switch_pipe_to_training_mode(self.pipe, None, "dit", "q,k,v,o", 4, None, None, None, task="sft:train")
        self.use_gradient_checkpointing = args.use_gradient_checkpointing
        # LayerSync added by hand (the comparison); off without --layersync_enabled. The training loop never calls
        # the DiT's own forward, so the capture arms on this module's.
        self.layersync = LayerSync.from_config(self.pipe.dit, args, training_module=self)

    def forward(self, data, inputs=None):
        inputs = self.transfer_data_to_device(inputs, self.pipe.device, self.pipe.torch_dtype)
        for unit in self.pipe.units:
            inputs = self.pipe.unit_runner(unit, self.pipe, *inputs)
        shared, positive, _ = inputs
        loss = FlowMatchSFTLoss(self.pipe, **shared, **positive)
        return loss + self.layersync.loss()


class CachedInputs(torch.utils.data.Dataset):
    """What DiffSynth's `sft:data_process` caches: (shared inputs, positive prompt, negative prompt) per sample."""

    load_from_cache = True  # launch_training_task then calls model({}, inputs=item)

    def __init__(self, size, gradient_checkpointing):
        self.size, self.gradient_checkpointing = size, gradient_checkpointing

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1234 + i)
        shared = dict(input_latents=torch.randn(LATENTS, generator=g), cfg_scale=1, tiled=False, cfg_merge=False,
                      vace_scale=1, use_gradient_checkpointing=self.gradient_checkpointing,
                      use_gradient_checkpointing_offload=False, max_timestep_boundary=1.0,
                      min_timestep_boundary=0.0)  # fmt: skip
        return shared, {"context": torch.randn(CONTEXT, generator=g)}, {}


def main():
    parser = add_video_size_config(add_general_config(argparse.ArgumentParser()))
    LayerSync.add_arguments(parser)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    torch.manual_seed(0)  # DiffSynth draws the timestep and noise from the global generator
    dataset = CachedInputs(args.steps * accelerator.num_processes, args.use_gradient_checkpointing)
    model = TinyWanTrainingModule(args)
    logger = ModelLogger(args.output_path, remove_prefix_in_ckpt="pipe.dit.")
    launch_training_task(accelerator, dataset, model, logger, args=args)
    if accelerator.is_main_process:
        lora = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(lora, os.path.join(args.output_path, "lora.safetensors"))


if __name__ == "__main__":
    main()
    end_processes()
