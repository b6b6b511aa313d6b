"""nanogpt: prepare data for, train and sample GPT models."""

__version__ = "0.1.0"
