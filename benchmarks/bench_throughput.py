"""Throughput from JPEG files to codes, against the network's own limit and naive loops.

    python benchmarks/bench_throughput.py                 # limits, skcnn, naive, create_feature_extractor
    python benchmarks/bench_throughput.py --memory        # peak memory, 1,000 vs 10,000 images
    python benchmarks/bench_throughput.py --precision     # bf16/fp16 vs fp32: code error, accuracy
    python benchmarks/bench_throughput.py --compile       # adds torch.compile rows (cold compile timed)
    python benchmarks/bench_throughput.py --device cuda   # on a GPU host (default: auto)
    python benchmarks/bench_throughput.py --runtime       # torch vs ONNX Runtime, each run in a fresh process
    python benchmarks/bench_throughput.py --photos        # 12 MP phone photos and 500-1000 px files, fresh processes

``--photos`` adds a set of 12 MP phone photos (4032 x 3024, quality 90,
with sensor-like grain: about 3 MB each) beside the 500-1000 px set, and
compares skcnn's decode modes with a naive loop, each in its own process,
interleaved; with ``--baseline-src DIR`` (a checkout of an earlier skcnn)
that version's defaults run beside them.

The files: ``--n`` JPEGs (default 512) cut from scikit-image's bundled photos
and saved at camera-like sizes (longer side 500-1000 px, quality 90) in a
temporary folder. Every comparison runs in this one process, side by side,
in ``--rounds`` interleaved rounds; the best round of each is printed, and
ratios are between those. Backbones use random weights (``weights=None``):
the arithmetic is that of the pretrained network.

On a CPU-only machine the network and the decoding share the cores, so the
end-to-end limit is ``1 / (t_network + t_decode)`` per image, each measured
alone on all cores. On a GPU host they do not: the limit is the slower of
the two, and the script says which one it is.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from reporting import cpu_name
from torch import nn

from skcnn import CNNFeatureTransformer
from skcnn.codes.extraction import TapPlan, stored_codes_of_batch
from skcnn.decoding import loading
from skcnn.layers import probe_backbone
from skcnn.network import arithmetic, backbones, compiled
from skcnn.options import PRECISIONS

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def make_jpegs(
    folder: Path, n: int, seed: int = 0, *, sides=(500, 1000), min_fraction: float = 0.6, prefix: str = ""
) -> list[str]:
    """``n`` JPEG files, random crops (``min_fraction`` to all of each side) of the bundled
    photos, resized to a longer side in ``sides`` (inclusive)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        photo = photo[..., :3] if photo.ndim == 3 else np.stack([photo] * 3, axis=2)
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(min_fraction, 1.0)), int(w * rng.uniform(min_fraction, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[y : y + ch, x : x + cw])
        scale = int(rng.integers(sides[0], sides[1] + 1)) / max(crop.size)
        size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        crop = crop.resize(size, Image.BICUBIC)
        path = folder / f"{prefix}{i:04d}.jpg"
        crop.save(path, quality=90)
        paths.append(str(path))
    return paths


#: What phones write: 12 MP, quality 90 (``--photos``).
PHONE_SIZE = (4032, 3024)
PHONE_QUALITY = 90


def make_phone_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 12 MP JPEGs of the bundled photos with sensor-like grain (about 3 MB each).

    A crop of a photo is upscaled to 4032 x 3024 and Gaussian grain (sigma
    6 of 255, per pixel and channel) is added before saving, so the file
    holds as much fine detail as a phone's: a smooth upscale would
    compress to a third of the size and decode faster than real photos.
    Every fourth is stored as phones store portrait photos: landscape
    pixels with an EXIF orientation tag (6: turn by 90 degrees to show).
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        photo = photo if photo.ndim == 3 else np.stack([photo] * 3, axis=2)
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        big = np.asarray(Image.fromarray(photo[y : y + ch, x : x + cw, :3]).resize(PHONE_SIZE, Image.BICUBIC))
        grain = rng.standard_normal(big.shape, dtype=np.float32) * 6
        pixels = np.clip(big + grain, 0, 255).astype(np.uint8)
        exif = Image.Exif()
        if i % 4 == 3:
            exif[0x0112] = 6
        path = folder / f"IMG_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=PHONE_QUALITY, exif=exif)
        paths.append(str(path))
    return paths


def rate(seconds: float, n: int) -> float:
    return n / seconds


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class Subject:
    """One backbone's measurements, run side by side."""

    def __init__(self, name: str, precision: str, batch_size: int, device: str = "cpu"):
        self.name, self.precision, self.batch_size, self.device = name, precision, batch_size, device
        self.backbone = backbones.load_backbone(name, None, device)
        self.recipe = self.backbone.preprocessing
        layers, head = probe_backbone(self.backbone, self.recipe.crop_size)
        self.plan = TapPlan(("penultimate",), head, "avg", True, (layers[-1].shape,))
        self.inference = self.inference_with()

    def inference_with(self, **options) -> arithmetic.Inference:
        return arithmetic.inference_for(
            self.backbone,
            self.precision,
            keep=frozenset(self.plan.layers),
            input_size=self.recipe.crop_size,
            batch_size=self.batch_size,
            **options,
        )

    def first_batch_seconds(self, tensors: torch.Tensor, inference) -> float:
        """The first batch through ``inference``: with ``compile``, the compilation."""
        return timed(lambda: stored_codes_of_batch(self.backbone, tensors[: self.batch_size], self.plan, inference))

    def network_alone(self, tensors: torch.Tensor, inference=None, batch_size=None) -> float:
        inference = inference or self.inference
        batch_size = batch_size or self.batch_size
        stored_codes_of_batch(self.backbone, tensors[:batch_size], self.plan, inference)  # warm-up

        def run():
            for start in range(0, len(tensors), batch_size):
                stored_codes_of_batch(self.backbone, tensors[start : start + batch_size], self.plan, inference)

        return rate(timed(run), len(tensors))

    def decode_alone(self, paths, num_workers, **options) -> float:
        def run():
            for _ in loading.iter_batches(
                paths, range(len(paths)), self.recipe, self.batch_size, [], num_workers=num_workers, **options
            ):
                pass

        return rate(timed(run), len(paths))

    def skcnn(self, paths, **params) -> float:
        params = {"batch_size": self.batch_size, "precision": self.precision, "device": self.device, **params}
        cnn = CNNFeatureTransformer(backbone=self.name, weights=None, progress=False, **params).fit(paths)
        cnn.transform(paths[: params["batch_size"]])  # warm-up (builds the folded copy once)
        return rate(timed(lambda: cnn.transform(paths)), len(paths))

    def headless(self) -> nn.Module:
        network = copy.deepcopy(self.backbone.network)
        if hasattr(network, "reset_classifier"):
            network.reset_classifier(0)
        else:
            network.fc = nn.Identity()
        return network.eval()

    def peer_transform(self):
        from torchvision import transforms

        r = self.recipe
        return transforms.Compose(
            [
                transforms.Resize(r.resize_size, interpolation=r.interpolation),
                transforms.CenterCrop(r.crop_size),
                transforms.ToTensor(),
                transforms.Normalize(r.mean, r.std),
            ]
        )

    def naive(self, paths) -> float:
        """As peers do it: PIL open, torchvision transform, one image per forward, fp32."""
        network, transform = self.headless().to(self.device), self.peer_transform()

        def run():
            with torch.no_grad():
                for path in paths:
                    image = Image.open(path).convert("RGB")
                    network(transform(image).unsqueeze(0).to(self.device)).cpu().numpy()

        return rate(timed(run), len(paths))

    def feature_extractor(self, paths, batch_size=32) -> float:
        """torchvision's create_feature_extractor in a plain batched loop, fp32."""
        import timm.layers
        from torchvision.models.feature_extraction import create_feature_extractor

        node = "global_pool" if hasattr(self.backbone.network, "reset_classifier") else "flatten"
        extractor = (
            create_feature_extractor(
                copy.deepcopy(self.backbone.network),
                {node: "codes"},
                tracer_kwargs={"leaf_modules": [timm.layers.Conv2dSame]},
            )
            .eval()
            .to(self.device)
        )
        transform = self.peer_transform()

        def run():
            with torch.inference_mode():
                for start in range(0, len(paths), batch_size):
                    batch = torch.stack(
                        [transform(Image.open(p).convert("RGB")) for p in paths[start : start + batch_size]]
                    )
                    extractor(batch.to(self.device))["codes"].cpu().numpy()

        return rate(timed(run), len(paths))


def machine(device: str = "cpu") -> str:
    gpu = f", GPU: {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    return (
        f"{cpu_name()}, {loading.usable_cores()} usable cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, native bf16: {arithmetic.cpu_has_native_bf16()}{gpu}"
    )


