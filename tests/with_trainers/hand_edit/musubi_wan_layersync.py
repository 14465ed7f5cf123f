"""musubi-tuner's `wan_train_network.py` with LayerSync added by hand, without editing musubi's files: its trainer
subclassed through the extension points `training/trainer_base.py` offers for exactly this ("seams": a hook on the
raw DiT before `prepare`, `process_batch` right before `accelerator.backward`, a hook after each optimizer step on
every process, `extra_step_logs` into its `accelerator.log`).

It is the README's edit, placed where musubi lets an extension place it:
- `on_transformer_loaded` (raw DiT, before `prepare`): `layersync = LayerSync.from_config(transformer, args)` and
  `layersync.register_with(accelerator)` (before the resume's `load_state`);
- `process_batch`: `loss = loss + layersync.loss()`: its loss goes straight to `accelerator.backward`;
- `on_post_optimizer_step` (every process, after each micro-step, as the README's scripts build their logs):
  `layersync.metrics()`, the mean over the processes (one all-reduce, so every process must join it: musubi logs on
  the main process only, where its trackers are);
- `extra_step_logs` (main process, just before `accelerator.log`, every micro-step): those metrics into its logs.

Run it as `wan_train_network.py` is run, with the `--layersync_*` flags added (`--layersync_enabled` on).
"""

from musubi_tuner.wan_train_network import (
    WanNetworkTrainer,
    read_config_from_file,
    setup_parser_common,
    wan_setup_parser,
)

from layersync_hooks import LayerSync


class WanWithLayerSync(WanNetworkTrainer):
    def on_transformer_loaded(self, args, accelerator, transformer):
        super().on_transformer_loaded(args, accelerator, transformer)
        self.layersync = LayerSync.from_config(transformer, args)
        self.layersync.register_with(accelerator)
        self.layersync_logs = {}

    def process_batch(self, *args, **kwargs):
        loss, metrics = super().process_batch(*args, **kwargs)
        return loss + self.layersync.loss(), metrics

    def on_post_optimizer_step(self, args, accelerator, network, transformer, sync_gradients, global_step):
        super().on_post_optimizer_step(args, accelerator, network, transformer, sync_gradients, global_step)
        self.layersync_logs = self.layersync.metrics()  # this micro-step's term, over every process

    def extra_step_logs(self, args, logs):
        return {**super().extra_step_logs(args, logs), **self.layersync_logs}


def main():
    parser = wan_setup_parser(setup_parser_common())
    LayerSync.add_arguments(parser)
    args = read_config_from_file(parser.parse_args(), parser)
    args.dit_dtype = None  # as musubi's own main(): detected from the weights
    if args.vae_dtype is None:
        args.vae_dtype = "bfloat16"
    WanWithLayerSync().train(args)


if __name__ == "__main__":
    main()
