"""kohya sd-scripts' `flux_train_network.py` with LayerSync added by hand, without editing sd-scripts' files: its
`FluxNetworkTrainer` subclassed through the methods `train_network.NetworkTrainer` lets a model script override.

It is the README's edit, placed where sd-scripts lets a subclass place it:
- `prepare_unet_with_accelerator` (the raw DiT, right before `prepare`): `layersync = LayerSync.from_config(flux,
  args)` and `layersync.register_with(accelerator)` (before the resume's `load_state`);
- `process_batch` (every process): its loss goes straight to `accelerator.backward`, so `loss = loss +
  layersync.loss()` there, for training batches only (validation calls it with `is_train=False`, no gradients);
  and `layersync.metrics()` after each micro-step's term, as the README's scripts build their logs: the mean over
  the processes (one all-reduce, so every process must join it: sd-scripts logs on the main process only, where its
  trackers are);
- `generate_step_logs` (main process): those metrics into the logs it hands its trackers.

Run it as `flux_train_network.py` is run, with the `--layersync_*` flags added (`--layersync_enabled` on); sd-scripts'
checkout importable (`PYTHONPATH`).
"""

from flux_train_network import FluxNetworkTrainer, setup_parser
from library import train_util

from layersync_hooks import LayerSync


class FluxWithLayerSync(FluxNetworkTrainer):
    def prepare_unet_with_accelerator(self, args, accelerator, unet):
        self.layersync = LayerSync.from_config(unet, args)
        self.layersync.register_with(accelerator)
        self.layersync_logs = {}
        return super().prepare_unet_with_accelerator(args, accelerator, unet)

    def process_batch(self, batch, text_encoders, unet, network, vae, noise_scheduler, vae_dtype, weight_dtype,
                      accelerator, args, text_encoding_strategy, tokenize_strategy, is_train=True,
                      train_text_encoder=True, train_unet=True):  # fmt: skip
        loss = super().process_batch(batch, text_encoders, unet, network, vae, noise_scheduler, vae_dtype,
                                     weight_dtype, accelerator, args, text_encoding_strategy, tokenize_strategy,
                                     is_train=is_train, train_text_encoder=train_text_encoder,
                                     train_unet=train_unet)  # fmt: skip
        if not is_train:
            return loss
        loss = loss + self.layersync.loss()
        self.layersync_logs = self.layersync.metrics()  # this micro-step's term, over every process
        return loss

    def generate_step_logs(self, *args, **kwargs):
        return {**super().generate_step_logs(*args, **kwargs), **self.layersync_logs}


def main():
    parser = setup_parser()
    LayerSync.add_arguments(parser)
    args = parser.parse_args()
    train_util.verify_command_line_training_args(args)
    args = train_util.read_config_from_file(args, parser)
    FluxWithLayerSync().train(args)


if __name__ == "__main__":
    main()
