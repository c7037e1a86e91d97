"""Tapped activations -> fixed-length codes: ReLU, then pooling.

A conv map ``(N, C, H, W)`` becomes ``(N, D)``; vectors ``(N, D)`` (fully
connected outputs, and the penultimate codes of networks that pool globally
before their head) pass through unchanged. Token sequences ``(N, L, D)`` of
transformer layers are pooled over the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..options import POOLINGS

#: Grid sizes of the spatial pyramid: 1x1, 2x2 and 4x4 average pools.
PYRAMID_LEVELS = (1, 2, 4)

#: The exponent of generalised-mean pooling: 1 is the average, infinity the
#: maximum; 3 is the value Radenovic et al. (2018) learnt and recommend, a
#: pooling that lets a small strong response (a crack, a spot) count.
GEM_POWER = 3.0

#: GeM's floor: activations are clamped to it before the power (the root of
#: a mean of zeros has no gradient, and negative values no real root).
GEM_EPSILON = 1e-6


def pooling_names(pooling: str | Sequence[str]) -> tuple[str, ...]:
    """``pooling`` as a tuple of names: one name, or several whose codes are
    concatenated in that order (``["avg", "max"]``: fastai's concat pooling)."""
    names = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    if not names or len(set(names)) != len(names) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"pooling must be one of {list(POOLINGS)} or a list of distinct ones; got {pooling!r}.")
    return names


def pooled_widths(shape: tuple[int, ...], pooling: str | Sequence[str]) -> tuple[int, ...]:
    """The code length of each pooling of ``pooling`` for an activation of ``shape``
    (a vector, which no pooling changes, has one width whatever ``pooling`` is)."""
    check_poolable(shape, pooling)
    if len(shape) == 1:
        return (shape[0],)
    return tuple(_n_pooled(shape, name) for name in pooling_names(pooling))


def n_codes(shape: tuple[int, ...], pooling: str | Sequence[str]) -> int:
    """Length of the code of one sample whose activation has ``shape`` (no batch dim)."""
    return sum(pooled_widths(shape, pooling))


def _n_pooled(shape: tuple[int, ...], pooling: str) -> int:
    if pooling == "flatten":
        return math.prod(shape)
    if pooling == "spp":
        return shape[0] * sum(level * level for level in PYRAMID_LEVELS)
    return shape[-1] if len(shape) == 2 else shape[0]


def check_poolable(shape: tuple[int, ...], pooling: str | Sequence[str]) -> None:
    """Raise if ``pooling`` (a name or several) does not apply to activations of ``shape``."""
    for name in pooling_names(pooling):
        if name not in POOLINGS:
            raise ValueError(f"pooling={name!r} is not one of {list(POOLINGS)}.")
    if len(shape) not in (1, 2, 3):
        raise ValueError(
            f"Cannot pool an activation of shape {tuple(shape)}: expected a vector (D,), "
            "tokens (L, D) or a map (C, H, W)."
        )
    if "spp" in pooling_names(pooling) and len(shape) == 2:
        raise ValueError(
            "pooling='spp' needs a spatial map (C, H, W); this layer gives tokens "
            f"{tuple(shape)}. Use 'avg', 'max', 'gem' or 'flatten'."
        )


def relu_commutes(shape: tuple[int, ...], pooling: str | Sequence[str]) -> bool:
    """Whether ReLU before pooling equals ReLU after it, bit for bit.

    True for vectors (no pooling), ``"max"`` (ReLU is monotonic) and
    ``"flatten"`` (element-wise), and for several poolings when true of each.
    Such codes can be stored before ReLU and
    thresholded when read, so ``relu`` need not be part of a cache key.
    """
    return len(shape) == 1 or all(name in ("max", "flatten") for name in pooling_names(pooling))


def to_codes(activation: torch.Tensor, pooling: str | Sequence[str], relu: bool) -> torch.Tensor:
    """ReLU (optional) then pool a batch of activations into ``(N, D)`` codes
    (with several poolings, each one's codes side by side).

    The result never shares memory with ``activation``: a later in-place
    layer (AlexNet's and VGG's ReLUs) cannot change codes already taken.
    """
    codes = pooled(activation, pooling, relu)
    if codes.data_ptr() == activation.data_ptr():
        codes = codes.clone()
    return codes


def pooled(activation: torch.Tensor, pooling: str | Sequence[str], relu: bool) -> torch.Tensor:
    """:func:`to_codes` as tensor operations only, which may share memory with ``activation``
    (what an exported graph computes, where there is no memory to share)."""
    codes = activation.clamp_min(0) if relu else activation
    if codes.ndim not in (3, 4):
        return codes.flatten(1)
    pool = _pool_map if codes.ndim == 4 else _pool_tokens
    blocks = [pool(codes, name).flatten(1) for name in pooling_names(pooling)]
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)


def _pool_map(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return maps.mean(dim=(2, 3))
    if pooling == "max":
        return maps.amax(dim=(2, 3))
    if pooling == "gem":
        return generalized_mean(maps, dim=(2, 3))
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
    if pooling == "gem":
        return generalized_mean(tokens, dim=(1,))
    if pooling == "flatten":
        return tokens.flatten(1)
    raise ValueError(f"pooling={pooling!r} does not apply to tokens; use 'avg', 'max', 'gem' or 'flatten'.")


def generalized_mean(values: torch.Tensor, dim: tuple[int, ...]) -> torch.Tensor:
    """GeM pooling: ``mean(x ** p) ** (1 / p)`` over ``dim``, with ``x`` clamped to
    :data:`GEM_EPSILON` and ``p`` = :data:`GEM_POWER` (between average and max)."""
    return values.clamp_min(GEM_EPSILON).pow(GEM_POWER).mean(dim=dim).pow(1.0 / GEM_POWER)
