"""A stand-in for ostris ai-toolkit's LoRA training loop (`jobs/process/BaseSDTrainProcess.py` with
`extensions_built_in/sd_trainer/SDTrainer.py`, launched as `python run.py config.yaml`), as it drives accelerate;
`--hand_edit` adds LayerSync the way the README tells a user to.

What it reproduces (ai-toolkit 27a03a9, as read there):
- one process-wide `Accelerator()` with no arguments (no accumulation, no trackers, no project folder);
- `prepare` called once per object: the VAE, the transformer, each trained text encoder, the network, the
  optimizer, the scheduler; the dataloader is not prepared (every process reads every batch);
- diffusers model classes; `--model dual_wan`: Wan 2.2 14B's `DualWanTransformer3DModel`, two Wan transformers of
  which one runs per call, chosen by the mean timestep against a boundary;
- `--block_compile`: after `prepare`, each block of the transformer's block lists is replaced by `torch.compile`;
- its own gradient accumulation: `--gradient_accumulation N` batches per step, a backward for each, one optimizer
  step, all inside `accelerator.accumulate(modules_being_trained)`; no division of the loss by N;
- `--diff_output_preservation`: a prior prediction with the LoRA off under `no_grad`, then the training forward, then
  a second forward with gradients (the class prompt instead of the trigger) whose distance to the prior is added to
  the loss; one backward for both;
- its own logger: `log.jsonl`, main process only (no `accelerator.log`), and no `save_state`.
Files: `tiny.safetensors` (the LoRA), `steps.jsonl` (task loss per batch), `log.jsonl` (its own log).
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from stand_in import (
    LoRANetwork,
    Steps,
    TinyDataset,
    collate,
    end_processes,
    noisy_inputs,
    save_network,
    tiny_dit,
)
from torch import nn

from layersync_hooks import LayerSync  # README edit

BOUNDARY = 875.0  # Wan 2.2 T2V: timesteps above it go to the high-noise expert (transformer_1)


def parse_args():
    parser = argparse.ArgumentParser(description="ai-toolkit-like LoRA training of a tiny Flux or dual Wan")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default="flux", choices=["flux", "dual_wan"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--gradient_accumulation", type=int, default=1, help="batches per optimizer step")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--block_compile", action="store_true")
    parser.add_argument("--compile_backend", default="inductor")
    parser.add_argument("--diff_output_preservation", action="store_true")
    parser.add_argument("--log_every", type=int, default=1)
    parser.add_argument("--hand_edit", action="store_true", help="LayerSync added to this script by hand")
    LayerSync.add_arguments(parser)  # README edit
    args = parser.parse_args()
    args.layersync_enabled = args.layersync_enabled or args.hand_edit
    return args


class DualWan(nn.Module):
    """ai-toolkit's `DualWanTransformer3DModel`: the high-noise expert for mean timesteps above the boundary."""

    def __init__(self, transformer_1: nn.Module, transformer_2: nn.Module):
        super().__init__()
        self.transformer_1, self.transformer_2 = transformer_1, transformer_2
        self.active = "transformer_1"

    def forward(self, timestep, **kwargs):
        with torch.no_grad():
            self.active = "transformer_1" if timestep.float().mean().item() > BOUNDARY else "transformer_2"
        return getattr(self, self.active)(timestep=timestep, **kwargs)


class Logger:
    """ai-toolkit's own logger, in miniature: values collected, committed per step, main process only."""

    def __init__(self, path: Path, main: bool):
        self.path, self.main, self.values = path, main, {}

    def log(self, values: dict) -> None:
        self.values.update(values)

    def commit(self, step: int) -> None:
        if self.main and self.values:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **self.values}) + "\n")
        self.values = {}


def build(args):
    if args.model == "flux":
        return tiny_dit("Flux")
    (high, inputs), (low, _) = tiny_dit("Wan"), tiny_dit("Wan")
    torch.manual_seed(5)  # two different experts
    with torch.no_grad():
        for parameter in low.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return DualWan(high, low), inputs


