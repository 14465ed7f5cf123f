"""musubi-tuner's `wan_train_network.py` with LayerSync added by hand, without editing musubi's files: its trainer
subclassed through the extension points `training/trainer_base.py` offers for exactly this ("seams": a hook on the
raw DiT before `prepare`, `process_batch` right before `accelerator.backward`, `extra_step_logs` into its
`accelerator.log`).

It is the README's edit, placed where musubi lets an extension place it:
- `on_transformer_loaded` (raw DiT, before `prepare`): `layersync = LayerSync.from_config(transformer, args)` and
  `layersync.register_with(accelerator)` (before the resume's `load_state`);
- `process_batch`: `loss = loss + layersync.loss()`: its loss goes straight to `accelerator.backward`;
- `extra_step_logs`: `layersync.metrics(sync=False)`: musubi calls it only where trackers exist (the main process),
  so the README's all-reducing `metrics()` would wait forever for the other processes there.

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

    def process_batch(self, *args, **kwargs):
        loss, metrics = super().process_batch(*args, **kwargs)
        return loss + self.layersync.loss(), metrics

    def extra_step_logs(self, args, logs):
        return {**super().extra_step_logs(args, logs), **self.layersync.metrics(sync=False)}


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
