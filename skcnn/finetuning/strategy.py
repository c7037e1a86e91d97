"""What trains and why: the choices ``"auto"`` makes for :class:`~skcnn.CNNClassifier`
and :class:`~skcnn.CNNRegressor`.

- ``unfreeze="auto"``: the head alone for small data, the whole network
  from :data:`~skcnn.frozen.advice.FINE_TUNING_PAYS_FROM` images per class
  (positives per label; twice as many images for continuous targets), from
  the targets alone (no image is decoded to choose).
- ``layer="auto"``: with the head alone, the layer whose frozen codes
  cross-validate best (:class:`~skcnn.LayerSearchCV`); when the network
  trains, ``"penultimate"``.
- ``batchnorm="auto"``: ``"frozen"``.
- ``augment="auto"``: the richest augmentation whose flips and rotations
  keep a frozen-codes probe's accuracy, measured on the training images
  (classes); ``"photo"`` for labels and continuous targets, unmeasured.
- ``input_size="auto"``: images larger than the weights' input (by
  :data:`~skcnn.decoding.preprocessing.NATIVE_MIN_GAIN` at least) whose
  class both flips keep (no up or down: cells, tiles, textures, micrographs,
  where the image is the object) are seen whole at their own size (their
  median shorter side, at most
  :data:`~skcnn.decoding.preprocessing.NATIVE_MAX_SCALE` times the weights'
  input, no centre crop); other images at the weights' size and crop
  (:func:`resolved_input`).
- ``tta="auto"``: the views of those symmetries (``"flips"`` or
  ``"dihedral"``, :func:`~skcnn.codes.invariance.tta_candidate`) where they score better than one
  view: by the layer search's cross-validation with the head alone, on the
  validation split after fine-tuning; one view where no symmetry keeps the
  class, and for labels and continuous targets (unmeasured).

The choices and their reasons are a :class:`Strategy`, which the
classifier keeps as its ``strategy_`` dict.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..codes.invariance import SYMMETRY_MAX_IMAGES, augment_policy, label_preserving, symmetries_kept
from ..decoding import symmetry
from ..decoding.images import BadImagesWarning
from ..decoding.preprocessing import Preprocessing
from ..frozen.advice import FINE_TUNING_PAYS_FROM
from ..frozen.search import LOGISTIC, LayerSearchCV, best_index
from ..frozen.transformer import CNNFeatureTransformer
from ..options import DEFAULTS, PENULTIMATE
from . import training
from .model import HEAD, WHOLE, TappedClassifier
from .probe import crop_codes, stratified_rows

#: Folds of the layer search behind ``layer="auto"`` with the head alone.
LAYER_SEARCH_CV = 3
#: Scores closer than this are equal where ``tta="auto"`` weighs views against one view.
TIE = 1e-9
#: ``Strategy.tta`` where ``tta`` was given, not chosen.
AS_GIVEN = "as given"


@dataclass(frozen=True)
class Strategy:
    """What trains: the head's layer, where training starts, batch norm, and why.

    Attributes
    ----------
    layer : str
        Where the head reads its codes.
    unfreeze : str
        ``"head"``, ``"all"`` or the first layer that trains.
    batchnorm : str
        ``"frozen"``, ``"adapt"`` or ``"train"``.
    reason : str
        What ``"auto"`` chose and why (``"as given"`` otherwise).
    augment : str or None, default=None
        The policy ``augment="auto"`` measured; None where it was not measured.
    tta : str or None, default=AS_GIVEN
        The views ``tta="auto"`` chose (None: one view); :data:`AS_GIVEN` where ``tta`` was given.
    """

    layer: str
    unfreeze: str
    batchnorm: str
    reason: str
    augment: str | None = None
    tta: str | None = AS_GIVEN

    def as_dict(self) -> dict:
        """The classifier's ``strategy_``: ``augment`` and ``tta`` only where they were measured."""
        chosen = {"layer": self.layer, "unfreeze": self.unfreeze, "batchnorm": self.batchnorm, "reason": self.reason}
        if self.augment is not None:
            chosen["augment"] = self.augment
        if self.tta != AS_GIVEN:
            chosen["tta"] = self.tta
        return chosen

    def with_augment(self, policy: str, kept: set[str] | None) -> Strategy:
        """This strategy with the measured augmentation ``policy`` and the symmetries that allow it
        (``kept=None``: not measured, as for labels and continuous targets)."""
        if kept is None:
            why = f"; augment {policy!r} (not measured: flips and rotations are measured on classes alone)"
        else:
            why = f"; augment {policy!r} (class kept under {sorted(kept) or 'no symmetry'})"
        return replace(self, augment=policy, reason=self.reason + why)

    def with_tta(self, tta: str | None, why: str) -> Strategy:
        """This strategy with the views ``tta="auto"`` chose, and ``why``."""
        return replace(self, tta=tta, reason=f"{self.reason}; tta {tta!r} ({why})")