def block_lists(transformer: nn.Module) -> list[nn.ModuleList]:
    """The block lists ai-toolkit compiles (its fallback list of attribute names)."""
    names = ("transformer_blocks", "single_transformer_blocks", "blocks")
    return [getattr(transformer, name) for name in names if isinstance(getattr(transformer, name, None), nn.ModuleList)]


def main():
    args = parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()

    unet, inputs = build(args)
    vae = nn.Conv2d(3, 4, 1).requires_grad_(False)  # stands for the VAE: prepared first, alone
    network = LoRANetwork(unet)
    network.apply_to()
    network.set_multiplier(0.0)  # on only inside a training forward, as ai-toolkit's network context does
    experts = [unet.transformer_1, unet.transformer_2] if args.model == "dual_wan" else [unet]
    if args.gradient_checkpointing:
        for expert in experts:
            expert.enable_gradient_checkpointing()
    unet.train()
    if args.hand_edit:  # README edit: one LayerSync per expert that trains, before prepare
        layersyncs = {id(expert): LayerSync.from_config(expert, args) for expert in experts}
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    dataloader = torch.utils.data.DataLoader(TinyDataset(inputs), batch_size=1, collate_fn=collate)

    vae = accelerator.prepare(vae)
    unet = accelerator.prepare(unet)
    network = accelerator.prepare(network)
    optimizer = accelerator.prepare(optimizer)
    lr_scheduler = accelerator.prepare(lr_scheduler)
    modules_being_trained = [unet, network]
    if args.hand_edit:
        for layersync in layersyncs.values():
            layersync.register_with(accelerator)  # README edit (ai-toolkit never calls save_state)
    if args.block_compile:
        for expert in experts:
            for blocks in block_lists(expert):
                for i, block in enumerate(blocks):
                    blocks[i] = torch.compile(block, backend=args.compile_backend)

    def predict(batch_inputs, multiplier):
        lora = accelerator.unwrap_model(network)  # DDP-wrapped on several processes
        lora.set_multiplier(multiplier)
        try:
            return unet(**batch_inputs, return_dict=False)[0]
        finally:
            lora.set_multiplier(0.0)

    logger, steps = Logger(out / "log.jsonl", accelerator.is_main_process), Steps(out, accelerator.is_main_process)
    batches = iter(())
    for step in range(args.steps):
        batch_list = []
        for _ in range(args.gradient_accumulation):
            batch = next(batches, None)
            if batch is None:
                batches = iter(dataloader)
                batch = next(batches)
            batch_list.append(batch)
        with accelerator.accumulate(modules_being_trained):
            optimizer.zero_grad()
            for micro, batch in enumerate(batch_list):
                model_inputs, target, _ = noisy_inputs(batch, seed=1000 * step + micro)
                if args.diff_output_preservation:
                    with torch.no_grad():
                        prior = predict(model_inputs, 0.0)
                loss = F.mse_loss(predict(model_inputs, 1.0).float(), target.float())
                steps.add(step + 1, micro, loss)
                if args.diff_output_preservation:  # class prompt: another conditioning, with gradients
                    preserved = {**model_inputs, "encoder_hidden_states": model_inputs["encoder_hidden_states"].flip(1)}
                    loss = loss + F.mse_loss(predict(preserved, 1.0).float(), prior.float())
                if args.hand_edit:
                    model = accelerator.unwrap_model(unet)
                    expert = getattr(model, model.active) if args.model == "dual_wan" else model
                    loss = loss + layersyncs[id(expert)].loss()  # README edit: the expert that ran
                accelerator.backward(loss)
            accelerator.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        lr_scheduler.step()
        if (step + 1) % args.log_every == 0:
            logger.log({"loss/loss": loss.detach().item()})
            if args.hand_edit:
                for i, layersync in enumerate(layersyncs.values(), 1):  # README edit (every process)
                    prefix = f"transformer_{i}/" if args.model == "dual_wan" else ""
                    logger.log({prefix + key: value for key, value in layersync.metrics().items()})
            logger.commit(step + 1)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_network(accelerator.unwrap_model(network), out / "tiny.safetensors")


if __name__ == "__main__":
    main()
    end_processes()
