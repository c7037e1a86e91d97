"""Tests of skcnn.images: which containers X may be, and decoding one image."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skcnn.images import ImageError, as_image_list, describe, load_image


def _rgb(height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def png_path(tmp_path) -> tuple[pathlib.Path, np.ndarray]:
    pixels = _rgb()
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


# ---------------------------------------------------------------------------
# as_image_list: accepted containers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda paths: list(paths), id="list"),
        pytest.param(lambda paths: tuple(paths), id="tuple"),
        pytest.param(lambda paths: np.array(paths, dtype=object), id="object-array"),
        pytest.param(lambda paths: np.array(paths), id="str-array"),
        pytest.param(lambda paths: pd.Series(paths, index=[10, 20, 30]), id="series"),
        pytest.param(lambda paths: pd.DataFrame({"file": paths}), id="one-column-frame"),
    ],
)
def test_as_image_list_containers_of_paths(make):
    paths = ["a.png", "dir/b.jpg", "c.jpeg"]
    result = as_image_list(make(paths))
    assert isinstance(result, list)
    assert result == paths
    assert all(type(p) is str for p in result)


def test_as_image_list_keeps_image_objects_of_a_list():
    pil = Image.fromarray(_rgb())
    array = _rgb(seed=1)
    result = as_image_list([pil, array, "x.png"])
    assert len(result) == 3
    assert result[0] is pil
    assert result[1] is array
    assert result[2] == "x.png"


def test_as_image_list_series_keeps_positional_order():
    series = pd.Series(["first.png", "second.png"], index=[5, 2])
    assert as_image_list(series) == ["first.png", "second.png"]


def test_as_image_list_multi_column_dataframe_raises_naming_column_count():
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1], "extra": [1.0, 2.0]})
    with pytest.raises(ImageError, match="3 columns") as info:
        as_image_list(frame)
    assert "one column" in str(info.value)
    assert "path" in str(info.value) and "label" in str(info.value)


@pytest.mark.parametrize("shape", [(4, 20, 24), (4, 20, 24, 1), (4, 20, 24, 3), (4, 20, 24, 4)])
def test_as_image_list_splits_stacked_uint8_arrays(shape):
    stacked = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    result = as_image_list(stacked)
    assert len(result) == shape[0]
    for i, image in enumerate(result):
        assert image.shape == shape[1:]
        np.testing.assert_array_equal(image, stacked[i])


def test_as_image_list_stacked_images_decode_per_channel_layout():
    gray = np.random.default_rng(0).integers(0, 256, size=(2, 16, 20), dtype=np.uint8)
    rgba = np.random.default_rng(1).integers(0, 256, size=(2, 16, 20, 4), dtype=np.uint8)
    assert [load_image(im).shape for im in as_image_list(gray)] == [(16, 20, 1)] * 2
    assert [load_image(im).shape for im in as_image_list(rgba)] == [(16, 20, 3)] * 2


def test_as_image_list_float_stack():
    stacked = np.random.default_rng(0).random((3, 8, 9, 3)).astype(np.float32)
    result = as_image_list(stacked)
    assert len(result) == 3
    np.testing.assert_array_equal(result[2], stacked[2])


@pytest.mark.parametrize("single", ["photo.png", pathlib.Path("photo.png")], ids=["str", "path"])
def test_as_image_list_rejects_single_path(single):
    with pytest.raises(ImageError, match=r"Wrap it in a list"):
        as_image_list(single)


def test_as_image_list_rejects_single_pil_image():
    with pytest.raises(ImageError, match="single"):
        as_image_list(Image.fromarray(_rgb()))


def test_as_image_list_rejects_2d_feature_table():
    table = np.random.default_rng(0).random((10, 5))
    with pytest.raises(ImageError, match="not 2-D feature tables") as info:
        as_image_list(table)
    assert "(10, 5)" in str(info.value)


def test_as_image_list_rejects_int():
    with pytest.raises(ImageError, match="int"):
        as_image_list(7)


def test_as_image_list_rejects_2d_string_array():
    with pytest.raises(ImageError, match="1-D"):
        as_image_list(np.array([["a.png", "b.png"], ["c.png", "d.png"]]))


def test_image_error_is_a_value_error():
    # scikit-learn's conventions: bad input data raise ValueError.
    assert issubclass(ImageError, ValueError)


# ---------------------------------------------------------------------------
# load_image: one picture, any form, same array
# ---------------------------------------------------------------------------


def test_load_image_path_pil_and_array_agree(png_path):
    path, pixels = png_path
    from_str = load_image(str(path))
    from_pathlib = load_image(path)
    with Image.open(path) as im:
        from_pil = load_image(im)
    from_array = load_image(pixels)
    assert from_array.dtype == np.uint8  # 8-bit sources stay uint8: no float copy of the picture
    assert from_array.shape == (32, 48, 3)
    for other in (from_str, from_pathlib, from_pil):
        assert other.dtype == np.uint8
        np.testing.assert_array_equal(other, from_array)
    np.testing.assert_array_equal(from_array, pixels)


def test_load_image_jpeg_path_equals_pil_decoding(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_rgb(40, 56)).save(path, quality=80)
    with Image.open(path) as im:
        expected = np.asarray(im)
    result = load_image(path)
    assert result.shape == (40, 56, 3) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)  # simplejpeg decodes Pillow's pixels


def test_load_image_gray_pil_stays_one_channel():
    gray = np.random.default_rng(0).integers(0, 256, size=(24, 30), dtype=np.uint8)
    result = load_image(Image.fromarray(gray, mode="L"))
    assert result.shape == (24, 30, 1)
    np.testing.assert_array_equal(result[:, :, 0], gray)


def test_load_image_gray_png_path_stays_one_channel(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, size=(24, 30), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(gray, mode="L").save(path)
    result = load_image(path)
    assert result.shape == (24, 30, 1)
    np.testing.assert_array_equal(result, load_image(gray))


def test_load_image_gray_array_shapes_agree():
    gray = np.random.default_rng(0).integers(0, 256, size=(12, 14), dtype=np.uint8)
    two_d = load_image(gray)
    assert two_d.shape == (12, 14, 1)
    np.testing.assert_array_equal(load_image(gray[:, :, None]), two_d)


def test_load_image_rgba_drops_alpha():
    rgb = _rgb(20, 22)
    alpha = np.random.default_rng(5).integers(0, 256, size=(20, 22, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    expected = load_image(rgb)
    from_pil = load_image(Image.fromarray(rgba, mode="RGBA"))
    from_array = load_image(rgba)
    assert from_pil.shape == from_array.shape == (20, 22, 3)
    np.testing.assert_array_equal(from_pil, expected)
    np.testing.assert_array_equal(from_array, expected)


def test_load_image_rgba_png_path_drops_alpha(tmp_path):
    rgb = _rgb(20, 22)
    rgba = np.concatenate([rgb, np.full((20, 22, 1), 7, np.uint8)], axis=2)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    np.testing.assert_array_equal(load_image(path), load_image(rgb))


def test_load_image_palette_is_converted_to_rgb(tmp_path):
    palette_image = Image.fromarray(_rgb(16, 16)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    assert palette_image.mode == "P"
    expected = np.asarray(palette_image.convert("RGB"))
    result = load_image(palette_image)
    assert result.shape == (16, 16, 3)
    np.testing.assert_array_equal(result, expected)
    path = tmp_path / "palette.png"
    palette_image.save(path)
    np.testing.assert_array_equal(load_image(path), expected)


def test_load_image_cmyk_is_converted_to_rgb():
    cmyk = Image.fromarray(_rgb(12, 14)).convert("CMYK")
    result = load_image(cmyk)
    assert result.shape == (12, 14, 3)
    np.testing.assert_array_equal(result, np.asarray(cmyk.convert("RGB")))


def test_load_image_bilevel_mode_1():
    bits = np.random.default_rng(0).random((10, 12)) > 0.5
    result = load_image(Image.fromarray(bits).convert("1"))
    assert result.shape == (10, 12, 1) and result.dtype == np.uint8
    np.testing.assert_array_equal(result[:, :, 0], bits * np.uint8(255))
    np.testing.assert_array_equal(load_image(bits), result)  # a bool array: 0 and 255, as PIL's mode "1"


def test_load_image_uint16_scaled_by_65535(tmp_path):
    deep = np.random.default_rng(0).integers(0, 65536, size=(18, 26), dtype=np.uint16)
    deep[0, 0], deep[0, 1] = 0, 65535
    expected = (deep.astype(np.float32) / np.float32(65535))[:, :, None]

    from_array = load_image(deep)
    assert from_array.dtype == np.float32
    np.testing.assert_array_equal(from_array, expected)
    assert from_array.max() == 1.0 and from_array.min() == 0.0

    pil = Image.fromarray(deep)
    assert pil.mode.startswith("I;16")
    np.testing.assert_array_equal(load_image(pil), expected)

    path = tmp_path / "deep.png"
    pil.save(path)
    np.testing.assert_array_equal(load_image(path), expected)


def test_load_image_uint16_rgb_array():
    deep = np.random.default_rng(0).integers(0, 65536, size=(6, 7, 3), dtype=np.uint16)
    np.testing.assert_array_equal(load_image(deep), deep.astype(np.float32) / np.float32(65535))


def test_load_image_big_endian_16_bit_pil():
    deep = np.random.default_rng(0).integers(0, 65536, size=(6, 7), dtype=np.uint16)
    pil = Image.frombytes("I;16B", (7, 6), deep.astype(">u2").tobytes())
    np.testing.assert_array_equal(load_image(pil)[:, :, 0], deep.astype(np.float32) / np.float32(65535))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_image_unit_float_stays_float_and_matches_uint8_input(dtype):
    pixels = _rgb(20, 20)
    pixels[0, 0] = [0, 128, 255]
    as_float = pixels.astype(dtype) / dtype(255)
    result = load_image(as_float)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, pixels.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize(
    "low, high",
    [(-0.5, 0.5), (0.0, 255.0), (0.0, 1.0001)],
)
def test_load_image_float_out_of_range_names_range(low, high):
    image = np.full((8, 8, 3), 0.5, np.float32)
    image[0, 0, 0], image[1, 1, 1] = low, high
    with pytest.raises(ImageError, match=r"\[0, 1\]") as info:
        load_image(image)
    assert f"[{low:g}, {high:g}]" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_image_float_nan_or_inf_raises(bad):
    image = np.full((8, 8), 0.5, np.float32)
    image[3, 3] = bad
    with pytest.raises(ImageError, match="NaN"):
        load_image(image)


def test_load_image_rejects_unsupported_dtype_and_shape():
    with pytest.raises(ImageError, match="int64"):
        load_image(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(ImageError, match=r"\(8, 8, 2\)"):
        load_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageError, match="got int"):
        load_image(3)


def test_load_image_rejects_32_bit_pil_modes():
    with pytest.raises(ImageError, match="'I'"):
        load_image(Image.fromarray(np.zeros((4, 4), np.int32), mode="I"))
    with pytest.raises(ImageError, match="'F'"):
        load_image(Image.fromarray(np.zeros((4, 4), np.float32), mode="F"))


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = _rgb(32, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    with Image.open(path) as stored:
        assert stored.getexif()[0x0112] == 6
        assert stored.size == (48, 32)  # stored un-rotated
        displayed = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))

    result = load_image(path)
    assert result.shape == (48, 32, 3)  # height and width swapped
    np.testing.assert_array_equal(result, displayed)


def test_load_image_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "missing.png"
    with pytest.raises(ImageError, match="not found") as info:
        load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError) as info:
        load_image(str(path))
    assert str(path) in str(info.value)


def test_load_image_directory_names_path(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ImageError, match="directory") as info:
        load_image(folder)
    assert str(folder) in str(info.value)


def test_load_image_text_file_named_jpg_names_path(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "not an image" in str(info.value)


def test_load_image_truncated_jpeg_names_path(tmp_path):
    whole = tmp_path / "whole.jpg"
    Image.fromarray(_rgb(64, 64)).save(whole, quality=90)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        load_image(truncated)
    assert str(truncated) in str(info.value)


def test_describe_names_paths_and_indices():
    assert describe("a/b.png", 3) == "image 3 ('a/b.png')"
    assert "b.png" in describe(pathlib.Path("a/b.png"), 0)
    assert describe(np.zeros((2, 2)), 5) == "image 5"
