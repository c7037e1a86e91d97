"""The training loop: which layers train, batch norm, learning rates, early stopping, checkpoints.

- **Which layers train.** ``"head"``, a layer name (that layer and every
  module the forward pass enters after it), or ``"all"``; the others keep
  ``requires_grad=False``.
- **Discriminative learning rates.** The new head trains at
  ``learning_rate``, the pretrained layers at ``learning_rate *
  backbone_lr_ratio``, both with AdamW under a one-cycle schedule (a short
  linear warmup, then cosine decay).
- **Batch norm.** ``"frozen"`` keeps every BatchNorm in eval mode in every
  epoch (a ``train()`` call does not undo it: the mode is set again after
  it), ``"adapt"`` first re-estimates the running statistics on the
  training images (AdaBN) and then freezes them, ``"train"`` lets them
  update.
- **Weights.** With sample weights (``class_weight``, ``sample_weight``)
  every batch's loss is the weighted mean of its images' losses, the
  weights scaled to a mean of 1 over the training split (so the learning
  rates mean the same as without), and the validation score is
  weighted too.
- **The kind of target** (:mod:`skcnn.finetuning.targets`: classes, labels,
  continuous values) gives the loss and the validation score.
- **Early stopping** on the validation split's score; the best epoch's
  weights are restored at the end. The started network (its head a linear
  probe) is scored first, as epoch 0: where no epoch beats it, it is kept.
  Epochs without improvement count toward the patience only once the
  learning rates have decayed to half their peak (:data:`PATIENCE_BELOW`).
  With ``Plan.views`` (``tta="auto"``'s candidate) every epoch is scored
  from one view and with the views, and judged by the better of the two.
- **Checkpoints.** With a path, every finished epoch is saved atomically;
  a run killed and started again with the same data and parameters goes
  on from the last finished epoch. Ctrl-C stops after the current batch
  and keeps the best weights so far.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..decoding import symmetry
from ..decoding.preprocessing import Preprocessing
from ..files import atomic_path
from . import targets
from .augment import augmented
from .model import set_mode
from .store import DecodedImages

#: Share of the steps the learning rates take to rise to their peak.
WARMUP_FRACTION = 0.1
#: Early stopping counts an epoch without improvement only where it ends with
#: every learning rate at most this share of its peak. Near the peak a
#: fine-tuned network often scores below the probe it started from and
#: recovers as the rates decay: on the ELPV solar cells (10 epochs) the
#: validation accuracy fell from the probe's 0.772 to 0.680 at epoch 3 and
#: rose to 0.807 at epoch 8, so a patience of 3 counted from the start kept
#: the probe (0.758 held out), counted from here epoch 8 (0.788;
#: benchmarks/RESULTS.md). The digits gallery dips at epochs 1-2 too.
PATIENCE_BELOW = 0.5


class Examples(NamedTuple):
    """Images (their uint8 crops), their encoded targets (:mod:`skcnn.finetuning.targets`), optionally weights."""

    images: DecodedImages
    targets: torch.Tensor
    weights: torch.Tensor | None = None

    def subset(self, rows: torch.Tensor) -> Examples:
        weights = None if self.weights is None else self.weights[rows]
        return Examples(self.images.subset(rows), self.targets[rows], weights)


@dataclass
class Plan:
    """Everything the loop needs besides the data: resolved parameters."""

    max_epochs: int
    batch_size: int
    learning_rate: float
    backbone_lr_ratio: float
    weight_decay: float
    batchnorm: str  # "frozen", "adapt" or "train"
    n_iter_no_change: int | None  # None: no early stopping
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    seed: int
    progress: bool = False
    checkpoint: Path | None = None
    fingerprint: str = ""
    #: What early stopping compares for classes: "accuracy" or "balanced_accuracy" (both weighted by
    #: sample weight), where ``target`` is None.
    scoring: str = "accuracy"
    #: The kind of target (:mod:`skcnn.finetuning.targets`): the loss, and the validation score.
    #: None: single-label classes scored by ``scoring``.
    target: targets.Classes | targets.Labels | targets.Values | None = None
    #: ``tta="auto"``'s candidate views (:mod:`skcnn.decoding.symmetry`), scored besides one view at every
    #: epoch: the kept epoch and views are the best of both (None: one view alone).
    views: str | None = None

    @property
    def kind(self) -> targets.Classes | targets.Labels | targets.Values:
        """``target``, or classes scored by ``scoring`` where it is None."""
        return self.target if self.target is not None else targets.Classes(scoring=self.scoring)


@dataclass
class State:
    """What a run has reached; saved with every checkpoint."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_score: float = -np.inf
    best_epoch: int = 0
    best_weights: dict | None = None
    stale: int = 0  # epochs since the best one
    start_score: float = np.nan  # validation score before the first epoch
    start_score_views: float = np.nan  # the same with Plan.views
    interrupted: bool = False


