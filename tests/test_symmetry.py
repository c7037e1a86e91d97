"""The symmetries of the square: views, random draws, which ones keep the class, augmentation policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skcnn.decoding import symmetry
from skcnn.finetuning.augment import label_preserving, policy_augment, policy_for, resolve_augment, symmetries_kept


def test_views_are_the_flips_and_rotations_of_the_square():
    image = torch.arange(2 * 3 * 3).reshape(2, 3, 3)
    flips = [view(image) for view in symmetry.views("flips")]
    dihedral = [view(image) for view in symmetry.views("dihedral")]
    assert torch.equal(flips[0], image) and len(flips) == 4 and len(dihedral) == 8
    # Eight distinct arrangements of an asymmetric square, each a flip or rotation of it.
    assert len({tuple(view.flatten().tolist()) for view in dihedral}) == 8
    allowed = {tuple(torch.rot90(image, k, (1, 2)).flatten().tolist()) for k in range(4)}
    allowed |= {tuple(torch.rot90(image.flip(2), k, (1, 2)).flatten().tolist()) for k in range(4)}
    assert {tuple(view.flatten().tolist()) for view in dihedral} == allowed
    with pytest.raises(ValueError, match="Unknown symmetry policy"):
        symmetry.views("rotations")


def test_random_symmetry_keeps_every_pixel():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    draws = {tuple(symmetry.RandomSymmetry("dihedral")(image).flatten().tolist()) for _ in range(200)}
    assert len(draws) == 8  # every view is drawn
    for view in draws:
        assert sorted(view) == sorted(image.flatten().tolist())  # no crop, no resampling


def test_label_preserving_tells_a_symmetry_that_keeps_the_class_from_one_that_does_not():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1, 2], 60)
    centres = rng.normal(0, 3, size=(3, 16))
    codes = centres[targets] + rng.normal(size=(180, 16))
    kept = codes + rng.normal(scale=0.1, size=codes.shape)  # the view looks like its class
    changed = centres[(targets + 1) % 3] + rng.normal(size=(180, 16))  # the view looks like another class
    accuracies = label_preserving(codes, targets, {"hflip": kept, "vflip": changed})
    assert accuracies["hflip"][0] > 0.9 and accuracies["vflip"][0] < 0.2
    assert symmetries_kept(accuracies, len(targets)) == {"hflip"}


def test_policy_for_measured_symmetries():
    assert policy_for({"hflip", "vflip", "rot90"}) == "dihedral"
    assert policy_for({"hflip", "vflip"}) == "flips"
    assert policy_for({"hflip"}) == "photo"
    assert policy_for({"rot90"}) == "crop"


def test_augment_policies():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert policy_augment("flips", (16, 16))(image).shape == (3, 16, 16)
    assert policy_augment("crop", (12, 12))(image).shape == (3, 12, 12)
    assert policy_augment("photo", (16, 16))(image).shape == (3, 16, 16)
    assert resolve_augment("auto", (16, 16), "dihedral").policy == "dihedral"
    assert resolve_augment("flips", (16, 16)).policy == "flips"
    with pytest.raises(ValueError, match="square input_size"):
        policy_augment("dihedral", (16, 24))
    with pytest.raises(ValueError, match="augment must be"):
        resolve_augment("rotations", (16, 16))
