"""The GPT language model, GPT-2 compatible: the reference implementation.

Read it top to bottom: attention, MLP, block, the output layer, then the model. Parameter
names and shapes are those of nanoGPT's model.py, and GPT-2's up to Hugging Face's
transposed Conv1D weights, so those families of weights map onto it one to one.

The architecture options of ``ModelConfig`` (rotary positions, RMSNorm and QK-norm, ReLU²
and SwiGLU, an untied head, logit soft-capping, zero-initialised projections) are each a few
lines in the block they change; with all of them off (the default) the model is GPT-2's.

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

NORM_EPS = 1e-5  # LayerNorm's default, for every norm: RMSNorm's would follow the dtype


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


def norm_layer(config: ModelConfig, dim: int) -> nn.Module:
    """GPT-2's LayerNorm, or RMSNorm (no mean subtracted, no bias); either without a gain
    when ``norm_gain`` is off."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=NORM_EPS, elementwise_affine=config.norm_gain)
    return nn.LayerNorm(dim, eps=NORM_EPS, elementwise_affine=config.norm_gain, bias=config.bias)


def rotary(pos: torch.Tensor, head_size: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines (T, hs) of rotary embeddings at positions ``pos`` (T,): feature
    pair (i, i + hs/2) of each head turns by ``pos / base**(2i/hs)``. Positions (B, T), one
    row per sequence (a server's batch, each row at its own position), give (B, 1, T, hs)."""
    inv_freq = base ** -(torch.arange(0, head_size, 2, device=pos.device) / head_size)
    angles = pos.float()[..., None] * inv_freq  # (T, hs/2) or (B, T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hs) or (B, T, hs)
    if pos.dim() == 2:
        angles = angles[:, None]  # (B, 1, T, hs): broadcast over the heads
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the feature pairs of ``x`` (B, nh, T, hs) by the angles of ``rotary``; the
    dot product of a rotated query and key then depends on their positions' difference."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


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
        self.qk_norm = config.qk_norm

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding width (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            # unit-RMS queries and keys keep the attention logits bounded as weights grow
            q, k = F.rms_norm(q, (hs,), eps=NORM_EPS), F.rms_norm(k, (hs,), eps=NORM_EPS)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)  # before the cache keeps k
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


def mlp_hidden(config: ModelConfig) -> int:
    """The MLP's hidden width: 4 x n_embd, or for SwiGLU 2/3 of that (it has three weight
    matrices, not two) rounded up to a multiple of 64 (LLaMA's rule)."""
    if config.activation == "swiglu":
        return 64 * math.ceil(8 * config.n_embd / 3 / 64)
    return 4 * config.n_embd


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_hidden(config)
        self.activation = config.activation
        # SwiGLU's gate and value come out of one matmul, as attention's q, k and v do.
        width = 2 * hidden if config.activation == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)
        if config.activation in ("gelu", "gelu_tanh"):
            # GPT-2 was trained with the tanh approximation; original nanoGPT uses the exact
            # form, so each family of weights reproduces its own logits.
            self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, hidden), or (B, T, 2 x hidden) for SwiGLU
        if self.activation == "relu2":
            h = F.relu(h).square()
        elif self.activation == "swiglu":
            gate, h = h.chunk(2, dim=-1)
            h = F.silu(gate) * h
        else:
            h = self.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = norm_layer(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm_layer(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: LayerCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, rope)
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
        layers: dict[str, nn.Module] = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_embedding == "learned":  # RoPE has no table: it turns q and k instead
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        layers["drop"] = nn.Dropout(config.dropout)
        layers["h"] = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        layers["ln_f"] = norm_layer(config, config.n_embd)
        self.transformer = nn.ModuleDict(layers)
        self.lm_head = LMHead(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # Weight tying: the output projection is the token embedding (GPT-2 does the same).
            self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two
        # residual branches, and this keeps the residual stream's variance from growing
        # with depth.
        # With zero_init_proj every block starts as the identity (modded-nanogpt's choice).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
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

        Token embeddings stay in when they are tied to the output layer (they are its
        weight); an untied embedding, a lookup, is left out like the positions.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
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

        ``pos`` (T,) holds the tokens' positions (default 0 to T-1), or (B, T) when each
        row sits at positions of its own (a server's batch), and ``cache`` one
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
        x = self.transformer.wte(idx)  # (B, T, n_embd)
        rope = None
        if self.config.pos_embedding == "rope":
            rope = rotary(pos, self.config.n_embd // self.config.n_head, self.config.rope_base)
        else:
            x = x + self.transformer.wpe(pos)  # (T, n_embd) over the batch, or (B, T, n_embd)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache[i] if cache is not None else None, rope)
        x = self.transformer.ln_f(x)
        if targets is None:
            if last_only:
                x = x[:, [-1], :]  # (B, 1, n_embd); a list index keeps the time dimension
            return self.logits(x), None
        if not return_logits and not self.config.logit_softcap:
            return None, self.lm_head.loss(x, targets)
        logits = self.logits(x)
        return logits, cross_entropy(logits, targets)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer's logits of hidden states ``x``, soft-capped when asked: a
        smooth bound on their size that keeps a confident model's loss from spiking."""
        logits = self.lm_head(x)
        cap = self.config.logit_softcap
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def crop_block_size(self, block_size: int) -> None:
        """Shrink the context length, e.g. to finetune GPT-2 (1024) on shorter blocks."""
        if block_size > self.config.block_size:
            raise ValueError(
                f"cannot grow block size from {self.config.block_size} to {block_size}"
            )
        self.config.block_size = block_size
        if "wpe" not in self.transformer:
            return  # RoPE works at any position: nothing to crop
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs (forward + backward) per token, as in the PaLM paper's appendix B.

        6 FLOPs per parameter per token for the matmuls, plus the attention scores. The
        options that add no matmul (RoPE, norms, soft-capping) are left out, as the norms
        and the GELU always were; an untied head counts as the tied one does.
        """
        cfg = self.config
        T = seq_len or cfg.block_size
        N = self.num_params()
        return 6 * N + 12 * cfg.n_layer * cfg.n_embd * T
