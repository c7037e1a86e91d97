"""The symmetries of the square: flips and 90-degree rotations of images.

Cells, tissue, textures, satellite tiles and close-ups of a surface have no
up or down: the eight flips and rotations of the square (the dihedral
group) leave their class unchanged, which makes them free training data and
free test-time views. Digits and text are not such images: a flip changes
the class. ``skcnn.codes.invariance.label_preserving`` tells which
symmetries keep the class of a labelled set: a linear probe of the codes of the images as they are,
scored on flipped or rotated copies of held-out images, keeps its accuracy
where the symmetry keeps the class (``benchmarks/RESULTS.md``, "Small
evidence": flips and rotations keep it on textures and the shipped defects,
flips alone on solar cells; vertical flips and rotations lose it on digits).

Every view works on the last two axes (height, width) of a uint8 or float
tensor, so that one function serves one image ``(C, H, W)`` and a batch
``(B, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

View = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _rot180(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1)


def _transpose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1)


def _rot90(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 1, dims=(-2, -1))


def _rot270(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, -1, dims=(-2, -1))


def _antitranspose(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-2, -1).flip(-2, -1)


#: The views of each named policy: ``"flips"`` the four of the rectangle
#: (none, horizontal, vertical, both), ``"dihedral"`` all eight of the square.
POLICIES: dict[str, tuple[View, ...]] = {
    "flips": (_identity, _hflip, _vflip, _rot180),
    "dihedral": (_identity, _hflip, _vflip, _rot180, _transpose, _rot90, _rot270, _antitranspose),
}

#: The symmetries ``augment="auto"`` tests, one generator each.
GENERATORS: dict[str, View] = {"hflip": _hflip, "vflip": _vflip, "rot90": _rot90}


def views(policy: str | None) -> tuple[View, ...]:
    """The views of ``policy`` (``"flips"`` or ``"dihedral"``), the identity first; None: the identity alone."""
    if policy is None:
        return (_identity,)
    try:
        return POLICIES[policy]
    except KeyError:
        raise ValueError(f"Unknown symmetry policy {policy!r}; use one of {sorted(POLICIES)}.") from None


def needs_square(policy: str | None) -> bool:
    """Whether ``policy``'s views turn a rectangle into its transpose (rotations)."""
    return policy == "dihedral"


def check_fits(policy: str | None, size: tuple[int, int], parameter: str) -> None:
    """Raise if ``policy`` (given as ``parameter``) rotates inputs of ``size`` that are not square."""
    if needs_square(policy) and size[0] != size[1]:
        raise ValueError(
            f"{parameter}={policy!r} rotates by 90 degrees: it needs a square input_size; got {tuple(size)}."
        )


class RandomSymmetry:
    """A random view of ``policy`` per call: the augmentation of orientation-free images.

    No crop, no resampling: a small defect anywhere in the image stays in
    every view, pixel for pixel.

    Parameters
    ----------
    policy : {"flips", "dihedral"}
        Which views are drawn (uniformly).
    """

    def __init__(self, policy: str):
        self.policy = policy
        self._views = views(policy)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self._views[int(torch.randint(len(self._views), ()))](image)

    def __repr__(self) -> str:
        return f"RandomSymmetry({self.policy!r})"


__all__ = [
    "GENERATORS",
    "POLICIES",
    "RandomSymmetry",
    "check_fits",
    "needs_square",
    "views",
]
