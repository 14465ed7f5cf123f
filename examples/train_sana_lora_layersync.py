#!/usr/bin/env python
"""LoRA fine-tuning of a Sana transformer with flow matching, plus LayerSync.

Shaped like the diffusers example scripts (`examples/dreambooth/train_dreambooth_lora_sana.py`): argparse,
Accelerate, PEFT `add_adapter`, gradient checkpointing, mixed precision, `save_state` checkpoints, and
`SanaPipeline.save_lora_weights`. The lines marked `# LayerSync` are all it takes to add the regularizer.

It trains on cached latents and prompt embeddings (a safetensors file with `latents` (N, C, H, W), already
multiplied by the VAE's scaling factor, `prompt_embeds` (N, L, D) and `prompt_attention_mask` (N, L)), as many
fine-tuning setups do to keep the VAE and the text encoder off the training device. Make it once with the
pipeline you fine-tune:

    pipe = SanaPipeline.from_pretrained(model_id, torch_dtype=torch.bfloat16)
    latents = pipe.vae.encode(images).latent * pipe.vae.config.scaling_factor
    prompt_embeds, prompt_attention_mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False)
    cache = {"latents": ..., "prompt_embeds": ..., "prompt_attention_mask": ...}
    safetensors.torch.save_file(cache, "cache.safetensors")

Example:
    accelerate launch examples/train_sana_lora_layersync.py \
      --pretrained_model_name_or_path Efficient-Large-Model/Sana_1600M_1024px_diffusers \
      --train_data_file cache.safetensors --output_dir sana-lora --mixed_precision bf16 \
      --gradient_checkpointing --layersync_enabled --layersync_student_block 6 --layersync_teacher_block 12
"""

import argparse
import logging
import math
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import (
    cast_training_params,
    compute_density_for_timestep_sampling,
    compute_loss_weighting_for_sd3,
)
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from layersync_hooks import LayerSync  # LayerSync

logger = get_logger(__name__)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="LoRA fine-tuning of Sana with flow matching and LayerSync.")
    parser.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        required=True,
        help="Hub id or local folder with `transformer/` and `scheduler/` subfolders.",
    )
    parser.add_argument("--revision", type=str, default=None)
    parser.add_argument("--variant", type=str, default=None)
    parser.add_argument("--train_data_file", type=str, required=True, help="Cached latents and prompt embeddings.")
    parser.add_argument("--output_dir", type=str, default="sana-lora-layersync")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--train_batch_size", type=int, default=4, help="Batch size (per device).")
    parser.add_argument("--max_train_steps", type=int, default=1000)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--lr_scheduler", type=str, default="constant")
    parser.add_argument("--lr_warmup_steps", type=int, default=0)
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank.")
    parser.add_argument("--lora_layers", type=str, default="to_k,to_q,to_v", help="Comma-separated target modules.")
    parser.add_argument(
        "--weighting_scheme", type=str, default="none", choices=["sigma_sqrt", "logit_normal", "mode", "cosmap", "none"]
    )
    parser.add_argument("--logit_mean", type=float, default=0.0)
    parser.add_argument("--logit_std", type=float, default=1.0)
    parser.add_argument("--mode_scale", type=float, default=1.29)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help='A checkpoint folder or "latest".')
    parser.add_argument("--report_to", type=str, default="tensorboard")
    parser.add_argument("--logging_dir", type=str, default="logs")
    LayerSync.add_arguments(parser)  # LayerSync: --layersync_enabled, --layersync_student_block, ...
    return parser.parse_args(input_args)


