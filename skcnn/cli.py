"""The ``skcnn`` command: ``demo``, ``layers``, ``extract``, ``finetune``, ``predict``, ``export``,
``inspect`` and ``cache``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import CacheError, CodeCache
from .images import BadImagesError
from .options import CHOICES, DEFAULTS, FINETUNING, PATHS_PER_TASK, PENULTIMATE, parameter_names

#: Images per call of an ONNX model in ``skcnn predict`` (a step of its progress bar).
PREDICT_CHUNK = 64


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run(demo.QUICK if args.quick else demo.DemoSettings())
    return 0


def _layers(args: argparse.Namespace) -> int:
    from .layers import list_layers

    if args.search is not None:
        return _search_layers(args)
    layers = list_layers(args.backbone, args.input_size)
    if args.max_depth is not None:
        layers = [layer for layer in layers if layer.name.count(".") < args.max_depth or layer.name == PENULTIMATE]
    width = max(len(layer.name) for layer in layers)
    print(f"{'layer':<{width}}  {'module':<22} output shape (one image)")
    for layer in layers:
        shape = " x ".join(str(s) for s in layer.shape)
        print(f"{layer.name:<{width}}  {layer.kind:<22} {shape}")
    return 0


def _search_layers(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    from .search import LayerSearchCV
    from .transformer import CNNFeatureTransformer

    paths, labels = labelled_images(args.search)
    transformer = CNNFeatureTransformer(**transformer_params(args, backbone=args.backbone))
    search = LayerSearchCV(
        transformer,
        layers=args.layer,
        poolings=args.search_pooling,
        input_sizes=args.search_input_size,
        ttas=args.search_tta,
        class_weight=args.class_weight,
        scoring=args.scoring,
        cv=args.cv,
        refit=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bad files are listed below instead
        search.fit(paths, labels)
    print(f"{len(paths)} images, {len(set(labels))} classes, {args.backbone}:")
    if search.failed_:
        print(f"left out {len(search.failed_)} file(s) that could not be used: {_listed(search.failed_)}")
    print(search.summary())
    best = search.best_params_
    print(
        f"best: layer {best['layer']}, pooling {best['pooling']}, input size {best['input_size']}, "
        f"crop {best['crop']}, tta {best['tta']} (CNNFeatureTransformer parameters)"
    )
    ax = search.plot(label=os.path.basename(os.path.normpath(args.search)))
    ax.figure.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")
    return 0


def _listed(failures, shown: int = 10) -> str:
    """Failures on one line: ``name (reason); ...``."""
    listed = "; ".join(f"{failure.source} ({failure.reason})" for failure in failures[:shown])
    return listed + (f"; ... and {len(failures) - shown} more" if len(failures) > shown else "")


def labelled_images(folder: str, option: str = "--search") -> tuple[list[Path], list[str]]:
    """Images below ``folder/<class>/``, labelled by their class folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{option} {folder!r} is not a folder (expected one subfolder of images per class).")
    paths, labels = [], []
    for class_folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = image_files([os.fspath(class_folder)])
        paths += found
        labels += [class_folder.name] * len(found)
    if len(set(labels)) < 2:
        raise ValueError(
            f"{option} {folder!r}: found {len(set(labels))} class folder(s) with images; it needs "
            "at least two (FOLDER/<class>/<image files>)."
        )
    return paths, labels


