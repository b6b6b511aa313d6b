"""``nanogpt finetune``: continue training pretrained weights (GPT-2 or a checkpoint)."""

from __future__ import annotations

from typing import Any

from .options import ConfigFile, PrintConfig, preset_option, with_training_options
from .train import ConfigArgument, config_or_preset, run

FINETUNE_PRESET = "finetune-gpt2"
FinetunePreset = preset_option(FINETUNE_PRESET)


def finetune(
    config_file: ConfigArgument = None,
    preset: FinetunePreset = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    **options: Any,
) -> None:
    """Finetune GPT-2 (or any checkpoint) on a prepared dataset.

    Defaults are nanoGPT's finetune_shakespeare: batch 1 x 32 accumulated, constant learning
    rate 3e-5, 20 iterations, evaluation every 5, a checkpoint only when val loss improves.
    Presets finetune-gpt2, finetune-gpt2-medium, finetune-gpt2-large and finetune-gpt2-xl
    choose the size; --init-from PATH starts from a checkpoint or Hugging Face folder. The
    dataset must be tokenized like the model (GPT-2's BPE for GPT-2).

    Examples:
      nanogpt prepare shakespeare && nanogpt finetune
      nanogpt finetune --preset finetune-gpt2-xl --dataset mybooks --dropout 0.1
      nanogpt finetune --init-from path/to/hf-folder --max-iters 100
      nanogpt finetune config/finetune_shakespeare.py   (a nanoGPT config file)
    """
    run(*config_or_preset(config_file, preset, config), print_config, options, FINETUNE_PRESET)


with_training_options(finetune, preset=FINETUNE_PRESET)