def trainable(network: nn.Module, head: str, unfreeze: str, example: torch.Tensor) -> tuple[list, list]:
    """Set ``requires_grad`` by ``unfreeze``; return (pretrained, head) parameters that train."""
    entered = _entry_order(network, example)
    if unfreeze == "all":
        start = 0
    elif unfreeze == "head":
        start = entered.index(head)
    else:
        if unfreeze not in entered:
            raise ValueError(f"unfreeze={unfreeze!r} is not a layer of the network; use a name from list_layers().")
        start = entered.index(unfreeze)
    training = set(entered[start:])
    pretrained, new = [], []
    for name, parameter in network.named_parameters():
        module = _owner(name, entered)
        parameter.requires_grad_(module in training)
        if parameter.requires_grad:
            (new if module == head or module.startswith(head + ".") else pretrained).append(parameter)
    return pretrained, new


def _entry_order(network: nn.Module, example: torch.Tensor) -> list[str]:
    """Module names in the order the forward pass enters them (parents before children)."""
    order: list[str] = []
    handles = [
        module.register_forward_pre_hook(
            lambda module, args, name=name: order.append(name) if name not in order else None
        )
        for name, module in network.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            network.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _owner(parameter: str, modules: list[str]) -> str:
    """The innermost module of ``modules`` that holds ``parameter``."""
    name = parameter.rpartition(".")[0]
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def adapt_batchnorm(network: nn.Module, images: DecodedImages, recipe: Preprocessing, plan: Plan) -> None:
    """AdaBN: every BatchNorm's running statistics re-estimated on ``images``."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all batches
    network.train()
    with torch.no_grad():
        for pixels in images.batches(range(len(images)), plan.batch_size):
            network(recipe.normalize(pixels).to(plan.device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def train(
    network: nn.Module,
    parameters: tuple[list, list],
    data: Examples,
    validation: Examples | None,
    recipe: Preprocessing,
    augment: Callable | None,
    plan: Plan,
) -> State:
    """Train ``network`` in place; return the final state, best weights loaded."""
    pretrained, head = parameters
    groups = [{"params": pretrained, "lr": plan.learning_rate * plan.backbone_lr_ratio}, {"params": head}]
    groups = [group for group in groups if group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    steps = plan.max_epochs * -(-len(data.targets) // plan.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group.get("lr", plan.learning_rate) for group in groups],
        total_steps=max(steps, 1),
        pct_start=WARMUP_FRACTION,
        anneal_strategy="cos",
    )
    scaler = torch.amp.GradScaler(plan.device.type) if plan.dtype == torch.float16 else None
    state = _resumed(plan, network, optimizer, schedule) or _started(network, validation, recipe, plan)
    while state.epoch < plan.max_epochs and not _stopping(state, plan):
        start = time.perf_counter()
        loss = _epoch(network, optimizer, schedule, scaler, data, recipe, augment, plan, state)
        state.epoch += 1
        # Without a validation split the last epoch is the one kept.
        scores = _scores(network, validation, recipe, plan) if validation is not None else (np.nan, np.nan)
        rates = [group["lr"] for group in optimizer.param_groups]
        state.history.append(
            {
                "epoch": state.epoch,
                "train_loss": loss,
                "validation_score": scores[0],
                "validation_score_views": scores[1],
                "learning_rates": rates,
                "seconds": time.perf_counter() - start,
            }
        )
        judged = scores if validation is not None else (float(state.epoch), np.nan)
        _keep_best(state, network, judged, counts=_decayed(optimizer))
        if state.interrupted:
            warnings.warn(
                f"fit interrupted in epoch {state.epoch}: the best weights so far (epoch {state.best_epoch}) are kept.",
                UserWarning,
                stacklevel=3,
            )
            break
        _save(plan, state, network, optimizer, schedule)
    if state.best_weights is not None:
        network.load_state_dict(state.best_weights)
    return state


def _started(network, validation, recipe: Preprocessing, plan: Plan) -> State:
    """A new run's state: the started network scored as epoch 0, so that
    fine-tuning keeps the probe head's weights unless an epoch beats them."""
    state = State()
    if validation is not None:
        state.start_score, state.start_score_views = _scores(network, validation, recipe, plan)
        _keep_best(state, network, (state.start_score, state.start_score_views))
    return state


def _stopping(state: State, plan: Plan) -> bool:
    return plan.n_iter_no_change is not None and state.stale >= plan.n_iter_no_change


def _epoch(network, optimizer, schedule, scaler, data, recipe, augment, plan: Plan, state: State) -> float:
    """One pass over the training images in a seeded order; the mean loss."""
    # Seeded per epoch (order, augmentation, dropout): a resumed run draws what the whole run would have.
    torch.manual_seed(plan.seed + state.epoch)
    n_images = len(data.targets)
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(plan.seed + state.epoch))
    weights = None if data.weights is None else data.weights / data.weights.mean()
    set_mode(network, True, plan.batchnorm)
    losses, seen = 0.0, 0
    bar = tqdm(total=n_images, unit="img", disable=not plan.progress, desc=f"epoch {state.epoch + 1}/{plan.max_epochs}")
    try:
        for start, pixels in zip(
            range(0, n_images, plan.batch_size), data.images.batches(order, plan.batch_size), strict=True
        ):
            rows = order[start : start + plan.batch_size]
            batch = recipe.normalize(augmented(pixels, augment)).to(plan.device)
            target = data.targets[rows].to(plan.device)
            with torch.autocast(plan.device.type, dtype=plan.dtype, enabled=plan.dtype is not None):
                batch_weights = None if weights is None else weights[rows].to(plan.device)
                loss = plan.kind.loss(network(batch), target, batch_weights)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            schedule.step()
            losses, seen = losses + loss.item() * len(rows), seen + len(rows)
            bar.update(len(rows))
    except KeyboardInterrupt:
        state.interrupted = True
    finally:
        bar.close()
    return losses / max(seen, 1)


