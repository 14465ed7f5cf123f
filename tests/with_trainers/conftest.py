"""Where the trainers are: checkouts named by environment variables, each with the interpreter of its own environment.

- `MUSUBI_TUNER_SRC` / `SD_SCRIPTS_SRC` / `AI_TOOLKIT_SRC`: a checkout of kohya-ss/musubi-tuner, kohya-ss/sd-scripts,
  ostris/ai-toolkit. Unset: the tests that need it are skipped.
- `MUSUBI_TUNER_PYTHON` / `SD_SCRIPTS_PYTHON` / `AI_TOOLKIT_PYTHON`: the interpreter of the environment that has the
  trainer's requirements (README.md here); unset: this interpreter.
"""

import os
import sys
from pathlib import Path

import pytest
import runs

TRAINERS = {"musubi": "MUSUBI_TUNER", "sd-scripts": "SD_SCRIPTS", "ai-toolkit": "AI_TOOLKIT"}


def checkout(trainer: str) -> tuple[str, Path]:
    """(python, source) of `trainer`, or a skip naming the variable to set."""
    prefix = TRAINERS[trainer]
    source = os.environ.get(f"{prefix}_SRC")
    if not source:
        pytest.skip(f"{prefix}_SRC is not set (a checkout of {trainer}; see tests/with_trainers/README.md)")
    return os.environ.get(f"{prefix}_PYTHON", sys.executable), Path(source)


@pytest.fixture(scope="session")
def musubi_wan(tmp_path_factory) -> runs.TrainerRun:
    """musubi-tuner's Wan 2.1 LoRA script with its tiny DiT and cache (written once per session)."""
    python, source = checkout("musubi")
    return runs.musubi_wan(python, source, tmp_path_factory.mktemp("musubi-wan-files"))


@pytest.fixture(scope="session")
def musubi_hunyuan_video(tmp_path_factory) -> runs.TrainerRun:
    """musubi-tuner's HunyuanVideo LoRA script with its tiny DiT and caches."""
    python, source = checkout("musubi")
    return runs.musubi_hunyuan_video(python, source, tmp_path_factory.mktemp("musubi-hv-files"))


@pytest.fixture(scope="session")
def musubi_flux_kontext(tmp_path_factory) -> runs.TrainerRun:
    """musubi-tuner's FLUX.1 Kontext LoRA script with its tiny DiT and caches (target and control latents)."""
    python, source = checkout("musubi")
    return runs.musubi_flux_kontext(python, source, tmp_path_factory.mktemp("musubi-kontext-files"))


@pytest.fixture(scope="session")
def musubi_qwen_image(tmp_path_factory) -> runs.TrainerRun:
    """musubi-tuner's Qwen-Image LoRA script with its tiny DiT and caches."""
    python, source = checkout("musubi")
    return runs.musubi_qwen_image(python, source, tmp_path_factory.mktemp("musubi-qwen-files"))


@pytest.fixture(scope="session")
def sd_scripts_flux(tmp_path_factory) -> runs.TrainerRun:
    """sd-scripts' FLUX.1 LoRA script with its tiny models, tokenizers and caches (written once per session)."""
    python, source = checkout("sd-scripts")
    return runs.sd_scripts_flux(python, source, tmp_path_factory.mktemp("sd-scripts-flux-files"))


@pytest.fixture(scope="session")
def sd_scripts_sd3(tmp_path_factory) -> runs.TrainerRun:
    """sd-scripts' SD3 LoRA script with its tiny MMDiT, text encoders, tokenizers and caches."""
    python, source = checkout("sd-scripts")
    return runs.sd_scripts_sd3(python, source, tmp_path_factory.mktemp("sd-scripts-sd3-files"))


@pytest.fixture(scope="session")
def sd_scripts_lumina(tmp_path_factory) -> runs.TrainerRun:
    """sd-scripts' Lumina Image 2.0 LoRA script with its tiny NextDiT, Gemma 2, AE, tokenizer and caches."""
    python, source = checkout("sd-scripts")
    return runs.sd_scripts_lumina(python, source, tmp_path_factory.mktemp("sd-scripts-lumina-files"))


@pytest.fixture(scope="session")
def ai_toolkit_flux(tmp_path_factory) -> runs.TrainerRun:
    """ai-toolkit's `run.py` with a tiny FLUX.1 LoRA job (its pipeline folder written once per session)."""
    python, source = checkout("ai-toolkit")
    return runs.ai_toolkit_flux(python, source, tmp_path_factory.mktemp("ai-toolkit-flux-files"))
