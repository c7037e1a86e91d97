"""``advise_layer``: the size x similarity rule, applied with measured inputs.

The transfer-learning rule of thumb picks the strategy from two facts about
the target data: its size (images per class) and its similarity to the
source data (ImageNet). Size is counted. Similarity is measured from a
pretrained network itself: its batch-norm layers store the mean and
variance of every channel's input over ImageNet (``running_mean``,
``running_var``). Images like ImageNet's give channel means close to those;
digits or microscopy push them away. The shift, in ImageNet standard
deviations, averaged over channels and over all batch-norm layers::

    D = mean over layers, channels of |mean_target - running_mean| / running_std

is the domain shift. It was chosen over the peakedness of the ImageNet head's
predictions (over-confident on small digits and documents, so no threshold
separates them from photos) and over variance-based divergences (which
gray photos blow up); see ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..decoding.images import as_image_list
from ..decoding.loading import iter_batches
from ..network import backbones
from ..network.layers import candidate_layers, list_layers
from ..options import PENULTIMATE, show_progress

#: The network that measures similarity: its pretrained weights ship with pip
#: and its batch-norm statistics are ImageNet's. It measures at its own input size.
REFERENCE_BACKBONE = "efficientnet_lite0"

#: Domain shift ``D`` of natural colour photos (crops of scikit-image's and
#: scikit-learn's photos) and of images a pretrained network has never seen
#: the like of (flat colours, noise), as measured by the reference network at
#: 224 px: similarity is 1 at the first and 0 at the second.
SHIFT_OF_PHOTOS = 0.15
SHIFT_OF_UNLIKE = 0.50

#: Similarity at and above which data counts as like ImageNet. Textures
#: (0.65-0.70) and histology (0.70) lie above, cell microscopy (0.35) and
#: digits (0.22) below.
SIMILAR_FROM = 0.5

#: Images per class from which fine-tuning the whole network beat the best
#: frozen layer's codes (learning curves of EfficientNet-Lite0 at 64 px on
#: animal silhouettes and photo patches, benchmarks/RESULTS.md): level at
#: 100 per class, ahead by 0.02-0.03 at 400 and more.
FINE_TUNING_PAYS_FROM = 200


@dataclass(frozen=True)
class LayerAdvice:
    """What :func:`advise_layer` recommends, and why.

    ``str(advice)`` gives the reasons in plain words.

    Attributes
    ----------
    layer : str
        The recommended layer of ``backbone``, accepted by ``layer=``.
    backbone : str
        The backbone the layer belongs to.
    strategy : str
        ``"penultimate codes"``, ``"earlier-layer codes"`` or
        ``"fine-tuning"`` (with codes of ``layer`` as the baseline).
    similarity : float
        0 (unlike anything in ImageNet) to 1 (like ImageNet photos).
    domain_shift : float
        The measured mean batch-norm shift ``D``, in standard deviations.
    similar : bool
        ``similarity >= 0.5``.
    small : bool
        Fewer than ``large_per_class`` images per class.
    large_per_class : int
        The images per class from which data counts as large.
    n_samples : int
        Images given.
    n_classes : int or None
        Classes in ``y`` (``None`` without ``y``).
    n_measured : int
        Images the similarity was measured on.
    candidates : tuple of str
        The backbone's candidate layers, early to penultimate, for
        :class:`~skcnn.LayerSearchCV` to confirm the choice.
    reasons : str
        The explanation (also ``str(advice)``).
    """

    layer: str
    backbone: str
    strategy: str
    similarity: float
    domain_shift: float
    similar: bool
    small: bool
    large_per_class: int
    n_samples: int
    n_classes: int | None
    n_measured: int
    candidates: tuple[str, ...]
    reasons: str

    def __str__(self) -> str:
        return self.reasons


def advise_layer(
    X,
    y=None,
    *,
    backbone: str = "efficientnet_lite0",
    input_size=None,
    large_per_class: int = FINE_TUNING_PAYS_FROM,
    max_images: int = 100,
    random_state: int | None = 0,
    device="auto",
    progress="auto",
) -> LayerAdvice:
    """Recommend a layer (or fine-tuning) from the data's size and similarity to ImageNet.

    The rule (Yosinski et al. 2014; the CS231n notes on transfer learning):

    ============  ===========================  ===============================
    data          like ImageNet                unlike ImageNet
    ============  ===========================  ===============================
    small         linear classifier on the     linear classifier on an
                  penultimate codes            earlier layer's codes
    large         fine-tune                    fine-tune (or train from scratch)
    ============  ===========================  ===============================

    Size is images per class (from ``y``; without ``y``, all images count
    as one class). Similarity is measured, not guessed: up to
    ``max_images`` images run through the pretrained reference network
    (EfficientNet-Lite0, at its own 224 px) and the mean shift of their
    batch-norm inputs from the ImageNet statistics stored in the network
    is mapped to [0, 1] (see the module ``skcnn.frozen.advice``). The earlier layer is
    the end of the stage before the last resolution stage of ``backbone``
    (``blocks.4`` of EfficientNet-Lite0, ``layer3`` of a ResNet): one or
    two stages back from the top, where digits measured best, rather than
    the very first layers, which measured worse.

    Parameters
    ----------
    X : sequence of images
        Paths, PIL images or arrays, as for
        :class:`~skcnn.CNNFeatureTransformer`.
    y : array-like of shape (n_samples,) or None, default=None
        Class labels, to count images per class.
    backbone : str, default="efficientnet_lite0"
        The backbone whose layer is recommended.
    input_size : int, (int, int) or None, default=None
        The input size codes will be extracted at (it changes the layer
        shapes only; similarity is always measured at 224 px).
    large_per_class : int, default=FINE_TUNING_PAYS_FROM (200)
        Images per class from which fine-tuning is advised: where it
        overtook the best frozen layer in skcnn's learning curves
        (``benchmarks/RESULTS.md``; where it lies depends on the data).
    max_images : int, default=100
        Images (a random sample) the similarity is measured on; 20 already
        separate digits from photos.
    random_state : int or None, default=0
        Seed of that sample.
    device : str, default="auto"
        Where the reference network runs.
    progress : bool or "auto", default="auto"
        A progress bar while measuring.

    Returns
    -------
    advice : LayerAdvice
        ``advice.layer`` goes into ``layer=``; ``print(advice)`` explains.

    See Also
    --------
    skcnn.LayerSearchCV : Cross-validate the candidate layers with labels.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skcnn import advise_layer
    >>> digits = load_digits()
    >>> X = (digits.images * 255 / 16).astype("uint8")
    >>> advice = advise_layer(X, digits.target, max_images=20)
    >>> advice.layer, advice.strategy
    ('blocks.4', 'earlier-layer codes')
    >>> advice.similar
    False
    """
    images = as_image_list(X)
    if not images:
        raise ValueError("X holds no images: advise_layer needs some to measure.")
    n_classes, per_class = _size(images, y)
    candidates = tuple(candidate_layers(backbone, input_size))
    rng = np.random.default_rng(random_state)
    sample = sorted(rng.choice(len(images), size=min(max_images, len(images)), replace=False).tolist())
    shift, n_measured = measure_domain_shift([images[i] for i in sample], device=device, progress=progress)
    similarity = float(np.clip((SHIFT_OF_UNLIKE - shift) / (SHIFT_OF_UNLIKE - SHIFT_OF_PHOTOS), 0, 1))
    similar, small = similarity >= SIMILAR_FROM, per_class < large_per_class
    layer = PENULTIMATE if similar else earlier_layer(backbone, candidates, input_size)
    strategy = "fine-tuning" if not small else ("penultimate codes" if similar else "earlier-layer codes")
    advice = dict(
        layer=layer,
        backbone=backbone,
        strategy=strategy,
        similarity=similarity,
        domain_shift=shift,
        similar=similar,
        small=small,
        large_per_class=large_per_class,
        n_samples=len(images),
        n_classes=n_classes,
        n_measured=n_measured,
        candidates=candidates,
    )
    return LayerAdvice(**advice, reasons=_reasons(advice, per_class, input_size))


def _size(images: list, y) -> tuple[int | None, float]:
    """Classes and images per class (all images one class without ``y``)."""
    if y is None:
        return None, float(len(images))
    labels = np.asarray(y)
    if len(labels) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(labels)} labels.")
    n_classes = len(np.unique(labels))
    return n_classes, len(images) / n_classes


def earlier_layer(backbone: str, candidates: Sequence[str], input_size=None) -> str:
    """The last candidate before the network's final resolution stage (for
    transformers, the second-to-last candidate block): early enough to
    leave the source-specific top behind, late enough to keep composed
    features."""
    layers = list_layers(backbone, input_size)
    shapes = {layer.name: layer.shape for layer in layers}
    maps = [layer.shape[1:] for layer in layers if len(layer.shape) == 3 and layer.shape[1:] != (1, 1)]
    tokens = [name for name in candidates if len(shapes[name]) == 2]
    if tokens:
        return tokens[-2] if len(tokens) > 1 else tokens[0]
    earlier = [name for name in candidates if len(shapes[name]) == 3 and shapes[name][1:] not in (maps[-1], (1, 1))]
    return earlier[-1] if earlier else PENULTIMATE


def measure_domain_shift(
    images: Sequence, *, device="auto", progress="auto", batch_size: int = 16
) -> tuple[float, int]:
    """Mean shift of the images' batch-norm inputs from ImageNet's statistics.

    Returns ``D`` (in ImageNet standard deviations, averaged over channels
    and layers of the reference network) and the number of images used
    (images that cannot be decoded are left out).
    """
    reference = backbones.load_backbone(REFERENCE_BACKBONE, "DEFAULT", device)
    norms = [m for m in reference.network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    sums = [torch.zeros(m.num_features, dtype=torch.float64) for m in norms]

    def accumulate(index: int):
        def hook(module, args):
            sums[index] += args[0].double().mean(dim=(2, 3)).sum(dim=0).cpu()

        return hook

    failures: list = []
    used = 0
    show = show_progress(progress, len(images), batch_size)
    with (
        reference.lock,
        torch.inference_mode(),
        tqdm(total=len(images), disable=not show, desc="measuring similarity", unit="img") as bar,
    ):
        handles = [m.register_forward_pre_hook(accumulate(i)) for i, m in enumerate(norms)]
        try:
            positions = range(len(images))
            for done, batch in iter_batches(images, positions, reference.preprocessing, batch_size, failures):
                reference.network(batch.to(reference.device))
                used += len(done)
                bar.update(len(done))
        finally:
            for handle in handles:
                handle.remove()
    if used == 0:
        raise ValueError(f"None of the {len(images)} images could be decoded; first failure: {failures[0]}")
    shifts = [
        ((total / used - m.running_mean.double().cpu()).abs() / (m.running_var.double().cpu() + m.eps).sqrt()).mean()
        for total, m in zip(sums, norms, strict=True)
    ]
    return float(torch.stack(shifts).mean()), used


def _reasons(advice: dict, per_class: float, input_size) -> str:
    n, k = advice["n_samples"], advice["n_classes"]
    size = (
        f"{per_class:.0f} images per class ({n} images, {k} classes)"
        if k is not None
        else f"{n} images (no labels given: counted as one class)"
    )
    size_word = "small" if advice["small"] else "large"
    like = "like ImageNet" if advice["similar"] else "unlike ImageNet"
    shapes = {layer.name: layer.shape for layer in list_layers(advice["backbone"], input_size)}
    shape = " x ".join(map(str, shapes[advice["layer"]]))
    lines = [
        f"Data size: {size}: {size_word} (fine-tuning pays from about {advice['large_per_class']} per class).",
        f"Similarity to ImageNet: {advice['similarity']:.2f} on a 0-1 scale (1: like ImageNet photos), "
        f"measured on {advice['n_measured']} images: their activations lie {advice['domain_shift']:.2f} ImageNet "
        f"standard deviations from the batch-norm statistics of {REFERENCE_BACKBONE} on average; "
        f"{'at or above' if advice['similar'] else 'below'} {SIMILAR_FROM}: {like}.",
    ]
    quadrant = f"Quadrant: {size_word} data, {like} -> "
    if advice["small"] and advice["similar"]:
        lines.append(
            quadrant + "a linear classifier on the penultimate codes: the top features were "
            "learnt for images like these."
        )
    elif advice["small"]:
        lines.append(
            quadrant + "a linear classifier on an earlier layer's codes: the top features are "
            "specific to ImageNet's classes, the earlier ones (edges, textures, parts) transfer."
        )
    else:
        lines.append(
            quadrant + "fine-tuning the network (from its pretrained weights) should beat frozen "
            "codes: with this many images per class it can adapt without over-fitting"
            + ("." if advice["similar"] else ", and it needs to, the data being unlike ImageNet.")
        )
    use = "Recommended" if advice["small"] else "For frozen codes (a strong baseline before fine-tuning)"
    lines.append(f"{use}: layer={advice['layer']!r} of {advice['backbone']} ({shape} per image).")
    if advice["small"]:
        lines.append("Fine-tuning is not advised at this size: it would over-fit.")
    lines.append(
        "To confirm with your labels: "
        f"skcnn.LayerSearchCV(skcnn.CNNFeatureTransformer(backbone={advice['backbone']!r})) "
        f"cross-validates the candidates {list(advice['candidates'])} from one extraction."
    )
    return "\n".join(lines)


__all__ = ["LayerAdvice", "advise_layer", "earlier_layer", "measure_domain_shift"]