def chosen_tta(
    kept: set[str] | None, candidate: str | None, scores: tuple[float, float] | None, measured: str
) -> tuple[str | None, str]:
    """The views ``tta="auto"`` takes, and why: ``candidate`` where its score beats one view's.

    Parameters
    ----------
    kept : set of str or None
        The symmetries that keep the class; None where they are not measured
        (labels, continuous targets; a class of fewer than
        :data:`LAYER_SEARCH_CV` images with the head alone).
    candidate : str or None
        :func:`~skcnn.codes.invariance.tta_candidate` of ``kept``.
    scores : (float, float) or None
        One view's score and the candidate's; None where there is nothing to
        measure them on (no validation split).
    measured : str
        What the scores are (``"cross-validated"``, ``"validation"``).
    """
    if kept is None:
        return None, (
            f"not measured: flips and rotations are measured on classes, with the head alone on {LAYER_SEARCH_CV} "
            "images of each at least"
        )
    if candidate is None:
        return None, f"no flip or rotation policy keeps the class (kept under {sorted(kept) or 'no symmetry'})"
    if scores is None:
        return None, f"{candidate!r} not measured: no validation split"
    single, viewed = scores
    why = f"{measured} {viewed:.3f} with {candidate!r} against {single:.3f} from one view"
    # Means of equal fold scores can differ in their last bits: a tie is one view (the cheaper).
    better = viewed > single and not np.isclose(viewed, single, rtol=0, atol=TIE)
    return (candidate if better else None), why


def seen_whole(kept: set[str]) -> bool:
    """Whether images whose class ``kept`` symmetries keep have no up or down (both flips keep it):
    the image is the object (a cell, a tile, a texture), not a framed photo of one."""
    return {"hflip", "vflip"} <= kept


def resolved_input(recipe: Preprocessing, side: int | None, kept: set[str] | None) -> tuple[int | None, str]:
    """``input_size="auto"``: the images' own ``side``, seen whole, where they have no up or down
    (:func:`seen_whole`); None (the weights' size and the classifier's ``crop``) otherwise; and why.

    Parameters
    ----------
    recipe : Preprocessing
        The weights' preprocessing, with the classifier's ``crop``.
    side : int or None
        :func:`~skcnn.decoding.preprocessing.native_input_size` of the
        images; None where it keeps no more than ``recipe`` (then nothing is measured).
    kept : set of str or None
        The symmetries that keep the class; None where not measured (labels, continuous targets).
    """
    weights = f"input {recipe.crop_size[0]}x{recipe.crop_size[1]}, the weights'"
    if side is None:
        return None, f"{weights} (the images are not larger)"
    if kept is None:
        return None, f"{weights} (not measured: whether the images have an up is measured on classes)"
    if not seen_whole(kept):
        return None, f"{weights} (the images have an up: class kept under {sorted(kept) or 'no symmetry'})"
    return side, f"input {side}x{side}, the images' own, no crop (no up or down: class kept under {sorted(kept)})"


def resolved_unfreeze(
    unfreeze: str, labels: np.ndarray, size: tuple[float, str | None, float] | None = None
) -> tuple[str, str]:
    """``unfreeze`` resolved from the images per class, with the reason.

    Only the data's size decides (the size x similarity table's choice
    between frozen codes and fine-tuning does not depend on similarity), so
    no image is decoded for it: ``advise_layer`` measures similarity for
    those who ask, and ``layer="auto"`` searches the layer.

    Parameters
    ----------
    unfreeze : str
        The classifier's parameter.
    labels : ndarray of shape (n_images,) or (n_images, n_outputs)
    size : (float, str or None, float) or None, default=None
        How much data there is, in what unit, and the multiple of
        :data:`~skcnn.frozen.advice.FINE_TUNING_PAYS_FROM` fine-tuning pays
        from in that unit: the target kind's ``size(labels)``
        (:mod:`skcnn.finetuning.targets`). None: images per class.

    Returns
    -------
    unfreeze : str
        ``"head"`` or ``"all"`` for ``"auto"``, else as given.
    reason : str
    """
    if unfreeze != "auto":
        return unfreeze, "as given"
    amount, unit, multiple = (len(labels) / len(np.unique(labels)), "per class", 1) if size is None else size
    pays_from = FINE_TUNING_PAYS_FROM * multiple
    small = amount < pays_from
    counted = f"{len(labels)} images" + ("" if unit is None else f", {amount:.0f} {unit}")
    why = (
        f"{'small' if small else 'large'} data ({counted}; "
        f"fine-tuning pays from about {pays_from:.0f} {'images' if unit is None else unit})"
    )
    return (HEAD if small else WHOLE), why


