"""``CNNClassifier``: a pretrained CNN fine-tuned as a scikit-learn classifier."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from ..compat import _fit_context
from ..options import DEFAULTS, FINETUNING, constraints_of
from .estimator import FineTuning
from .targets import Classes, Labels


class CNNClassifier(ClassifierMixin, FineTuning):
    """A pretrained CNN with a new head, fine-tuned on labelled images: one class, or several labels, per image.

    ``fit`` decodes every training image once (kept in memory, or in files
    beyond ``memory_limit``), starts the new head from a
    linear probe on the frozen codes of ``layer`` (standardised codes, a
    logistic regression with ``C`` tuned by cross-validation: the frozen-codes
    baseline, as LP-FT prescribes), then trains the unfrozen layers:
    discriminative learning rates (pretrained layers ``backbone_lr_ratio``
    times slower than the head), warmup and cosine decay, augmentation of
    training batches only, early stopping on a stratified validation split.
    The best epoch's weights are kept at the end, the started network
    (epoch 0) included: fine-tuning that does not beat the probe on the
    validation split leaves the probe.

    Several labels per image: ``y`` a list of each image's labels (lists,
    tuples or sets: ``[{"cat"}, {"cat", "dog"}, set()]``, turned into
    columns by ``sklearn.preprocessing.MultiLabelBinarizer``, the labels
    kept in ``classes_``), or a binary indicator matrix (one column per
    label). The head then has one sigmoid output per label,
    trained on the binary cross-entropy, started from one logistic
    regression per label; the validation split is a plain one (not
    stratified), and ``predict`` gives the indicator matrix of the labels
    whose probability is above 0.5. The shared machinery is
    ``skcnn.finetuning.estimator.FineTuning``'s, the kinds of target
    ``skcnn.finetuning.targets``'.

    Which quadrant of the size x similarity table calls for what, measured:
    ``benchmarks/RESULTS.md`` ("Learning curves") and the user guide (fine-tuning).

    Parameters
    ----------
    backbone, weights, crop, device, max_pixels, decode, cache
        As for :class:`~skcnn.CNNFeatureTransformer` (``cache`` stores the
        codes the head is started from; ``decode`` applies to training and
        prediction alike).
    input_size : "auto", int, (height, width) or None, default="auto"
        The network's input. ``"auto"``: images larger than the weights'
        input (median shorter side, by a quarter at least) whose class
        both flips keep, measured on at most 256 images as ``augment="auto"``
        measures it (no up or down: cells, tiles, textures, micrographs,
        where the image is the object and a centre crop can drop the
        evidence), are seen whole at their own size (at most twice the
        weights' input, no crop whatever ``crop`` says); other images at the
        weights' size and ``crop``. On 300 px solar cells the images' own
        size gained 0.06-0.08 accuracy over 224 px with a crop, at 1.8x the time
        per epoch (``benchmarks/RESULTS.md``, "Small evidence").
        ``input_size_`` and ``crop_`` are what the fit took, and
        ``strategy_["reason"]`` says why. Otherwise as for
        :class:`~skcnn.CNNFeatureTransformer` (None: the weights' own).
    batch_size : int, default=32
        Images per training step, and per prediction batch on CUDA and
        MPS; on a CPU prediction batches are at most 8 images (the
        transformer's default ``batch_size``: there batches of 4-8 ran
        faster per image than 32, ``benchmarks/RESULTS.md``).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Training arithmetic: ``"auto"`` is fp16 with a gradient scaler on
        CUDA, fp32 elsewhere. Prediction's, as for
        :class:`~skcnn.CNNFeatureTransformer`: ``"auto"`` is fp16 on CUDA,
        bf16 on a CPU with native bf16 (AVX512-BF16 or AMX) where
        ``runtime`` does not choose ONNX Runtime in fp32, fp32 elsewhere.
    runtime : {"auto", "torch", "onnxruntime"}, default="auto"
        What runs the fitted network in ``predict``, ``predict_proba`` and
        ``decision_function``, as for :class:`~skcnn.CNNFeatureTransformer`
        (training always runs on torch). ``"auto"``: ONNX Runtime where
        the network computes in fp32 on a CPU (networks with depthwise
        convolutions such as EfficientNet even where bf16 is native, CPUs
        without native bf16, ``precision="fp32"``); torch elsewhere. The
        fine-tuned network up to the head's layer is exported to ONNX once
        per machine, in the transformer's cache folder, keyed by the content
        hash of its weights: a head-only model's unchanged network is
        exported once for all of them, each fine-tuned one once (a few
        seconds; about the size of its weights on disk). The first batch is
        checked against torch (relative L2 within 1e-4): a network that
        does not export or differs runs on torch, with one warning. With
        torch, the pass runs on a copy of the network with batch norm folded,
        in channels_last layout, as the transformer's.
    tta : {"auto", "flips", "dihedral"} or None, default="auto"
        Test-time augmentation of ``predict``, ``predict_proba`` and
        ``decision_function``: the head's codes of each image are averaged
        over its views, the four flips (``"flips"``) or the eight flips and
        90-degree rotations of the square (``"dihedral"``, square inputs
        only), as :class:`~skcnn.CNNFeatureTransformer`'s ``tta`` averages
        them; the head being linear, so are the logits. For images with no up
        or down (cells, textures, tiles). It costs one forward pass per view.
        ``"auto"`` takes the views only where they are measured to pay: the
        flips and rotations that keep the class (measured as
        ``augment="auto"`` measures them, on at most 256 training images, a
        frozen probe scored on turned copies) give the candidate
        (``"dihedral"`` where rotations keep it too, ``"flips"`` where both
        flips do, none otherwise: digits and photos of upright objects get
        one view at no cost), and the candidate is kept where it scores
        better than one view: by the layer search's cross-validation with the
        head alone (the probe is then fit on the views' averaged codes, one
        decode per image beyond the measured sample), on the validation
        split after fine-tuning (none without one: ``early_stopping=False``
        predicts from one view). Labels and continuous targets are not
        measured: one view. ``strategy_["tta"]`` and its reason say what was
        chosen, with both scores, and ``tta_`` the views taken. Given
        views, a head-only fit fits its probe on their averaged codes, as a
        pipeline of ``CNNFeatureTransformer(tta=...)`` does; fine-tuning
        trains and scores its epochs on each image once, as it is, so it
        pays for a network trained on those views (``augment="flips"`` or
        ``"dihedral"``): a fit that kept epoch 0, the probe, can lose by
        views it never saw (solar cells: 0.758 -> 0.671 with ``"dihedral"``;
        ``benchmarks/RESULTS.md``, "Small evidence"). Set on a fitted model
        it needs no new fit (a head-only model then predicts with a probe fit
        on the codes it was fit on), and ``"auto"`` is the fit's choice
        again. ``to_onnx`` exports the views into the file's graph (served
        as the model predicts, at one pass per view). ``None``: one view.
    progress : bool or "auto", default="auto"
        A tqdm progress bar per training epoch, and in images while
        predicting; ``"auto"`` shows it only on an interactive terminal or in
        a Jupyter notebook, for more than one batch.
    on_error : {"raise", "skip"}, default="raise"
        Bad training images: ``"raise"`` names them all and refuses to fit,
        ``"skip"`` leaves them out with a warning (``failed_``).
    layer : "auto", "penultimate" or a layer name, default="auto"
        Where the new head reads its codes (the codes
        :class:`~skcnn.CNNFeatureTransformer` gives for that layer: ReLU'd,
        average-pooled); layers after it are dropped. ``"auto"``: when only
        the head trains, the candidate layer whose frozen codes
        cross-validate best (a 3-fold :class:`~skcnn.LayerSearchCV` of the
        layers, average-pooled at this model's input size, as the head reads
        them: an earlier layer for data unlike ImageNet); when the network
        trains, ``"penultimate"``.
    unfreeze : "auto", "head", "all" or a layer name, default="auto"
        What trains: the head only, that layer and every later one up to
        ``layer``, or the whole network. ``"head"`` is the linear probe on
        frozen codes, fit on every image, with no epochs (``max_epochs``,
        ``augment`` and early stopping do not apply): trained further on
        augmented images it only measured worse.
        ``"auto"``: the head for small data, everything for large data
        (from 200 images per class, ``skcnn.frozen.advice.FINE_TUNING_PAYS_FROM``,
        where fine-tuning overtook frozen codes in skcnn's learning curves,
        ``benchmarks/RESULTS.md``; for several labels per image, from 200
        positive images per label on average).
    max_epochs : int, default=10
    learning_rate : float, default=1e-3
        The head's peak learning rate (AdamW, one-cycle schedule).
    backbone_lr_ratio : float, default=0.1
        Pretrained layers' learning rate over the head's. 0.1 measured
        better than 0.01 on animal-mnist (``benchmarks/RESULTS.md``).
    weight_decay : float, default=1e-4
    batchnorm : {"auto", "frozen", "adapt", "train"}, default="auto"
        ``"frozen"``: running statistics fixed, BatchNorm in eval mode in
        every epoch; ``"adapt"``: re-estimated on the training images first
        (AdaBN), then fixed; ``"train"``: updated. ``"auto"``: frozen (the
        head starts from a probe of the network's features as they are;
        adapting or training the statistics measured worse on data unlike
        ImageNet, ``benchmarks/RESULTS.md``).
    augment : "auto", "photo", "crop", "flips", "dihedral", None or callable, default="auto"
        Applied to each uint8 ``(3, h, w)`` training image (a
        ``torchvision.transforms.v2`` transform); never to the validation
        split or to prediction. ``"photo"``: a random resized crop (at least
        60% of the image) and a horizontal flip; ``"crop"``: the crop alone;
        ``"flips"``: a random horizontal and/or vertical flip, no crop;
        ``"dihedral"``: a random flip and 90-degree rotation, no crop (for
        images with no up or down, cells, textures, tiles: a crop can cut a
        small defect away). ``"auto"``: measured on the training images
        before the first epoch, the richest of these whose flips and
        rotations keep a frozen-codes probe's accuracy (``skcnn.decoding.symmetry``;
        ``strategy_["augment"]`` says which). For several labels per image
        nothing is measured: ``"auto"`` is ``"photo"``.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the images (stratified by class;
        a plain split for several labels per image), stop
        after ``n_iter_no_change`` epochs without a better validation
        accuracy (weighted by the sample weights, where given) and keep the
        best epoch. Only epochs that end with the learning rates decayed to
        half their peak or below count: near the peak of the one-cycle
        schedule a fine-tuned network often scores below its probe for a
        few epochs and then recovers.
    validation_fraction : float, default=0.1
        Share of the images held out (at least one per class).
    n_iter_no_change : int, default=3
    scoring : {"accuracy", "balanced_accuracy"}, default="accuracy"
        What early stopping compares on the validation split (weighted by
        the images' sample weights), epoch 0, the probe, included.
        ``"balanced_accuracy"``, the mean of the per-class recalls, for
        imbalanced classes: accuracy favours the largest class. For several
        labels per image, ``"accuracy"`` is the share of label decisions
        right (1 - Hamming loss) and ``"balanced_accuracy"`` the mean over
        labels of each label's balanced accuracy (rare labels count as much
        as common ones).
    class_weight : "balanced", dict or None, default=None
        Weights of the classes, as in scikit-learn: ``"balanced"`` weighs
        each class by ``n_samples / (n_classes * its count)``, a dict maps
        labels to weights (1 for those left out), ``None`` weighs all alike.
        Applied as :meth:`fit`'s ``sample_weight`` is (multiplied with it).
        Several labels per image take ``None`` alone (weigh images with
        ``sample_weight``).
    random_state : int, RandomState or None, default=None
        Seeds the split, the order of batches, augmentation and the head;
        on the CPU a given seed gives the same model.
    checkpoint : str, path or None, default=None
        A file written after every epoch (atomically). ``fit`` called
        again with the same data, parameters and checkpoint goes on from
        the last finished epoch.
    memory_limit : int, str or "auto", default="auto"
        How much memory the decoded training images may take (uint8 crops,
        ``3 * h * w`` bytes each: 150 kB at 224 px): bytes, or a size such
        as ``"2GB"``. Within it they are kept in memory (and kept for later
        fits on the same images, see
        :func:`skcnn.clear_decoded_images`); beyond it they
        are written to files in ``store_dir`` as they are decoded, and every
        epoch reads them back a few batches ahead, so that memory does not
        grow with the number of images. ``"auto"``: a quarter of the memory
        available when ``fit`` starts.
    store_dir : str, path or None, default=None
        The folder for decoded images beyond ``memory_limit``: one subfolder
        per input size and decoding, files keyed by image content, so that
        clones in a grid search, a fit resumed after a kill and later fits
        decode each image once. ``None``: ``skcnn-decoded-<user id>`` in the
        system's temporary folder, created for this user alone. Folders and
        files that other users could write are neither read nor written
        (the user guide's "Dirty folders and faults"). Delete it to free the space.

    Attributes
    ----------
    classes_ : ndarray
        The class labels; for several labels per image, the labels of the
        columns ``predict`` and ``predict_proba`` give: sorted where ``y`` was
        each image's labels, ``np.arange(n_labels)`` where it was the
        indicator matrix (as scikit-learn's ``MLPClassifier``).
    target_type_ : str
        ``sklearn.utils.multiclass.type_of_target(y)``: ``"binary"``,
        ``"multiclass"`` or ``"multilabel-indicator"``.
    strategy_ : dict
        ``layer``, ``unfreeze``, ``batchnorm`` and ``reason``: what ``"auto"`` chose and why;
        ``augment`` and ``tta`` where ``"auto"`` measured them.
    tta_ : str or None
        The views the fit took: ``tta`` as given, or for ``"auto"`` its choice (``strategy_["tta"]``).
        Predictions average them while ``tta="auto"``; a ``tta`` set after the fit takes effect at once.
    history_ : list of dict
        Per epoch, from epoch 0: ``epoch``, ``train_loss``,
        ``validation_score``, ``validation_score_views`` (with the views
        ``tta="auto"`` weighs, NaN without), ``learning_rates``,
        ``seconds``. An epoch is judged by the better of its two scores.
        Epoch 0 is
        the started network, the linear probe: its ``train_loss`` is the
        probe's mean cross-entropy (for labels, binary cross-entropy, the
        mean over labels) on the codes it was fit on (weighted by
        the sample weights), its ``validation_score`` is ``probe_score_``,
        ``learning_rates`` is empty and ``seconds`` is the time computing
        its codes and fitting it took (the layer search of ``layer="auto"``
        included). A head-only model has this row alone.
    n_epochs_ : int
        Epochs run (``len(history_) - 1``).
    best_epoch_ : int
        The epoch whose weights the model holds; 0 when no epoch beat the
        started network (the linear probe) on the validation split, or with
        ``unfreeze="head"``.
    probe_score_ : float
        Validation score (``scoring``) of the started network, before any
        epoch: ``history_[0]["validation_score"]`` (NaN without early
        stopping, and with ``unfreeze="head"``).
    input_size_ : int, (height, width) or None
        The input the fit took: ``input_size`` as given, or for ``"auto"``
        its choice (the images' own side, or None: the weights' own).
    crop_ : bool or float
        The centre crop the fit took: ``crop``, or False where
        ``input_size="auto"`` took the images' own size.
    preprocessing_ : dict
        The evaluation preprocessing (sizes, mean, std, interpolation) of the weights at ``input_size_``.
    state_dict_ : dict of str to Tensor
        The fine-tuned network's weights, on the CPU (what a pickle holds).
    failed_ : list of ImageFailure
        Training images left out (``on_error="skip"``).

    Examples
    --------
    >>> from skcnn import CNNClassifier
    >>> from skcnn.datasets import load_texture_patches
    >>> X, y = load_texture_patches(n_per_class=8, patch_size=32)
    >>> model = CNNClassifier(input_size=32, max_epochs=1, unfreeze="blocks.5", random_state=0).fit(X, y)
    >>> model.strategy_["layer"], model.strategy_["unfreeze"]
    ('penultimate', 'blocks.5')
    >>> model.predict(X[:3]).shape, model.predict_proba(X[:3]).sum(axis=1).round(3).tolist()
    ((3,), [1.0, 1.0, 1.0])
    >>> [epoch["epoch"] for epoch in model.history_]  # epoch 0: the linear probe it started from
    [0, 1]
    >>> model.strategy_["tta"], model.tta_  # "auto": the 8 views scored no better than one on validation
    (None, None)
    """

    _parameter_constraints: dict = constraints_of(
        "backbone", "weights", "input_size", "crop", "batch_size", "device", "precision", "runtime", "tta", "progress",
        "on_error", "max_pixels", "decode", "layer", "unfreeze", "max_epochs", "learning_rate", "backbone_lr_ratio",
        "weight_decay", "batchnorm", "augment", "early_stopping", "validation_fraction", "n_iter_no_change",
        "scoring", "class_weight", "random_state", "cache", "checkpoint", "memory_limit", "store_dir",
        training=True,
    )  # fmt: skip

    def __init__(
        self,
        *,
        backbone=DEFAULTS.backbone,
        weights=DEFAULTS.weights,
        input_size=FINETUNING.input_size,
        crop=DEFAULTS.crop,
        batch_size=FINETUNING.batch_size,
        device=DEFAULTS.device,
        precision=DEFAULTS.precision,
        runtime=DEFAULTS.runtime,
        tta=FINETUNING.tta,
        progress=DEFAULTS.progress,
        on_error=DEFAULTS.on_error,
        max_pixels=DEFAULTS.max_pixels,
        decode=DEFAULTS.decode,
        layer=FINETUNING.layer,
        unfreeze=FINETUNING.unfreeze,
        max_epochs=FINETUNING.max_epochs,
        learning_rate=FINETUNING.learning_rate,
        backbone_lr_ratio=FINETUNING.backbone_lr_ratio,
        weight_decay=FINETUNING.weight_decay,
        batchnorm=FINETUNING.batchnorm,
        augment=FINETUNING.augment,
        early_stopping=FINETUNING.early_stopping,
        validation_fraction=FINETUNING.validation_fraction,
        n_iter_no_change=FINETUNING.n_iter_no_change,
        scoring=FINETUNING.scoring,
        class_weight=FINETUNING.class_weight,
        random_state=FINETUNING.random_state,
        cache=DEFAULTS.cache,
        checkpoint=FINETUNING.checkpoint,
        memory_limit=FINETUNING.memory_limit,
        store_dir=FINETUNING.store_dir,
    ):
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.crop = crop
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self.tta = tta
        self.progress = progress
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.decode = decode
        self.layer = layer
        self.unfreeze = unfreeze
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.backbone_lr_ratio = backbone_lr_ratio
        self.weight_decay = weight_decay
        self.batchnorm = batchnorm
        self.augment = augment
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.scoring = scoring
        self.class_weight = class_weight
        self.random_state = random_state
        self.cache = cache
        self.checkpoint = checkpoint
        self.memory_limit = memory_limit
        self.store_dir = store_dir

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fine-tune on ``X`` (images) and ``y`` (labels of any kind).

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :class:`~skcnn.CNNFeatureTransformer`.
        y : array-like of shape (n_samples,) or (n_samples, n_labels), or list of sets
            One class per image (labels of any kind); or for several labels
            per image, each image's labels (a list, tuple or set each) or a
            binary indicator matrix.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Per image, multiplied by the weight ``class_weight`` gives its
            class: they weight the linear probe, every epoch's loss and the
            validation accuracy early stopping compares. 0 leaves an image
            out of all three.

        Returns
        -------
        self : CNNClassifier
        """
        return self._fit(X, y, sample_weight, self.class_weight)

    def _checked_targets(self, y, n_images: int) -> tuple[np.ndarray, Classes | Labels]:
        if _label_sets(y):
            binarizer = MultiLabelBinarizer()
            indicators = binarizer.fit_transform(y)
            if len(indicators) != n_images:
                raise ValueError(f"y must hold one set of labels per image: X has {n_images} images, y {len(y)}.")
            return self._checked_indicators(indicators, binarizer.classes_)
        labels = np.asarray(y)
        if labels.ndim == 2 and len(labels) == n_images and type_of_target(labels) == "multilabel-indicator":
            return self._checked_indicators(labels)
        if labels.ndim != 1 or len(labels) != n_images:
            raise ValueError(
                f"y must hold one label per image, or a binary indicator matrix of one row per image and a "
                f"column per label: X has {n_images} images, y has shape {labels.shape}."
            )
        check_classification_targets(labels)
        self.classes_, counts = np.unique(labels, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_.tolist()}); a classifier needs at least two.")
        if counts.min() < 2:
            lonely = self.classes_[counts < 2].tolist()
            raise ValueError(f"classes {lonely} have one image each; every class needs at least two.")
        self.target_type_ = type_of_target(labels)
        return labels, Classes(self.classes_, self.scoring)

    def _checked_indicators(self, labels: np.ndarray, names: np.ndarray | None = None) -> tuple[np.ndarray, Labels]:
        """Several labels per image: every label present in some images and absent in others; ``names``,
        the labels of the columns (``classes_``; the column indices where y was the matrix itself)."""
        if self.class_weight is not None:
            raise ValueError(
                "class_weight weighs one class per image; with several labels per image (y an indicator "
                f"matrix) it must be None (got {self.class_weight!r}): weigh images with fit's sample_weight."
            )
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(
                f"y, a matrix of one row per image, must be a binary indicator matrix (0 and 1 alone, a column per "
                f"label); it holds {np.unique(labels)[:5].tolist()}."
            )
        indicators = labels.astype(np.int64)
        positives = indicators.sum(axis=0)
        self.classes_ = np.arange(indicators.shape[1]) if names is None else np.asarray(names)
        constant = self.classes_[(positives == 0) | (positives == len(indicators))].tolist()
        if constant:
            raise ValueError(
                f"label(s) {constant} of y are on every image or on none; every label needs images with it "
                "and images without it."
            )
        self.target_type_ = "multilabel-indicator"
        return indicators, Labels(indicators.shape[1], self.scoring)

    def _validation_name(self) -> str:
        return getattr(self, "scoring", "accuracy")  # models pickled before scoring existed: accuracy

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags

    def _multilabel(self) -> bool:
        return getattr(self, "target_type_", None) == "multilabel-indicator"  # none in models of before 0.8

    def decision_function(self, X):
        """Logits (for two classes: the positive class's logit over the other's; for labels, one per label).

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        scores : ndarray of shape (n_samples,), (n_samples, n_classes) or (n_samples, n_labels)
        """
        check_is_fitted(self)
        logits = self._outputs(X)
        if self._multilabel():
            return logits
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits); for labels, each label's (its logit's sigmoid).

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes) or (n_samples, n_labels)
            For labels, column ``j`` is the probability of label ``j``
            (rows need not sum to 1), as scikit-learn's ``MLPClassifier`` gives.
        """
        check_is_fitted(self)
        logits = torch.as_tensor(self._outputs(X))
        return (torch.sigmoid(logits) if self._multilabel() else torch.softmax(logits, dim=1)).numpy()

    def predict(self, X):
        """The most probable class of each image; for labels, the indicator matrix of those above 0.5.

        In batches (see ``batch_size``), on the runtime and in the precision
        ``runtime`` and ``precision`` give (see the class), with a progress
        bar in images where ``progress`` says so.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for :meth:`fit`.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_labels)
        """
        check_is_fitted(self)
        logits = self._outputs(X)
        if self._multilabel():
            return (logits > 0).astype(np.int64)  # probability above 0.5
        return self.classes_[logits.argmax(axis=1)]


def _label_sets(y) -> bool:
    """Whether ``y`` is a sequence of label collections (lists, tuples or sets of labels), one per image."""
    return (
        not isinstance(y, np.ndarray | str)
        and hasattr(y, "__len__")
        and len(y) > 0
        and all(isinstance(labels, list | tuple | set | frozenset) for labels in y)
    )


__all__ = ["CNNClassifier"]
