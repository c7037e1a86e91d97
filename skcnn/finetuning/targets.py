"""What the new head predicts: one class per kind of target, one interface.

Fine-tuning is the same for every kind of target up to three places: the
loss the epochs minimise, the linear probe that starts the head (LP-FT), and
the score early stopping compares on the validation split. Each kind holds
those three, with how its targets become a tensor and whether the
validation split can be stratified by them:

=================  ==========================  ===============================  ===============================
kind               loss (per image)            probe (epoch 0)                  validation score
=================  ==========================  ===============================  ===============================
:class:`Classes`   softmax cross-entropy       logistic regression, ``C`` by    ``"accuracy"`` or
                                               inner CV                         ``"balanced_accuracy"``
:class:`Labels`    per-label sigmoid,          one logistic regression per      1 - Hamming loss, or the mean
                   binary cross-entropy,       label (the head's rows)          of the labels' balanced
                   mean over labels                                             accuracies
:class:`Values`    squared error on            ridge regression (``RidgeCV``)   R^2 (``r2_score``, mean over
                   standardised targets,       on standardised codes            the targets)
                   mean over targets
=================  ==========================  ===============================  ===============================

Every loss and score is weighted by the images' sample weights, where given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, hamming_loss, r2_score, recall_score
from sklearn.preprocessing import LabelEncoder
from torch import nn

from . import probe

#: The scores early stopping can compare for classes (``CNNClassifier``'s ``scoring``, ``skcnn.options.SCORINGS``),
#: each weighted by the validation images' sample weights.
SCORERS = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of per-image ``losses``, each times its weight (weights of mean 1 over the training split)."""
    return losses.mean() if weights is None else (losses * weights).mean()


