"""LayerSync's own file in an accelerate checkpoint folder, `layersync_state.json`: written by `save_state` and read
by `load_state` through accelerate's state pre-hooks, so nothing accelerate counts changes (`register_with`).

Unlike `accelerator.register_for_checkpointing(layersync)`, a checkpoint written without LayerSync still resumes
(at step 0), and one written with it resumes at its step.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from .errors import LayerSyncConfigError

logger = logging.getLogger(__name__)

STATE_FILE = "layersync_state.json"


def register(accelerator: Any, layersync: Any) -> tuple:
    """Keep `layersync`'s `state_dict()` in the checkpoints of `accelerator`; returns the two hook handles."""

    def save(models, weights, output_dir):
        if accelerator.is_main_process:  # no collective: save_state often runs on the main process only
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, STATE_FILE), "w", encoding="utf-8") as f:
                json.dump(layersync.state_dict(), f)

    def load(models, input_dir):
        path = os.path.join(input_dir, STATE_FILE)
        if os.path.isfile(path):
            layersync.load_state_dict(read_state(path))
            return
        logger.info("No %s in %s (written without LayerSync): LayerSync starts at step 0.", STATE_FILE, input_dir)
        layersync.load_state_dict({**layersync.state_dict(), "step": 0})  # the checkpoint's: before LayerSync ran

    return accelerator.register_save_state_pre_hook(save), accelerator.register_load_state_pre_hook(load)


def read_state(path: str) -> Any:
    """A state file's contents; a truncated or hand-edited file is an error naming it and the fix."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise LayerSyncConfigError(
            f"Cannot read LayerSync's state {path} ({type(error).__name__}: {error}). Restore the file from the "
            "checkpoint, or delete it to resume with LayerSync at step 0."
        ) from None
