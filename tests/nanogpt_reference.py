"""The original nanoGPT model's computation, written out independently for parity tests.

Parameter names, shapes and operations follow nanoGPT's ``model.py``: LayerNorm with an
optional bias, a fused ``c_attn`` projection, causal softmax attention, an MLP with the
exact ``nn.GELU()``, and the output layer tied to the token embedding. It shares no code
with ``nanogpt_cli.model``, so a test that compares the two checks our model against
nanoGPT's, not against itself.

``load_nanogpt_model_py`` imports the original file itself, where a copy of nanoGPT is at
hand (``../shared/reference/nanoGPT/model.py``); tests that use it skip without one.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.n_head = n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias)
        self.attn = Attention(n_embd, n_head, bias)
        self.ln_2 = LayerNorm(n_embd, bias)
        self.mlp = MLP(n_embd, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPTReference(nn.Module):
    def __init__(
        self,
        *,
        n_layer: int,
        n_head: int,
        n_embd: int,
        block_size: int,
        vocab_size: int,
        bias: bool,
    ) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                h=nn.ModuleList(Block(n_embd, n_head, bias) for _ in range(n_layer)),
                ln_f=LayerNorm(n_embd, bias),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT does
        for name, p in self.named_parameters():  # random everything, biases included
            nn.init.normal_(
                p,
                mean=1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0,
                std=0.02 if p.dim() > 1 else 0.1,
            )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.size(1))
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    @torch.no_grad()
    def greedy(self, idx: torch.Tensor, n: int) -> list[int]:
        out = []
        for _ in range(n):
            nxt = self(idx)[:, -1].argmax(-1, keepdim=True)
            out.append(int(nxt))
            idx = torch.cat([idx, nxt], dim=1)
        return out


NANOGPT_MODEL_PY = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "nanoGPT" / "model.py"
)


def load_nanogpt_model_py() -> ModuleType | None:
    """The original nanoGPT ``model.py`` as a module (``GPT``, ``GPTConfig``), or None where
    no copy of it is at hand."""
    if not NANOGPT_MODEL_PY.is_file():
        return None
    spec = importlib.util.spec_from_file_location("nanogpt_original_model", NANOGPT_MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
