"""``LayerSearchCV``: which layer's codes classify best, from one extraction.

The candidate layers are tapped together in one forward pass per image (with
a cache, every later search is served from it); a classifier is then
cross-validated on each layer's slice of the codes with the same folds.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .compat import HasMethods, _fit_context
from .images import BadImagesError, as_image_list
from .layers import candidate_layers, list_layers
from .options import parameter_names
from .transformer import CNNFeatureTransformer

#: Inverse regularisation strengths the default classifier chooses from.
DEFAULT_CS = np.logspace(-4, 2, 7)
#: What the inner cross-validation that tunes ``C`` maximises.
INNER_SCORING = "neg_log_loss"


def default_classifier(inner_cv: int = 3):
    """Standardised codes into a logistic regression whose ``C`` is tuned by
    an inner ``inner_cv``-fold cross-validation: regularised, as few images
    and many codes call for.

    ``C`` is chosen by log-loss: on folds of a few images per class accuracy
    ties across ``C`` and the tie went to the smallest (benchmarks/RESULTS.md,
    "Learning curves")."""
    options = dict(Cs=DEFAULT_CS, cv=inner_cv, scoring=INNER_SCORING, max_iter=2000)
    if "use_legacy_attributes" in LogisticRegressionCV().get_params():  # scikit-learn >= 1.8: L2 by l1_ratios
        options.update(use_legacy_attributes=False, l1_ratios=(0.0,))
    return make_pipeline(StandardScaler(), LogisticRegressionCV(**options))


def _best_has(method: str):
    def check(self) -> bool:
        check_is_fitted(self, "best_estimator_")
        return hasattr(self.best_estimator_, method)

    return check


class LayerSearchCV(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Cross-validate a classifier on the codes of each candidate layer.

    A meta-estimator, like :class:`~sklearn.model_selection.GridSearchCV`:
    it clones the :class:`~skcnn.CNNFeatureTransformer` it is given, with
    every one of its parameters (visible and settable as
    ``transformer__pooling`` through ``get_params`` / ``set_params``), and
    sets its ``layer`` itself. All candidate layers are tapped in one
    forward pass per image (with the transformer's ``cache``, stored so
    that later searches and transforms of any of them run no network at
    all); the classifier is then cross-validated on each layer's codes over
    the same folds. The result answers the transfer question *which layer*
    with evidence: early layers for data unlike ImageNet, the penultimate
    layer for data like it.

    Parameters
    ----------
    transformer : CNNFeatureTransformer or None, default=None
        The network and how it computes codes (backbone, weights, pooling,
        input size, cache, precision, ``on_error`` ...), one backbone.
        ``None``: ``CNNFeatureTransformer()``. Its ``layer`` is ignored: the
        candidates are tapped.
    layers : list of str or None, default=None
        Candidate layers; ``None``: one per stage from early to penultimate
        (:func:`skcnn.candidate_layers`).
    classifier : estimator or None, default=None
        Trained on each layer's codes; ``None``: standardised codes into a
        logistic regression whose ``C`` is tuned by nested cross-validation.
    cv : int, cross-validation generator or iterable, default=5
        Folds, as for :func:`sklearn.model_selection.cross_validate`
        (an int means stratified folds for a classifier).
    scoring : str, callable or None, default=None
        ``None``: accuracy (what a classifier's ``score`` gives, except the
        default classifier's, whose ``score`` is the log-loss it tunes ``C`` by).
    refit : bool, default=True
        Fit ``best_estimator_``, a pipeline of the best layer's transformer
        and the classifier, on all the data.
    n_jobs : int or None, default=None
        Parallel classifier fits (the network runs once, before).
    **transformer_params
        Not accepted: the transformer's parameters (``backbone``,
        ``pooling``, ...) go to ``transformer``; passing one here raises a
        ``TypeError`` that shows the call to write instead.

    Attributes
    ----------
    cv_results_ : dict of ndarrays
        One entry per candidate: ``layer``, ``depth`` (position in
        :func:`skcnn.list_layers`, 0 = first), ``n_features``,
        ``mean_test_score``, ``std_test_score``, ``split<k>_test_score``,
        ``rank_test_score`` and ``mean_fit_time``; a pandas DataFrame
        takes it as it is.
    best_index_ : int
        Row of the best candidate in ``cv_results_``.
    best_layer_ : str
        The layer with the best mean score.
    best_score_ : float
        Its mean cross-validated score.
    best_estimator_ : Pipeline
        The best layer's transformer and the classifier fitted on all the
        data (``refit=True``).
    transformer_ : CNNFeatureTransformer
        The fitted clone of ``transformer`` that tapped every candidate.
    classes_ : ndarray
        The class labels.
    n_splits_ : int
        The number of folds.
    failed_ : list of ImageFailure
        Images left out of the search because they could not be used
        (with ``transformer.on_error="skip"``; with ``"raise"``, the default,
        a bad image stops the search instead).
    extraction_time_ : float
        Seconds spent computing (or reading) the codes of all candidates.

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
    >>> search.cv_results_["layer"].tolist()
    ['blocks.1', 'penultimate']
    >>> search.best_layer_ in ("blocks.1", "penultimate")
    True
    >>> search.predict(X[:2]).shape
    (2,)
    >>> search.get_params()["transformer__input_size"]
    64
    """

    _parameter_constraints: dict = {
        "transformer": "no_validation",  # checked in fit, with a message that shows the call
        "layers": [list, tuple, None],
        "classifier": [HasMethods(["fit", "predict"]), None],
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
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Extract every candidate's codes once, then cross-validate each.

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
        layers = self._candidates(transformer)
        self.transformer_ = clone(transformer).set_params(layer=layers)
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Images that failed are left out below, with a warning of the search's own.
            warnings.filterwarnings("ignore", "[0-9]+ of [0-9]+ images could not be used", UserWarning)
            codes = self.transformer_.fit(images).transform(images)
        self.extraction_time_ = time.perf_counter() - start
        self.failed_ = self.transformer_.failed_
        codes, y = self._usable(codes, y, len(images))
        cv = check_cv(self.cv, y, classifier=True)
        folds = list(cv.split(codes, y))
        classifier = self._classifier(y, folds)
        self.n_splits_ = len(folds)
        scorer = check_scoring(classifier, scoring=self._scoring())
        columns = self._layer_columns()
        scores, fit_times = [], []
        for layer_columns in columns:
            result = cross_validate(
                clone(classifier), codes[:, layer_columns], y, cv=folds, scoring=scorer, n_jobs=self.n_jobs
            )
            scores.append(result["test_score"])
            fit_times.append(result["fit_time"].mean())
        self.cv_results_ = self._results(np.asarray(scores), np.asarray(fit_times))
        self.best_index_ = int(np.argmax(self.cv_results_["mean_test_score"]))
        self.best_layer_ = layers[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.classes_ = np.unique(y)
        if self.refit:
            best = clone(transformer).set_params(layer=self.best_layer_).fit(images)
            fitted = clone(classifier).fit(codes[:, columns[self.best_index_]], y)
            self.best_estimator_ = Pipeline([("cnnfeaturetransformer", best), ("classifier", fitted)])
        return self

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

    def _candidates(self, transformer: CNNFeatureTransformer) -> list[str]:
        if self.layers is None:
            return candidate_layers(transformer.backbone, transformer.input_size)
        layers = list(self.layers)
        if not layers or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(f"layers must be a non-empty list of layer names or None; got {self.layers!r}.")
        return layers

    def _usable(self, codes: np.ndarray, y: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes and labels without the images that failed (``on_error="skip"``)."""
        if not self.failed_:
            return codes, y
        keep = np.ones(n_images, dtype=bool)
        keep[[failure.index for failure in self.failed_]] = False
        if not keep.any():
            raise BadImagesError(self.failed_, codes)
        warnings.warn(
            f"LayerSearchCV: {len(self.failed_)} of {n_images} images could not be used and are left out "
            f"of the search (see failed_). First: {self.failed_[0]}",
            UserWarning,
            stacklevel=3,
        )
        return codes[keep], y[keep]

    def _classifier(self, y: np.ndarray, folds: list):
        if self.classifier is not None:
            return self.classifier
        # The inner folds that tune C must fit in the smallest class of every training split.
        smallest = min(np.unique(y[train], return_counts=True)[1].min() for train, _ in folds)
        if smallest < 2:
            raise ValueError(
                f"A class has {smallest} image(s) in a training split of cv={self.cv!r}: too few to tune "
                "the default classifier. Give more images per class, a smaller cv, or a classifier."
            )
        return default_classifier(inner_cv=min(3, int(smallest)))

    def _layer_columns(self) -> list[slice]:
        """Each tapped layer's columns in the concatenated codes."""
        widths = self.transformer_.extractor_.plan.widths
        ends = np.cumsum([widths[layer] for layer in self.transformer_.layers_])
        return [
            slice(int(end - widths[layer]), int(end))
            for end, layer in zip(ends, self.transformer_.layers_, strict=True)
        ]

    def _results(self, scores: np.ndarray, fit_times: np.ndarray) -> dict:
        transformer = self.transformer_
        order = {
            layer.name: depth for depth, layer in enumerate(list_layers(transformer.backbone, transformer.input_size_))
        }
        means = scores.mean(axis=1)
        results = {
            "layer": np.asarray(transformer.layers_, dtype=object),
            "depth": np.asarray([order[layer] for layer in transformer.layers_]),
            "n_features": np.asarray([columns.stop - columns.start for columns in self._layer_columns()]),
            "mean_test_score": means,
            "std_test_score": scores.std(axis=1),
        }
        for split in range(scores.shape[1]):
            results[f"split{split}_test_score"] = scores[:, split]
        # Rank 1 is best; ties share the best rank, as in GridSearchCV.
        results["rank_test_score"] = np.asarray([1 + int(np.sum(means > mean)) for mean in means])
        results["mean_fit_time"] = fit_times
        return results

    def summary(self) -> str:
        """The results as a plain-text table, best layer marked.

        Returns
        -------
        table : str
            One line per candidate: layer, depth, dimension, mean and
            standard deviation of the score over the folds.
        """
        check_is_fitted(self, "cv_results_")
        results = self.cv_results_
        width = max(len("layer"), *(len(layer) for layer in results["layer"]))
        lines = [
            f"  {'layer':<{width}}  {'depth':>5}  {'dimension':>9}  score (mean +/- std over {self.n_splits_} folds)"
        ]
        for row, layer in enumerate(results["layer"]):
            mark = "*" if row == self.best_index_ else " "
            lines.append(
                f"{mark} {layer:<{width}}  {results['depth'][row]:>5}  {results['n_features'][row]:>9}  "
                f"{results['mean_test_score'][row]:.3f} +/- {results['std_test_score'][row]:.3f}"
            )
        return "\n".join(lines)

    def plot(self, ax=None, *, label=None):
        """Score against depth, one point per candidate, with error bars.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; ``None`` makes a new figure.
        label : str or None, default=None
            Legend label of the curve (several searches can share an ax).

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
        ax.errorbar(
            results["depth"],
            results["mean_test_score"],
            yerr=results["std_test_score"],
            marker="o",
            capsize=4,
            label=label,
        )
        ax.set_xticks(results["depth"], results["layer"], rotation=30, ha="right")
        ax.set_xlabel(f"layer of {self.transformer_.backbone} (forward order)")
        ax.set_ylabel(f"cross-validated score ({self.n_splits_} folds)")
        ax.grid(alpha=0.3)
        if label is not None:
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


__all__ = ["LayerSearchCV", "default_classifier"]
