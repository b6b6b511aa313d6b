"""The option schema: one dataclass per group of training options.

Every option is a dataclass field with its default and help text; the CLI's ``--help``,
presets, TOML config files and validation are all derived from these fields. This module
must stay importable without torch: ``nanogpt --help`` reads it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .dtypes import DTYPE_ALIASES, DTYPE_SPELLINGS

Activation = Literal["gelu", "gelu_tanh", "relu2", "swiglu"]
PosEmbedding = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
SaveFormat = Literal["separated", "unified", "model-only"]
TrackerName = Literal["none", "tensorboard", "wandb"]
Strategy = Literal["ddp", "fsdp"]
ResumeMode = Literal["no", "yes", "auto"]
KernelMode = Literal["auto", "on", "off"]
OptimizerName = Literal["adamw", "muon"]

DEFAULT_PRESET = "shakespeare-char"


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field carrying its ``--help`` text."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelConfig:
    """Shape of the GPT model. Recorded in every checkpoint."""

    n_layer: int = opt(12, "Number of transformer blocks.")
    n_head: int = opt(12, "Attention heads per block; must divide n_embd.")
    n_embd: int = opt(768, "Embedding (residual stream) width.")
    block_size: int = opt(1024, "Context length in tokens.")
    vocab_size: int | None = opt(
        None,
        "Vocabulary size; larger than the tokenizer's pads the embedding (e.g. 50304 for 50257).",
        default_text="the dataset's",
    )
    dropout: float = opt(0.0, "Dropout probability (0 for pretraining, 0.1+ for finetuning).")
    bias: bool = opt(False, "Use biases in Linear and LayerNorm layers, as GPT-2 does.")
    activation: Activation = opt(
        "gelu_tanh",
        "MLP activation: gelu_tanh (GPT-2's tanh approximation), gelu (exact erf, as nanoGPT), "
        "relu2 (ReLU squared) or swiglu (SiLU-gated; hidden width 8/3 x n_embd rounded up to a "
        "multiple of 64, so about the parameters of the 4 x n_embd GELU MLP).",
    )
    pos_embedding: PosEmbedding = opt(
        "learned",
        "Position information: learned (GPT-2's table of block_size embeddings) or rope "
        "(rotary embeddings on queries and keys; no table).",
    )
    rope_base: float = opt(10000.0, "RoPE base (theta): the longest rotation's wavelength scale.")
    norm: Norm = opt(
        "layernorm", "Normalisation layer: layernorm (GPT-2) or rmsnorm (no mean, no bias)."
    )
    norm_gain: bool = opt(True, "Give each norm a learned gain (off: parameter-free norms).")
    qk_norm: bool = opt(False, "RMS-normalise queries and keys per head before attention.")
    tie_embeddings: bool = opt(
        True, "Share the output layer's weight with the token embedding, as GPT-2 does."
    )
    logit_softcap: float = opt(
        0.0, "Soft-cap the logits to (-cap, cap) as cap x tanh(logits / cap); 0 disables it."
    )
    zero_init_proj: bool = opt(
        False, "Initialise the attention and MLP output projections to zero."
    )

    def non_gpt2_options(self) -> list[str]:
        """The options, as flags with their values, whose model GPT-2's architecture cannot
        compute (``zero_init_proj`` changes only the initialisation, so it is not one)."""
        defaults = ModelConfig()
        found = []
        for name in ("pos_embedding", "norm", "norm_gain", "qk_norm", "tie_embeddings"):
            value, flag = getattr(self, name), name.replace("_", "-")
            if value != getattr(defaults, name):
                found.append(
                    f"--{'' if value else 'no-'}{flag}"
                    if value in (True, False)
                    else f"--{flag} {value}"
                )
        if self.activation not in ("gelu", "gelu_tanh"):
            found.append(f"--activation {self.activation}")
        if self.logit_softcap:
            found.append(f"--logit-softcap {self.logit_softcap}")
        return found


@dataclass
class DataConfig:
    """Which data to train on and how much of it per step."""

    dataset: str = opt(
        "openwebtext",
        "Prepared dataset name (see `nanogpt prepare`) or its directory.",
        complete="dataset",
    )
    data_dir: str | None = opt(
        None,
        "Directory that holds prepared datasets.",
        default_text="$NANOGPT_DATA_DIR or user data dir",
    )
    batch_size: int = opt(12, "Sequences per micro-batch, per process.")
    gradient_accumulation_steps: int = opt(
        40,
        "Micro-batches per optimizer step, over all processes (each of N processes runs 1/N "
        "of them, as in nanoGPT).",
    )
    total_batch_tokens: int | None = opt(
        None,
        "Tokens per optimizer step over all processes; sets gradient_accumulation_steps to "
        "total / (batch_size x block_size).",
        default_text="from gradient_accumulation_steps",
    )


@dataclass
class OptimConfig:
    """The optimizer (AdamW, or Muon with AdamW) and the learning-rate schedule (linear
    warmup, cosine decay)."""

    optimizer: OptimizerName = opt(
        "adamw",
        "adamw: AdamW for every parameter. muon: torch.optim.Muon for the 2-D weight matrices "
        "inside the transformer blocks (at --muon-lr, no weight decay), AdamW for the "
        "embeddings, the output head, gains and biases; both follow the same schedule.",
    )
    learning_rate: float = opt(6e-4, "Peak learning rate (of AdamW's parameters).")
    max_iters: int = opt(600000, "Number of optimizer steps.")
    weight_decay: float = opt(0.1, "AdamW weight decay, applied to 2-D weights only.")
    beta1: float = opt(0.9, "AdamW beta1.")
    beta2: float = opt(0.95, "AdamW beta2.")
    grad_clip: float = opt(1.0, "Clip the gradient norm to this value; 0 disables clipping.")
    decay_lr: bool = opt(True, "Decay the learning rate with a cosine schedule.")
    warmup_iters: int = opt(2000, "Steps of linear learning-rate warmup.")
    lr_decay_iters: int = opt(
        600000,
        "Step at which the cosine decay reaches min_lr (below warmup_iters: min_lr right after "
        "the warmup, as in nanoGPT).",
    )
    min_lr: float = opt(6e-5, "Learning rate at the end of the decay.")
    muon_lr: float = opt(
        0.02,
        "Peak learning rate of the Muon parameters (--optimizer muon); the schedule scales it "
        "as it scales --learning-rate.",
    )
    muon_momentum: float = opt(0.95, "Muon's (Nesterov) momentum (--optimizer muon).")
    max_bad_steps: int = opt(
        10,
        "Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.",
    )


@dataclass
class EvalConfig:
    """How often and on how much data the train/val loss is evaluated."""

    eval_interval: int = opt(2000, "Evaluate train/val loss every this many steps.")
    eval_iters: int = opt(200, "Batches per split in each evaluation.")
    eval_only: bool = opt(False, "Evaluate once and exit.")
    eval_tasks: str | None = opt(
        None,
        "lm-evaluation-harness tasks to score at evaluations, comma-separated (e.g. "
        "hellaswag); needs pip install 'nanogpt-cli[eval]'.",
        default_text="none",
    )
    eval_tasks_limit: int | None = opt(
        None, "Documents per task for --eval-tasks (the first N).", default_text="all"
    )
    eval_tasks_every: int = opt(1, "Run --eval-tasks at every this many evaluations.")
    eval_tasks_include_path: str | None = opt(
        None, "Folder of your own task YAML files for --eval-tasks.", default_text="none"
    )


@dataclass
class RunConfig:
    """Where a run starts from and what it writes: checkpoints, logs and trackers."""

    out_dir: str = opt("out", "Directory for checkpoints and metrics.jsonl.", complete="checkpoint")
    init_from: str = opt(
        "scratch",
        "Start from: scratch, gpt2[-medium|-large|-xl] (hub), or a checkpoint/HF folder path.",
        complete="init_from",
    )
    resume: ResumeMode = opt(
        "no",
        "Continue from out_dir's checkpoint and its options: yes (plain --resume), auto (if "
        "one exists) or no.",
        bare="yes",
        booleans=("no", "yes"),
    )
    overwrite: bool = opt(
        False,
        "Start afresh in an out_dir that holds a run; the old run goes once the new one saves.",
    )
    always_save_checkpoint: bool = opt(
        True,
        "Save at every evaluation (into OUT_DIR/last/ when not the best), not only on improvement.",
    )
    save_format: SaveFormat = opt(
        "separated",
        "Checkpoint files: separated (safetensors + optimizer.pt), unified (nanoGPT's ckpt.pt) "
        "or model-only (cannot resume).",
        shortcuts={"save_separate_optimizer": "separated", "save_model_only": "model-only"},
    )
    log_interval: int = opt(1, "Log training loss every this many steps.")
    sample_at_end: bool = opt(True, "Print a short sample from the model when training ends.")
    tracker: TrackerName = opt(
        "none",
        "Also send metrics to tensorboard (out_dir/tensorboard) or wandb (Weights & Biases); "
        "each needs its extra: pip install 'nanogpt-cli[tensorboard]'.",
    )
    wandb_project: str = opt("nanogpt", "Weights & Biases project, with --tracker wandb.")
    wandb_run_name: str | None = opt(
        None, "Weights & Biases run name, with --tracker wandb.", default_text="out_dir's name"
    )


@dataclass
class SystemConfig:
    """Where and how the computation runs."""

    device: str = opt("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")
    dtype: DType = opt(
        "auto",
        "Precision: auto (bfloat16 on CUDA where supported, else float16; float32 on CPU and "
        f"MPS), {DTYPE_SPELLINGS}.",
        aliases=DTYPE_ALIASES,
    )
    compile: bool | None = opt(
        None,
        "Compile the model with torch.compile (auto: on CUDA, off elsewhere).",
        default_text="auto",
    )
    cpu_kernels: KernelMode = opt(
        "auto",
        "CPU fast paths (oneDNN products, split decoding, fused loss head, GELU): auto (where "
        "measured faster here), on or off. Env: NANOGPT_CPU_KERNELS.",
    )
    seed: int = opt(1337, "Random seed for initialisation, batches and dropout.")
    nproc_per_node: int = opt(
        1,
        "Processes on this machine; more than 1 starts them with torchrun (one per GPU; "
        "gloo on CPU).",
    )
    strategy: Strategy = opt(
        "ddp",
        "Data parallelism: ddp (a whole model per process) or fsdp (parameters, gradients "
        "and optimizer state sharded per transformer block).",
    )
    dist_timeout: int = opt(
        300, "Seconds a process waits for the others before the run fails instead of hanging."
    )


@dataclass
class TrainConfig:
    """Every training option, grouped by concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, group name -> {option: value}."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat plain dict, option -> value."""
        return {name: getattr(getattr(self, s.group), name) for name, s in SPECS.items()}


