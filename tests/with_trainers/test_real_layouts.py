"""The layouts of musubi-tuner's and kohya sd-scripts' own DiT classes, proven on the real classes built tiny and
called as their training scripts call them (tests/with_trainers/real_models.py), with the same gradient probe as the
stand-ins in CI (tests/layout_proof.py). Each case is skipped when its checkout is not given:

    MUSUBI_TUNER_SRC=... SD_SCRIPTS_SRC=... pytest tests/with_trainers
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # real_models
sys.path.insert(0, str(Path(__file__).parents[1]))  # layout_proof
import real_models  # noqa: E402
from layout_proof import prove  # noqa: E402


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("name", list(real_models.BUILDERS))
def test_real_trainer_layout_aligns_exactly_the_target_tokens(name, checkpointing):
    """Student rows with LayerSync's gradient == the last block's rows feeding the compared prediction, on the real
    class, in eval mode and with the trainer's own checkpointing."""
    if not real_models.available(name.split(".")[0]):
        pytest.skip(f"no checkout for {name} (set MUSUBI_TUNER_SRC / SD_SCRIPTS_SRC)")
    prove(real_models.build(name), name, checkpointing=checkpointing)
