"""The GPT language model, GPT-2 compatible.

Read it top to bottom: attention, MLP, block, the KV cache, then the model. Parameter names
and shapes are those of nanoGPT's model.py, and GPT-2's up to Hugging Face's transposed
Conv1D weights, so those families of weights map onto it one to one.
The model does no I/O, printing, compiling or distributed wrapping: callers do that.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from . import cpu_matmul
from .config import ModelConfig

# Few-row products with a large weight (decoding) take the split path of Linear below: up to
# 64 rows with the BLAS, one row where oneDNN does the products (from 2 rows it is faster).
SPLIT_MAX_ROWS = 64
SPLIT_MAX_ROWS_ONEDNN = 1
SPLIT_MIN_WEIGHT = 1 << 18  # elements: 1 MiB of float32


class Linear(nn.Linear):
    """``nn.Linear`` with faster CPU paths for float32.

    On x86 the products, in training and inference, go through oneDNN (``cpu_matmul``):
    about 2x MKL's rate on AMD processors.

    Inference on a few rows with a large weight, as in decoding, takes a split product.
    Multiplying a few rows by a large weight streams the whole weight from memory; the BLAS
    splits such a product across threads by rows, so every thread reads all of the weight;
    splitting the weight's output features across the threads instead (a batched matmul over
    its parts) reads it once: GPT-2 124M decoded 1.4x (1 row) to 2x (8 rows) faster with
    MKL (benchmarks/sample_vs_hf.py). Where oneDNN does the products, only one row is split:
    GPT-2 124M decodes one row in 16.5 ms per token split against 19.0 through oneDNN, and
    8 rows in 31.1 ms through oneDNN against 55.2 split. Results equal ``nn.Linear``'s up
    to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)  # the compiler picks its own kernels
        onednn = cpu_matmul.usable(x, self.weight, self.bias)
        parts = torch.get_num_threads()
        rows = x.numel() // self.in_features
        if (
            torch.is_grad_enabled()
            or parts < 2
            or rows > (SPLIT_MAX_ROWS_ONEDNN if onednn else SPLIT_MAX_ROWS)
            or self.weight.numel() < SPLIT_MIN_WEIGHT
            or self.out_features < 2 * parts
        ):
            if onednn:
                return cpu_matmul.onednn_linear(x, self.weight, self.bias)
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, self.in_features)
        size = self.out_features // parts
        even = parts * size  # features in equal parts; the few left over go by themselves
        w = self.weight[:even].view(parts, size, self.in_features)  # (p, N/p, K)
        xt = flat.t().unsqueeze(0).expand(parts, -1, -1)  # (p, K, rows)
        y = torch.bmm(w, xt).permute(2, 0, 1).reshape(rows, even)  # (rows, N)
        if even < self.out_features:
            y = torch.cat([y, F.linear(flat, self.weight[even:])], dim=1)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