GROUP_TITLES: dict[str, str] = {
    "model": "Model",
    "data": "Data",
    "optim": "Optimizer and schedule",
    "eval": "Evaluation",
    "run": "Run and checkpoints",
    "system": "System",
}

# Options that earlier versions kept in another group ([eval] held the run's options before
# the [run] section existed): config files written then still read.
LEGACY_GROUPS: dict[str, tuple[str, ...]] = {
    "eval": tuple(f.name for f in dataclasses.fields(RunConfig)),
}


@dataclass(frozen=True)
class OptionSpec:
    """One training option as the CLI and config files see it."""

    name: str
    group: str
    type: Any
    default: Any
    help: str
    default_text: str | None
    # Flags that set this option to a value: {"save_model_only": "model-only"}.
    shortcuts: tuple[tuple[str, Any], ...] = ()
    complete: str | None = None  # what shell completion offers: dataset, checkpoint, ...
    bare: Any = None  # the value of the flag given without one (--resume: yes)
    booleans: tuple[Any, Any] | None = None  # the values false and true stand for
    # Other spellings of the choices, any case: {"bf16": "bfloat16"}.
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def flag(self) -> str:
        return option_flag(self.name)

    @property
    def base_type(self) -> Any:
        """The type without ``| None``."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        if typing.get_origin(self.type) in (typing.Union, _UnionType) and len(args) == 1:
            return args[0]
        return self.type


_UnionType = type(int | None)


def option_flag(name: str) -> str:
    """The CLI flag of an option: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_specs() -> list[OptionSpec]:
    """All training options, in group order, from the dataclasses."""
    specs = []
    for group_field in dataclasses.fields(TrainConfig):
        cls = group_field.default_factory  # type: ignore[misc]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            specs.append(
                OptionSpec(
                    name=f.name,
                    group=group_field.name,
                    type=hints[f.name],
                    default=f.default,
                    help=f.metadata["help"],
                    default_text=f.metadata.get("default_text"),
                    shortcuts=tuple(f.metadata.get("shortcuts", {}).items()),
                    complete=f.metadata.get("complete"),
                    bare=f.metadata.get("bare"),
                    booleans=f.metadata.get("booleans"),
                    aliases=tuple(f.metadata.get("aliases", {}).items()),
                )
            )
    return specs


SPECS: dict[str, OptionSpec] = {s.name: s for s in option_specs()}
# Shortcut flag -> (option, value it sets).
SHORTCUTS: dict[str, tuple[str, Any]] = {
    short: (s.name, value) for s in SPECS.values() for short, value in s.shortcuts
}