def main(args):
    logging_dir = Path(args.output_dir, args.logging_dir)
    project_config = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir))
    report_to = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=project_config,
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if args.seed is not None:
        set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)

    noise_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        args.pretrained_model_name_or_path, subfolder="scheduler", revision=args.revision
    )
    transformer = SanaTransformer2DModel.from_pretrained(
        args.pretrained_model_name_or_path, subfolder="transformer", revision=args.revision, variant=args.variant
    )
    transformer.requires_grad_(False)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    transformer.to(accelerator.device, dtype=weight_dtype)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    target_modules = [layer.strip() for layer in args.lora_layers.split(",")]
    transformer.add_adapter(
        LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=target_modules)
    )
    # LayerSync: after enable_gradient_checkpointing() and add_adapter(), before accelerator.prepare.
    layersync = LayerSync.from_config(transformer, args)
    if accelerator.mixed_precision in ("fp16", "bf16"):
        cast_training_params(transformer, dtype=torch.float32)  # train the LoRA weights in float32

    lora_parameters = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora_parameters, lr=args.learning_rate)
    cache = load_file(args.train_data_file)
    dataset = TensorDataset(cache["latents"], cache["prompt_embeds"], cache["prompt_attention_mask"])
    train_dataloader = DataLoader(dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=True)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    transformer, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        transformer, optimizer, train_dataloader, lr_scheduler
    )
    layersync.register_with(accelerator)  # LayerSync: its step count goes with save_state
    if accelerator.is_main_process:
        # trackers take scalars only (TensorBoard's hparams refuse lists such as --layersync_pairs)
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
        accelerator.init_trackers("sana-lora-layersync", config=config)

    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_train_epochs = math.ceil(args.max_train_steps / updates_per_epoch)
    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"***** Running training: {len(dataset)} examples, total batch size {total_batch_size}, "
        f"{args.max_train_steps} steps; {layersync!r} *****"
    )
    global_step = first_epoch = 0
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            checkpoints = sorted(Path(args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            path = checkpoints[-1] if checkpoints else None
        if path is None:
            logger.info("No checkpoint to resume from; starting a new training run.")
        else:
            accelerator.load_state(str(path))
            global_step = int(Path(path).name.split("-")[1])
            first_epoch = global_step // updates_per_epoch

    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    for _epoch in range(first_epoch, num_train_epochs):
        transformer.train()
        for latents, prompt_embeds, prompt_attention_mask in train_dataloader:
            with accelerator.accumulate(transformer):
                latents = latents.to(dtype=weight_dtype)
                prompt_embeds = prompt_embeds.to(dtype=weight_dtype)
                noise = torch.randn_like(latents)
                u = compute_density_for_timestep_sampling(
                    weighting_scheme=args.weighting_scheme,
                    batch_size=latents.shape[0],
                    logit_mean=args.logit_mean,
                    logit_std=args.logit_std,
                    mode_scale=args.mode_scale,
                )
                indices = (u * noise_scheduler.config.num_train_timesteps).long()
                timesteps = noise_scheduler.timesteps[indices].to(device=latents.device)
                # indexed by the sampled positions (on the host already), not searched per timestep with .item()
                sigmas = noise_scheduler.sigmas[indices].to(latents.device, latents.dtype).view(-1, 1, 1, 1)
                noisy_model_input = (1.0 - sigmas) * latents + sigmas * noise
                with accelerator.autocast():
                    model_pred = transformer(
                        hidden_states=noisy_model_input,
                        encoder_hidden_states=prompt_embeds,
                        encoder_attention_mask=prompt_attention_mask,
                        timestep=timesteps,
                        return_dict=False,
                    )[0]
                weighting = compute_loss_weighting_for_sd3(weighting_scheme=args.weighting_scheme, sigmas=sigmas)
                target = noise - latents
                loss = (weighting.float() * (model_pred.float() - target.float()) ** 2).mean()
                loss = loss + layersync.loss()  # LayerSync: its term, once per training forward, before backward
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(lora_parameters, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                progress_bar.update(1)
                global_step += 1
                if global_step % args.checkpointing_steps == 0:
                    accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], **layersync.metrics()}
            progress_bar.set_postfix(**logs)  # LayerSync: layersync_loss and layersync_similarity shown
            accelerator.log(logs, step=global_step)
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        transformer = accelerator.unwrap_model(transformer)
        lora_state = get_peft_model_state_dict(transformer.to(torch.float32))
        SanaPipeline.save_lora_weights(args.output_dir, transformer_lora_layers=lora_state)
        logger.info(f"Saved the LoRA weights to {args.output_dir}")
    layersync.remove()  # LayerSync: the transformer is exactly as before
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