def best(results: dict, key) -> float:
    return max(results[key])


#: torch.compile as ``compile=True`` gives it (inductor, weight freezing).
COMPILE = compiled.check_compile_options(True)


def main_run(args) -> None:
    device = str(backbones.resolve_device(args.device))
    print(f"machine: {machine(device)}\ndate: {datetime.date.today()}")
    if args.compile:  # a cold compilation: nothing reused from earlier runs' inductor cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.n)
        sizes = [Image.open(p).size for p in paths[:64]]
        print(f"{len(paths)} JPEGs, e.g. {sizes[:4]}, {sum(os.path.getsize(p) for p in paths) / 2**20:.1f} MiB")
        for name in args.backbones:
            subject = Subject(name, args.arithmetic, args.batch_size, device)
            tensors = torch.stack([subject.recipe(loading.image_io.load_image(p)) for p in paths])
            workers = loading.resolve_workers("auto")
            measures = {
                "network alone": lambda subject=subject, tensors=tensors: subject.network_alone(tensors),
                "decode alone (all cores)": lambda subject=subject: subject.decode_alone(paths, loading.usable_cores()),
                "skcnn end to end": lambda subject=subject: subject.skcnn(paths),
                "naive loop": lambda subject=subject: subject.naive(paths),
                "create_feature_extractor, batch 32": lambda subject=subject: subject.feature_extractor(paths),
            }
            if args.compile:
                compiled_inference = subject.inference_with(compile_options=COMPILE)
                compile_seconds = subject.first_batch_seconds(tensors, compiled_inference)
                measures["network alone, compiled"] = (
                    lambda subject=subject, tensors=tensors, inference=compiled_inference: subject.network_alone(
                        tensors, inference
                    )
                )
                measures["skcnn end to end, compile=True"] = lambda subject=subject: subject.skcnn(paths, compile=True)
            results: dict = {}
            for _ in range(args.rounds):
                for label, measure in measures.items():
                    results.setdefault(label, []).append(measure())
            report(name, subject, results, args, workers)
            if args.compile:
                print(f"  compilation (first batch, cold cache)    {compile_seconds:7.1f} s")
                print(
                    f"  compiled / eager, network alone          "
                    f"{best(results, 'network alone, compiled') / best(results, 'network alone'):7.2f}"
                )
                print(
                    f"  compiled / eager, skcnn end to end       "
                    f"{best(results, 'skcnn end to end, compile=True') / best(results, 'skcnn end to end'):7.2f}"
                )
            if args.details and device == "cpu":
                details(subject, paths[: args.details], tensors[: args.details])


