"""nanogpt: prepare data for, train, finetune, sample and convert GPT models."""

__version__ = "0.1.0"
