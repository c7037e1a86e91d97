"""Tests of skcnn.codes.pooling: activations -> fixed-length codes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skcnn.codes.pooling import POOLINGS, PYRAMID_LEVELS, check_poolable, n_codes, to_codes


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)


def _expected_map(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return maps.mean(dim=(2, 3))
    if pooling == "max":
        return maps.amax(dim=(2, 3))
    if pooling == "gem":
        return maps.clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
    if pooling == "flatten":
        return maps.reshape(maps.shape[0], -1)
    return torch.cat(
        [
            F.adaptive_avg_pool2d(maps, 1).flatten(1),
            F.adaptive_avg_pool2d(maps, 2).flatten(1),
            F.adaptive_avg_pool2d(maps, 4).flatten(1),
        ],
        dim=1,
    )


# ---------------------------------------------------------------------------
# conv maps (N, C, H, W)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("hw", [(8, 8), (5, 7), (3, 3)])
def test_map_pooling_matches_manual_computation(pooling, hw):
    maps = _random(3, 6, *hw)
    codes = to_codes(maps, pooling, relu=False)
    expected = _expected_map(maps, pooling)
    assert codes.shape == expected.shape
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)


def test_pyramid_levels_are_1_2_4():
    assert PYRAMID_LEVELS == (1, 2, 4)
    maps = _random(2, 5, 8, 8)
    codes = to_codes(maps, "spp", relu=False)
    assert codes.shape == (2, 5 * (1 + 4 + 16))
    # the first block is the global average, the 2x2 block holds quadrant means
    torch.testing.assert_close(codes[:, :5], maps.mean(dim=(2, 3)))
    quadrants = codes[:, 5:25].reshape(2, 5, 2, 2)
    torch.testing.assert_close(quadrants[:, :, 0, 1], maps[:, :, :4, 4:].mean(dim=(2, 3)))
    torch.testing.assert_close(quadrants[:, :, 1, 0], maps[:, :, 4:, :4].mean(dim=(2, 3)))


def test_flatten_keeps_channel_major_order():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    codes = to_codes(maps, "flatten", relu=False)
    torch.testing.assert_close(codes[1], torch.arange(12, 24, dtype=torch.float32))


# ---------------------------------------------------------------------------
# vectors (N, D) and tokens (N, L, D)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", POOLINGS)
def test_vectors_pass_through_unchanged(pooling):
    vectors = _random(4, 10)
    codes = to_codes(vectors, pooling, relu=False)
    assert codes.shape == (4, 10)
    torch.testing.assert_close(codes, vectors, rtol=0, atol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_vectors_with_relu_are_clamped(pooling):
    vectors = _random(4, 10)
    codes = to_codes(vectors, pooling, relu=True)
    torch.testing.assert_close(codes, vectors.clamp_min(0), rtol=0, atol=0)
    assert (codes >= 0).all()


@pytest.mark.parametrize(
    "pooling, reduce",
    [("avg", lambda t: t.mean(dim=1)), ("max", lambda t: t.amax(dim=1))],
)
def test_tokens_pooled_over_sequence(pooling, reduce):
    tokens = _random(3, 7, 5)  # N, L, D
    codes = to_codes(tokens, pooling, relu=False)
    assert codes.shape == (3, 5)
    torch.testing.assert_close(codes, reduce(tokens), rtol=0, atol=0)


def test_tokens_flatten():
    tokens = _random(3, 7, 5)
    codes = to_codes(tokens, "flatten", relu=False)
    assert codes.shape == (3, 35)
    torch.testing.assert_close(codes, tokens.reshape(3, 35), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# ReLU before pooling
# ---------------------------------------------------------------------------


def test_relu_is_applied_before_average_pooling():
    maps = torch.tensor([[[[-1.0, 3.0]]]])  # (1, 1, 1, 2)
    codes = to_codes(maps, "avg", relu=True)
    # avg(relu(x)) = 1.5, whereas relu(avg(x)) = 1.0
    assert codes.shape == (1, 1)
    assert codes.item() == pytest.approx(1.5)
    assert codes.item() != pytest.approx(maps.mean().clamp_min(0).item())
    assert to_codes(maps, "avg", relu=False).item() == pytest.approx(1.0)


def test_relu_before_max_pooling_of_all_negative_map():
    maps = -torch.rand(2, 3, 4, 4) - 0.1
    assert (to_codes(maps, "max", relu=True) == 0).all()
    assert (to_codes(maps, "max", relu=False) < 0).all()


def test_relu_before_token_average():
    tokens = torch.tensor([[[-4.0], [2.0]]])  # (1, L=2, D=1)
    assert to_codes(tokens, "avg", relu=True).item() == pytest.approx(1.0)
    assert to_codes(tokens, "avg", relu=False).item() == pytest.approx(-1.0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_relu_matches_manual_for_every_map_pooling(pooling):
    maps = _random(2, 4, 6, 6, seed=3)
    torch.testing.assert_close(to_codes(maps, pooling, relu=True), _expected_map(maps.clamp_min(0), pooling))


def test_relu_does_not_modify_input():
    maps = _random(2, 4, 5, 5)
    before = maps.clone()
    to_codes(maps, "avg", relu=True)
    torch.testing.assert_close(maps, before, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# codes never alias the activation
# ---------------------------------------------------------------------------

_CASES = (
    [((2, 4, 5, 5), p) for p in POOLINGS]
    + [((2, 6, 3), p) for p in ("avg", "max", "flatten")]
    + [((2, 9), p) for p in POOLINGS]
)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape, pooling", _CASES)
def test_codes_do_not_share_memory_with_activation(shape, pooling, relu):
    activation = _random(*shape).abs() + 0.5  # positive, so ReLU is the identity
    codes = to_codes(activation, pooling, relu=relu)
    snapshot = codes.clone()
    activation.mul_(-3.0).add_(100.0)  # an in-place layer running after the tap
    torch.testing.assert_close(codes, snapshot, rtol=0, atol=0)
    assert codes.untyped_storage().data_ptr() != activation.untyped_storage().data_ptr()


def test_codes_of_a_view_do_not_share_memory():
    base = _random(2, 20)
    view = base[:, :8]  # a vector activation that is a view of a larger buffer
    codes = to_codes(view, "avg", relu=False)
    snapshot = codes.clone()
    base.zero_()
    torch.testing.assert_close(codes, snapshot, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# n_codes and check_poolable
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape, pooling", _CASES + [((3, 2, 2, 2), p) for p in POOLINGS])
def test_n_codes_matches_actual_width(shape, pooling):
    activation = _random(*shape)
    codes = to_codes(activation, pooling, relu=True)
    assert codes.ndim == 2
    assert codes.shape[0] == shape[0]
    assert n_codes(shape[1:], pooling) == codes.shape[1]


@pytest.mark.parametrize(
    "shape, pooling, expected",
    [
        ((64, 7, 7), "avg", 64),
        ((64, 7, 7), "max", 64),
        ((64, 7, 7), "flatten", 64 * 49),
        ((64, 7, 7), "spp", 64 * 21),
        ((197, 768), "avg", 768),
        ((197, 768), "flatten", 197 * 768),
        ((4096,), "spp", 4096),
        ((4096,), "flatten", 4096),
    ],
)
def test_n_codes_values(shape, pooling, expected):
    assert n_codes(shape, pooling) == expected


def test_check_poolable_rejects_spp_on_tokens():
    with pytest.raises(ValueError, match="spp") as info:
        check_poolable((197, 768), "spp")
    message = str(info.value)
    assert "(197, 768)" in message
    for allowed in ("'avg'", "'max'", "'flatten'"):
        assert allowed in message
    with pytest.raises(ValueError, match="spp"):
        n_codes((197, 768), "spp")


@pytest.mark.parametrize("shape", [(64, 7, 7), (197, 768), (10,)])
def test_check_poolable_rejects_unknown_pooling(shape):
    with pytest.raises(ValueError, match="median") as info:
        check_poolable(shape, "median")
    for allowed in POOLINGS:
        assert repr(allowed) in str(info.value)
    with pytest.raises(ValueError, match="median"):
        n_codes(shape, "median")


def test_check_poolable_rejects_unpoolable_rank():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        check_poolable((2, 3, 4, 5), "avg")


@pytest.mark.parametrize("shape", [(64, 7, 7), (10,)])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_check_poolable_accepts_valid_combinations(shape, pooling):
    assert check_poolable(shape, pooling) is None


def test_several_poolings_are_each_pooling_side_by_side():
    maps = _random(2, 4, 6, 6, seed=5)
    codes = to_codes(maps, ["avg", "gem", "max"], relu=True)
    assert codes.shape == (2, 12) and n_codes((4, 6, 6), ["avg", "gem", "max"]) == 12
    for block, pooling in enumerate(["avg", "gem", "max"]):
        torch.testing.assert_close(codes[:, 4 * block : 4 * block + 4], to_codes(maps, pooling, relu=True))
    vector = _random(2, 9)
    assert to_codes(vector, ["avg", "max"], relu=False).shape == (2, 9)  # a vector is pooled by nothing, once
    with pytest.raises(ValueError, match="distinct"):
        n_codes((4, 6, 6), ["avg", "avg"])
    with pytest.raises(ValueError, match="not one of"):
        n_codes((4, 6, 6), ["avg", "median"])


def test_gem_lies_between_average_and_max():
    maps = _random(3, 5, 7, 7, seed=2).clamp_min(0)
    gem = to_codes(maps, "gem", relu=True)
    assert (gem >= to_codes(maps, "avg", relu=True) - 1e-6).all() and (gem <= to_codes(maps, "max", relu=True)).all()
    # A small strong response (one pixel of 49) moves GeM far more than the average.
    spot = torch.zeros(1, 1, 7, 7)
    spot[0, 0, 3, 3] = 1.0
    assert to_codes(spot, "gem", relu=True).item() > 5 * to_codes(spot, "avg", relu=True).item()