def end_to_end_limit(network: float, decode: float, device: str) -> tuple[float, str]:
    """The fastest files -> codes rate the two stages allow (images/s), and what bounds it."""
    if device == "cpu":  # network and decoding share the cores
        return 1 / (1 / network + 1 / decode), "1/(t_net + t_decode)"
    # On a GPU host they run side by side: the slower one sets the pace.
    return min(network, decode), ("network-limited" if network <= decode else "decode-limited")


def report(name: str, subject: Subject, results: dict, args, workers: int) -> None:
    """Every measure, the end-to-end limit, and skcnn's ratios to it and to the peers."""
    net, dec = best(results, "network alone"), best(results, "decode alone (all cores)")
    limit, bound = end_to_end_limit(net, dec, subject.device)
    e2e = best(results, "skcnn end to end")
    precision = arithmetic.resolve_precision(subject.precision, subject.backbone.device)
    print(
        f"\n## {name}, {subject.device}, {precision}, batch {args.batch_size}, num_workers auto = {workers}, "
        f"best of {args.rounds} rounds (images/s; all rounds in brackets)"
    )
    for label, values in results.items():
        print(f"  {label:40s} {max(values):7.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
    print(f"  {'end-to-end limit, ' + bound:40s} {limit:7.1f}")
    # The same ratios within each round (measured minutes apart, under the same load).
    rounds = range(len(results["network alone"]))
    to_limit = [
        results["skcnn end to end"][i]
        / end_to_end_limit(results["network alone"][i], results["decode alone (all cores)"][i], subject.device)[0]
        for i in rounds
    ]
    to_naive = [results["skcnn end to end"][i] / results["naive loop"][i] for i in rounds]
    print(
        f"  skcnn / limit                            {e2e / limit:7.2f}  (goal >= 0.9)  "
        f"per round: median {np.median(to_limit):.2f} [{', '.join(f'{r:.2f}' for r in to_limit)}]"
    )
    print(
        f"  skcnn / naive loop                       {e2e / best(results, 'naive loop'):7.2f}  (goal >= 2.5)  "
        f"per round: median {np.median(to_naive):.2f} [{', '.join(f'{r:.2f}' for r in to_naive)}]"
    )
    fx = best(results, "create_feature_extractor, batch 32")
    print(f"  skcnn / create_feature_extractor         {e2e / fx:7.2f}")
    print(f"  create_feature_extractor / limit         {fx / limit:7.2f}")


def details(subject: Subject, paths, tensors) -> None:
    """Where the defaults come from: batch size, layout and folding, workers, bf16."""
    backbone, name = subject.backbone, subject.name
    variants = {
        "plain": arithmetic.Inference(backbone.network, backbone.device),
        "channels_last": arithmetic.inference_for(
            backbone, "fp32", channels_last=True, fold_batchnorm=False, input_size=subject.recipe.crop_size
        ),
        "channels_last + folded BN": subject.inference,
    }
    rows: dict = {}
    for _ in range(2):
        for batch_size in (1, 4, 8, 16, 32):
            for label, inference in variants.items():
                rows.setdefault((batch_size, label), []).append(subject.network_alone(tensors, inference, batch_size))
    print(f"\n  {name}: network alone on {len(tensors)} tensors, images/s (best of 2 interleaved)")
    print("  batch " + "".join(f"{label:>28s}" for label in variants))
    for batch_size in (1, 4, 8, 16, 32):
        print(f"  {batch_size:5d} " + "".join(f"{max(rows[(batch_size, label)]):28.1f}" for label in variants))
    workers: dict = {}
    for _ in range(2):
        for n in (0, 1, 2):
            workers.setdefault(("threads", n), []).append(subject.skcnn(paths, num_workers=n))
        for n in (1, 2):
            workers.setdefault(("DataLoader processes", n), []).append(dataloader_run(subject, paths, n))
    print(f"\n  {name}: end to end on {len(paths)} files by decoding workers, images/s (best of 2)")
    for (kind, n), values in workers.items():
        print(f"  {kind:22s} {n}: {max(values):6.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
    small = tensors[:4]
    fp32 = subject.network_alone(small, batch_size=4)
    for precision in ("bf16",):
        inference = arithmetic.inference_for(backbone, precision, input_size=subject.recipe.crop_size)
        half = subject.network_alone(small, inference, batch_size=4)
        print(
            f"  {name}: network alone, 4 tensors, {precision} autocast {half:.2f} img/s vs fp32 {fp32:.1f} img/s "
            f"({half / fp32:.3f}x; native bf16: {arithmetic.cpu_has_native_bf16()})"
        )


def dataloader_run(subject: Subject, paths, num_workers: int) -> float:
    """The same decoding in torch DataLoader worker processes, for comparison."""
    from torch.utils.data import DataLoader

    dataset = _Decoding(paths, subject.recipe)
    loader = DataLoader(dataset, batch_size=subject.batch_size, num_workers=num_workers, collate_fn=_collate)

    def run():
        for _, batch in loader:
            stored_codes_of_batch(subject.backbone, batch, subject.plan, subject.inference)

    return rate(timed(run), len(paths))


class _Decoding(torch.utils.data.Dataset):
    def __init__(self, paths, recipe):
        self.paths, self.recipe = paths, recipe

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return i, loading.decode(self.paths[i], self.recipe)


def _collate(items):
    return [i for i, _ in items], torch.stack([t for _, t in items])


MEMORY = """
import sys, threading, time
from skcnn import CNNFeatureTransformer
paths = [line.strip() for line in open(sys.argv[1])]
n, runtime = int(sys.argv[2]), sys.argv[3]
images = [paths[i % len(paths)] for i in range(n)]
cnn = CNNFeatureTransformer(
    backbone="efficientnet_lite0", weights=None, input_size=64, progress=False, runtime=runtime
).fit(images)
cnn.transform(images[:64])
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
base, peak, done = rss(), [0.0], []
def sample():
    while not done:
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
sampler = threading.Thread(target=sample); sampler.start()
start = time.perf_counter(); codes = cnn.transform(images); seconds = time.perf_counter() - start
done.append(1); sampler.join()
print(f"{n} {seconds:.1f} {peak[0] - base:.1f} {rss() - base:.1f} {codes.nbytes / 2**20:.2f}")
"""


def memory_run(args) -> None:
    print(f"machine: {machine()}\ndate: {datetime.date.today()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), 64)
        listing = Path(tmp) / "paths.txt"
        listing.write_text("\n".join(paths))
        print("runtime      images  seconds  peak RSS above baseline (MiB)  held after (MiB)  codes (MiB)")
        for runtime in ("torch", "onnxruntime"):
            for n in (1_000, 10_000):
                out = subprocess.run(
                    [sys.executable, "-c", MEMORY, str(listing), str(n), runtime],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                print(
                    f"{runtime:11s} {int(out[0]):6d}  {float(out[1]):7.1f}  {float(out[2]):29.1f}  "
                    f"{float(out[3]):16.1f}  {float(out[4]):11.2f}"
                )


def precision_run(args) -> None:
    """Codes and a linear classifier's accuracy at each precision (pretrained EfficientNet-Lite0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skcnn.datasets import load_texture_patches

    print(f"machine: {machine()}\ndate: {datetime.date.today()}")
    X_train, y_train = load_texture_patches("train", n_per_class=args.per_class, patch_size=64)
    X_test, y_test = load_texture_patches("test", n_per_class=args.per_class, patch_size=64)
    codes = {}
    for precision in ("fp32", "bf16", "fp16"):
        cnn = CNNFeatureTransformer(input_size=args.input_size, precision=precision, progress=False).fit(X_train)
        start = time.perf_counter()
        codes[precision] = (cnn.transform(X_train), cnn.transform(X_test))
        seconds = time.perf_counter() - start
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
        accuracy = model.fit(codes[precision][0], y_train).score(codes[precision][1], y_test)
        error = ""
        if precision != "fp32":
            a, b = np.concatenate(codes[precision]), np.concatenate(codes["fp32"])
            rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
            worst = np.abs(a - b).max() / np.abs(b).max()
            error = (
                f"  relative error per image: median {np.median(rel):.2e}, max {rel.max():.2e}; "
                f"max abs / max code {worst:.2e}"
            )
        print(
            f"{precision}: accuracy {accuracy:.3f} on {len(y_test)} test patches, "
            f"{len(X_train) + len(X_test)} images in {seconds:.1f} s{error}"
        )


RUNTIME_CHILD = """
import sys, time
import numpy as np, torch
from PIL import Image
sys.path.insert(0, sys.argv[5])
from bench_throughput import Subject
from skcnn import CNNFeatureTransformer
from skcnn.network import arithmetic, onnx_runtime
from skcnn.decoding import loading
mode, name, listing, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
paths = [line.strip() for line in open(listing)]
subject = Subject(name, "auto", batch_size)
def skcnn_rate(**params):
    cnn = CNNFeatureTransformer(backbone=name, weights=None, batch_size=batch_size, progress=False, **params).fit(paths)
    cnn.transform(paths[:batch_size])  # warm-up: a kept export is read, the session and the copy are built
    start = time.perf_counter(); cnn.transform(paths); return len(paths) / (time.perf_counter() - start), cnn
def user_loop():  # a user's own torch code: resnet18, batch 1, eager
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        net(x); start = time.perf_counter()
        for _ in range(20): net(x)
    return 20 / (time.perf_counter() - start)
if mode == "naive":
    print(subject.naive(paths))
elif mode == "decode":
    print(subject.decode_alone(paths, loading.usable_cores()))
elif mode.startswith("decode1:"):  # one thread, the calling one
    subject.decode_alone(paths[:2], 0, decode=mode.split(":")[1])
    print(subject.decode_alone(paths, 0, decode=mode.split(":")[1]))
elif mode.startswith("peak:"):  # high-water mark of decoding one photo, above a small one's
    status = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
    small = listing + ".small.jpg"
    Image.new("RGB", (640, 480)).save(small)
    loading.decode(small, subject.recipe, decode=mode.split(":")[1])  # warm: imports, kernels, allocator
    open("/proc/self/clear_refs", "w").write("5")  # the high-water mark reset to the resident size now
    rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
    before = rss(); loading.decode(paths[0], subject.recipe, decode=mode.split(":")[1]); print(status() - before)
elif mode.startswith("network:"):
    tensors = torch.stack([subject.recipe(loading.image_io.load_image(p)) for p in paths])
    inference = subject.inference_with(runtime=mode.split(":")[1], threads=torch.get_num_threads())
    print(subject.network_alone(tensors, inference))
elif mode.startswith("skcnn:"):
    options = dict(item.split("=") for item in mode.split(":")[1].split(",") if item)
    onnx_runtime.ALLOW_SPINNING = options.pop("spinning", "0") == "1"
    if "num_workers" in options: options["num_workers"] = int(options["num_workers"])
    rate, cnn = skcnn_rate(**options)
    print(rate, cnn.extractor_.runtime, cnn.extractor_.precision)
elif mode.startswith("threads:"):
    options = dict(item.split("=") for item in mode.split(":")[1].split(",") if item)
    net = __import__("torchvision").models.resnet18().eval()
    before = user_loop(); _, cnn = skcnn_rate(**options); after = user_loop()
    print(before, after, torch.get_num_threads(), cnn.extractor_.runtime)
"""


def runtime_run(args) -> None:
    """torch against ONNX Runtime, network alone and end to end, and the naive
    loop, every measurement in a fresh process, interleaved over rounds."""
    print(f"machine: {machine()}\ndate: {datetime.date.today()}")
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.n)
        listing = Path(tmp) / "paths.txt"
        listing.write_text("\n".join(paths))

        def child(mode: str, name: str) -> list[str]:
            command = [sys.executable, "-c", RUNTIME_CHILD, mode, name, str(listing), str(args.batch_size), here]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"{mode} {name}: {out.stderr[-3000:]}")
            return out.stdout.split()

        for name in args.backbones:
            child("skcnn:", name)  # the export, once per machine (not timed in the rounds)
            modes = [
                "naive",
                "decode",
                "network:torch",
                "network:onnxruntime",
                "skcnn:",
                "skcnn:runtime=torch",
                "skcnn:runtime=torch,precision=fp32",
                "skcnn:runtime=onnxruntime",
                "skcnn:runtime=onnxruntime,spinning=1",
                *(f"skcnn:num_workers={n}" for n in args.runtime_workers),
            ]
            results: dict = {}
            for _ in range(args.rounds):
                for mode in modes:
                    out = child(mode, name)
                    results.setdefault(mode, []).append(float(out[0]))
                    if mode == "skcnn:":
                        default = out[1:]  # the runtime and precision "auto" resolved to
            runtime_report(name, results, args, default)
        print("\n## a user's own torch loop (resnet18, batch 1) before and after a transform, same process")
        for _ in range(args.rounds):
            for mode in ("threads:", "threads:runtime=onnxruntime"):
                before, after, threads, runtime = child(mode, "efficientnet_lite0")
                print(
                    f"  transform on {runtime:11s}: before {float(before):6.1f} img/s, after {float(after):6.1f} "
                    f"img/s, torch threads {threads}"
                )


def runtime_report(name: str, results: dict, args, default: list[str]) -> None:
    labels = {
        "naive": "naive loop (batch 1, fp32, own process)",
        "decode": "decode alone (all cores)",
        "network:torch": "network alone, torch at precision auto",
        "network:onnxruntime": "network alone, ONNX Runtime (fp32)",
        "skcnn:": f"skcnn end to end, defaults ({' '.join(default)})",
    }
    print(f"\n## {name}, batch {args.batch_size}, {args.n} JPEGs, {args.rounds} rounds (images/s, per round)")
    for mode, values in results.items():
        label = labels[mode] if mode in labels else f"skcnn end to end, {mode.split(':')[1]}"
        print(f"  {label:46s} {np.median(values):7.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
    rounds = range(args.rounds)
    network = results[f"network:{default[0]}"]  # the network as the defaults run it
    limit = [1 / (1 / network[i] + 1 / results["decode"][i]) for i in rounds]
    ratios = {
        "defaults / naive (goal >= 2.5 Lite0, 2 ResNets)": [results["skcnn:"][i] / results["naive"][i] for i in rounds],
        "defaults / limit (goal >= 0.9)": [results["skcnn:"][i] / limit[i] for i in rounds],
        "runtime='onnxruntime' / naive": [
            results["skcnn:runtime=onnxruntime"][i] / results["naive"][i] for i in rounds
        ],
        "runtime='torch' / naive": [results["skcnn:runtime=torch"][i] / results["naive"][i] for i in rounds],
        "ONNX Runtime fp32 / torch fp32, end to end": [
            results["skcnn:runtime=onnxruntime"][i] / results["skcnn:runtime=torch,precision=fp32"][i] for i in rounds
        ],
    }
    print(f"  {'end-to-end limit of the defaults':46s} {np.median(limit):7.1f}")
    for label, values in ratios.items():
        print(f"  {label:46s} {np.median(values):7.2f}  per round [{', '.join(f'{v:.2f}' for v in values)}]")


PHOTO_MODES = {
    "naive": "naive loop (PIL, torchvision transform, batch 1, fp32)",
    "skcnn:": "skcnn defaults",
    "skcnn:decode=exact": "skcnn decode='exact'",
    "skcnn:decode=draft": "skcnn decode='draft'",
    "skcnn:runtime=onnxruntime,precision=fp32": "skcnn defaults without native bf16 (ONNX Runtime, fp32)",
    "skcnn:runtime=onnxruntime,precision=fp32,decode=exact": "  the same, decode='exact'",
    "baseline:skcnn:": "baseline skcnn defaults (--baseline-src)",
}


def photos_run(args) -> None:
    """Phone photos and 500-1000 px files: decode modes against a naive loop,
    each in its own process, interleaved; decoding alone; peak memory; drift."""
    print(f"machine: {machine()}\ndate: {datetime.date.today()}")
    here = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for label, make, n in (("500-1000 px", make_jpegs, args.n), ("12 MP phone", make_phone_jpegs, args.n_phone)):
            folder = Path(tmp) / label.split()[0]
            folder.mkdir()
            paths = make(folder, n)
            listing = folder / "paths.txt"
            listing.write_text("\n".join(paths))
            sets[label] = listing
            size = np.mean([os.path.getsize(p) for p in paths]) / 1e6
            print(f"{label}: {n} JPEGs, {size:.2f} MB each on average")

        def child(mode: str, name: str, listing: Path) -> list[str]:
            env = dict(os.environ)
            if mode.startswith("baseline:"):
                mode, env["PYTHONPATH"] = mode.split(":", 1)[1], args.baseline_src
            command = [sys.executable, "-c", RUNTIME_CHILD, mode, name, str(listing), str(args.batch_size), here]
            # Run outside the checkout, so that the current directory never shadows --baseline-src.
            out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
            if out.returncode:
                raise RuntimeError(f"{mode} {name}: {out.stderr[-3000:]}")
            return out.stdout.split()

        modes = [m for m in PHOTO_MODES if args.baseline_src or not m.startswith("baseline:")]
        for label, listing in sets.items():
            for name in args.backbones:
                child("skcnn:runtime=onnxruntime,precision=fp32", name, listing)  # the export, once (untimed)
                results: dict = {}
                for _ in range(args.rounds):
                    for mode in modes:
                        results.setdefault(mode, []).append(float(child(mode, name, listing)[0]))
                photos_report(f"{name}, {label}", results, args.rounds)
        decoders = ["exact", "auto", "draft"]
        extra = [f"baseline:{m}" for m in ("decode1:exact", "decode1:draft")] if args.baseline_src else []
        print("\n## decoding alone, one thread (images/s; resize and crop included)")
        for label, listing in sets.items():
            results = {}
            for _ in range(args.rounds):
                for mode in [f"decode1:{d}" for d in decoders] + extra:
                    results.setdefault(mode, []).append(float(child(mode, "efficientnet_lite0", listing)[0]))
            for mode, values in results.items():
                print(f"  {label:12s} {mode:24s} {np.median(values):7.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
        print("\n## peak memory of decoding one 12 MP photo (VmHWM above VmRSS before, MiB; a fresh process each)")
        extra = ["baseline:peak:exact", "baseline:peak:draft"] if args.baseline_src else []
        for mode in [f"peak:{d}" for d in decoders] + extra:
            values = [float(child(mode, "efficientnet_lite0", sets["12 MP phone"])[0]) for _ in range(args.rounds)]
            print(f"  {mode:24s} {np.median(values):7.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
        for label, listing in sets.items():
            drift_report(label, listing.read_text().split("\n"))


def photos_report(title: str, results: dict, rounds: int) -> None:
    print(f"\n## {title}, {rounds} rounds (images/s; median [per round])")
    for mode, values in results.items():
        print(f"  {PHOTO_MODES[mode]:58s} {np.median(values):7.1f}  [{', '.join(f'{v:.1f}' for v in values)}]")
    naive = results["naive"]
    for mode, values in results.items():
        if mode != "naive":
            ratios = [values[i] / naive[i] for i in range(rounds)]
            label = f"{PHOTO_MODES[mode].strip()} / naive"
            print(f"  {label:58s} {np.median(ratios):7.2f}x [{', '.join(f'{r:.2f}' for r in ratios)}]")


def drift_report(label: str, paths: list[str], early: str = "blocks.2") -> None:
    """Relative L2 distance of ``decode="auto"`` (and draft) codes to the exact
    decode's: pretrained EfficientNet-Lite0, fp32, penultimate and an early layer."""
    params = dict(backbone="efficientnet_lite0", layer=[early, "penultimate"], precision="fp32", progress=False)
    codes, names = {}, None
    for decode in ("exact", "auto", "draft"):
        cnn = CNNFeatureTransformer(**params, decode=decode).fit(paths)
        codes[decode], names = cnn.transform(paths), cnn.get_feature_names_out()
    print(f"\n## {label}: code drift against decode='exact' (relative L2, {len(paths)} images, Lite0 fp32)")
    for decode in ("auto", "draft"):
        for layer in params["layer"]:
            columns = np.array([name.split("__")[1] == layer for name in names])
            a, b = codes[decode][:, columns], codes["exact"][:, columns]
            drift = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
            print(f"  {decode:6s} {layer:12s} median {np.median(drift):6.2%}  max {drift.max():6.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--details", type=int, default=64, help="files for the batch/layout/workers study (0: skip)")
    parser.add_argument("--device", default="auto", help="auto: CUDA if available, else the CPU")
    parser.add_argument(
        "--arithmetic",
        default="auto",
        choices=PRECISIONS,
        help="precision of the main run (auto: fp16 on CUDA, native bf16 CPUs: bf16)",
    )
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--runtime", action="store_true", help="torch vs ONNX Runtime, fresh processes")
    parser.add_argument("--runtime-workers", type=int, nargs="*", default=[1, 2], help="with --runtime: num_workers")
    parser.add_argument("--photos", action="store_true", help="phone photos and decode modes, fresh processes")
    parser.add_argument("--n-phone", type=int, default=32, help="with --photos: 12 MP JPEGs")
    parser.add_argument("--baseline-src", default=None, help="with --photos: an earlier skcnn checkout to compare")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--precision", action="store_true")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=128)
    args = parser.parse_args()
    if args.photos:
        photos_run(args)
    elif args.runtime:
        runtime_run(args)
    elif args.memory:
        memory_run(args)
    elif args.precision:
        precision_run(args)
    else:
        main_run(args)


if __name__ == "__main__":
    main()
