"""Tests of skcnn.decoding.jpeg and the JPEG path of skcnn.images: Pillow's pixels, faster."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from skcnn.decoding import jpeg
from skcnn.images import ImageError, load_image


def photo_jpeg(path, size=(640, 480), **params) -> bytes:
    """A natural photo (scikit-image's CC0 coffee) with grain, saved as a JPEG."""
    rng = np.random.default_rng(0)
    pixels = np.asarray(Image.fromarray(skimage.data.coffee()).resize(size, Image.BICUBIC)).astype(np.int16)
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, **{"quality": 90, **params})
    return path.read_bytes()


def pillow_pixels(data: bytes, scale: int = 1) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        jpeg.draft(im, scale)
        im.load()
        return np.asarray(ImageOps.exif_transpose(im))


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="4:2:0"),
        pytest.param({"subsampling": 0}, id="4:4:4"),
        pytest.param({"progressive": True}, id="progressive"),
    ],
)
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_simplejpeg_decodes_pillows_pixels_at_every_scale(tmp_path, params, scale):
    data = photo_jpeg(tmp_path / "photo.jpg", **params)
    with Image.open(io.BytesIO(data)) as header:
        fast = jpeg.decode(data, header, scale)
    expected = pillow_pixels(data, scale)
    assert fast is not None and fast.dtype == np.uint8
    assert fast.shape == expected.shape == (-(-480 // scale), -(-640 // scale), 3)
    np.testing.assert_array_equal(fast, expected)


def test_gray_jpeg_decodes_to_one_channel_as_pillow(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(skimage.data.camera()).save(path, quality=90)
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as header:
        fast = jpeg.decode(data, header, 2)
    assert fast.shape == (256, 256, 1)
    np.testing.assert_array_equal(fast[..., 0], pillow_pixels(data, 2))
    np.testing.assert_array_equal(load_image(path), np.asarray(Image.open(path))[..., None])


def test_cmyk_and_damaged_jpegs_are_left_to_pillow(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(skimage.data.coffee()[:64, :80]).convert("CMYK").save(cmyk)
    with Image.open(cmyk) as header:
        assert header.mode == "CMYK"
        assert jpeg.decode(cmyk.read_bytes(), header) is None
    assert load_image(cmyk).shape == (64, 80, 3)  # Pillow's CMYK -> RGB, as before

    data = photo_jpeg(tmp_path / "whole.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with Image.open(truncated) as header:
        assert jpeg.decode(truncated.read_bytes(), header) is None
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(truncated)  # Pillow's verdict, naming the file
    assert str(truncated) in str(info.value)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("min_side", [None, 100])
def test_every_exif_orientation_is_shown_as_pillow_shows_it(tmp_path, orientation, min_side):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    photo_jpeg(path, size=(480, 360), exif=exif)
    scale = jpeg.dct_scale((480, 360), min_side)
    assert scale == (1 if min_side is None else 2)
    expected = pillow_pixels(path.read_bytes(), scale)
    result = load_image(path, min_side=min_side)
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)
    assert result.flags.c_contiguous


def test_mpo_decodes_its_first_picture(tmp_path):
    first, second = skimage.data.coffee()[:96, :128], skimage.data.chelsea()[:96, :128]
    path = tmp_path / "camera.mpo"
    Image.fromarray(first).save(path, format="MPO", save_all=True, append_images=[Image.fromarray(second)])
    with Image.open(path) as im:
        assert im.format == "MPO"
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(load_image(path), expected)


@pytest.mark.parametrize(
    "size, min_side, scale",
    [
        ((4032, 3024), None, 1),
        ((4032, 3024), 256, 8),  # 378 px: draft's rule, the resize target itself
        ((4032, 3024), 512, 4),  # 756 px: auto's rule, twice the target
        ((3024, 4032), 512, 4),  # portrait: the shorter side decides
        ((4032, 3024), 1600, 1),  # no scale keeps 1600
        ((1000, 750), 512, 1),
        ((1000, 750), 256, 2),
        ((2048, 1024), 512, 2),  # 1024 // 2 == 512 exactly
        ((7, 5), 1, 4),
        ((7, 5), 0, 4),
    ],
)
def test_dct_scale_keeps_the_shorter_side_at_least_min_side(size, min_side, scale):
    assert jpeg.dct_scale(size, min_side) == scale
    if min_side:
        assert min(jpeg.scaled_size(size, scale)) >= min_side