def resolved_batchnorm(batchnorm: str) -> str:
    """``batchnorm`` with ``"auto"`` resolved."""
    # "auto" is "frozen": "adapt" and "train" moved the features the probe head was fit on
    return "frozen" if batchnorm == "auto" else batchnorm


def check_layers(layer: str, unfreeze: str, layers: list[str]) -> None:
    """Raise unless ``layer`` is a layer of the network, ``unfreeze`` one the pass enters before it (or all, head)."""
    if layer not in layers:
        raise ValueError(f"layer={layer!r} is not a layer of the network; use 'auto' or a name from list_layers().")
    if unfreeze in (WHOLE, HEAD):
        return
    allowed = layers[: layers.index(layer) + 1]
    if unfreeze not in allowed:
        raise ValueError(
            f"unfreeze={unfreeze!r} must be 'auto', 'all', 'head' or a layer the forward pass reaches up to "
            f"layer={layer!r} (where the head is): one of {allowed[-4:]} or earlier, from list_layers()."
        )


def chosen(layer: str, unfreeze: str, batchnorm: str, reason: str, layers: list[str]) -> Strategy:
    """The strategy for a resolved ``unfreeze``, its layers checked against the network's ``layers``.

    ``layer="auto"`` is ``"penultimate"`` where the network trains:
    fine-tuning adapts the later layers to the data, and the head reads the
    top. With the head alone, ``layer`` is resolved first (:func:`head_only_choice`).
    """
    if layer == "auto" and unfreeze != HEAD:
        layer = PENULTIMATE
    check_layers(layer, unfreeze, layers)
    return Strategy(layer, unfreeze, resolved_batchnorm(batchnorm), reason)


def head_only_choice(
    layer: str,
    ttas: list,
    kept: set[str] | None,
    reason: str,
    transformer: CNNFeatureTransformer,
    images: list,
    labels: np.ndarray,
    search: bool = True,
) -> tuple[str, str | None, str, str]:
    """The head-only model's layer and views, the reason, and why those views: what the frozen codes
    cross-validate best.

    ``layer="auto"`` searches the candidate layers, and a candidate in
    ``ttas`` is weighed against one view (:func:`chosen_tta`, at each one's
    best layer); neither searches nothing.

    Parameters
    ----------
    layer : str
        The classifier's parameter.
    ttas : list of str or None
        The views: ``[tta]`` as given, or for ``tta="auto"`` ``[None]`` and
        the :func:`~skcnn.codes.invariance.tta_candidate` of ``kept`` (where there is one).
    kept : set of str or None
        The symmetries measured to keep the class (None: not measured).
    reason : str
        The reason so far, which the search's result extends.
    transformer : CNNFeatureTransformer
        Computes the candidates' codes (with a cache, where the probe reads them next).
    images : list
    labels : ndarray of shape (n_images,)
        Classes.
    search : bool, default=True
        False where the targets are no classes (labels, continuous values):
        ``"auto"`` is then ``"penultimate"``, and one view.

    Returns
    -------
    layer : str
    tta : str or None
    reason : str
    tta_why : str
        Why ``tta="auto"`` took ``tta`` (:func:`chosen_tta`).
    """
    candidate = ttas[1] if len(ttas) > 1 else None
    if not search or (layer != "auto" and candidate is None):
        if layer == "auto":  # LayerSearchCV cross-validates classes: labels and continuous targets read the top
            layer, reason = PENULTIMATE, f"{reason}; layer {PENULTIMATE!r} (the layer search compares classes alone)"
        return layer, ttas[0], reason, chosen_tta(kept, None, None, "cross-validated")[1]
    results = searched(transformer, images, labels, None if layer == "auto" else [layer], ttas).cv_results_
    best = {tta: best_index(results, results["tta"] == tta) for tta in ttas}  # each view's best layer
    score = results["mean_test_score"]
    tta, why = ttas[0], chosen_tta(kept, None, None, "cross-validated")[1]
    if candidate is not None:
        tta, why = chosen_tta(kept, candidate, (score[best[None]], score[best[candidate]]), "cross-validated")
    chosen = best[tta]
    if layer == "auto":
        reason = f"{reason}; layer {results['layer'][chosen]!r} cross-validated best ({score[chosen]:.3f})"
    return str(results["layer"][chosen]), tta, reason, why


