"""The extraction loop: images -> decoded arrays -> batches -> network -> taps -> codes.

With a cache, images are looked up by content first and only the misses go
through the network; each computed batch is stored before the next starts,
so an interrupted run keeps every finished batch.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from . import images as image_io
from .arithmetic import Inference
from .backbones import Backbone
from .cache import CodeCache
from .identity import image_key
from .loading import iter_batches
from .pooling import n_codes, relu_commutes, to_codes
from .preprocessing import Preprocessing
from .taps import run_taps


@dataclass(frozen=True)
class TapPlan:
    """What to take from each forward pass: layers (in output order), the
    head they are relative to, how activations become codes, and each
    layer's output shape (``None``: ReLU always before pooling)."""

    layers: tuple[str, ...]
    head: str
    pooling: str
    relu: bool
    shapes: tuple[tuple[int, ...], ...] | None = None

    def relu_on_read(self, layer: str) -> bool:
        """ReLU applied after pooling (it commutes): stored codes are pre-ReLU."""
        if not self.relu or self.shapes is None:
            return False
        return relu_commutes(self.shapes[self.layers.index(layer)], self.pooling)

    def relu_on_tap(self, layer: str) -> bool:
        return self.relu and not self.relu_on_read(layer)

    @property
    def width(self) -> int:
        """Length of the concatenated codes of one image."""
        return sum(n_codes(shape, self.pooling) for shape in self.shapes)


@dataclass(frozen=True)
class CacheStats:
    """Images found in the cache, images not found, and forward passes run
    for them (fewer when the same image appears twice)."""

    hits: int
    misses: int
    computed: int


def extract_codes(
    backbone: Backbone,
    images: Sequence,
    recipe: Preprocessing,
    plan: TapPlan,
    *,
    batch_size: int,
    progress: bool,
    max_pixels: int | None = image_io.MAX_PIXELS,
    num_workers: int = 0,
    decode: str = "exact",
    inference: Inference | None = None,
) -> tuple[np.ndarray, list[image_io.ImageFailure]]:
    """Codes of every image, float32 ``(len(images), width)``, layers concatenated.

    An image that cannot be decoded gets a row of NaN and an entry in the
    returned failures; the others are computed all the same. Images are
    decoded by ``num_workers`` threads (see :mod:`skcnn.loading`) while the
    network runs; ``inference`` says how it runs (default: the backbone's
    own network in fp32).
    """
    failures: list[image_io.ImageFailure] = []
    codes = np.full((len(images), plan.width), np.nan, dtype=np.float32)
    batches = iter_batches(
        images,
        range(len(images)),
        recipe,
        batch_size,
        failures,
        max_pixels=max_pixels,
        num_workers=num_workers,
        decode=decode,
    )
    with (
        tqdm(total=len(images), unit="img", disable=not progress, desc="skcnn") as bar,
        contextlib.closing(batches),
    ):  # stops the decoding workers at once on an error
        for positions, batch in batches:
            codes[positions] = finish(plan, stored_codes_of_batch(backbone, batch, plan, inference))
            bar.update(len(positions))
    return codes, failures