def image_files(inputs: list[str]) -> list[Path]:
    """Files named on the command line, and the image files below folders
    (by the extensions PIL can open), in sorted order."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(
                p
                for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
            )
        elif item.is_file():
            found.append(item)
        else:
            raise ValueError(f"{os.fspath(item)!r} is neither an image file nor a folder.")
    return found


def _count_or(word: str, meaning):
    """An option type: a whole number, or ``word`` standing for ``meaning``
    (``--num-workers auto``, ``--max-pixels none``)."""

    def parse(value: str):
        if value.lower() == word:
            return meaning
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number or {word!r}, got {value!r}") from None

    return parse


CROP_HELP = "weights (their centre crop, default), none (the image whole), or the fraction kept"


def _crop(value: str) -> bool | float:
    """``--crop``: ``weights`` (True), ``none`` (False) or a fraction in (0, 1]."""
    named = {"weights": True, "none": False}
    if value.lower() in named:
        return named[value.lower()]
    try:
        fraction = float(value)
    except ValueError:
        fraction = 0.0
    if not 0 < fraction <= 1:
        raise argparse.ArgumentTypeError(f"--crop takes weights, none or a fraction in (0, 1]; got {value!r}")
    return fraction


def _none_or(value: str) -> str | None:
    """``none`` is None; other words stay as they are."""
    return None if value.lower() == "none" else value


def _size_or_native(value: str) -> int | str:
    """``--search-input-size``: a side in pixels, or ``native`` (the images' own)."""
    return value if value == "native" else int(value)


def _weights(value: str) -> str | None:
    """``--weights none`` is the random initialisation (``weights=None``)."""
    return None if value.lower() == "none" else value


def add_transformer_arguments(
    parser: argparse.ArgumentParser,
    *,
    backbone: bool = True,
    cache_required: bool = False,
    on_error: str = DEFAULTS.on_error,
    on_error_help: str = "",
) -> None:
    """The options of :class:`~skcnn.CNNFeatureTransformer` a command needs,
    with its defaults and allowed values (from :mod:`skcnn.options`)."""
    group = parser.add_argument_group("network and codes (the parameters of skcnn.CNNFeatureTransformer)")
    if backbone:
        group.add_argument("--backbone", default=DEFAULTS.backbone, help="e.g. resnet50, vgg16, timm/convnext_tiny")
    group.add_argument(
        "--weights", type=_weights, default=DEFAULTS.weights, help="DEFAULT, an enum name, a checkpoint path, or none"
    )
    group.add_argument("--pooling", default=DEFAULTS.pooling, choices=CHOICES["pooling"])
    group.add_argument(
        "--no-relu", dest="relu", action="store_false", help="keep negative activations (default: ReLU'd codes)"
    )
    group.add_argument("--input-size", type=int, default=DEFAULTS.input_size, help="input side in pixels")
    group.add_argument("--crop", type=_crop, default=DEFAULTS.crop, metavar="CROP", help=CROP_HELP)
    group.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    group.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:N or mps")
    choices = {
        "precision": "auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
        "decode": "auto: JPEGs DCT-scaled while >= 3x the resize target; exact: never; draft: down to it",
        "runtime": "auto: ONNX Runtime on a CPU computing in fp32, else torch",
    }
    for name, help_text in choices.items():
        group.add_argument(f"--{name}", default=getattr(DEFAULTS, name), choices=CHOICES[name], help=help_text)
    group.add_argument(
        "--num-workers",
        type=_count_or("auto", "auto"),
        default=DEFAULTS.num_workers,
        metavar="N",
        help="decoding threads, or auto (one per two cores)",
    )
    group.add_argument(
        "--compile", action="store_true", help="run the network through torch.compile (pays on long runs only)"
    )
    group.add_argument(
        "--max-pixels",
        type=_count_or("none", None),
        default=DEFAULTS.max_pixels,
        metavar="N",
        help="image files with more pixels are refused (none: no limit)",
    )
    group.add_argument(
        "--on-error", default=on_error, choices=CHOICES["on_error"], help=on_error_help or "what a bad file does"
    )
    group.add_argument(
        "--cache", default=DEFAULTS.cache, required=cache_required, help="HDF5 code cache file, e.g. codes.h5"
    )
    group.add_argument(
        "--tta",
        default=DEFAULTS.tta,
        choices=CHOICES["tta"],
        help="codes averaged over the flips (or flips and rotations) of each image; default: none",
    )


def transformer_params(args: argparse.Namespace, **given) -> dict:
    """The transformer's parameters among the parsed options, ``given`` added."""
    params = {name: getattr(args, name) for name in parameter_names() if hasattr(args, name)}
    return {**params, "progress": True, **given}


def _extract(args: argparse.Namespace) -> int:
    from .transformer import CNNFeatureTransformer

    paths = image_files(args.images)
    layers = args.layer or [PENULTIMATE]
    params = transformer_params(args, layer=layers[0] if len(layers) == 1 else layers)
    if args.dask_scheduler is None:
        transformer = CNNFeatureTransformer(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the bad files are listed below instead
            width = transformer.fit(paths).transform(paths).shape[1]
        stats, failed, where = transformer.cache_info_, transformer.failed_, ""
    else:
        stats, failed, width, where = _extract_on_dask(args, paths, params)
    print(
        f"{len(paths)} images: {stats.hits} already cached, {stats.computed} computed{where}; "
        f"codes of width {width} in {args.cache}"
    )
    if failed:
        print(f"{len(failed)} file(s) could not be used and are not in the cache: {_listed(failed)}")
    return 0


def _extract_on_dask(args: argparse.Namespace, paths: list[Path], params: dict):
    from dask.distributed import Client

    from . import dask as skcnn_dask

    params = {name: value for name, value in params.items() if name != "cache"}
    with Client(args.dask_scheduler) as client:
        workers = len(client.scheduler_info()["workers"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the bad files are listed instead
            _, info = skcnn_dask.extract(
                [os.fspath(p) for p in paths],
                client=client,
                cache=args.cache,
                return_info=True,
                paths_per_task=args.paths_per_task,
                **params,
            )
    where = f" by {workers} Dask worker(s) in {info.n_tasks} tasks"
    return info.cache_info, info.failed, info.n_features_out, where


def _finetune(args: argparse.Namespace) -> int:
    import joblib

    from .finetuning.classifier import CNNClassifier

    paths, labels = labelled_images(args.folder, "folder")
    model = CNNClassifier(
        backbone=args.backbone, weights=args.weights, input_size=args.input_size, crop=args.crop,
        batch_size=args.batch_size,
        device=args.device, progress=True, on_error=args.on_error, layer=args.layer, unfreeze=args.unfreeze,
        max_epochs=args.max_epochs, learning_rate=args.learning_rate, random_state=args.random_state,
        decode=args.decode, cache=args.cache, checkpoint=args.checkpoint, class_weight=args.class_weight,
        memory_limit=_memory_limit(args.memory_limit), store_dir=args.store_dir,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bad files are listed below instead
        model.fit(paths, labels)
    if model.failed_:
        print(f"left out {len(model.failed_)} file(s) that could not be used: {_listed(model.failed_)}")
    strategy = ", ".join(f"{k}={v!r}" for k, v in model.strategy_.items() if k != "reason")
    if model.n_epochs_:
        scores = [model.probe_score_] + [epoch["validation_score"] for epoch in model.history_]
        ran = (
            f"{model.n_epochs_} epochs, kept epoch {model.best_epoch_} (0: the linear probe; validation accuracy "
            f"{scores[model.best_epoch_]:.3f})"
        )
    else:
        ran = "a linear probe on frozen codes, no epochs"
    print(f"{len(paths)} images, {len(model.classes_)} classes; {model.strategy_['reason']}; {strategy}; {ran}")
    joblib.dump(model, args.out)
    print(f"model: {args.out} (skcnn predict {args.out} FILES...)")
    return 0


def _memory_limit(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _predict(args: argparse.Namespace) -> int:
    paths = image_files(args.images)
    if Path(args.model).suffix == ".onnx":  # torch-free: ONNX Runtime, decoded as the fitted model did
        from .serving import OnnxImageClassifier

        model = OnnxImageClassifier(args.model)
        proba = np.concatenate(
            [model.decision_function(paths[start : start + PREDICT_CHUNK]) for start in _progress(paths)]
        )
    else:
        import joblib

        model = joblib.load(args.model)  # a pickle runs code when loaded: only load models you trust
        proba = model.predict_proba(paths)
    for path, row in zip(paths, proba, strict=True):
        print(f"{os.fspath(path)}\t{model.classes_[row.argmax()]}\t{row.max():.3f}")
    return 0


def _progress(paths: list) -> Iterable[int]:
    """Chunk starts, with a progress bar on stderr for long lists."""
    starts = range(0, len(paths), PREDICT_CHUNK)
    if len(paths) <= PREDICT_CHUNK:
        return starts
    from tqdm import tqdm

    return tqdm(starts, unit="chunk", desc=f"{len(paths)} images", file=sys.stderr)


def _export(args: argparse.Namespace) -> int:
    import joblib

    from .export import to_onnx

    model = joblib.load(args.model)  # a pickle runs code when loaded: only load models you trust
    path = to_onnx(model, args.out)
    print(f"{os.fspath(path)}: {path.stat().st_size / 2**20:.1f} MiB; predict with `skcnn predict {path} FILES`")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import joblib

    from .inspection.report import write_report

    model = joblib.load(args.model)  # a pickle runs code when loaded: only load models you trust
    paths, labels = labelled_images(args.folder, "folder")
    test = None if args.test is None else image_files([args.test])
    summary, failed = write_report(model, paths, labels, args.out, test_images=test, cv=args.cv, k=args.top)
    print(f"{len(paths)} images, {len(set(labels))} classes, model {os.fspath(args.model)}:")
    print("\n".join(summary))
    if failed:
        print(f"left out {len(failed)} file(s) that could not be used: {_listed(failed)}")
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    cache = CodeCache(args.file)
    configs = cache.configs()
    if not configs:
        print(f"{args.file}: no codes stored")
        return 0
    print(f"{'fingerprint':<17} {'backbone':<20} {'layer':<16} {'pooling':<8} {'images':>7} {'width':>6} {'MB':>8}")
    for config in configs:
        a = config.attrs
        print(
            f"{config.fingerprint:<17} {a.get('backbone', '?'):<20} {a.get('layer', '?'):<16} "
            f"{a.get('pooling', '?'):<8} {config.n_codes:>7} {config.width:>6} {config.stored_bytes / 1e6:>8.2f}"
        )
    shards = cache.shard_names()
    if shards:
        print(f"{len(shards)} worker shard(s) not merged yet (counted above): `skcnn cache compact {args.file}`")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    cache = CodeCache(args.file)
    known = {config.fingerprint for config in cache.configs()}
    unknown = sorted(set(args.keep_config) - known)
    if unknown:
        raise ValueError(f"--keep-config {unknown} not in {args.file}; known: {sorted(known)}.")
    dropped = cache.prune(args.keep_config)
    print(f"dropped {len(dropped)} configurations: {dropped}")
    return 0


def _cache_compact(args: argparse.Namespace) -> int:
    merged = CodeCache(args.file).compact()
    print(f"merged {merged} files (segments and worker shards) into {args.file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skcnn", description="Frozen pretrained CNN codes for scikit-learn.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser(
        "demo", help="the size x similarity table on real images: frozen codes of two layers, fine-tuning"
    )
    demo_parser.add_argument("--quick", action="store_true", help="a few seconds, tiny data")
    demo_parser.set_defaults(run=_demo)

    layers_parser = commands.add_parser(
        "layers", help="list the tappable layers of a backbone with their output shapes, or search them"
    )
    layers_parser.add_argument("backbone", help="e.g. resnet50, vgg16, efficientnet_lite0, timm/convnext_tiny")
    layers_parser.add_argument(
        "--max-depth",
        type=int,
        default=None,
        help="only layers at most this deep in the module tree (1: top-level blocks)",
    )
    search = layers_parser.add_argument_group("layer search (skcnn.LayerSearchCV)")
    search.add_argument(
        "--search",
        metavar="FOLDER",
        default=None,
        help="cross-validate a classifier on each candidate layer's codes of FOLDER/<class>/<images>",
    )
    search.add_argument(
        "--layer",
        action="append",
        default=None,
        help="with --search: a candidate layer (repeat; default: one per stage)",
    )
    search.add_argument("--plot", default="layer_search.png", help="with --search: the PNG to write")
    search.add_argument("--cv", type=int, default=5, help="with --search: folds")
    search.add_argument(
        "--search-pooling",
        action="append",
        default=None,
        choices=CHOICES["pooling"],
        help="with --search: a candidate pooling (repeat; default: --pooling, then avg and gem)",
    )
    search.add_argument(
        "--search-input-size",
        action="append",
        default=None,
        type=_size_or_native,
        metavar="SIZE",
        help="with --search: a candidate input side, or native (repeat; default: --input-size and native)",
    )
    search.add_argument(
        "--search-tta",
        action="append",
        default=None,
        type=_none_or,
        choices=[None, *CHOICES["tta"]],
        metavar="TTA",
        help="with --search: a candidate test-time augmentation, none, flips or dihedral (repeat; default: --tta)",
    )
    search.add_argument(
        "--class-weight", default=None, choices=["balanced"], help="with --search: weigh classes by inverse size"
    )
    search.add_argument(
        "--scoring", default=None, help="with --search: a scikit-learn scorer name, e.g. balanced_accuracy"
    )
    add_transformer_arguments(
        layers_parser,
        backbone=False,
        on_error="skip",
        on_error_help="with --search: skip (default) leaves files that cannot be used out and names them",
    )
    layers_parser.set_defaults(run=_layers)

    extract_parser = commands.add_parser(
        "extract", help="fill a code cache from image files or folders (resumable: run it again)"
    )
    extract_parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    extract_parser.add_argument(
        "--layer",
        action="append",
        default=None,
        help="layer to tap (default: penultimate); repeat for several layers",
    )
    extract_parser.add_argument(
        "--cache-layer",
        dest="cache_layers",
        action="append",
        default=None,
        help="a further layer to store in the same pass (repeat), for later searches",
    )
    add_transformer_arguments(
        extract_parser,
        cache_required=True,
        on_error_help="raise: stop on a file that cannot be used (after the others are cached); "
        "skip: leave it out and name it",
    )
    dask_group = extract_parser.add_argument_group("scale-out (skcnn.dask)")
    dask_group.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on a Dask cluster, e.g. tcp://scheduler:8786 (pip install 'skcnn[dask]'); "
        "the files and the cache must be on storage the workers share",
    )
    dask_group.add_argument(
        "--paths-per-task", type=int, default=PATHS_PER_TASK, help="with --dask-scheduler: images per task"
    )
    extract_parser.set_defaults(run=_extract)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a pretrained network on FOLDER/<class>/<images> (skcnn.CNNClassifier)"
    )
    finetune.add_argument("folder", help="one subfolder of images per class")
    finetune.add_argument("--out", required=True, help="where to write the fitted model (a pickle)")
    finetune.add_argument("--backbone", default=DEFAULTS.backbone)
    finetune.add_argument("--weights", type=_weights, default=DEFAULTS.weights)
    finetune.add_argument("--input-size", type=int, default=DEFAULTS.input_size)
    finetune.add_argument("--crop", type=_crop, default=DEFAULTS.crop, metavar="CROP", help=CROP_HELP)
    finetune.add_argument("--batch-size", type=int, default=FINETUNING.batch_size)
    finetune.add_argument("--device", default=DEFAULTS.device)
    finetune.add_argument(
        "--layer", default=FINETUNING.layer, help="where the new head reads: auto, penultimate, or a layer name"
    )
    finetune.add_argument("--unfreeze", default=FINETUNING.unfreeze, help="auto, head, all, or a layer name")
    finetune.add_argument("--max-epochs", type=int, default=FINETUNING.max_epochs)
    finetune.add_argument("--learning-rate", type=float, default=FINETUNING.learning_rate)
    finetune.add_argument("--random-state", type=int, default=None)
    finetune.add_argument("--decode", default=DEFAULTS.decode, choices=CHOICES["decode"], help="as for extract")
    finetune.add_argument("--cache", default=None, help="HDF5 cache of the codes the head starts from")
    finetune.add_argument("--checkpoint", default=None, help="a file saved every epoch; run again to resume")
    finetune.add_argument(
        "--class-weight", default=None, choices=["balanced"], help="weigh classes by the inverse of their size"
    )
    finetune.add_argument(
        "--memory-limit", default=FINETUNING.memory_limit,
        help="memory the decoded images may take (bytes, e.g. 2GB, or auto); beyond it they go to --store-dir",
    )  # fmt: skip
    finetune.add_argument("--store-dir", default=None, help="folder for decoded images beyond --memory-limit")
    finetune.add_argument(
        "--on-error", default="skip", choices=CHOICES["on_error"],
        help="skip (default): files that cannot be used are left out and named",
    )  # fmt: skip
    finetune.set_defaults(run=_finetune)
    predict = commands.add_parser(
        "predict", help="classify image files with a fitted model (a pickle) or an exported .onnx (without torch)"
    )
    predict.add_argument("model", help="a .onnx file from `skcnn export`, or a pickle (only load those you trust)")
    predict.add_argument("images", nargs="+", help="image files and/or folders")
    predict.set_defaults(run=_predict)
    export = commands.add_parser("export", help="write a fitted model (a pickle) as one ONNX file (skcnn.export)")
    export.add_argument("model", help="the fitted model file (a pickle: only load models you trust)")
    export.add_argument("out", help="the .onnx file to write")
    export.set_defaults(run=_export)
    inspect = commands.add_parser(
        "inspect", help="where a fitted model fails on FOLDER/<class>/<images>: top losses, label errors, duplicates"
    )
    inspect.add_argument("model", help="the fitted model file (a pickle: only load models you trust)")
    inspect.add_argument("folder", help="one subfolder of images per class")
    inspect.add_argument("--out", required=True, help="the report folder to write")
    inspect.add_argument("--test", default=None, help="a folder of test images: report those with a copy in FOLDER")
    inspect.add_argument("--cv", type=int, default=5, help="folds of the out-of-fold label check")
    inspect.add_argument("--top", type=int, default=16, help="images in top_losses.png")
    inspect.set_defaults(run=_inspect)

    cache_parser = commands.add_parser("cache", help="look after a code cache file")
    cache_commands = cache_parser.add_subparsers(dest="cache_command", required=True)
    info = cache_commands.add_parser("info", help="configurations stored, with counts and sizes")
    info.add_argument("file")
    info.set_defaults(run=_cache_info)
    prune = cache_commands.add_parser("prune", help="keep only the given configurations")
    prune.add_argument("file")
    prune.add_argument(
        "--keep-config",
        nargs="+",
        required=True,
        metavar="FINGERPRINT",
        help="fingerprints to keep (see `skcnn cache info`)",
    )
    prune.set_defaults(run=_cache_prune)
    compact = cache_commands.add_parser(
        "compact", help="merge pending segments and Dask worker shards into the main file"
    )
    compact.add_argument("file")
    compact.set_defaults(run=_cache_compact)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BadImagesError as exc:
        print(
            f"skcnn {args.command}: error: {len(exc.failures)} file(s) could not be used (the others were "
            f"computed, and cached with --cache): {_listed(exc.failures)}. Use --on-error skip to leave "
            "them out.",
            file=sys.stderr,
        )
        return 2
    except (ValueError, ImportError, CacheError, KeyError) as exc:
        print(f"skcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
