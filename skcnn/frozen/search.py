"""``LayerSearchCV``: which layer, pooling and input size classify best.

The candidate layers are tapped together, and each is pooled in every
candidate way, in one forward pass per image and input size (with a cache,
every later search is served from it); a classifier is then
cross-validated on each candidate's slice of the codes with the same folds,
and, by default, a kernel classifier on the best few of them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import check_scoring, log_loss
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ..codes.extraction import checked_input_size
from ..codes.pooling import pooled_widths, pooling_names
from ..compat import HasMethods, StrOptions, _fit_context
from ..decoding import symmetry
from ..decoding.images import BadImagesError, BadImagesWarning, as_image_list, image_size, warn_bad_images
from ..decoding.preprocessing import native_input_size
from ..network.backbones import load_backbone
from ..network.layers import candidate_layers, last_map, list_layers
from ..options import FINETUNING, constraints_of, parameter_names
from .transformer import CNNFeatureTransformer
from .views import measured_views

#: Inverse regularisation strengths the default classifier chooses from.
DEFAULT_CS = np.logspace(-4, 2, 7)
#: Folds of the inner cross-validations: the logistic regression's that tunes
#: ``C`` (:func:`default_classifier`) and the SVM's calibration (fewer where
#: a class has fewer images). The search itself tunes ``C`` on its own folds
#: (:func:`logistic_path`), with no inner folds.
INNER_CV = 3
#: What the choice of ``C`` maximises.
INNER_SCORING = "neg_log_loss"
#: The solver's stopping tolerance: scikit-learn's 1e-4 took 2.4-3.6x as
#: long on 1,575 solar cells' codes (112-1280 features) for the same ``C``
#: and the same held-out accuracy (``benchmarks/RESULTS.md``, "Small evidence").
INNER_TOLERANCE = 1e-3

#: The poolings searched by default: the average ("how much of the image
#: looks like X") and the generalised mean, which lets a small strong
#: response count ("is X anywhere": a crack, a spot) at the cost of one
#: more row per map layer. Max pooling is GeM's limit: on the solar cells of
#: ``benchmarks/RESULTS.md`` ("Small evidence") each layer's max and GeM
#: codes scored within 0.02 of each other; pass it to search it too.
DEFAULT_POOLINGS = ("avg", "gem")

#: The RBF SVM's regularisation strengths, each a candidate of its own on the
#: best codes. On the ELPV solar cells (``benchmarks/RESULTS.md``, "Small
#: evidence") an RBF SVM on standardised codes beat the tuned logistic
#: regression on the same codes by 0.01-0.05 in accuracy on three splits,
#: at C = 3, 10 and 30 alike; C = 1 is the softer choice for few images.
KERNEL_CS = (1.0, 10.0)
#: How many of the best codes (by the logistic regression, which scores
#: every candidate) the RBF SVM is cross-validated on as well: a kernel
#: machine fit per candidate would double the search's classifier time for
#: codes that the linear ranking already placed low.
KERNEL_CANDIDATES = 3
#: Above this many images the kernel stage is left out: an SVM's fit grows
#: faster than the images (``SVC(C=10)`` on solar cells' 1,280 standardised
#: codes: 1.5 s for 1,575 rows, 10 s for 5,000, one run), and it is fit
#: once per fold and ``C`` on each candidate.
KERNEL_MAX_IMAGES = 5000
#: The scorings that read predicted labels alone, which the SVM (no
#: probabilities in cross-validation) is scored by; with any other scoring
#: the logistic regression alone is searched.
LABEL_SCORINGS = (None, "accuracy", "balanced_accuracy")
#: ``ttas``: the transformer's views and those of the symmetries measured to keep the class.
AUTO = "auto"
#: ``classifier`` names: the tuned logistic regression alone.
LOGISTIC = "logistic"


def default_classifier(inner_cv: int = INNER_CV, class_weight=None):
    """Standardised codes into a logistic regression whose ``C`` is tuned by
    an inner ``inner_cv``-fold cross-validation: regularised, as few images
    and many codes call for.

    ``C`` is chosen by log-loss: on folds of a few images per class accuracy
    ties across ``C`` and the tie went to the smallest (benchmarks/RESULTS.md,
    "Learning curves")."""
    options = dict(
        Cs=DEFAULT_CS, cv=inner_cv, scoring=INNER_SCORING, tol=INNER_TOLERANCE, max_iter=2000, class_weight=class_weight
    )
    if "use_legacy_attributes" in LogisticRegressionCV().get_params():  # scikit-learn >= 1.8: L2 by l1_ratios
        options.update(use_legacy_attributes=False, l1_ratios=(0.0,))
    return make_pipeline(StandardScaler(), LogisticRegressionCV(**options))


def logistic_classifier(C: float, class_weight=None):
    """Standardised codes into a logistic regression of strength ``C``: the
    default classifier at the ``C`` the search chose for a candidate."""
    logistic = LogisticRegression(C=C, tol=INNER_TOLERANCE, max_iter=2000, class_weight=class_weight)
    return make_pipeline(StandardScaler(), logistic)


def logistic_path(codes: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, scorer, class_weight=None):
    """One fold's logistic regressions at each of ``DEFAULT_CS``, weakest first, each started
    from the last's coefficients: their ``scorer`` scores and log-losses on ``test``, and the
    seconds the path took.

    The search chooses ``C`` by the mean log-loss over its own folds, as
    ``LogisticRegressionCV`` does over inner ones: one path per fold in place
    of ``INNER_CV`` paths and a refit: the search's logistic stage 1.8-2.6x
    faster, held-out accuracy within 0.001 on average over 21 splits
    (``benchmarks/RESULTS.md``, "One path of ``C`` per fold")."""
    start = time.perf_counter()
    model = logistic_classifier(DEFAULT_CS[0], class_weight)
    scaler, logistic = model[0].fit(codes[train]), model[-1].set_params(warm_start=True)
    standardised, held_out = scaler.transform(codes[train]), scaler.transform(codes[test])
    scores, losses = [], []
    for C in DEFAULT_CS:
        logistic.set_params(C=C).fit(standardised, y[train])
        scores.append(scorer(model, codes[test], y[test]))
        losses.append(log_loss(y[test], logistic.predict_proba(held_out), labels=logistic.classes_))
    return np.asarray(scores), np.asarray(losses), time.perf_counter() - start


def kernel_classifier(C: float, class_weight=None, calibration_cv: int | None = None):
    """Standardised codes into an RBF SVM (``gamma="scale"``) of strength ``C``.

    ``calibration_cv``: probabilities too, by sigmoids fitted to the SVM's
    out-of-fold decisions in that many folds, then one SVM on all the data
    (``CalibratedClassifierCV(ensemble=False)``, what scikit-learn puts in
    place of ``SVC(probability=True)``); it predicts the likeliest class,
    which agreed with the SVM's own answers within 0.005 in accuracy on
    the ELPV solar cells, at 2.5-4x the fit time."""
    svm = SVC(C=C, class_weight=class_weight)
    if calibration_cv is not None:
        svm = CalibratedClassifierCV(svm, cv=calibration_cv, ensemble=False)
    return make_pipeline(StandardScaler(), svm)


def _best_has(method: str):
    def check(self) -> bool:
        check_is_fitted(self, "best_estimator_")
        return hasattr(self.best_estimator_, method)

    return check


class LayerSearchCV(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Cross-validate a classifier on the codes of each candidate layer, pooling and input size.

    A meta-estimator, like :class:`~sklearn.model_selection.GridSearchCV`:
    it clones the :class:`~skcnn.CNNFeatureTransformer` it is given, with
    every one of its parameters (visible and settable as
    ``transformer__backbone`` through ``get_params`` / ``set_params``), and
    sets its ``layer``, ``pooling``, ``input_size``, ``crop`` and ``tta`` itself. All
    candidate layers are tapped, and pooled in each of ``poolings``, in one
    forward pass per image and input size (with the transformer's
    ``cache``, stored so that later searches and transforms of any of them
    run no network at all); the classifier is then cross-validated on each
    candidate's codes over the same folds (by default a linear one on every
    candidate, then a kernel one on the best few). The result answers the transfer
    question *which layer* with evidence (early layers for data unlike
    ImageNet, the penultimate layer for data like it), and the questions of
    data whose evidence is small (a crack, a spot): whether a pooling that
    lets a small strong response count beats the average, and whether the
    images' own resolution, seen whole, beats the weights' resize and crop.

    Parameters
    ----------
    transformer : CNNFeatureTransformer or None, default=None
        The network and how it computes codes (backbone, weights, cache,
        precision, ``on_error`` ...), one backbone.
        ``None``: ``CNNFeatureTransformer()``. Its ``layer`` is ignored: the
        candidates are tapped; its ``pooling`` and ``input_size`` are
        searched first (see ``poolings`` and ``input_sizes``).
    layers : list of str or None, default=None
        Candidate layers; ``None``: one per stage from early to penultimate
        (:func:`skcnn.candidate_layers`), and the last map, whose average is
        the penultimate code, pooled each other way of ``poolings``.
    classifier : estimator, "logistic" or None, default=None
        Trained on each candidate's codes. ``"logistic"``: standardised codes
        into a logistic regression whose ``C`` (of ``DEFAULT_CS``) is the one
        of the least mean log-loss over the search's own folds (a path of
        ``C`` per fold: ``skcnn.frozen.search.logistic_path``), refit at that
        ``C``. ``None``: that logistic regression on every
        candidate, then an RBF SVM on standardised codes (``C`` of
        ``KERNEL_CS``, each a row) on the ``KERNEL_CANDIDATES`` candidates
        it scored best, where ``scoring`` reads labels (accuracy or balanced
        accuracy) and there are at most ``KERNEL_MAX_IMAGES`` images:
        whichever scores best is refit, the SVM calibrated for
        ``predict_proba`` (``skcnn.frozen.search.kernel_classifier``).
        Where the classes are not linearly apart in any candidate's codes
        the kernel machine wins (the ELPV solar cells of
        ``benchmarks/RESULTS.md``: 0.793 against 0.767 held out).
    poolings : list of str or None, default=None
        How each candidate map is pooled (``"avg"``, ``"max"``, ``"gem"``,
        ``"spp"``, ``"flatten"``): every pooling is a candidate of its own,
        computed in the same forward pass. ``None``: the transformer's
        pooling, then average and generalised-mean pooling
        (``DEFAULT_POOLINGS``). Vectors (the penultimate codes of globally
        pooled networks) are one candidate whatever the pooling.
    input_sizes : list or None, default=None
        The input sizes searched, one extraction each: an int or a
        (height, width) pair (with the transformer's ``crop``), ``None``
        (the weights' own size and crop) or ``"native"``: the images' own
        resolution seen whole (their median shorter side, at most
        ``skcnn.decoding.preprocessing.NATIVE_MAX_SCALE`` times the transformer's
        input size, no centre crop; left out when the images are not at
        least ``NATIVE_MIN_GAIN`` times that size, as the resize would keep
        nearly every pixel). ``None``: the transformer's ``input_size`` and
        ``"native"``.
    ttas : list, "auto" or None, default="auto"
        Test-time augmentations searched (see the transformer's ``tta``),
        each with every input size: ``None`` (one view), ``"flips"``,
        ``"dihedral"`` (square inputs). ``"auto"``: the transformer's
        ``tta``, and the views of the flips and rotations that keep the
        class, measured first on the frozen codes of at most 256 of the
        images (``symmetries_``; ``skcnn.frozen.views.measured_views``,
        4 forward passes each): ``"dihedral"`` for close-ups with no up or
        down (textures, the shipped defect set of ``benchmarks/RESULTS.md``,
        where it scored 0.877 against 0.833 held out, at 8 forward passes
        per image and size), ``"flips"`` where both flips keep it, nothing
        more for digits or upright photos. ``None``: the transformer's
        ``tta`` alone.
    class_weight : "balanced", dict or None, default=None
        Given to the default classifiers, the logistic regression and the
        SVM (minority classes weighted up); with another ``classifier``,
        set it there.
        Pair ``"balanced"`` with ``scoring="balanced_accuracy"`` when a
        rare class matters as much as a common one.
    cv : int, cross-validation generator or iterable, default=5
        Folds, as for :func:`sklearn.model_selection.cross_validate`
        (an int means stratified folds for a classifier).
    scoring : str, callable or None, default=None
        ``None``: accuracy (what a classifier's ``score`` gives, except the
        default classifier's, whose ``score`` is the log-loss it tunes ``C`` by).
        ``"balanced_accuracy"`` (the mean of per-class recalls) for
        imbalanced classes: accuracy rewards always answering the largest.
    refit : bool, default=True
        Fit ``best_estimator_``, a pipeline of the best candidate's
        transformer and the classifier, on all the data.
    n_jobs : int or None, default=None
        Parallel classifier fits (the network runs once, before).
    **transformer_params
        Not accepted: the transformer's parameters (``backbone``,
        ``pooling``, ...) go to ``transformer``; passing one here raises a
        ``TypeError`` that shows the call to write instead.

    Attributes
    ----------
    cv_results_ : dict of ndarrays
        One entry per candidate: ``layer``, ``pooling`` (None for vectors,
        which no pooling changes), ``input_size``, ``crop`` and ``tta`` (as
        given to the transformer), ``input`` (the network input it resolved
        to, e.g. ``"300x300, no crop"``), ``depth`` (position in
        :func:`skcnn.list_layers`, 0 = first), ``n_features``,
        ``classifier`` (``"logistic"``, ``"svm C=10"`` or the given
        estimator's class name), ``mean_test_score``, ``std_test_score``, ``split<k>_test_score``,
        ``rank_test_score`` and ``mean_fit_time``; a pandas DataFrame
        takes it as it is.
    best_index_ : int
        Row of the best candidate in ``cv_results_``: the best mean score;
        among ties, the smaller standard deviation, then the deeper layer
        (small data often scores perfectly on every layer, and then the
        deeper, more general codes are the safer choice), then the first row.
    best_params_ : dict
        The best candidate's ``layer``, ``pooling``, ``input_size``,
        ``crop`` and ``tta``: give them to a :class:`~skcnn.CNNFeatureTransformer`.
    best_layer_ : str
        The layer of the best candidate.
    best_score_ : float
        Its mean cross-validated score.
    best_classifier_ : estimator
        The best row's classifier, unfitted:
        ``make_pipeline(CNNFeatureTransformer(**best_params_), best_classifier_)``
        is the model the search chose.
    best_estimator_ : Pipeline
        The best candidate's transformer and ``best_classifier_`` fitted on
        all the data (``refit=True``).
    transformer_ : CNNFeatureTransformer
        The fitted clone of ``transformer`` that tapped every candidate at
        the first input size.
    classes_ : ndarray
        The class labels.
    n_splits_ : int
        The number of folds.
    symmetries_ : list of str or None
        ``ttas="auto"``: the flips and rotations (``"hflip"``, ``"vflip"``,
        ``"rot90"``) measured to keep the class; None where nothing was
        measured (``ttas`` given, or a class of fewer than two images in
        the sample).
    failed_ : list of ImageFailure
        Images left out of the search because they could not be used
        (with ``transformer.on_error="skip"``; with ``"raise"``, the default,
        a bad image stops the search instead).
    extraction_time_ : float
        Seconds spent computing (or reading) the codes of all candidates,
        every input size.

    See Also
    --------
    skcnn.advise_layer : A recommendation from the data's size and its
        similarity to ImageNet, without labels' cross-validation.

    Examples
    --------
    >>> from skcnn import CNNFeatureTransformer, LayerSearchCV
    >>> from skcnn.datasets import load_texture_patches
    >>> X, y = load_texture_patches(n_per_class=6, patch_size=32)
    >>> search = LayerSearchCV(
    ...     CNNFeatureTransformer(input_size=64), layers=["blocks.1", "penultimate"], cv=3
    ... ).fit(X, y)
    >>> {"hflip", "vflip"} <= set(search.symmetries_)  # textures: both flips keep the class
    True
    >>> search.cv_results_["layer"][:3].tolist()
    ['blocks.1', 'blocks.1', 'penultimate']
    >>> search.cv_results_["pooling"][:3].tolist()
    ['avg', 'gem', None]
    >>> search.cv_results_["tta"][:3].tolist()  # one view; then the flips' views averaged
    [None, None, None]
    >>> search.cv_results_["tta"][3] in ("flips", "dihedral")
    True
    >>> sorted(set(search.cv_results_["classifier"]))  # every candidate, then an SVM on the best 3
    ['logistic', 'svm C=1', 'svm C=10']
    >>> search.best_params_["layer"] in ("blocks.1", "penultimate")
    True
    >>> search.predict(X[:2]).shape
    (2,)
    >>> search.get_params()["transformer__input_size"]
    64
    """

    _parameter_constraints: dict = {
        "transformer": "no_validation",  # checked in fit, with a message that shows the call
        "layers": [list, tuple, None],
        "classifier": [HasMethods(["fit", "predict"]), StrOptions({LOGISTIC}), None],
        "poolings": [list, tuple, None],
        "input_sizes": [list, tuple, None],
        "ttas": [list, tuple, StrOptions({AUTO}), None],
        **constraints_of("class_weight"),  # as CNNClassifier takes it
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "refit": ["boolean"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        transformer=None,
        layers=None,
        classifier=None,
        *,
        poolings=None,
        input_sizes=None,
        ttas=AUTO,
        class_weight=FINETUNING.class_weight,  # declared once, as CNNClassifier's
        cv=5,
        scoring=None,
        refit=True,
        n_jobs=None,
        **transformer_params,
    ):
        if transformer_params:
            raise TypeError(_moved_parameters_message(transformer_params))
        self.transformer = transformer
        self.layers = layers
        self.classifier = classifier
        self.poolings = poolings
        self.input_sizes = input_sizes
        self.ttas = ttas
        self.class_weight = class_weight
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Extract every candidate's codes once per input size, then cross-validate each.

        Parameters
        ----------
        X : sequence of images
            Paths, PIL images or arrays, as for
            :class:`~skcnn.CNNFeatureTransformer`.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : LayerSearchCV
            The fitted search.
        """
        images = as_image_list(X)
        y = np.asarray(y)
        if len(y) != len(images):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
        transformer = self._checked_transformer()
        poolings = self._poolings(transformer)
        # One pooling stays a name: its codes share the cache with a transformer of that pooling.
        pooling = poolings[0] if len(poolings) == 1 else poolings
        start = time.perf_counter()
        views = self._views(transformer, images, self._ttas(transformer, images, y))
        extracted = {}
        # Test-time views first: their pass caches the codes of the images as they are, which the
        # one-view candidate of the same size then reads (one decode per image, with a cache).
        for index in sorted(range(len(views)), key=lambda i: views[i]["tta"] is None):
            layers, averaged = self._candidates(transformer, views[index], poolings)
            fitted = clone(transformer).set_params(layer=layers, pooling=pooling, **views[index])
            with warnings.catch_warnings():
                # Images that failed are left out below, with a warning of the search's own.
                warnings.simplefilter("ignore", BadImagesWarning)
                extracted[index] = (fitted, fitted.fit(images).transform(images), averaged)
        blocks, candidates, failures = [], [], {}
        for index, view in enumerate(views):
            fitted, block, averaged = extracted[index]
            blocks.append(block)
            failures.update((failure.index, failure) for failure in fitted.failed_)
            # The last map averaged is the penultimate code: only its other poolings are candidates.
            candidates += [
                c for c in _view_candidates(fitted, view, index) if (c.layer, c.pooling) != (averaged, "avg")
            ]
        self.transformer_ = extracted[0][0]
        self.extraction_time_ = time.perf_counter() - start
        self.failed_ = [failures[index] for index in sorted(failures)]
        usable, y = self._usable(y, len(images))
        blocks = [block[usable] for block in blocks]  # once, not per candidate
        cv = check_cv(self.cv, y, classifier=True)
        folds = list(cv.split(np.zeros((len(y), 1)), y))
        self.n_splits_ = len(folds)
        classifier = self._classifier(y, folds)
        if classifier is None:  # the logistic regression, C tuned on the search's folds
            rows, scores, fit_times = self._logistic_cross_validated(candidates, blocks, y, folds)
        else:
            rows = [_Row(candidate, _classifier_label(classifier), classifier, classifier) for candidate in candidates]
            scores, fit_times = self._cross_validated(rows, blocks, y, folds)
        if self.classifier is None and self.scoring in LABEL_SCORINGS and len(y) <= KERNEL_MAX_IMAGES:
            # The kernel machine on the codes the linear one ranked best.
            best = ranked(_results(rows, scores, fit_times))[:KERNEL_CANDIDATES]
            calibration = min(INNER_CV, int(np.unique(y, return_counts=True)[1].min()))
            kernel = [
                _kernel_row(rows[row].candidate, C, self.class_weight, calibration) for row in best for C in KERNEL_CS
            ]
            more, more_times = self._cross_validated(kernel, blocks, y, folds)
            rows, scores, fit_times = rows + kernel, np.vstack([scores, more]), np.concatenate([fit_times, more_times])
        self.cv_results_ = _results(rows, scores, fit_times)
        self.best_index_ = best_index(self.cv_results_)
        best = rows[self.best_index_]
        self.best_params_ = best.candidate.params(transformer)
        self.best_layer_ = best.candidate.layer
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.best_classifier_ = clone(best.refit)
        self.classes_ = np.unique(y)
        if self.refit:
            network = clone(transformer).set_params(**self.best_params_).fit(images)
            codes = blocks[best.candidate.view][:, best.candidate.columns]
            fitted = clone(self.best_classifier_).fit(codes, y)
            self.best_estimator_ = Pipeline([("cnnfeaturetransformer", network), ("classifier", fitted)])
        return self

    def _cross_validated(
        self, rows: list[_Row], blocks: list[np.ndarray], y: np.ndarray, folds: list
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's classifier cross-validated on its candidate's codes: scores (rows x folds), mean fit times."""
        scores, fit_times = [], []
        for row in rows:
            scorer = check_scoring(row.classifier, scoring=self._scoring())
            codes = blocks[row.candidate.view][:, row.candidate.columns]
            result = cross_validate(clone(row.classifier), codes, y, cv=folds, scoring=scorer, n_jobs=self.n_jobs)
            scores.append(result["test_score"])
            fit_times.append(result["fit_time"].mean())
        return np.asarray(scores).reshape(len(rows), len(folds)), np.asarray(fit_times, dtype=float)

    def _logistic_cross_validated(
        self, candidates: list[_Candidate], blocks: list[np.ndarray], y: np.ndarray, folds: list
    ) -> tuple[list[_Row], np.ndarray, np.ndarray]:
        """The logistic regression on each candidate's codes, a path of ``C`` per fold
        (:func:`logistic_path`): rows at the ``C`` of the least mean log-loss, their scores
        (rows x folds) and mean fit times (a whole path's)."""
        scorer = check_scoring(LogisticRegression(), scoring=self._scoring())
        rows, scores, fit_times = [], [], []
        for candidate in candidates:
            codes = blocks[candidate.view][:, candidate.columns]
            paths = Parallel(n_jobs=self.n_jobs)(
                delayed(logistic_path)(codes, y, train, test, scorer, self.class_weight) for train, test in folds
            )
            path_scores, losses, seconds = (np.stack(part, axis=-1) for part in zip(*paths, strict=True))
            chosen = int(np.argmin(losses.mean(axis=1)))  # the first, the weakest C, among ties
            classifier = logistic_classifier(DEFAULT_CS[chosen], self.class_weight)
            rows.append(_Row(candidate, LOGISTIC, classifier, classifier))
            scores.append(path_scores[chosen])
            fit_times.append(seconds.mean())
        return rows, np.asarray(scores).reshape(len(rows), len(folds)), np.asarray(fit_times, dtype=float)

    def _checked_transformer(self) -> CNNFeatureTransformer:
        transformer = CNNFeatureTransformer() if self.transformer is None else self.transformer
        if not isinstance(transformer, CNNFeatureTransformer):
            example = f"backbone={transformer!r}" if isinstance(transformer, str) else "backbone='resnet18'"
            raise TypeError(
                f"transformer must be a CNNFeatureTransformer or None; got {transformer!r}. "
                f"For example: LayerSearchCV(CNNFeatureTransformer({example}), layers=...)."
            )
        if not isinstance(transformer.backbone, str):
            raise ValueError(
                f"LayerSearchCV searches the layers of one backbone; the transformer has "
                f"backbone={transformer.backbone!r}. Search each backbone with its own LayerSearchCV."
            )
        return transformer

    def _poolings(self, transformer: CNNFeatureTransformer) -> list[str]:
        """The poolings searched: ``poolings``, or the transformer's followed by the defaults."""
        if self.poolings is not None:
            return list(pooling_names(self.poolings))
        return list(dict.fromkeys([*pooling_names(transformer.pooling), *DEFAULT_POOLINGS]))

    def _ttas(self, transformer: CNNFeatureTransformer, images: list, y: np.ndarray) -> list:
        """The test-time views searched: ``ttas``; for ``"auto"`` the transformer's and those of the
        symmetries that keep the class (``symmetries_``, measured)."""
        self.symmetries_ = None
        if self.ttas is None:
            return [transformer.tta]
        if isinstance(self.ttas, str):  # "auto", as validated
            candidate, kept = measured_views(transformer, images, y)
            self.symmetries_ = None if kept is None else sorted(kept)
            return list(dict.fromkeys([transformer.tta, *([candidate] if candidate else [])]))
        if not self.ttas:
            raise ValueError("ttas must list at least one of None, 'flips' and 'dihedral', or be 'auto' or None.")
        return list(dict.fromkeys(self.ttas))

    def _views(self, transformer: CNNFeatureTransformer, images: list, ttas: list) -> list[dict]:
        """The input sizes searched, each with each of ``ttas``, as the transformer parameters that give it."""
        sizes = [transformer.input_size, NATIVE] if self.input_sizes is None else list(self.input_sizes)
        if not sizes:
            raise ValueError("input_sizes must list at least one size (an int, a pair, None or 'native'), or be None.")
        views = []
        for size in sizes:
            if isinstance(size, str) and size == NATIVE:
                side = self._native_side(transformer, images)
                view = None if side is None else {"input_size": side, "crop": False}
            else:
                view = {"input_size": size, "crop": transformer.crop}
            if view is not None and view not in views:
                views.append(view)
        views = views or [{"input_size": transformer.input_size, "crop": transformer.crop}]
        searched = []
        for view in views:
            for tta in ttas:
                # "auto" measured its views at the transformer's input: a rectangle of another size is not turned.
                entry = {**view, "tta": _fitting(tta, view["input_size"]) if isinstance(self.ttas, str) else tta}
                if entry not in searched:
                    searched.append(entry)
        return searched

    def _native_side(self, transformer: CNNFeatureTransformer, images: list) -> int | None:
        """``"native"``: the images' median shorter side (None where the transformer's input keeps it)."""
        backbone = load_backbone(transformer.backbone, transformer.weights, transformer.device)
        recipe = backbone.preprocessing.with_input_size(checked_input_size(transformer.input_size))
        return native_input_size([image_size(image) for image in images], recipe)

    def _candidates(
        self, transformer: CNNFeatureTransformer, view: dict, poolings: list[str]
    ) -> tuple[list[str], str | None]:
        """The layers to tap, and the one among them whose average is the penultimate code (or None)."""
        if self.layers is None:
            layers = candidate_layers(transformer.backbone, view["input_size"])
            # The last map, pooled another way than the average (which the penultimate code is).
            averaged = None if poolings == ["avg"] else last_map(transformer.backbone, view["input_size"])
            if averaged is not None:
                layers.insert(-1, averaged)
            return layers, averaged
        layers = list(self.layers)
        if not layers or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(f"layers must be a non-empty list of layer names or None; got {self.layers!r}.")
        return layers, None

    def _usable(self, y: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
        """Which images the search uses (not those that failed, ``on_error="skip"``), and their labels."""
        keep = np.ones(n_images, dtype=bool)
        keep[[failure.index for failure in self.failed_]] = False
        if not keep.any():
            raise BadImagesError(self.failed_)
        warn_bad_images(self.failed_, n_images, stacklevel=3, where="of the search; see failed_")
        return keep, y[keep]

    def _classifier(self, y: np.ndarray, folds: list):
        """The given classifier; None for the default logistic regression, once checked that every
        class has two images in every training split (the SVM's calibration folds need them)."""
        if self.classifier not in (None, LOGISTIC):
            return self.classifier
        smallest = min(np.unique(y[train], return_counts=True)[1].min() for train, _ in folds)
        if smallest < 2:
            raise ValueError(
                f"A class has {smallest} image(s) in a training split of cv={self.cv!r}: too few to tune "
                "the default classifier. Give more images per class, a smaller cv, or a classifier."
            )
        return None

    def summary(self) -> str:
        """The results as a plain-text table, best candidate marked.

        Returns
        -------
        table : str
            One line per candidate: layer, pooling, input size, depth,
            dimension, mean and standard deviation of the score over the folds.
        """
        check_is_fitted(self, "cv_results_")
        results = self.cv_results_
        width = max(len("layer"), *(len(layer) for layer in results["layer"]))
        inputs = max(len("input"), *(len(size) for size in results["input"]))
        named = max(len("classifier"), *(len(name) for name in results["classifier"]))
        lines = [
            f"  {'layer':<{width}}  {'pooling':<7}  {'input':<{inputs}}  {'depth':>5}  {'dimension':>9}  "
            f"{'classifier':<{named}}  score (mean +/- std over {self.n_splits_} folds)"
        ]
        for row, layer in enumerate(results["layer"]):
            mark = "*" if row == self.best_index_ else " "
            lines.append(
                f"{mark} {layer:<{width}}  {results['pooling'][row] or '-':<7}  {results['input'][row]:<{inputs}}  "
                f"{results['depth'][row]:>5}  {results['n_features'][row]:>9}  {results['classifier'][row]:<{named}}  "
                f"{results['mean_test_score'][row]:.3f} +/- {results['std_test_score'][row]:.3f}"
            )
        return "\n".join(lines)

    def plot(self, ax=None, *, label=None):
        """Score against depth, a curve per pooling and input size, with error bars.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; ``None`` makes a new figure.
        label : str or None, default=None
            Legend label of the curves (several searches can share an ax);
            each curve's pooling and input size follow it.

        Returns
        -------
        ax : matplotlib Axes
            Call ``ax.figure.savefig("layers.png")`` to keep it.
        """
        check_is_fitted(self, "cv_results_")
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plot() needs matplotlib: pip install 'skcnn[plot]'.") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
        results = self.cv_results_
        curves = _curves(results)
        first = results["classifier"] == results["classifier"][0]  # the classifier every candidate was scored by
        for (pooling, size), rows in curves.items():
            name = f"{pooling or 'codes'}, {size}" if len(curves) > 1 else None
            ax.errorbar(
                results["depth"][rows],
                results["mean_test_score"][rows],
                yerr=results["std_test_score"][rows],
                marker="o",
                capsize=4,
                label=" ".join(part for part in (label, name) if part) or None,
            )
        if not first.all():  # the kernel classifier's few candidates: points, not curves
            ax.plot(
                results["depth"][~first], results["mean_test_score"][~first], "kx", label=" ".join(
                    part for part in (label, "RBF SVM on the best codes") if part)
            )  # fmt: skip
        depths = {int(depth): layer for depth, layer in zip(results["depth"], results["layer"], strict=True)}
        ax.set_xticks(list(depths), list(depths.values()), rotation=30, ha="right")
        ax.set_xlabel(f"layer of {self.transformer_.backbone} (forward order)")
        ax.set_ylabel(f"cross-validated score ({self.n_splits_} folds)")
        ax.grid(alpha=0.3)
        if label is not None or len(curves) > 1 or not first.all():
            ax.legend()
        return ax

    @available_if(_best_has("predict"))
    def predict(self, X):
        """Predict with ``best_estimator_``.

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self.best_estimator_.predict(X)

    @available_if(_best_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from ``best_estimator_``.

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self.best_estimator_.predict_proba(X)

    @available_if(_best_has("decision_function"))
    def decision_function(self, X):
        """Decision function of ``best_estimator_``.

        Parameters
        ----------
        X : sequence of images

        Returns
        -------
        scores : ndarray
        """
        return self.best_estimator_.decision_function(X)

    def score(self, X, y):
        """Score of ``best_estimator_`` on ``X, y`` with this search's scoring.

        Parameters
        ----------
        X : sequence of images
        y : array-like of shape (n_samples,)

        Returns
        -------
        score : float
        """
        check_is_fitted(self, "best_estimator_")
        return check_scoring(self.best_estimator_, scoring=self._scoring())(self.best_estimator_, X, y)

    def _scoring(self):
        return "accuracy" if self.scoring is None else self.scoring

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


#: The entry of ``input_sizes`` that stands for the images' own size, seen whole.
NATIVE = "native"


@dataclass(frozen=True)
class _Candidate:
    """One row of the search: a layer pooled one way at one input size, and
    where its codes are (the extraction of that size, the columns)."""

    layer: str
    pooling: str | None  # None: a vector, which no pooling changes
    view: int
    input_size: object
    crop: bool | float
    tta: str | None
    resolved_size: tuple[int, int]
    depth: int
    columns: slice

    def params(self, transformer: CNNFeatureTransformer) -> dict:
        """The transformer parameters that give this candidate's codes."""
        pooling = self.pooling or transformer.pooling
        return {
            "layer": self.layer,
            "pooling": pooling,
            "input_size": self.input_size,
            "crop": self.crop,
            "tta": self.tta,
        }


@dataclass(frozen=True)
class _Row:
    """One row of ``cv_results_``: a candidate's codes and the classifier cross-validated on them."""

    candidate: _Candidate
    label: str
    classifier: object  # cross-validated
    refit: object  # fitted on all the data for best_estimator_


def _kernel_row(candidate: _Candidate, C: float, class_weight, calibration_cv: int) -> _Row:
    """The RBF SVM of strength ``C`` on ``candidate``'s codes; refit calibrated, so that the search's
    ``predict_proba`` is there whichever classifier wins (cross-validation needs none: labels are scored)."""
    svm, calibrated = kernel_classifier(C, class_weight), kernel_classifier(C, class_weight, calibration_cv)
    return _Row(candidate, f"svm C={C:g}", svm, calibrated)


def ranked(results: dict, rows: np.ndarray | None = None) -> list[int]:
    """The rows of ``cv_results_`` (among ``rows``, a boolean mask; None: all), best mean score first;
    ties go to the steadier, then the deeper candidate, then the first."""
    means, stds, depths = results["mean_test_score"], results["std_test_score"], results["depth"]
    among = np.flatnonzero(np.ones(len(means), dtype=bool) if rows is None else rows)
    return sorted(among.tolist(), key=lambda row: (-means[row], stds[row], -depths[row], row))


def best_index(results: dict, rows: np.ndarray | None = None) -> int:
    """The first of :func:`ranked`: the best row of ``cv_results_``."""
    return ranked(results, rows)[0]


def _classifier_label(classifier) -> str:
    """How ``cv_results_`` names a given classifier: the estimator's class (a pipeline's last step's)."""
    last = classifier.steps[-1][1] if isinstance(classifier, Pipeline) else classifier
    return type(last).__name__


def _view_candidates(fitted: CNNFeatureTransformer, view: dict, index: int) -> list[_Candidate]:
    """The candidates of one extraction: each tapped layer, and within it each pooling's columns."""
    depths = {layer.name: depth for depth, layer in enumerate(list_layers(fitted.backbone, fitted.input_size_))}
    poolings = pooling_names(fitted.pooling)
    candidates, start = [], 0
    for layer in fitted.layers_:
        widths = pooled_widths(fitted.layer_shapes_[layer], poolings)
        names = poolings if len(widths) == len(poolings) and len(fitted.layer_shapes_[layer]) > 1 else (None,)
        for pooling, width in zip(names, widths, strict=True):
            candidates.append(
                _Candidate(
                    layer, pooling, index, view["input_size"], view["crop"], view["tta"], fitted.input_size_,
                    depths[layer],
                    slice(start, start + width),
                )
            )  # fmt: skip
            start += width
    return candidates


def _fitting(tta: str | None, input_size) -> str | None:
    """``tta``, or the flips where it turns by 90 degrees and ``input_size`` is a rectangle."""
    size = checked_input_size(input_size)
    rectangle = size is not None and size[0] != size[1]
    return "flips" if rectangle and symmetry.needs_square(tta) else tta


def _input_label(candidate: _Candidate) -> str:
    height, width = candidate.resolved_size
    crop = "" if candidate.crop is True else ", no crop" if candidate.crop is False else f", crop {candidate.crop}"
    tta = "" if candidate.tta is None else f", tta {candidate.tta}"
    return f"{height}x{width}{crop}{tta}"


def _results(rows: list[_Row], scores: np.ndarray, fit_times: np.ndarray) -> dict:
    candidates = [row.candidate for row in rows]
    means = scores.mean(axis=1)
    results = {
        "layer": np.asarray([c.layer for c in candidates], dtype=object),
        "pooling": np.asarray([c.pooling for c in candidates], dtype=object),
        "input_size": _objects([c.input_size for c in candidates]),
        "crop": np.asarray([c.crop for c in candidates], dtype=object),
        "tta": np.asarray([c.tta for c in candidates], dtype=object),
        "input": np.asarray([_input_label(c) for c in candidates], dtype=object),
        "depth": np.asarray([c.depth for c in candidates]),
        "n_features": np.asarray([c.columns.stop - c.columns.start for c in candidates]),
        "classifier": np.asarray([row.label for row in rows], dtype=object),
        "mean_test_score": means,
        "std_test_score": scores.std(axis=1),
    }
    for split in range(scores.shape[1]):
        results[f"split{split}_test_score"] = scores[:, split]
    # Rank 1 is best; ties share the best rank, as in GridSearchCV.
    results["rank_test_score"] = np.asarray([1 + int(np.sum(means > mean)) for mean in means])
    results["mean_fit_time"] = fit_times
    return results


def _objects(values: list) -> np.ndarray:
    """A 1-D object array of ``values`` (pairs stay pairs, not a second axis)."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _curves(results: dict) -> dict[tuple, np.ndarray]:
    """Rows of the first classifier (which scored every candidate) by (pooling, input) in the order met;
    vectors (no pooling) join every curve of their input."""
    first = results["classifier"] == results["classifier"][0]
    keys = list(dict.fromkeys(zip(results["pooling"][first], results["input"][first], strict=True)))
    pooled = [key for key in keys if key[0] is not None] or keys
    rows = {}
    for pooling, size in pooled:
        mask = first & (results["input"] == size) & np.asarray([p in (pooling, None) for p in results["pooling"]])
        rows[(pooling, size)] = np.flatnonzero(mask)
    return rows


def _moved_parameters_message(given: dict) -> str:
    """The error for the transformer's parameters given to LayerSearchCV itself."""
    moved = {name: value for name, value in given.items() if name in parameter_names()}
    unknown = sorted(set(given) - set(moved))
    if unknown:
        return f"LayerSearchCV got unexpected keyword arguments {unknown}."
    arguments = ", ".join(f"{name}={value!r}" for name, value in moved.items())
    return (
        f"LayerSearchCV takes the network's parameters through its transformer: write "
        f"LayerSearchCV(CNNFeatureTransformer({arguments}), layers=..., cv=...) instead of "
        f"LayerSearchCV({arguments}, ...). Every parameter of CNNFeatureTransformer is then "
        "available, and settable as transformer__<name>."
    )


__all__ = [
    "LayerSearchCV",
    "best_index",
    "default_classifier",
    "kernel_classifier",
    "logistic_classifier",
    "logistic_path",
    "ranked",
]
