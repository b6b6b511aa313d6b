"""The GPT language model, GPT-2 compatible: the reference implementation.

Read it top to bottom: attention, MLP, block, the output layer, then the model. Parameter
names and shapes are those of nanoGPT's model.py, and GPT-2's up to Hugging Face's
transposed Conv1D weights, so those families of weights map onto it one to one.

It is written with torch's own layers only and has no device-specific code. The optional
fast paths of ``nanogpt_cli.kernels`` are applied to a built model from outside, and
generation passes its KV cache in (``nanogpt_cli.sample``). The model does no I/O,
printing, compiling or distributed wrapping: callers do that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn as nn
from torch.nn import functional as F

from .config import ModelConfig


class LayerCache(Protocol):
    """One layer's keys and values of earlier positions, which generation keeps."""

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Store the new positions' keys and values (B, nh, T, hs); return every key and
        value to attend to (B, nh, L, hs) and the attention mask (broadcastable to
        (B, nh, T, L)). The mask is None when plain causal attention is right: a fresh cache
        (L == T) or one new token."""
        ...


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding width (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is None:
            dropout_p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            k, v, mask = cache.update(k, v)  # (B, nh, L, hs), L = cached + T
            # Without a mask, T new tokens on a fresh cache attend causally; a single new
            # token attends to every position before it, so it needs no mask at all.
            causal = mask is None and T > 1
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 was trained with the tanh approximation; original nanoGPT uses the exact
        # form, so each family of weights reproduces its own logits.
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, vocab) logits against (B, T) targets; -1 is ignored."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class LMHead(nn.Linear):
    """The output layer: logits over the vocabulary from the final hidden states.

    ``loss`` is what training and evaluation ask of it. It is a method of its own so that a
    kernel may compute it without keeping the logits (``kernels.loss_head``).
    """

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(self(x), targets)


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set to build a model")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = LMHead(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection is the token embedding (GPT-2 does the same).
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two
        # residual branches, and this keeps the residual stream's variance from growing
        # with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default, as in GPT-2.

        Token embeddings stay in because they are tied to the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        pos: torch.Tensor | None = None,
        cache: Sequence[LayerCache] | None = None,
        last_only: bool = False,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (B, T, vocab) of token ids ``idx`` (B, T) and, given targets, the mean
        cross-entropy loss.

        ``pos`` (T,) holds the tokens' positions (default 0 to T-1) and ``cache`` one
        ``LayerCache`` per block with the keys and values of the positions before them:
        generation continues a sequence that way (``sample.KVCache``). With ``last_only``
        only the last position's logits are computed (B, 1, vocab), all generation needs.
        ``return_logits=False`` (training, evaluation) returns the loss alone, which lets
        the output layer skip keeping the logits (``LMHead.loss``).
        """
        T = idx.size(1)
        if pos is None:
            if self.config.block_size < T:
                raise ValueError(
                    f"cannot forward a sequence of length {T}: "
                    f"block size is {self.config.block_size}"
                )
            pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (T, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache is not None else None)
        x = self.transformer.ln_f(x)
        if targets is None:
            if last_only:
                x = x[:, [-1], :]  # (B, 1, n_embd); a list index keeps the time dimension
            return self.lm_head(x), None
        if not return_logits:
            return None, self.lm_head.loss(x, targets)
        logits = self.lm_head(x)
        return logits, cross_entropy(logits, targets)

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context length, e.g. to finetune GPT-2 (1024) on shorter blocks."""
        if block_size > self.config.block_size:
            raise ValueError(
                f"cannot grow block size from {self.config.block_size} to {block_size}"
            )
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token, as in the PaLM paper's appendix B.

        6 FLOPs per parameter per token for the matmuls, plus the attention scores.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        N = self.num_params()
        return 6 * N + 12 * cfg.n_layer * cfg.n_embd * T