@dataclass(frozen=True)
class Classes:
    """One class per image: softmax outputs, one per class (today's :class:`~skcnn.CNNClassifier`).

    Parameters
    ----------
    classes : ndarray or None, default=None
        The class labels, sorted (None where only the score is needed).
    scoring : {"accuracy", "balanced_accuracy"}, default="accuracy"
    """

    classes: np.ndarray | None = None
    scoring: str = "accuracy"
    #: The validation split can hold out images of every class in proportion.
    stratify = True

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def encode(self, y: np.ndarray) -> torch.Tensor:
        """Class indices, 0 to ``n_classes - 1``."""
        return torch.as_tensor(LabelEncoder().fit(self.classes).transform(y))

    def losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets, reduction="none")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        if weights is None:
            return nn.functional.cross_entropy(outputs, targets)
        return weighted_mean(self.losses(outputs, targets), weights)

    def probe(self, codes: np.ndarray, targets: torch.Tensor, weights: np.ndarray | None) -> tuple[nn.Linear, float]:
        """A logistic-regression probe (:func:`~skcnn.finetuning.probe.probe_head`)."""
        return probe.probe_head(codes, targets, weights, self.n_outputs)

    def score(self, outputs: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> float:
        """``scoring`` of the most probable classes."""
        return float(SCORERS[self.scoring](targets, outputs.argmax(1), sample_weight=weights))

    def size(self, y: np.ndarray) -> tuple[float, str, float]:
        """Images per class, the unit, and the multiple of ``FINE_TUNING_PAYS_FROM`` fine-tuning pays from."""
        return len(y) / len(np.unique(y)), "per class", 1.0

    def fold(self, head: nn.Linear) -> None:
        """Nothing to fold: the logits are the outputs."""


@dataclass(frozen=True)
class Labels:
    """Any number of labels per image (a binary indicator matrix): one sigmoid output per label.

    Parameters
    ----------
    n_labels : int
    scoring : {"accuracy", "balanced_accuracy"}, default="accuracy"
        ``"accuracy"``: the share of label decisions right (1 - Hamming loss);
        ``"balanced_accuracy"``: the mean over labels of each label's balanced
        accuracy (its recall of positives and of negatives, averaged), for rare labels.
    """

    n_labels: int
    scoring: str = "accuracy"
    #: A split stratified by every combination of labels would need several images of each.
    stratify = False

    @property
    def n_outputs(self) -> int:
        return self.n_labels

    def encode(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.float32)

    def losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_label = nn.functional.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), reduction="none")
        return per_label.mean(dim=1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return weighted_mean(self.losses(outputs, targets), weights)

    def probe(self, codes: np.ndarray, targets: torch.Tensor, weights: np.ndarray | None) -> tuple[nn.Linear, float]:
        """One logistic-regression probe per label (:func:`~skcnn.finetuning.probe.linear_probe`), the head's rows.

        A label that is constant on the probe's images (all its positives
        held out for validation) gets no weights and the bias of its
        smoothed rate.
        """
        y = targets.numpy().astype(int)
        rows, biases = [], []
        for column in y.T:
            if len(np.unique(column)) < 2:
                rate = (column.sum() + 0.5) / (len(column) + 1.0)
                rows.append(np.zeros((1, codes.shape[1])))
                biases.append(np.array([np.log(rate / (1 - rate))]))
                continue
            weight, bias = probe.linear_probe(codes, column, weights)
            rows.append(weight)
            biases.append(bias)
        return probe.fitted_head(np.vstack(rows), np.concatenate(biases), codes, targets, weights, self.losses)

    def score(self, outputs: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> float:
        """``scoring`` of the label decisions (logit > 0, probability > 0.5)."""
        predicted = (outputs > 0).astype(int)
        targets = targets.astype(int)
        if self.scoring == "accuracy":
            return float(1.0 - hamming_loss(targets, predicted, sample_weight=weights))
        # Balanced accuracy is the macro recall of the values the label takes; named, so that a label the
        # validation split holds one value of scores that value's recall (no warning to silence).
        scores = [
            recall_score(column, predicted[:, j], labels=np.unique(column), average="macro", sample_weight=weights)
            for j, column in enumerate(targets.T)
        ]
        return float(np.mean(scores))

    def size(self, y: np.ndarray) -> tuple[float, str, float]:
        """Positive images per label, on average."""
        return float(y.sum()) / y.shape[1], "positives per label", 1.0

    def fold(self, head: nn.Linear) -> None:
        """Nothing to fold: the logits are the outputs."""


@dataclass(frozen=True)
class Values:
    """Continuous targets, one output each, trained standardised.

    Parameters
    ----------
    mean, scale : ndarray of shape (n_targets,)
        Of the training targets: the head predicts ``(y - mean) / scale``
        until :meth:`fold` folds them into it.
    """

    mean: np.ndarray
    scale: np.ndarray
    stratify = False

    @classmethod
    def of(cls, y: np.ndarray) -> Values:
        """Standardising ``y`` of shape (n_images, n_targets); a constant target is refused."""
        scale = y.std(axis=0)
        constant = np.flatnonzero(~(scale > 0)).tolist()
        if constant:
            raise ValueError(f"y's target(s) {constant} take a single value; a regressor needs targets that vary.")
        return cls(y.mean(axis=0), scale)

    @property
    def n_outputs(self) -> int:
        return len(self.mean)

    def encode(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((y - self.mean) / self.scale, dtype=torch.float32)

    def losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs, targets.to(outputs.dtype), reduction="none").mean(dim=1)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return weighted_mean(self.losses(outputs, targets), weights)

    def probe(self, codes: np.ndarray, targets: torch.Tensor, weights: np.ndarray | None) -> tuple[nn.Linear, float]:
        """A ridge probe on standardised codes (:func:`~skcnn.finetuning.probe.ridge_probe`)."""
        weight, bias = probe.ridge_probe(codes, targets.numpy(), weights)
        return probe.fitted_head(weight, bias, codes, targets, weights, self.losses)

    def score(self, outputs: np.ndarray, targets: np.ndarray, weights: np.ndarray | None) -> float:
        """R^2, the mean over the targets (the same standardised or not)."""
        return float(r2_score(targets, outputs, sample_weight=weights))

    def size(self, y: np.ndarray) -> tuple[float, str | None, float]:
        """Images; fine-tuning pays from twice as many as per class (no measurement of our own yet)."""
        return float(len(y)), None, 2.0

    def fold(self, head: nn.Linear) -> None:
        """The de-standardisation folded into ``head``, in place: its outputs become the targets themselves."""
        scale = torch.as_tensor(self.scale, dtype=head.weight.dtype, device=head.weight.device)
        mean = torch.as_tensor(self.mean, dtype=head.bias.dtype, device=head.bias.device)
        with torch.no_grad():
            head.weight.mul_(scale[:, None])
            head.bias.mul_(scale).add_(mean)


__all__ = ["SCORERS", "Classes", "Labels", "Values", "weighted_mean"]
