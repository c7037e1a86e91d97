"""Tapped activations -> fixed-length codes: ReLU, then pooling.

A conv map ``(N, C, H, W)`` becomes ``(N, D)``; vectors ``(N, D)`` (fully
connected outputs, and the penultimate codes of networks that pool globally
before their head) pass through unchanged. Token sequences ``(N, L, D)`` of
transformer layers are pooled over the tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .options import POOLINGS

#: Grid sizes of the spatial pyramid: 1x1, 2x2 and 4x4 average pools.
PYRAMID_LEVELS = (1, 2, 4)


def n_codes(shape: tuple[int, ...], pooling: str) -> int:
    """Length of the code of one sample whose activation has ``shape`` (no batch dim)."""
    check_poolable(shape, pooling)
    if len(shape) == 1:
        return shape[0]
    if pooling == "flatten":
        return math.prod(shape)
    if pooling == "spp":
        return shape[0] * sum(level * level for level in PYRAMID_LEVELS)
    return shape[-1] if len(shape) == 2 else shape[0]


def check_poolable(shape: tuple[int, ...], pooling: str) -> None:
    """Raise if ``pooling`` does not apply to activations of ``shape``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {list(POOLINGS)}.")
    if len(shape) not in (1, 2, 3):
        raise ValueError(
            f"Cannot pool an activation of shape {tuple(shape)}: expected a vector (D,), "
            "tokens (L, D) or a map (C, H, W)."
        )
    if pooling == "spp" and len(shape) == 2:
        raise ValueError(
            "pooling='spp' needs a spatial map (C, H, W); this layer gives tokens "
            f"{tuple(shape)}. Use 'avg', 'max' or 'flatten'."
        )


def relu_commutes(shape: tuple[int, ...], pooling: str) -> bool:
    """Whether ReLU before pooling equals ReLU after it, bit for bit.

    True for vectors (no pooling), ``"max"`` (ReLU is monotonic) and
    ``"flatten"`` (element-wise). Such codes can be stored before ReLU and
    thresholded when read, so ``relu`` need not be part of a cache key.
    """
    return len(shape) == 1 or pooling in ("max", "flatten")


def to_codes(activation: torch.Tensor, pooling: str, relu: bool) -> torch.Tensor:
    """ReLU (optional) then pool a batch of activations into ``(N, D)`` codes.

    The result never shares memory with ``activation``: a later in-place
    layer (AlexNet's and VGG's ReLUs) cannot change codes already taken.
    """
    codes = pooled(activation, pooling, relu)
    if codes.data_ptr() == activation.data_ptr():
        codes = codes.clone()
    return codes


def pooled(activation: torch.Tensor, pooling: str, relu: bool) -> torch.Tensor:
    """:func:`to_codes` as tensor operations only, which may share memory with ``activation``
    (what an exported graph computes, where there is no memory to share)."""
    codes = activation.clamp_min(0) if relu else activation
    if codes.ndim == 4:
        codes = _pool_map(codes, pooling)
    elif codes.ndim == 3:
        codes = _pool_tokens(codes, pooling)
    return codes.flatten(1)


def _pool_map(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return maps.mean(dim=(2, 3))
    if pooling == "max":
        return maps.amax(dim=(2, 3))
    if pooling == "flatten":
        return maps.flatten(1)
    if pooling == "spp":
        return torch.cat([F.adaptive_avg_pool2d(maps, level).flatten(1) for level in PYRAMID_LEVELS], dim=1)
    raise ValueError(f"pooling={pooling!r} is not one of {list(POOLINGS)}.")


def _pool_tokens(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return tokens.mean(dim=1)
    if pooling == "max":
        return tokens.amax(dim=1)
    if pooling == "flatten":
        return tokens.flatten(1)
    raise ValueError(f"pooling={pooling!r} does not apply to tokens; use 'avg', 'max' or 'flatten'.")
