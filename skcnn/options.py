"""The parameters of extraction, their defaults and allowed values, declared once.

:class:`~skcnn.CNNFeatureTransformer` takes its defaults from
:data:`DEFAULTS`; the ``skcnn`` command, :mod:`skcnn.dask` and the
estimators built on the transformer take theirs and their option lists
from here too. No torch: the command line builds its parser from this
module without loading a network library.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

POOLINGS = ("avg", "max", "gem", "flatten", "spp")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DECODES = ("auto", "exact", "draft")
ON_ERRORS = ("raise", "skip")
RUNTIMES = ("auto", "torch", "onnxruntime")
#: ``tta``: the views whose codes are averaged (:mod:`skcnn.symmetry`).
TTA_POLICIES = ("flips", "dihedral")

#: The input of the classifier head: the codes the literature calls *CNN codes*.
PENULTIMATE = "penultimate"

#: Default limit on the pixels of an image file (width x height): 100
#: megapixels, above any phone camera's default output, below the size of a
#: "decompression bomb". Decoded to float32 RGB such an image takes 1.2 GB.
MAX_PIXELS = 100_000_000


#: Images per task of :func:`skcnn.dask.extract` when given a list: at ~0.1 s
#: per task on a GPU, Dask's few milliseconds per task stay a small share.
PATHS_PER_TASK = 256


@dataclass(frozen=True)
class TransformerDefaults:
    """Default of every :class:`~skcnn.CNNFeatureTransformer` parameter."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = "DEFAULT"
    layer: str = PENULTIMATE
    pooling: str = "avg"
    relu: bool = True
    input_size: int | None = None
    #: The weights' own centre crop (False: none, a float: that fraction).
    crop: bool | float = True
    #: Images per forward pass: on a 2-core CPU 4-8 measured faster per
    #: image than 32 (benchmarks/RESULTS.md), and a GPU user sets more.
    batch_size: int = 8
    num_workers: int | str = "auto"
    precision: str = "auto"
    decode: str = "auto"
    compile: bool = False
    runtime: str = "auto"
    device: str = "auto"
    progress: bool | str = "auto"
    on_error: str = "raise"
    max_pixels: int | None = MAX_PIXELS
    cache: str | None = None
    cache_layers: tuple[str, ...] | None = None
    #: Test-time augmentation: off (None), or codes averaged over "flips" or "dihedral" views.
    tta: str | None = None


DEFAULTS = TransformerDefaults()


@dataclass(frozen=True)
class FinetuningDefaults:
    """Defaults of :class:`~skcnn.CNNClassifier`'s own parameters (the
    others are the transformer's), shared with ``skcnn finetune``."""

    #: Images per training step: 32 is the common choice for fine-tuning,
    #: and batch norm stays frozen, so small batches do not hurt it.
    batch_size: int = 32
    layer: str = "auto"
    unfreeze: str = "auto"
    max_epochs: int = 10
    learning_rate: float = 1e-3
    #: 0.1 measured better than 0.01 on animal-mnist (benchmarks/RESULTS.md).
    backbone_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    batchnorm: str = "auto"
    validation_fraction: float = 0.1
    n_iter_no_change: int = 3
    #: The decoded training images' budget: a quarter of the memory available.
    memory_limit: int | str = "auto"


FINETUNING = FinetuningDefaults()

#: Allowed values of the parameters that take one of a few strings.
CHOICES = {
    "pooling": POOLINGS,
    "precision": PRECISIONS,
    "decode": DECODES,
    "on_error": ON_ERRORS,
    "runtime": RUNTIMES,
    "tta": TTA_POLICIES,
}


def parameter_names() -> tuple[str, ...]:
    """Names of the transformer's parameters, in signature order."""
    return tuple(field.name for field in fields(TransformerDefaults))


def show_progress(setting, n_images: int, batch_size: int) -> bool:
    """The ``progress`` parameter resolved: ``"auto"`` shows a bar when someone
    watches (:func:`watched`) and there is more than one batch."""
    if setting == "auto":
        return watched() and n_images > batch_size
    return bool(setting)


def watched() -> bool:
    """Whether progress has a reader: stderr is a terminal, or this is a Jupyter
    kernel (whose stderr is a pipe to the notebook, where ``tqdm.auto`` draws a widget)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


__all__ = [
    "CHOICES",
    "DECODES",
    "DEFAULTS",
    "FINETUNING",
    "MAX_PIXELS",
    "ON_ERRORS",
    "PATHS_PER_TASK",
    "PENULTIMATE",
    "POOLINGS",
    "PRECISIONS",
    "RUNTIMES",
    "TTA_POLICIES",
    "FinetuningDefaults",
    "TransformerDefaults",
    "parameter_names",
    "show_progress",
    "watched",
]