def extract_codes_cached(
    backbone: Backbone,
    images: Sequence,
    recipe: Preprocessing,
    plan: TapPlan,
    *,
    cache: CodeCache,
    configs: Mapping[str, Mapping],
    batch_size: int,
    progress: bool,
    max_pixels: int | None = image_io.MAX_PIXELS,
    num_workers: int = 0,
    decode: str = "exact",
    inference: Inference | None = None,
    stored_plan: TapPlan | None = None,
) -> tuple[np.ndarray, list[image_io.ImageFailure], CacheStats]:
    """Like :func:`extract_codes`, computing only what ``cache`` lacks.

    ``configs`` gives each layer's cache configuration, whose ``"width"``
    is the length of the layer's codes. ``stored_plan`` (default ``plan``)
    holds more layers to compute and store, in the same forward pass,
    whenever an image misses one of ``plan``'s: a later request for any of
    them is then a hit.
    """
    stored_plan = stored_plan or plan
    failures: list[image_io.ImageFailure] = []
    keys = _keys(images, failures)
    readable = np.asarray(sorted(keys), dtype=np.intp)
    found = cache.lookup({layer: configs[layer] for layer in stored_plan.layers}, [keys[i] for i in readable])
    have = {layer: set(readable[mask].tolist()) for layer, (mask, _) in found.items()}
    stored = {layer: np.full((len(images), configs[layer]["width"]), np.nan, np.float32) for layer in plan.layers}
    for layer in plan.layers:
        mask, codes = found[layer]
        if mask.any():
            stored[layer][readable[mask]] = codes
    missing = [i for i in readable.tolist() if not all(i in have[layer] for layer in plan.layers)]
    first_of_key = {keys[i]: i for i in reversed(missing)}  # one forward pass per distinct image
    todo = sorted(first_of_key.values())
    batches = iter_batches(
        images,
        todo,
        recipe,
        batch_size,
        failures,
        max_pixels=max_pixels,
        num_workers=num_workers,
        decode=decode,
    )
    with tqdm(total=len(todo), unit="img", disable=not progress, desc="skcnn") as bar, contextlib.closing(batches):
        for positions, batch in batches:
            codes = stored_codes_of_batch(backbone, batch, stored_plan, inference)
            unstored = {
                layer: _unstored(positions, keys, configs[layer], codes[layer], have[layer])
                for layer in stored_plan.layers
            }
            cache.write({layer: entry for layer, entry in unstored.items() if entry[1]})
            for layer in plan.layers:
                stored[layer][positions] = codes[layer]
            bar.update(len(positions))
    failed_first = {f.index: f for f in failures}
    for i in missing:  # repeated images share the codes (or the failure) of their first occurrence
        first = first_of_key[keys[i]]
        if i != first and first in failed_first:
            failures.append(image_io.ImageFailure(i, image_io.describe(images[i], i), failed_first[first].reason))
        for layer in plan.layers:
            stored[layer][i] = stored[layer][first]
    if cache.should_compact():  # also after a run killed before its compaction
        cache.compact()
    stats = CacheStats(hits=len(readable) - len(missing), misses=len(missing), computed=len(todo))
    return finish(plan, stored), sorted(failures, key=lambda f: f.index), stats


def _unstored(positions: list[int], keys: Mapping[int, str], config: Mapping, codes: np.ndarray, have: set[int]):
    """The ``(config, keys, codes)`` of the rows the cache does not hold yet."""
    rows = [row for row, i in enumerate(positions) if i not in have]
    return config, [keys[positions[row]] for row in rows], codes[rows]


def _keys(images: Sequence, failures: list[image_io.ImageFailure]) -> dict[int, str]:
    """Content keys of the images that can be read; failures for the others."""
    keys = {}
    for index, image in enumerate(images):
        try:
            keys[index] = image_key(image)
        except (OSError, TypeError, image_io.ImageError) as exc:
            reason = f"cannot read the file: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
            failures.append(image_io.ImageFailure(index, image_io.describe(image, index), reason))
    return keys


def stored_codes_of_batch(
    backbone: Backbone, batch: torch.Tensor, plan: TapPlan, inference: Inference | None = None
) -> dict[str, np.ndarray]:
    """One batch through the network: each layer's codes in stored form, on the host.

    Pooling runs on the device, in fp32; only the pooled codes come back.
    """

    def on_tap_for(layer: str):
        relu = plan.relu_on_tap(layer)
        return lambda activation: to_codes(activation, plan.pooling, relu)

    on_tap = {layer: on_tap_for(layer) for layer in plan.layers}
    if inference is None:
        inference = Inference(backbone.network, backbone.device)
    tapped = inference.compiled or functools.partial(run_taps, inference.network)
    with backbone.lock, torch.inference_mode(), inference.autocast():
        taken = tapped(
            inference.prepare(batch),
            plan.layers,
            plan.head,
            on_tap=lambda activation, layer: on_tap[layer](activation.float()),
        )
    return {layer: taken[layer].float().cpu().numpy() for layer in plan.layers}


def finish(plan: TapPlan, stored: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stored codes -> returned codes: ReLU where deferred, layers concatenated."""
    blocks = []
    for layer in plan.layers:
        codes = stored[layer]
        blocks.append(np.maximum(codes, 0, dtype=np.float32) if plan.relu_on_read(layer) else codes)
    return np.concatenate(blocks, axis=1)


def codes_of_batch(
    backbone: Backbone, batch: torch.Tensor, plan: TapPlan, inference: Inference | None = None
) -> np.ndarray:
    """Codes of one batch as returned to users, layers concatenated."""
    return finish(plan, stored_codes_of_batch(backbone, batch, plan, inference))


def show_progress(setting, n_images: int, batch_size: int) -> bool:
    """``"auto"``: a bar when stderr is a terminal and there is more than one batch."""
    if setting == "auto":
        return sys.stderr.isatty() and n_images > batch_size
    return bool(setting)