def predict_logits(
    network: nn.Module, images: DecodedImages, recipe: Preprocessing, plan: Plan, tta: str | None = None
) -> torch.Tensor:
    """Logits of the decoded images, batched, in eval mode and inference mode; with ``tta`` averaged
    over each image's views (:mod:`skcnn.decoding.symmetry`), as prediction averages them."""
    set_mode(network, False, plan.batchnorm)
    views = symmetry.views(tta)
    out = []
    with torch.inference_mode():
        for pixels in images.batches(range(len(images)), plan.batch_size):
            logits = [network(recipe.normalize(view(pixels)).to(plan.device)).float() for view in views]
            out.append(torch.stack(logits).mean(dim=0).cpu())
    return torch.cat(out)


#: The scores early stopping can compare for classes, each weighted by the validation images' sample weights.
SCORERS = targets.SCORERS


def validation_score(network, validation: Examples, recipe: Preprocessing, plan: Plan, tta: str | None = None) -> float:
    """The validation images' score, the target kind's (``plan.kind.score``), weighted by their sample
    weights: for classes the share classified right (``"accuracy"``), or the mean of the per-class
    recalls (``"balanced_accuracy"``). ``tta``: from the logits averaged over each image's views."""
    outputs = predict_logits(network, validation.images, recipe, plan, tta).numpy()
    weights = None if validation.weights is None else validation.weights.double().numpy()
    if weights is not None and not weights.sum() > 0:
        return 0.0
    return plan.kind.score(outputs, validation.targets.numpy(), weights)


def _scores(network, validation: Examples, recipe: Preprocessing, plan: Plan) -> tuple[float, float]:
    """The validation score from one view, and with ``plan.views`` (NaN without)."""
    single = validation_score(network, validation, recipe, plan)
    return single, np.nan if plan.views is None else validation_score(network, validation, recipe, plan, plan.views)


def _keep_best(state: State, network: nn.Module, scores: tuple[float, float], counts: bool = True) -> None:
    """Keep the weights of a better score (the better of one view's and the views', ``scores``: which
    one gave it is read from the history); else count the epoch toward the patience where it ``counts``."""
    single, viewed = scores
    score = viewed if viewed > single else single  # NaN views never win
    if score > state.best_score:
        state.best_score, state.best_epoch, state.stale = score, state.epoch, 0
        state.best_weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    elif counts:
        state.stale += 1


def _decayed(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every learning rate has decayed to :data:`PATIENCE_BELOW` of its one-cycle peak."""
    return all(group["lr"] <= PATIENCE_BELOW * group["max_lr"] for group in optimizer.param_groups)


def _save(plan: Plan, state: State, network, optimizer, schedule) -> None:
    """The finished epoch, written to a temporary file, synced and renamed: a
    kill at any moment leaves the previous epoch's checkpoint or this one,
    and the temporary files of runs killed while saving are removed by the
    next save to the same path (:func:`skcnn.files.atomic_path`)."""
    if plan.checkpoint is None:
        return
    saved = {
        "fingerprint": plan.fingerprint,
        "state": {k: v for k, v in vars(state).items() if k != "interrupted"},
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
    }
    with atomic_path(plan.checkpoint) as temporary:
        torch.save(saved, temporary)


def _resumed(plan: Plan, network, optimizer, schedule) -> State | None:
    """The state of a checkpoint of this very run (same data and parameters), loaded."""
    if plan.checkpoint is None or not plan.checkpoint.is_file():
        return None
    try:
        saved = torch.load(plan.checkpoint, map_location=plan.device, weights_only=True)
    except Exception as exc:
        warnings.warn(
            f"checkpoint {os.fspath(plan.checkpoint)!r} cannot be read ({exc}); starting over.",
            UserWarning,
            stacklevel=4,
        )
        return None
    if saved.get("fingerprint") != plan.fingerprint:
        warnings.warn(
            f"checkpoint {os.fspath(plan.checkpoint)!r} is of other data or parameters; starting over "
            "(it is overwritten).",
            UserWarning,
            stacklevel=4,
        )
        return None
    network.load_state_dict(saved["network"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    return State(**copy.deepcopy(saved["state"]))