def searched(
    transformer: CNNFeatureTransformer, images: list, labels: np.ndarray, layers: list | None = None, ttas=(None,)
) -> LayerSearchCV:
    """A :data:`LAYER_SEARCH_CV`-fold :class:`~skcnn.LayerSearchCV` of ``layers`` (None: the candidates)
    and ``ttas``, average-pooled at the transformer's input size (the codes the head reads), by the
    logistic regression (the head is linear), not refit."""
    smallest = int(np.unique(labels, return_counts=True)[1].min())
    if smallest < LAYER_SEARCH_CV:
        raise ValueError(
            f"layer='auto' or tta='auto' with the head alone cross-validates frozen codes in {LAYER_SEARCH_CV} "
            f"folds, and a class has {smallest} image(s); give a layer (e.g. layer='penultimate') and a tta "
            "(e.g. tta=None), or more images."
        )
    with warnings.catch_warnings():  # bad images: the probe's own warning names them
        warnings.simplefilter("ignore", BadImagesWarning)
        search = LayerSearchCV(
            transformer, layers, LOGISTIC, poolings=[DEFAULTS.pooling], input_sizes=[transformer.input_size],
            ttas=list(ttas), cv=LAYER_SEARCH_CV, refit=False,
        ).fit(images, labels)  # fmt: skip
    return search


def measured_augment(
    model: TappedClassifier, recipe: Preprocessing, sample: training.Examples, seed: int, batch_size: int
) -> tuple[str, set[str]]:
    """The augmentation ``augment="auto"`` takes, and the symmetries that keep the class.

    Measured on at most :data:`SYMMETRY_MAX_IMAGES` of ``sample`` (a
    stratified draw); rotations are left out of a rectangular input.

    Parameters
    ----------
    model : TappedClassifier
        The pretrained network, tapped at the head's layer (run frozen).
    recipe : Preprocessing
    sample : training.Examples
        Decoded training images and their encoded classes.
    seed : int
    batch_size : int

    Returns
    -------
    policy : str
        One of ``"photo"``, ``"crop"``, ``"flips"``, ``"dihedral"``.
    kept : set of str
        The symmetries (``skcnn.decoding.symmetry.GENERATORS``' names) that keep the class.
    """
    rows = stratified_rows(sample.targets.numpy(), SYMMETRY_MAX_IMAGES, seed)
    kept = kept_symmetries(model, recipe, sample.subset(torch.as_tensor(rows)), seed, batch_size)
    return augment_policy(kept, recipe.crop_size), kept


def kept_symmetries(
    model: TappedClassifier, recipe: Preprocessing, sample: training.Examples, seed: int, batch_size: int
) -> set[str]:
    """The flips and rotations under which a probe of the frozen codes keeps its accuracy."""
    targets = sample.targets.numpy()
    if np.bincount(targets).min() < 2:  # too few of a class to halve: measure nothing
        return set()
    views = {"original": lambda pixels: pixels, **symmetry.GENERATORS}
    if recipe.crop_size[0] != recipe.crop_size[1]:
        del views["rot90"]  # a rectangle turned is another input size
    codes = crop_codes(model, recipe, sample.images, batch_size, views)
    original = codes.pop("original")
    return symmetries_kept(label_preserving(original, targets, codes, seed), len(targets))


__all__ = [
    "AS_GIVEN",
    "LAYER_SEARCH_CV",
    "TIE",
    "Strategy",
    "check_layers",
    "chosen",
    "chosen_tta",
    "head_only_choice",
    "kept_symmetries",
    "measured_augment",
    "resolved_batchnorm",
    "resolved_input",
    "resolved_unfreeze",
    "searched",
    "seen_whole",
]
