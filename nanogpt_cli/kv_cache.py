"""The KV cache of generation: each layer's keys and values of earlier positions, kept so
that a new token costs one position of compute (``nanogpt_cli.sample`` decodes with it).

``KVCache`` is preallocated for the block and extended in place through the model's
``LayerCache`` protocol; ``decode_step`` is one token's step with shapes that never change,
which compiles once (and on CUDA runs as one CUDA graph per token).
"""

from __future__ import annotations

import torch

from .model import GPT


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions.

    ``append`` runs the model on new tokens that continue the cached sequence; each new
    position is written in place, so no tensor is re-allocated per token.
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

    @classmethod
    def for_model(cls, model: GPT, batch_size: int, max_len: int | None = None) -> KVCache:
        """A cache for ``model``, of ``max_len`` positions (at most, and by default, its
        block size: position embeddings stop there)."""
        cfg = model.config
        if max_len is not None and max_len > cfg.block_size:
            raise ValueError(
                f"a KV cache of {max_len} positions is longer than the block size "
                f"({cfg.block_size})"
            )
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

    def reset(self) -> None:
        self.length = 0

    def append(self, model: GPT, idx: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``model``'s logits for ``idx`` (B, T), the tokens after the cached ones, whose
        keys and values join the cache."""
        start, T = self.length, idx.size(1)
        if start + T > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot add {T} to {start}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        layers = [_Appended(self, i, start) for i in range(self.k.size(0))]
        logits, _ = model(idx, pos=pos, cache=layers, last_only=last_only)
        self.length += T
        assert logits is not None
        return logits


class _Appended:
    """Layer ``layer``'s cache for ``KVCache.append``: new positions are written from
    ``start``."""

    def __init__(self, cache: KVCache, layer: int, start: int) -> None:
        self.cache, self.layer, self.start = cache, layer, start

    def update(
        self, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        start, T = self.start, k.size(2)
        end = start + T
        self.cache.k[self.layer, :, :, start:end] = k
        self.cache.v[self.layer, :, :, start:end] = v
        mask = None
        if start > 0 and T > 1:
            # A chunk appended to a filled cache: position i of the chunk sees the whole
            # cache and the chunk up to i.
            mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=start)
        return self.cache.k[self.layer, :, :, :end], self.cache.v[self.layer, :, :, :end], mask


class _Static:
    """One layer's cache for ``decode_step``: the new key and value are written at ``pos``
    (a one-element tensor) and attention covers the whole cache, later positions masked."""

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


def decode_step(
    model: GPT, idx: torch.Tensor, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Logits (B, vocab) of one new token per row, ``idx`` (B, 1), at position ``pos``
    (a one-element long tensor), with the keys and values of ``KVCache.k`` / ``.v``.

    Every shape is the same from one token to the next, so this compiles once, and on CUDA
    runs as one CUDA graph per token. The caller advances the cache.
    """
    mask = (torch.arange(k.size(3), device=idx.device) <= pos).view(1, 1, 1, -1)
    layers = [_Static(k[i], v[i], pos, mask) for i in range(k.size(0))]
    logits, _ = model(idx, pos=pos, cache=layers)
    assert logits is not None
    return logits[:, -1, :]
