"""``LayerSearchCV``: which layer's codes classify best, from one extraction.

The candidate layers are tapped together in one forward pass per image (with
a cache, every later search is served from it); a classifier is then
cross-validated on each layer's slice of the codes with the same folds.
"""

from __future__ import annotations

import os
import time
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .images import as_image_list
from .layers import candidate_layers, list_layers
from .pooling import POOLINGS, n_codes
from .transformer import CNNFeatureTransformer

#: Inverse regularisation strengths the default classifier chooses from.
DEFAULT_CS = np.logspace(-4, 2, 7)


def default_classifier(inner_cv: int = 3):
    """Standardised codes into a logistic regression whose ``C`` is tuned by
    an inner ``inner_cv``-fold cross-validation: regularised, as few images
    and many codes call for."""
    options = dict(Cs=DEFAULT_CS, cv=inner_cv, scoring="accuracy", max_iter=2000)
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

    All candidate layers are tapped in one forward pass per image (with
    ``cache``, stored so that later searches and transforms of any of them
    run no network at all); the classifier is then cross-validated on each
    layer's codes over the same folds. The result answers the transfer
    question *which layer* with evidence: early layers for data unlike
    ImageNet, the penultimate layer for data like it.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        The network, as for :class:`~skcnn.CNNFeatureTransformer`.
    layers : list of str or None, default=None
        Candidate layers; ``None``: one per stage from early to penultimate
        (:func:`skcnn.layers.candidate_layers`).
    classifier : estimator or None, default=None
        Trained on each layer's codes; ``None``: standardised codes into a
        logistic regression whose ``C`` is tuned by nested cross-validation.
    cv : int, cross-validation generator or iterable, default=5
        Folds, as for :func:`sklearn.model_selection.cross_validate`
        (an int means stratified folds for a classifier).
    scoring : str, callable or None, default=None
        The classifier's ``score`` (accuracy) when ``None``.
    refit : bool, default=True
        Fit ``best_estimator_``, a pipeline of the best layer's transformer
        and the classifier, on all the data.
    n_jobs : int or None, default=None
        Parallel classifier fits (the network runs once, before).
    weights, pooling, relu, input_size, batch_size, device, progress, cache
        Passed to :class:`~skcnn.CNNFeatureTransformer`.

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
    classes_ : ndarray
        The class labels.
    n_splits_ : int
        The number of folds.
    extraction_time_ : float
        Seconds spent computing (or reading) the codes of all candidates.

    See Also
    --------
    skcnn.advise_layer : A recommendation from the data's size and its
        similarity to ImageNet, without labels' cross-validation.

    Examples
    --------
    >>> from skcnn import LayerSearchCV
    >>> from skcnn.datasets import load_texture_patches
    >>> X, y = load_texture_patches(n_per_class=6, patch_size=32)
    >>> search = LayerSearchCV(layers=["blocks.1", "penultimate"], input_size=64, cv=3).fit(X, y)
    >>> search.cv_results_["layer"].tolist()
    ['blocks.1', 'penultimate']
    >>> search.best_layer_ in ("blocks.1", "penultimate")
    True
    >>> search.predict(X[:2]).shape
    (2,)
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "layers": [list, tuple, None],
        "classifier": [HasMethods(["fit", "predict"]), None],
        "cv": ["cv_object"],
        "scoring": [str, callable, None],
        "refit": ["boolean"],
        "n_jobs": [Integral, None],
        "weights": [str, os.PathLike, None],
        "pooling": [StrOptions(set(POOLINGS))],
        "relu": ["boolean"],
        "input_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, object],
        "progress": ["boolean", StrOptions({"auto"})],
        "cache": [str, os.PathLike, None],
    }

    def __init__(
        self,
        backbone="efficientnet_lite0",
        layers=None,
        classifier=None,
        *,
        cv=5,
        scoring=None,
        refit=True,
        n_jobs=None,
        weights="DEFAULT",
        pooling="avg",
        relu=True,
        input_size=None,
        batch_size=8,
        device="auto",
        progress="auto",
        cache=None,
    ):
        self.backbone = backbone
        self.layers = layers
        self.classifier = classifier
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.n_jobs = n_jobs
        self.weights = weights
        self.pooling = pooling
        self.relu = relu
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.cache = cache

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
        layers = self._candidates()
        transformer = self._transformer(layers)
        start = time.perf_counter()
        codes = transformer.fit(images).transform(images)
        self.extraction_time_ = time.perf_counter() - start
        cv = check_cv(self.cv, y, classifier=True)
        folds = list(cv.split(codes, y))
        classifier = self._classifier(y, folds)
        self.n_splits_ = len(folds)
        scorer = check_scoring(classifier, scoring=self.scoring)
        scores, fit_times = [], []
        for columns in self._layer_columns(transformer):
            result = cross_validate(
                clone(classifier), codes[:, columns], y, cv=folds, scoring=scorer, n_jobs=self.n_jobs
            )
            scores.append(result["test_score"])
            fit_times.append(result["fit_time"].mean())
        self.cv_results_ = self._results(transformer, np.asarray(scores), np.asarray(fit_times))
        self.best_index_ = int(np.argmax(self.cv_results_["mean_test_score"]))
        self.best_layer_ = layers[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.classes_ = np.unique(y)
        if self.refit:
            best = self._transformer(self.best_layer_).fit(images)
            columns = self._layer_columns(transformer)[self.best_index_]
            fitted = clone(classifier).fit(codes[:, columns], y)
            self.best_estimator_ = Pipeline([("cnnfeaturetransformer", best), ("classifier", fitted)])
        return self

    def _candidates(self) -> list[str]:
        if self.layers is None:
            return candidate_layers(self.backbone, self.input_size)
        layers = list(self.layers)
        if not layers or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(f"layers must be a non-empty list of layer names or None; got {self.layers!r}.")
        return layers

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

    def _transformer(self, layer) -> CNNFeatureTransformer:
        return CNNFeatureTransformer(
            backbone=self.backbone,
            weights=self.weights,
            layer=layer,
            pooling=self.pooling,
            relu=self.relu,
            input_size=self.input_size,
            batch_size=self.batch_size,
            device=self.device,
            progress=self.progress,
            cache=self.cache,
        )

    def _layer_columns(self, transformer: CNNFeatureTransformer) -> list[slice]:
        """Each tapped layer's columns in the concatenated codes."""
        widths = [n_codes(transformer.layer_shapes_[layer], self.pooling) for layer in transformer.layers_]
        ends = np.cumsum(widths)
        return [slice(int(end - width), int(end)) for end, width in zip(ends, widths, strict=True)]

    def _results(self, transformer: CNNFeatureTransformer, scores: np.ndarray, fit_times: np.ndarray) -> dict:
        order = {layer.name: depth for depth, layer in enumerate(list_layers(self.backbone, transformer.input_size_))}
        means = scores.mean(axis=1)
        results = {
            "layer": np.asarray(transformer.layers_, dtype=object),
            "depth": np.asarray([order[layer] for layer in transformer.layers_]),
            "n_features": np.asarray([columns.stop - columns.start for columns in self._layer_columns(transformer)]),
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
        ax.set_xlabel(f"layer of {self.backbone} (forward order)")
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
        return check_scoring(self.best_estimator_, scoring=self.scoring)(self.best_estimator_, X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags


__all__ = ["LayerSearchCV", "default_classifier"]
