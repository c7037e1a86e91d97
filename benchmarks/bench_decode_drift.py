"""How far DCT-scaled JPEG decoding moves the codes, as a function of how much it keeps.

A JPEG can be decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (Pillow's
``Image.draft``; ``simplejpeg.decode_jpeg(min_height=..., min_width=...)``
gives the same pixels), several times faster than a full decode on camera
photos. A decoding mode that does so only while the scaled image's shorter
side stays at least ``K`` times the resize target (the shorter side the
weights' preprocessing resizes to: 256 px for EfficientNet-Lite0 at 224 px)
needs ``K``; this script measures the drift that picks it.

The files: ``--n-per-size`` JPEGs per camera size (4032x3024 = 12 MP, the
main case, 3264x2448, 2592x1944, 1600x1200, 1280x960; every third one in
portrait), random 4:3 crops of scikit-image's bundled CC0 photos and
textures (the grey textures tinted), upscaled with PIL bicubic, given
Gaussian grain (``--grain``, per pixel and channel, on 0-255, as a sensor
does) and saved at ``--quality`` (4:2:0, Pillow's default) in a temporary
folder. The upscaled photos carry less fine detail than a real camera's:
what they have at full resolution is mostly the grain.

For each file: the exact (full-scale) decode, and the decode at each scale
s in (2, 4, 8) whose shorter side is still >= the resize target; all of them
go as uint8 arrays through one fitted ``CNNFeatureTransformer`` (fp32,
``decode="exact"``, layers ``--early`` and ``penultimate``), so exact and
scaled decodes take the same resize. Printed:

1. the relative L2 drift ``||codes_s - codes_exact|| / ||codes_exact||`` per
   layer, grouped by r = (scaled shorter side) / (resize target); [1b] the
   same with the pixels given as float32 in [0, 1] (resized in float: no
   rounding of the resized crop to uint8), which tells the drift of the
   DCT scaling itself from that of the uint8 resize (``--no-float`` skips it);
2. per candidate K, the rule "largest s with scaled shorter side >= K * 256,
   else exact": drift over all files (exact ones count as 0), the share of
   files scaled, and the mean Pillow decode time per file (best of 3, one
   thread) against exact decoding, for all files and for 12 MP alone;
3. references on the exact decodes: the drift that a change no eye sees
   causes (uniform {-1, 0, +1} per pixel and channel at full scale), the
   float path against the uint8 path on the same pixels, and bf16 against
   fp32 arithmetic (``precision="bf16"``, where the CPU has native bf16).

Run from the repository root (52 s on the 2-core benchmark VM, quiet; 127 s with another process busy)::

    python benchmarks/bench_decode_drift.py
    python benchmarks/bench_decode_drift.py --n-per-size 12 --seed 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from reporting import machine_line, table

BACKBONE = "efficientnet_lite0"
SCALES = (2, 4, 8)
CAMERA_SIZES = ((4032, 3024), (3264, 2448), (2592, 1944), (1600, 1200), (1280, 960))
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
)
TEXTURES = ("brick", "grass", "gravel")
BINS = ((1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 3.0), (3.0, 4.0), (4.0, 6.0), (6.0, math.inf))
CANDIDATE_K = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


# -- test images ----------------------------------------------------------------


def sources() -> list[np.ndarray]:
    """The bundled colour photos, and the grey textures as RGB (tinted per image later)."""
    import skimage.data

    images = []
    for name in PHOTOS + TEXTURES:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append(image[..., :3])
    return images


def camera_photo(source: np.ndarray, size: tuple[int, int], rng: np.random.Generator, grain: float) -> Image.Image:
    """A random crop of ``source`` at the aspect of ``size`` (w, h), upscaled, with grain."""
    w, h = size
    sh, sw = source.shape[:2]
    ch = min(sh, round(sw * h / w))
    ch = int(ch * rng.uniform(0.6, 1.0))
    cw = min(sw, round(ch * w / h))
    top, left = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = source[top : top + ch, left : left + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if crop.std(axis=2).mean() < 1:  # a grey texture: tint it
        crop = crop * rng.uniform(0.6, 1.0, 3)
    image = np.asarray(Image.fromarray(np.ascontiguousarray(crop, dtype=np.uint8)).resize(size, Image.BICUBIC))
    noisy = image.astype(np.float32) + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(grain)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def make_jpegs(folder: Path, n_per_size: int, seed: int, grain: float, quality: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    photos = sources()
    paths = []
    for w, h in CAMERA_SIZES:
        for i in range(n_per_size):
            size = (h, w) if i % 3 == 2 else (w, h)  # every third one in portrait
            source = photos[int(rng.integers(len(photos)))]
            path = folder / f"{w}x{h}_{i:02d}.jpg"
            camera_photo(source, size, rng, grain).save(path, quality=quality)
            paths.append(path)
    return paths


# -- decoding -------------------------------------------------------------------


def decode(path: Path, scale: int = 1) -> np.ndarray:
    """Pillow's decode, at 1/``scale`` through libjpeg's DCT scaling (``draft``)."""
    with Image.open(path) as image:
        if scale > 1:
            image.draft(None, (image.width // scale, image.height // scale))
        return np.asarray(image.convert("RGB"))


def decode_seconds(path: Path, scale: int, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        decode(path, scale)
        best = min(best, time.perf_counter() - start)
    return best


def scaled_shape(shape: tuple[int, int], scale: int) -> tuple[int, int]:
    """(h, w) libjpeg gives at 1/``scale``: each side rounded up."""
    return tuple(-(-side // scale) for side in shape)


def rounding_check(folder: Path) -> str:
    """On an odd-sized file: are scaled sides ceil(side / s) or side // s, and does simplejpeg agree?"""
    import simplejpeg

    rng = np.random.default_rng(0)
    path = folder / "odd.jpg"
    Image.fromarray(rng.integers(0, 256, (999, 1001, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    found = []
    for s in SCALES:
        got = decode(path, s)
        ceil, floor = scaled_shape((999, 1001), s), (999 // s, 1001 // s)
        rule = "ceil" if got.shape[:2] == ceil else "floor" if got.shape[:2] == floor else f"neither {got.shape[:2]}"
        assert rule in ("ceil", "floor"), rule
        other = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=ceil[0], min_width=ceil[1])
        same = "bit-identical" if np.array_equal(other, got) else "DIFFERENT"
        found.append(f"1/{s}: {got.shape[1]}x{got.shape[0]} = {rule} (simplejpeg: {same})")
    return "1001x999 file: " + "; ".join(found)


# -- codes ----------------------------------------------------------------------

#: How the decoded pixels reach skcnn: as the uint8 arrays themselves (resized
#: as skcnn resizes 8-bit pixels), or as float32 in [0, 1] (resized in float).
PATHS = ("uint8", "float")


@dataclass
class File:
    path: Path
    camera: str  # "4032x3024", orientation aside
    shape: tuple[int, int]  # (h, w)
    exact_seconds: float
    seconds: dict[int, float] = field(default_factory=dict)  # scale -> decode time
    drift: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)  # path -> scale -> layer -> drift
    references: dict[str, dict[str, float]] = field(default_factory=dict)  # reference -> layer -> drift

    def scaled_short(self, scale: int) -> int:
        return min(scaled_shape(self.shape, scale))


def relative_drift(codes: np.ndarray, reference: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        layer: float(np.linalg.norm(codes[cols] - reference[cols]) / np.linalg.norm(reference[cols]))
        for layer, cols in columns.items()
    }


def layer_columns(transformer) -> dict[str, np.ndarray]:
    names = transformer.get_feature_names_out()
    layers = np.array([name.split("__")[1] for name in names])
    return {layer: np.flatnonzero(layers == layer) for layer in dict.fromkeys(layers)}


def new_transformer(args, precision: str):
    from skcnn import CNNFeatureTransformer

    return CNNFeatureTransformer(
        backbone=BACKBONE,
        weights="DEFAULT",
        layer=[args.early, "penultimate"],
        precision=precision,
        decode="exact",
        progress=False,
    )


def as_float(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(255)


def one_lsb_noise(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pixels`` + uniform {-1, 0, +1} per pixel and channel: a change no eye sees."""
    return np.clip(pixels + rng.integers(-1, 2, pixels.shape, dtype=np.int16), 0, 255).astype(np.uint8)


def measure(args, paths: list[Path], bf16) -> tuple[list[File], int]:
    """Decode every file exactly and at each admissible scale, and the drift of their codes."""
    rng = np.random.default_rng(args.seed + 1)
    fp32 = None
    files = []
    for path in paths:
        exact = decode(path)
        if fp32 is None:
            fp32 = new_transformer(args, "fp32").fit([exact])
            resize = fp32.preprocessing_["resize_size"]
            columns = layer_columns(fp32)
            if bf16 is not None:
                bf16.fit([exact])
        h, w = exact.shape[:2]
        file = File(path, path.name.split("_")[0], (h, w), decode_seconds(path, 1))
        arrays, scales = [exact], []
        for s in SCALES:
            if file.scaled_short(s) < resize:
                continue
            array = decode(path, s)
            assert array.shape[:2] == scaled_shape((h, w), s), (path, s, array.shape)
            arrays.append(array)
            scales.append(s)
            file.seconds[s] = decode_seconds(path, s)
        codes = {"uint8": fp32.transform(arrays)}
        if not args.no_float:
            codes["float"] = fp32.transform([as_float(a) for a in arrays])
        for name, rows in codes.items():
            file.drift[name] = {
                s: relative_drift(row, rows[0], columns) for s, row in zip(scales, rows[1:], strict=True)
            }
        reference = codes["uint8"][0]
        noisy = fp32.transform([one_lsb_noise(exact, rng)])[0]
        file.references["+-1 LSB noise at full scale (uint8)"] = relative_drift(noisy, reference, columns)
        if "float" in codes:
            file.references["float vs uint8 path, same exact pixels"] = relative_drift(
                codes["float"][0], reference, columns
            )
        if bf16 is not None:
            file.references["bf16 vs fp32 (uint8)"] = relative_drift(bf16.transform([exact])[0], reference, columns)
        files.append(file)
    return files, resize


# -- reporting ----------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def drift_cells(values: list[dict[str, float]], layers: list[str]) -> list[str]:
    cells = []
    for layer in layers:
        column = [v[layer] for v in values]
        cells += [pct(statistics.median(column)), pct(max(column))] if column else ["-", "-"]
    return cells


def layer_header(layers: list[str], prefix: str = "") -> list[str]:
    header = []
    for layer in layers:
        header += [f"{prefix}{layer} median", f"{prefix}{layer} max"]
    return header


def chosen_scale(file: File, k: float, resize: int) -> int:
    """The rule: the largest s with scaled shorter side >= k * resize, else 1 (exact)."""
    for s in sorted(SCALES, reverse=True):
        if file.scaled_short(s) >= k * resize:
            return s
    return 1


def print_by_ratio(files: list[File], resize: int, layers: list[str], path: str) -> None:
    rows = []
    for low, high in BINS:
        pairs = [(f, s) for f in files for s in f.seconds if low <= f.scaled_short(s) / resize < high]
        label = f"[{low:g}, {high:g})" if high < math.inf else f"[{low:g}, +)"
        sizes = sorted({f"{f.camera} 1/{s}" for f, s in pairs}, key=lambda t: (-int(t.split("x")[0]), t))
        drifts = [f.drift[path][s] for f, s in pairs]
        rows.append([label, len(pairs), *drift_cells(drifts, layers), ", ".join(sizes)])
    table(["r", "n", *layer_header(layers), "camera size, scale"], rows)


def rule_drifts(subset: list[File], scales: list[int], path: str, layers: list[str]) -> list[dict[str, float]]:
    zero = dict.fromkeys(layers, 0.0)
    return [f.drift[path][s] if s > 1 else zero for f, s in zip(subset, scales, strict=True)]


def print_rules(files: list[File], resize: int, layers: list[str], paths: list[str]) -> dict:
    """The rule table; returns the smallest K (all files) with max penultimate drift < 2%, per path."""
    twelve = [f for f in files if f.camera == "4032x3024"]
    rows, chosen = [], {}
    for subset_name, subset in (("all", files), ("12 MP", twelve)):
        for k in CANDIDATE_K:
            scales = [chosen_scale(f, k, resize) for f in subset]
            cells = []
            for path in paths:
                drifts = rule_drifts(subset, scales, path, layers)
                cells += drift_cells(drifts, layers if path == "uint8" else ["penultimate"])
                worst = max(d["penultimate"] for d in drifts)
                if subset_name == "all" and worst < 0.02 and path not in chosen:
                    chosen[path] = (k, statistics.median(d["penultimate"] for d in drifts), worst)
            times = [f.seconds[s] if s > 1 else f.exact_seconds for f, s in zip(subset, scales, strict=True)]
            rule_t, exact_t = statistics.mean(times), statistics.mean(f.exact_seconds for f in subset)
            used = ", ".join(f"1/{s}: {scales.count(s)}" for s in SCALES if s in scales) or "-"
            share = sum(s > 1 for s in scales) / len(subset)
            rows.append(
                [
                    f"K = {k:g}",
                    subset_name,
                    len(subset),
                    *cells,
                    f"{share:.0%}",
                    used,
                    f"{1000 * rule_t:.1f}",
                    f"{1000 * exact_t:.1f}",
                    f"{exact_t / rule_t:.2f}x",
                ]
            )
    header = ["K", "files", "n", *layer_header(layers)]
    if "float" in paths:
        header += layer_header(["penultimate"], "float: ")
    table([*header, "scaled", "scales used", "rule ms", "exact ms", "speed-up"], rows)
    return chosen


def print_references(files: list[File], layers: list[str]) -> None:
    rows = []
    for name in files[0].references:
        for subset_name in ("all", "12 MP"):
            subset = [f.references[name] for f in files if subset_name == "all" or f.camera == "4032x3024"]
            rows.append([name, subset_name, len(subset), *drift_cells(subset, layers)])
    table(["reference (vs fp32 codes of the exact uint8 decode)", "files", "n", *layer_header(layers)], rows)


def native_bf16() -> str | None:
    """The CPU flag that gives native bf16, or None."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return next((flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-per-size", type=int, default=10, help="JPEG files per camera size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grain", type=float, default=6.0, help="sensor grain: Gaussian sigma on 0-255")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the files")
    parser.add_argument("--early", default="blocks.2", help="the early layer next to 'penultimate'")
    parser.add_argument("--no-float", action="store_true", help="skip the float-pixel path")
    args = parser.parse_args()

    import skcnn

    names = [layer.name for layer in skcnn.list_layers(BACKBONE)]
    if args.early not in names:
        sys.exit(f"{args.early!r} is not a layer of {BACKBONE}: {', '.join(names)}")
    start = time.perf_counter()
    import PIL
    import simplejpeg

    print(machine_line(PIL, simplejpeg))
    flag = native_bf16()
    bf16_note = f"native: {flag}" if flag else "skipped: no avx512_bf16 / amx_bf16 in /proc/cpuinfo"
    bf16 = new_transformer(args, "bf16") if flag else None

    with tempfile.TemporaryDirectory(prefix="skcnn_drift_") as tmp:
        folder = Path(tmp)
        paths = make_jpegs(folder, args.n_per_size, args.seed, args.grain, args.quality)
        print(
            f"files: {len(paths)} JPEGs, {args.n_per_size} per camera size (every third portrait), "
            f"grain sigma {args.grain:g}, quality {args.quality}, made in {time.perf_counter() - start:.0f} s"
        )
        table(
            ["camera size", "files", "mean file size"],
            [
                [
                    f"{w}x{h} ({w * h / 1e6:.1f} MP)",
                    len(group := [p for p in paths if p.name.startswith(f"{w}x{h}_")]),
                    f"{statistics.mean(p.stat().st_size for p in group) / 1e6:.2f} MB",
                ]
                for w, h in CAMERA_SIZES
            ],
        )
        print("scaled sizes: " + rounding_check(folder))
        files, resize = measure(args, paths, bf16)

    layers = ["penultimate", args.early]
    pixel_paths = [p for p in PATHS if p in files[0].drift]
    print(
        f"\ncodes: {BACKBONE}, weights DEFAULT, fp32, decode='exact', relative L2 drift "
        f"||codes_s - codes_exact|| / ||codes_exact||; resize target {resize} px"
    )
    print(
        f"\n[1] Drift of DCT-scaled vs exact decoding by r = scaled shorter side / {resize}, uint8 arrays (as decoded)"
    )
    print_by_ratio(files, resize, layers, "uint8")
    if "float" in pixel_paths:
        print("\n[1b] The same, the pixels given as float32 in [0, 1] (skcnn resizes them in float)")
        print_by_ratio(files, resize, layers, "float")
    print(
        f"\n[2] Rule 'largest s in (8, 4, 2) with scaled shorter side >= K * {resize}, else exact': drift over "
        "the set (exact files count as 0; uint8 arrays, 'float:' the float path), share scaled, "
        "mean Pillow decode time per file (best of 3, one thread)"
    )
    chosen = print_rules(files, resize, layers, pixel_paths)
    print(f"\n[3] References on the exact decodes (bf16: {bf16_note})")
    print_references(files, layers)
    print()
    for path in pixel_paths:
        if path in chosen:
            k, median, worst = chosen[path]
            print(
                f"smallest K with max penultimate drift < 2% over all files ({path} path): K = {k:g} "
                f"(median {pct(median)}, max {pct(worst)})"
            )
        else:
            print(f"no candidate K keeps the max penultimate drift under 2% over all files ({path} path)")
    print(f"elapsed: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