def dropout_layer(p: float) -> nn.Module:
    """Dropout, or nothing at all when ``p`` is 0: a no-op dropout still costs a kernel call
    per use, about 1.5 ms of a 50 ms CPU training step for the small presets."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one matmul
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = dropout_layer(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, cache: LayerCache | StaticSlot | None = None
    ) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            k, v, mask = cache.update(k, v)  # (B, nh, L, hs), L = cached + T
            if mask is None:
                # A fresh cache (prefill) is plain causal attention; a single new token
                # attends to everything before it, so it needs no mask at all.
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


_GELU_C1 = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_C2 = _GELU_C1 * 0.044715


class _SigmoidGELUTanh(torch.autograd.Function):
    """GELU, tanh approximation, computed as x * sigmoid(2u) with u its tanh argument.

    0.5 * (1 + tanh(u)) == sigmoid(2u) exactly; only the floating-point path differs (about
    1e-7). On CPU, ATen's vectorized tanh is about 4x slower than its sigmoid, so this
    forward takes 0.60 against 1.07 ms on a 768 x 512 activation. Only ``x`` is kept for
    backward, which is ATen's one-pass tanh-GELU derivative: keeping ``sigmoid(2u)`` as
    well for a backward of six elementwise passes made a small model's CPU training step
    about 3 ms slower, although in isolation that version is the faster one (1.44 against
    1.58 ms forward and backward on a 768 x 512 activation).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        c1 = x.new_tensor(_GELU_C1)
        y = torch.addcmul(c1, x, x, value=_GELU_C2).mul_(x).sigmoid_()  # sigmoid(2u)
        ctx.save_for_backward(x)
        return y.mul_(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


class GELU(nn.Module):
    """GELU in the exact (erf) form or the tanh approximation."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The sigmoid form pays off on training-sized activations; for the few positions of
        # a decoding step the one-kernel form has less overhead.
        if self.approximate == "tanh" and x.device.type == "cpu" and x.numel() >= 1 << 15:
            return _SigmoidGELUTanh.apply(x)
        return F.gelu(x, approximate=self.approximate)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GPT-2 was trained with the tanh approximation; original nanoGPT uses the exact
        # form, so each family of weights reproduces its own logits.
        self.gelu = GELU("tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = dropout_layer(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: LayerCache | StaticSlot | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class LayerCache:
    """One layer's view of a KVCache."""

    def __init__(self, parent: KVCache, layer: int) -> None:
        self.parent = parent
        self.layer = layer

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return self.parent.update(self.layer, k, v)


# From this vocabulary size up, the CPU loss head is memory-bound enough for the fused
# version to pay; a character vocabulary (65) gains nothing from it.
FUSED_LOSS_MIN_VOCAB = 4096


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``h @ weight.T`` with the gradients computed in the forward pass.

    On CPU the loss head of a large vocabulary is memory-bound around its matmuls: the
    usual path writes the logits, their log-softmax, a zero-filled gradient, the softmax
    gradient, each a (tokens x vocab) tensor (206 MB for 1024 tokens of GPT-2), and where
    freed memory goes back to the kernel every fresh tensor that size costs its page faults
    as well (about 50 ms here; see ``train.device.keep_freed_memory``). Here the logits
    are turned into their own gradient in place (softmax, minus one at the target) and
    multiplied out at once, the mean's per-token scale applied to the two small operands
    (the hidden states, the input gradient) instead of the logits; backward only scales
    the two gradients. The softmax is ATen's, in place (the same bits as out of place; a
    row at a time, in cache): with the two row maxima around it, 22.5 ms over GPT-2's
    1024 x 50,304 logits (the softmax 11.9) where separate maximum, subtract,
    exponentiate, sum and scale passes took 46.4. The log-sum-exp comes from the row's
    largest logit and largest probability (which is 1 / the row's sum of exponentials,
    never below 1 / vocab), so it stays exact where a target's probability underflows. No
    second (tokens x vocab) tensor is written. Equal to ``F.cross_entropy`` up to float
    rounding, gradients included. Targets equal to -1 are ignored (all of them: a NaN
    loss and zero gradients, as ``F.cross_entropy``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        z = cpu_matmul.linear(h, weight)  # (N, V) logits
        valid = targets != -1
        safe = torch.where(valid, targets, 0)[:, None]
        picked = z.gather(1, safe).squeeze(1)
        count = valid.sum()
        top = z.amax(dim=1)
        torch.softmax(z, dim=1, out=z)
        lse = top - z.amax(dim=1).log()  # the largest probability is 1 / sum(exp(z - top))
        loss = torch.where(valid, lse - picked, 0.0).sum() / count
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_h or need_w:
            # d(mean loss)/d(logits) = (softmax - one-hot target) * scale, a per-row scale
            # applied to the products' small operands instead of the (tokens x vocab) z.
            scale = valid.to(z.dtype)[:, None] / count.clamp(min=1)
            z.scatter_add_(1, safe, z.new_full(safe.shape, -1.0))
            grad_h = cpu_matmul.mm_weight_copied(z, weight).mul_(scale) if need_h else None
            grad_w = cpu_matmul.mm(z.t(), h * scale) if need_w else None
            ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        if not bool(grad == 1):  # a scaled loss (gradient accumulation): scale the gradients
            grad_h = grad_h * grad if grad_h is not None else None
            grad_w = grad_w * grad if grad_w is not None else None
        return grad_h, grad_w, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``F.cross_entropy(h @ weight.T, targets, ignore_index=-1)`` without keeping the logits
    for backward (see ``_LinearCrossEntropy``). Where no gradient is wanted (evaluation,
    ``no_grad``), it is the plain loss: computing gradients there would triple the work."""
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets)  # type: ignore[no-any-return]
    return F.cross_entropy(cpu_matmul.linear(h, weight), targets, ignore_index=-1)


class StaticSlot:
    """One layer's cache for a decoding step of fixed shapes (``GPT.decode``): the new key
    and value are written at position ``pos`` (a one-element tensor) and attention runs over
    the whole preallocated cache, with the positions after ``pos`` masked."""

    def __init__(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor
    ) -> None:
        self.k, self.v, self.pos, self.mask = k, v, pos, mask

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        self.k.index_copy_(2, self.pos, k)
        self.v.index_copy_(2, self.pos, v)
        return self.k, self.v, self.mask


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions.

    Decoding writes each new position in place, so no tensor is re-allocated per token.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # positions filled in every layer
        self._pending = 0  # positions being written by the current forward pass

    @classmethod
    def for_model(cls, model: GPT, batch_size: int, max_len: int | None = None) -> KVCache:
        cfg = model.config
        param = model.lm_head.weight
        return cls(
            cfg.n_layer,
            batch_size,
            cfg.n_head,
            max_len or cfg.block_size,
            cfg.n_embd // cfg.n_head,
            param.device,
            param.dtype,
        )

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self, i)

    def reset(self) -> None:
        self.length = 0

    def begin(self, T: int) -> int:
        """Reserve ``T`` positions for the next forward pass; returns the first one."""
        if self.length + T > self.max_len:
            raise ValueError(
                f"KV cache holds {self.max_len} positions; cannot add {T} to {self.length}"
            )
        self._pending = T
        return self.length

    def commit(self) -> None:
        self.length += self._pending
        self._pending = 0

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        start, T = self.length, k.size(2)
        end = start + T
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        mask = None
        if start > 0 and T > 1:
            # A chunk appended to a filled cache: position i of the chunk sees the whole
            # cache and the chunk up to i.
            mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=start)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], mask


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
                drop=dropout_layer(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
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
        cache: KVCache | None = None,
        last_only: bool = False,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (B, T, vocab) and, given targets, the mean cross-entropy loss.

        With ``cache``, ``idx`` continues the cached sequence. With ``last_only``, logits are
        computed for the last position only (B, 1, vocab), which is all generation needs.
        ``return_logits=False`` (training and evaluation) returns None for the logits, and
        when training on CPU in float32, for a large vocabulary, computes the loss without
        keeping them (``linear_cross_entropy``).
        """
        T = idx.size(1)
        start = cache.begin(T) if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"cannot forward a sequence of length {start + T}: "
                f"block size is {self.config.block_size}"
            )
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (T, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache.layer(i) if cache is not None else None)
        if cache is not None:
            cache.commit()
        x = self.transformer.ln_f(x)
        if last_only:
            x = x[:, [-1], :]  # (B, 1, n_embd); a list index keeps the time dimension
        if (
            targets is not None
            and not return_logits
            and x.device.type == "cpu"
            and self.lm_head.out_features >= FUSED_LOSS_MIN_VOCAB
            and x.dtype == self.lm_head.weight.dtype == torch.float32
            and self.lm_head.bias is None
            and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()
        ):
            flat = x.reshape(-1, x.size(-1))
            return None, linear_cross_entropy(flat, self.lm_head.weight, targets.reshape(-1))
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1
            )
        return (logits if return_logits else None), loss

    def decode(
        self, idx: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, vocab) of one new token per row, ``idx`` (B, 1), at position ``pos``
        (a one-element long tensor), with the keys and values of ``KVCache.k`` / ``.v``.

        Every shape is the same from one token to the next (attention covers the whole
        cache, later positions masked), so this compiles once, and on CUDA runs as one CUDA
        graph per token (``Sampler`` with ``compile``). The caller advances the cache.
        """
        mask = (torch.arange(k.size(3), device=idx.device) <= pos).view(1, 1, 1, -1)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, StaticSlot(k[i], v[i], pos, mask))
        return self.lm_head(self.transformer.ln_f(x))[:, -1, :]

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
