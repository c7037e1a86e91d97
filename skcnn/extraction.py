"""The extraction loop: images -> decoded arrays -> batches -> network -> taps -> codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from . import images as image_io
from .backbones import Backbone
from .pooling import to_codes
from .preprocessing import Preprocessing
from .taps import run_taps


@dataclass(frozen=True)
class TapPlan:
    """What to take from each forward pass: layers (in output order), the
    head they are relative to, and how activations become codes."""

    layers: tuple[str, ...]
    head: str
    pooling: str
    relu: bool


def extract_codes(
    backbone: Backbone,
    images: Sequence,
    recipe: Preprocessing,
    plan: TapPlan,
    *,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Codes of every image, float32 ``(len(images), n_codes)``, layers concatenated."""
    blocks = []
    with tqdm(total=len(images), unit="img", disable=not progress, desc="skcnn") as bar:
        for batch in iter_batches(images, recipe, batch_size):
            blocks.append(codes_of_batch(backbone, batch, plan))
            bar.update(len(batch))
    return np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)


def iter_batches(images: Sequence, recipe: Preprocessing, batch_size: int) -> Iterator[torch.Tensor]:
    """Decode and preprocess images, yielding stacked ``(B, 3, h, w)`` tensors."""
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield torch.stack([_prepare(image, start + i, recipe) for i, image in enumerate(chunk)])


def _prepare(image, index: int, recipe: Preprocessing) -> torch.Tensor:
    try:
        return recipe(image_io.load_image(image))
    except image_io.ImageError as exc:
        raise image_io.ImageError(f"{image_io.describe(image, index)}: {exc}") from None


def codes_of_batch(backbone: Backbone, batch: torch.Tensor, plan: TapPlan) -> np.ndarray:
    """Run one batch through the network and return its codes on the host."""
    def on_tap(activation: torch.Tensor) -> torch.Tensor:
        return to_codes(activation, plan.pooling, plan.relu)

    with backbone.lock, torch.inference_mode():
        taken = run_taps(backbone.network, batch.to(backbone.device), plan.layers, plan.head, on_tap)
    codes = torch.cat([taken[name] for name in plan.layers], dim=1)
    return codes.float().cpu().numpy()


def show_progress(setting, n_images: int, batch_size: int) -> bool:
    """``"auto"``: a bar when stderr is a terminal and there is more than one batch."""
    if setting == "auto":
        return sys.stderr.isatty() and n_images > batch_size
    return bool(setting)
