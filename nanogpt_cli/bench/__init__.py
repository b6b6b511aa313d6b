"""Benchmarks behind ``nanogpt bench``: the training step, generation and the batch loader,
on whatever device there is.

Every timing is a median over repeated runs with its spread, so two commits can be
compared. The training step is measured against two references: the device's peak FLOP/s
(MFU: a table of GPUs, or ``peak_tflops``) and the rate this machine reaches on one large
matrix multiply, measured here (the step's floor: its FLOPs at that rate). One module per
benchmark: ``train``, ``sample``, ``data``; ``common`` holds what they share.
"""

from .common import Spread, matmul_tflops
from .data import DataBench, bench_data
from .sample import SampleBench, bench_sample, random_model
from .train import TrainBench, bench_train

__all__ = [
    "DataBench",
    "SampleBench",
    "Spread",
    "TrainBench",
    "bench_data",
    "bench_sample",
    "bench_train",
    "matmul_tflops",
    "random_model",
]
