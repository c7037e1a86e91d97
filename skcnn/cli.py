"""The ``skcnn`` command: ``demo``, ``layers``, ``extract``, ``finetune``, ``predict``, ``export``,
``inspect`` and ``cache``.

Only numpy, Pillow and this package's light modules are imported up front:
``skcnn predict model.onnx`` runs where torch, timm and h5py are not
installed (``pip install numpy pillow onnxruntime`` and ``pip install
--no-deps skcnn``); each command imports what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .datasets import find_image_files, load_image_folder, shown_path
from .decoding.images import BadImagesError, BadImagesWarning, ImageFailure, describe
from .options import PATHS_PER_TASK, PENULTIMATE, POOLINGS, TTA_POLICIES, Parameter, declared, parameter_names, watched

#: Images per call of the model in ``skcnn predict``: a step of its progress
#: bar, and the rows written before the next call.
PREDICT_CHUNK = 64
#: The help line of every argument that names a fitted model file.
MODEL_FILE = (
    "a fitted model file written by joblib (skcnn finetune --out, or joblib.dump), e.g. model.joblib; loading "
    "it runs code from it: load only files you trust (an .onnx file is the safe way to share a model)"
)
#: The help line of the code cache file ``skcnn cache`` looks after.
CACHE_FILE = "the HDF5 code cache file, e.g. codes.h5"
#: What a file that cannot be used does, in every command that reads images. A
#: folder of real photos often holds a few that do not decode (truncated
#: copies, a text file named .jpg); one of them should not cost the others' work.
ON_ERROR = "skip"
#: Where the commands' defaults differ from the estimators' (skcnn.options.PARAMETERS).
COMMAND_DEFAULTS = {"on_error": ON_ERROR}
#: The options of the commands that compute codes (``extract``, ``layers --search``), besides
#: ``--backbone``: CNNFeatureTransformer's parameters of the same names.
TRANSFORMER_OPTIONS = (
    "weights", "pooling", "relu", "input_size", "crop", "batch_size", "device", "precision", "decode", "runtime",
    "num_workers", "compile", "max_pixels", "on_error", "cache", "tta",
)  # fmt: skip
#: The options of ``skcnn finetune``: CNNClassifier's parameters of the same names.
FINETUNE_OPTIONS = (
    "backbone", "weights", "input_size", "crop", "batch_size", "device", "layer", "unfreeze", "max_epochs",
    "learning_rate", "random_state", "decode", "max_pixels", "cache", "checkpoint", "class_weight", "memory_limit",
    "store_dir",
)  # fmt: skip
#: The options of ``skcnn finetune`` that set the fitted model's predictions.
PREDICTION_OPTIONS = ("precision", "runtime", "tta")


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run(demo.QUICK if args.quick else demo.DemoSettings())
    return 0


def _layers(args: argparse.Namespace) -> int:
    from .network.layers import list_layers

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
    from .frozen.search import LayerSearchCV
    from .frozen.transformer import CNNFeatureTransformer

    paths, labels = load_image_folder(args.search, return_X_y=True)
    transformer = CNNFeatureTransformer(**transformer_params(args, backbone=args.backbone))
    search = LayerSearchCV(
        transformer,
        layers=args.layer,
        poolings=args.search_pooling,
        input_sizes=args.search_input_size,
        ttas="auto" if args.search_tta is None else args.search_tta,
        class_weight=args.class_weight,
        scoring=args.scoring,
        cv=args.cv,
        refit=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)  # the bad files are listed below instead
        search.fit(paths, labels)
    print(f"{len(paths)} images, {len(set(labels))} classes, {args.backbone}:")
    _left_out(args, search.failed_)
    print(search.summary())
    best = search.best_params_
    print(
        f"best: layer {best['layer']}, pooling {best['pooling']}, input size {best['input_size']}, "
        f"crop {best['crop']}, tta {best['tta']} (CNNFeatureTransformer parameters); "
        f"classifier {search.cv_results_['classifier'][search.best_index_]}"
    )
    if args.plot is not None:
        ax = search.plot(label=shown_path(os.path.basename(os.path.normpath(args.search))))
        ax.figure.savefig(args.plot, dpi=120)
        print(f"plot: {shown_path(args.plot)}")
    return _status(args, search.failed_)


def _listed(failures, shown: int = 10) -> str:
    """Failures on one line: ``name (reason); ...``."""
    listed = "; ".join(f"{shown_path(failure.source)} ({shown_path(failure.reason)})" for failure in failures[:shown])
    return listed + (f"; ... and {len(failures) - shown} more" if len(failures) > shown else "")


def _left_out(args: argparse.Namespace, failures: list[ImageFailure]) -> None:
    """Name the files that could not be used: a count on stdout, one line each on stderr."""
    if not failures:
        return
    named = ", ".join(shown_path(failure.source) for failure in failures[:10]) + (", ..." if len(failures) > 10 else "")
    print(f"left out {len(failures)} file(s) that could not be used: {named}")
    for failure in failures:
        print(f"skcnn {args.command}: left out {_shown_failure(failure)}", file=sys.stderr)


def _shown_failure(failure: ImageFailure) -> str:
    """``name: reason``, as :func:`~skcnn.datasets.shown_path` shows names."""
    return shown_path(str(failure))


def _status(args: argparse.Namespace, failures: list[ImageFailure]) -> int:
    """The exit status: 2 when files could not be used and ``--on-error raise``."""
    return 2 if failures and args.on_error == "raise" else 0


def _none_or(value: str) -> str | None:
    """``none`` is None; other words stay as they are."""
    return None if value.lower() == "none" else value


def _size_or_native(value: str) -> int | str:
    """``--search-input-size``: a side in pixels, or ``native`` (the images' own)."""
    return value if value == "native" else int(value)


def add_parameter_arguments(parser, *names: str, training: bool = False, prefix: str = "", **overrides: dict) -> None:
    """The options of the estimators' parameters ``names``: flag, type, choices, default and help
    as :data:`skcnn.options.PARAMETERS` declares them.

    ``training`` picks the declarations of ``batch_size`` and ``layer`` for
    training; ``prefix`` starts every help line; ``overrides`` gives one
    option's own argparse keywords, by its parameter's name.
    """
    for name in names:
        parameter = declared(name, training=training)
        if parameter.cli_flag is None:
            raise ValueError(f"{name} has no command-line option in skcnn.options.PARAMETERS.")
        parser.add_argument(parameter.cli_flag, **{**_argument(parameter, prefix), **overrides.get(name, {})})


def _argument(parameter: Parameter, prefix: str) -> dict:
    """argparse's keywords for ``parameter``'s option."""
    argument = {"dest": parameter.name, "help": prefix + parameter.help}
    if parameter.switch:
        return {**argument, "action": "store_false" if parameter.default else "store_true"}
    default = COMMAND_DEFAULTS.get(parameter.name, parameter.cli_default)
    if parameter.repeated:
        return {**argument, "action": "append", "default": default}
    if parameter.number is not None or parameter.cli_words:
        argument["type"] = _argument_type(parameter)
    elif parameter.choices and str not in parameter.constraints:
        argument["choices"] = parameter.choices
    return {**argument, "default": default}


def _argument_type(parameter: Parameter):
    """``parameter.from_text``, with its message shown by argparse as it is."""

    def parse(text: str):
        try:
            return parameter.from_text(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_transformer_arguments(
    parser: argparse.ArgumentParser,
    *,
    backbone: bool = True,
    cache_required: bool = False,
) -> None:
    """The options of :class:`~skcnn.CNNFeatureTransformer` a command needs (:data:`TRANSFORMER_OPTIONS`)."""
    group = parser.add_argument_group("network and codes (the parameters of skcnn.CNNFeatureTransformer)")
    names = ("backbone",) * backbone + TRANSFORMER_OPTIONS
    add_parameter_arguments(group, *names, cache={"required": cache_required})


def add_on_error_argument(parser) -> None:
    """``--on-error``, the same in every command that reads images."""
    add_parameter_arguments(parser, "on_error")


def parsed_parameters(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The estimator parameters ``names``, from the options of the same names."""
    return {name: getattr(args, name) for name in names}


def transformer_params(args: argparse.Namespace, **given) -> dict:
    """The transformer's parameters among the parsed options, ``given`` added."""
    params = {name: getattr(args, name) for name in parameter_names() if hasattr(args, name)}
    return {**params, "progress": True, **given}


def _extract(args: argparse.Namespace) -> int:
    from .frozen.transformer import CNNFeatureTransformer

    paths = find_image_files(args.images)
    layers = args.layer or [PENULTIMATE]
    # Every image is computed and cached whatever --on-error says; it decides the exit status.
    params = transformer_params(args, layer=layers[0] if len(layers) == 1 else layers, on_error="skip")
    if args.dask_scheduler is None:
        transformer = CNNFeatureTransformer(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImagesWarning)  # the bad files are listed below instead
            width = transformer.fit(paths).transform(paths).shape[1]
        stats, failed, where = transformer.cache_info_, transformer.failed_, ""
    else:
        stats, failed, width, where = _extract_on_dask(args, paths, params)
    print(
        f"{len(paths)} images: {stats.hits} already cached, {stats.computed} computed{where}; "
        f"codes of width {width} in {shown_path(args.cache)}"
    )
    _left_out(args, failed)
    return _status(args, failed)


def _extract_on_dask(args: argparse.Namespace, paths: list[str], params: dict):
    from dask.distributed import Client

    from .frozen import dask as skcnn_dask

    params = {name: value for name, value in params.items() if name != "cache"}
    with Client(args.dask_scheduler) as client:
        workers = len(client.scheduler_info()["workers"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadImagesWarning)  # the bad files are listed instead
            _, info = skcnn_dask.extract(
                paths,
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
    from .finetuning.regressor import CNNRegressor

    if args.targets is None and args.task != "classification":
        raise ValueError(f"--task {args.task} reads the targets from a CSV file: give --targets FILE.")
    if args.targets is None:
        paths, labels = load_image_folder(args.folder, return_X_y=True)
    else:
        paths, labels = _targets_table(args.folder, args.targets, args.task)
    estimator = CNNRegressor if args.task == "regression" else CNNClassifier
    params = parsed_parameters(args, (*FINETUNE_OPTIONS, *PREDICTION_OPTIONS, "on_error"))
    taken = estimator().get_params()
    classes_only = sorted(f"--{name.replace('_', '-')}" for name in params if name not in taken and params[name])
    if classes_only:
        raise ValueError(f"{', '.join(classes_only)}: for classes only; {estimator.__name__} does not take it.")
    model = estimator(**{name: value for name, value in params.items() if name in taken}, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImagesWarning)  # the bad files are listed below instead
        model.fit(paths, labels)
    _left_out(args, model.failed_)
    strategy = ", ".join(f"{k}={v!r}" for k, v in model.strategy_.items() if k != "reason")
    if model.n_epochs_:
        scores = [epoch["validation_score"] for epoch in model.history_]  # epoch 0: the probe
        score = "R^2" if args.task == "regression" else "accuracy"
        ran = (
            f"{model.n_epochs_} epochs, kept epoch {model.best_epoch_} (0: the linear probe; validation {score} "
            f"{scores[model.best_epoch_]:.3f})"
        )
    else:
        ran = "a linear probe on frozen codes, no epochs"
    what = {
        "classification": f"{len(getattr(model, 'classes_', []))} classes",
        "multilabel": f"{len(getattr(model, 'classes_', []))} labels",
        "regression": f"{getattr(model, 'n_outputs_', 1)} target(s)",
    }[args.task]
    print(f"{len(paths)} images, {what}; {model.strategy_['reason']}; {strategy}; {ran}")
    joblib.dump(model, args.out)
    print(f"model: {shown_path(args.out)} (skcnn predict {shown_path(args.out)} FILES...)")
    return 0


def _targets_table(folder: str, table: str, task: str) -> tuple[list[str], np.ndarray | list[list[str]]]:
    """Images and their targets from a CSV file: a header, then ``path,target...`` per image, the paths
    relative to ``folder``. Regression: numbers (one column or several); multi-label: one column of labels
    separated by ``;`` (none for an image with no label), a list of labels per image; classification: one label."""
    with open(table, newline="", encoding="utf-8") as lines:
        rows = [row for row in csv.reader(lines) if row]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{shown_path(table)}: expected a header and a row per image: path,target[,target...].")
    width = 2 if task != "regression" else len(rows[0])
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise ValueError(
                f"{shown_path(table)}, line {number}: {len(row)} fields where {width} were expected "
                f"(path and {'the targets' if task == 'regression' else 'one column of labels'})."
            )
    paths = [os.path.join(folder, row[0]) for row in rows[1:]]
    values = [row[1:] for row in rows[1:]]
    if task == "multilabel":  # each image's labels, a list each (CNNClassifier's classes_ are their names)
        return paths, [sorted({label.strip() for label in row[0].split(";") if label.strip()}) for row in values]
    if task == "classification":
        return paths, np.array([row[0] for row in values])
    try:
        targets = np.array(values, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{shown_path(table)}: --task regression needs numbers as targets: {error}.") from None
    return paths, targets[:, 0] if targets.shape[1] == 1 else targets


def _predict(args: argparse.Namespace) -> int:
    paths = find_image_files(args.images)
    model = _predictor(args)
    readout = _readout(model)
    # An ONNX file's graph and metadata can still fail when run; a fitted model's errors then are
    # skcnn's or torch's, and keep their traceback.
    running = functools.partial(_model_file, args.model) if _is_onnx(args.model) else contextlib.nullcontext
    failed: list[ImageFailure] = []
    with _output(args.out) as out, _progress_bar(len(paths)) as bar:
        rows = csv.writer(out)
        rows.writerow(["path", *readout.columns, "error"])
        for start in range(0, len(paths), PREDICT_CHUNK):
            chunk = paths[start : start + PREDICT_CHUNK]
            with running():
                values, failures = _predicted(model, readout.method, chunk)
            reasons = {failure.index: shown_path(failure.reason) for failure in failures}
            for i, path in enumerate(chunk):
                if i in reasons:
                    rows.writerow([shown_path(path), *[""] * len(readout.columns), reasons[i]])
                else:
                    rows.writerow([shown_path(path), *readout.row(values[i]), ""])
            out.flush()
            for f in failures:  # named by their place among all the images, not in the chunk
                failed.append(ImageFailure(start + f.index, describe(chunk[f.index], start + f.index), f.reason))
            bar.update(len(chunk))
    if args.out is not None:
        print(f"{len(paths) - len(failed)} of {len(paths)} images predicted: {shown_path(args.out)}", file=sys.stderr)
    for failure in failed:
        print(f"skcnn predict: left out {_shown_failure(failure)}", file=sys.stderr)
    return _status(args, failed)


def _predictor(args: argparse.Namespace):
    """The model of ``skcnn predict``: an ONNX file run without torch, or a fitted model file."""
    if _is_onnx(args.model):
        from .deployment.serving import load_onnx

        with _model_file(args.model):
            return _predicting(args.model, load_onnx(args.model, batch_size=args.batch_size))
    model = _predicting(args.model, _load_model(args.model))
    # Our own progress bar counts the images; the model raises on a bad file so that its chunk is
    # predicted again without it.
    return _with_params(model, progress=False, on_error="raise", batch_size=args.batch_size, device=args.device)


def _predicting(path: str, model):
    """``model``, where it is a fitted classifier or regressor; else a ValueError naming the file and what it holds."""
    if not (hasattr(model, "classes_") or _is_regressor(model)):
        held = getattr(model, "metadata_", {}).get("kind") or type(model).__name__  # an ONNX file's kind
        raise ValueError(f"{path} holds a {held}, not a fitted classifier or regressor.")
    return model


def _is_regressor(model) -> bool:
    """scikit-learn's ``is_regressor``, or an exported regressor's file (read without scikit-learn)."""
    if hasattr(model, "metadata_"):
        return model.metadata_["kind"] == "regressor"
    from sklearn.base import is_regressor

    return is_regressor(model)


def _is_multilabel(model) -> bool:
    """A classifier fitted on an indicator matrix, or an exported one's file."""
    if hasattr(model, "metadata_"):
        return bool(model.metadata_.get("multilabel", False))
    return getattr(model, "target_type_", None) == "multilabel-indicator"


def _is_onnx(path: str) -> bool:
    """Whether ``path`` names an ONNX file (``.onnx`` in any case) rather than a joblib one."""
    return Path(path).suffix.lower() == ".onnx"


def _load_model(path: str):
    """A fitted model file written by joblib (``skcnn finetune --out``, ``joblib.dump``).

    Loading one runs code from it, as for any pickle: load only files you
    trust; an ``.onnx`` file (``skcnn export``) is the safe way to share a model.
    """
    import joblib

    if _is_onnx(path):
        raise ValueError(f"{path} is an ONNX file; this command needs the fitted model file it was exported from.")
    with _model_file(path):
        model = joblib.load(path)
    if not _holds_skcnn_estimator(model):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, which does not read images: this command needs a fitted "
            "skcnn model (skcnn finetune --out, or a pipeline starting with skcnn.CNNFeatureTransformer)."
        )
    return model


def _holds_skcnn_estimator(model) -> bool:
    """Whether ``model`` is one of skcnn's estimators, or a scikit-learn one holding one (a pipeline,
    a feature union): a model that reads images, not a table of numbers."""
    parts = [model, *model.get_params(deep=True).values()] if hasattr(model, "get_params") else [model]
    return any(type(part).__module__.partition(".")[0] == __package__ for part in parts)


@contextlib.contextmanager
def _model_file(path: str):
    """Errors met reading or running the model file ``path`` as ValueErrors naming it.

    A file that is not a model fails in ways that are rarely ValueErrors:
    ONNX Runtime's own exceptions (``InvalidProtobuf``, ``Fail``: plain
    Exceptions), pickle's, a truncated file's EOFError, a KeyError in
    metadata. A missing package (ImportError) is not the file's fault,
    and an error that already names the file is kept as it is.
    """
    try:
        yield
    except (ImportError, BadImagesError):
        raise
    except (ValueError, OSError) as error:
        if os.fspath(path) in str(error):
            raise
        raise ValueError(_unusable(path, error)) from error
    except Exception as error:
        raise ValueError(_unusable(path, error)) from error


def _unusable(path: str, error: Exception) -> str:
    kind = "an ONNX model" if _is_onnx(path) else "a model file written by joblib"
    return f"{path} could not be used as {kind}: {type(error).__name__}: {error}"


def _with_params(model, **params):
    """``model`` with ``params`` set on it and on its pipeline's steps, where they have them
    (None values are left as they are)."""
    from sklearn.pipeline import Pipeline

    for estimator in [model, *(step for _, step in model.steps)] if isinstance(model, Pipeline) else [model]:
        known = estimator.get_params(deep=False)
        estimator.set_params(**{k: v for k, v in params.items() if k in known and v is not None})
    return model


@dataclasses.dataclass(frozen=True)
class Readout:
    """What ``skcnn predict`` writes of a model: its CSV columns after ``path``, the method whose
    values fill them, and one image's values as that row's cells."""

    columns: list[str]
    method: str
    row: Callable[[np.ndarray], list[str]]


def _readout(model) -> Readout:
    """A classifier's label (the class of the largest probability or score) and one column per class
    (probabilities, or decision scores where it has no ``predict_proba``: one column for two classes);
    a multi-label one's labels (``;`` between them) and one column per label; a regressor's predictions."""
    if _is_regressor(model):
        n_outputs = _n_outputs(model)
        columns = ["prediction"] if n_outputs == 1 else [f"prediction({i})" for i in range(n_outputs)]
        return Readout(columns, "predict", lambda values: [f"{v:.6g}" for v in np.atleast_1d(values)])
    classes = np.asarray(model.classes_)
    names = [shown_path(str(label)) for label in classes]
    method = "predict_proba" if hasattr(model, "predict_proba") else "decision_function"
    prefix = "p" if method == "predict_proba" else "score"
    threshold = 0.5 if method == "predict_proba" else 0.0
    scores = [f"{prefix}({name})" for name in (names[1:] if len(names) == 2 and prefix == "score" else names)]

    def row(values: np.ndarray) -> list[str]:
        values = np.atleast_1d(values)
        if _is_multilabel(model):
            label = ";".join(name for name, value in zip(names, values, strict=True) if value >= threshold)
        elif len(values) == 1:  # two classes' one decision score: the second class's
            label = names[int(values[0] > 0)]
        else:
            label = names[int(values.argmax())]
        return [label, *(f"{value:.6g}" for value in values)]

    return Readout(["labels" if _is_multilabel(model) else "label", *scores], method, row)


def _n_outputs(model) -> int:
    """How many targets a regressor predicts: its ``n_outputs_``, else what its last step's ``predict``
    gives for one row of zeros (a pipeline's ridge, which has no such attribute)."""
    if hasattr(model, "n_outputs_"):
        return int(model.n_outputs_)
    last = model[-1] if hasattr(model, "steps") else model
    shape = np.shape(last.predict(np.zeros((1, last.n_features_in_), dtype=np.float32)))
    return 1 if len(shape) == 1 else int(shape[1])


def _predicted(model, method: str, images: list) -> tuple[np.ndarray, list[ImageFailure]]:
    """The values of ``method`` for ``images`` (one row each, None for the bad ones), and the failures
    (indexes into ``images``): a call that meets bad files is made again without them."""
    failures: list[ImageFailure] = []
    good = list(range(len(images)))
    while True:
        try:
            scores = getattr(model, method)([images[i] for i in good]) if good else np.empty((0,))
            break
        except BadImagesError as error:
            failures += [ImageFailure(good[f.index], f.source, f.reason) for f in error.failures]
            bad = {f.index for f in error.failures}
            good = [i for position, i in enumerate(good) if position not in bad]
    rows = np.empty(len(images), dtype=object)
    for position, i in enumerate(good):
        rows[i] = scores[position]
    return rows, sorted(failures, key=lambda failure: failure.index)


def _output(path: str | None):
    """``--out``, or stdout (left open)."""
    if path is None:
        return contextlib.nullcontext(sys.stdout)
    return open(path, "w", newline="", encoding="utf-8")


def _progress_bar(total: int):
    """A progress bar in images/s on stderr (tqdm, where installed: the torch-free install may lack it)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return contextlib.nullcontext(_NoBar())
    return tqdm(total=total, unit="img", desc="skcnn predict", disable=not (watched() and total > PREDICT_CHUNK))


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _export(args: argparse.Namespace) -> int:
    from .deployment.export import to_onnx

    path = to_onnx(_load_model(args.model), args.out)
    shown = shown_path(path)
    print(f"{shown}: {_size(path.stat().st_size)}; predict with `skcnn predict {shown} FILES`")
    return 0


def _size(n_bytes: int) -> str:
    """A file size for people: ``26.3 kB``, ``17.2 MB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _inspect(args: argparse.Namespace) -> int:
    from .inspection.report import model_task, write_report

    # Every usable image is scored whatever --on-error says; it decides the exit status.
    model = _with_params(_load_model(args.model), progress=True, on_error="skip")
    task = model_task(model)  # as `skcnn finetune --task` fit it
    names = None
    if args.targets is None:
        if task != "classification":
            raise ValueError(
                f"{shown_path(args.model)} holds a {'regressor' if task == 'regression' else 'multi-label classifier'}"
                f": give its images' targets with --targets CSV, as to skcnn finetune --task {task}."
            )
        paths, labels = load_image_folder(args.folder, return_X_y=True)
    else:
        paths, labels = _targets_table(args.folder, args.targets, task)
    if task == "multilabel":
        names = [str(name) for name in model.classes_]
        unknown = sorted({label for row in labels for label in row} - set(names))
        if unknown:
            raise ValueError(
                f"{shown_path(args.targets)} names labels the model was not fit on: {', '.join(unknown)} (its "
                f"labels: {', '.join(names)})."
            )
        labels = np.array([[int(name in row) for name in names] for row in labels])  # the model's columns
    elif task == "regression":
        given, fitted = 1 if labels.ndim == 1 else labels.shape[1], _n_outputs(model)
        if given != fitted:
            raise ValueError(f"{shown_path(args.targets)} has {given} target column(s); the model predicts {fitted}.")
    test_images, test_labels = _test_images(args.test)
    if args.targets is not None:
        test_labels = None  # with --targets, --test is the leak check only
    summary, failed = write_report(
        model, paths, labels, args.out, test_images=test_images, test_labels=test_labels, cv=args.cv, k=args.top,
        target_names=names,
    )  # fmt: skip
    if task == "classification":
        what = f"{len(set(labels))} classes"
    else:
        what = f"{len(names)} labels" if task == "multilabel" else f"{given} target(s)"
    print(f"{len(paths)} images, {what}, model {shown_path(args.model)}:")
    print("\n".join(summary))
    _left_out(args, failed)
    return _status(args, failed)


def _test_images(folder: str | None) -> tuple[list[str] | None, np.ndarray | None]:
    """``--test``: images labelled by their class folder (one class is enough), or, where some lie
    loose in ``folder``, unlabelled images for the leak check only."""
    if folder is None:
        return None, None
    images = find_image_files(folder)
    classes = [Path(image).relative_to(folder).parts for image in images]
    if images and all(len(parts) > 1 for parts in classes):
        return images, np.asarray([parts[0] for parts in classes])
    return images, None


def _cache_info(args: argparse.Namespace) -> int:
    from .codes.cache import CodeCache

    cache = CodeCache(args.file)
    configs = cache.configs()
    if not configs:
        print(f"{shown_path(args.file)}: no codes stored")
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
        compact = f"skcnn cache compact {shown_path(args.file)}"
        print(f"{len(shards)} worker shard(s) not merged yet (counted above): `{compact}`")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from .codes.cache import CodeCache

    cache = CodeCache(args.file)
    known = {config.fingerprint for config in cache.configs()}
    unknown = sorted(set(args.keep_config) - known)
    if unknown:
        raise ValueError(f"--keep-config {unknown} not in {args.file}; known: {sorted(known)}.")
    dropped = cache.prune(args.keep_config)
    print(f"dropped {len(dropped)} configurations: {dropped}")
    return 0


def _cache_compact(args: argparse.Namespace) -> int:
    from .codes.cache import CodeCache

    merged = CodeCache(args.file).compact()
    print(f"merged {merged} files (segments and worker shards) into {shown_path(args.file)}")
    return 0


def _cache_clear_graphs(args: argparse.Namespace) -> int:
    from .network.onnx_runtime import cache_dir, clear_graph_cache

    freed = clear_graph_cache()
    print(f"freed {_size(freed)}: the ONNX graphs exported for the CPU runtime, in {shown_path(cache_dir())}")
    return 0


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's ``--help`` shows each option's default, but for empty ones
    (None, a flag's False), where the help line says what leaving it out does."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skcnn", description="Frozen pretrained CNN codes for scikit-learn.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser = functools.partial(commands.add_parser, formatter_class=_DefaultsShown)

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
        help="with --search: a candidate layer (repeat; none given: one per stage)",
    )
    search.add_argument("--plot", default=None, metavar="PNG", help="with --search: draw the scores into this PNG file")
    search.add_argument("--cv", type=int, default=5, help="with --search: folds")
    search.add_argument(
        "--search-pooling",
        action="append",
        default=None,
        choices=POOLINGS,
        help="with --search: a candidate pooling (repeat; none given: --pooling, then avg and gem)",
    )
    search.add_argument(
        "--search-input-size",
        action="append",
        default=None,
        type=_size_or_native,
        metavar="SIZE",
        help="with --search: a candidate input side, or native (repeat; none given: --input-size and native)",
    )
    search.add_argument(
        "--search-tta",
        action="append",
        default=None,
        type=_none_or,
        choices=[None, *TTA_POLICIES],
        metavar="TTA",
        help="with --search: a candidate test-time augmentation, none, flips or dihedral (repeat; none given: "
        "--tta and the flips or rotations measured to keep the class)",
    )
    add_parameter_arguments(search, "class_weight", prefix="with --search: ")
    search.add_argument(
        "--scoring", default=None, help="with --search: a scikit-learn scorer name, e.g. balanced_accuracy"
    )
    add_transformer_arguments(layers_parser, backbone=False)
    layers_parser.set_defaults(run=_layers)

    extract_parser = commands.add_parser(
        "extract", help="fill a code cache from image files or folders (resumable: run it again)"
    )
    extract_parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    extract_parser.add_argument(
        "--layer",
        action="append",
        default=None,
        help="layer to tap (none given: penultimate); repeat for several layers",
    )
    add_parameter_arguments(extract_parser, "cache_layers")
    add_transformer_arguments(extract_parser, cache_required=True)
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
        "finetune",
        help="fine-tune a pretrained network on FOLDER/<class>/<images> (skcnn.CNNClassifier), or on images "
        "and targets listed in a CSV file (--targets: several labels per image, or continuous values)",
    )
    finetune.add_argument("folder", help="one subfolder of images per class; with --targets, the images' folder")
    finetune.add_argument(
        "--task",
        choices=["classification", "multilabel", "regression"],
        default="classification",
        help="one class per image (skcnn.CNNClassifier); several labels per image (the CNNClassifier of an "
        "indicator matrix); continuous targets (skcnn.CNNRegressor)",
    )
    finetune.add_argument(
        "--targets",
        default=None,
        metavar="CSV",
        help="a CSV file with a header, then path,target... per image (paths relative to FOLDER): numbers for "
        "regression (a column per target), labels separated by ; for multilabel, one label for classification "
        "(none given: the class of each image is its subfolder)",
    )
    finetune.add_argument(
        "--out",
        required=True,
        help="the model file to write, with joblib (e.g. model.joblib), for skcnn predict, export and inspect",
    )
    # The classifier's cache holds the codes its head starts from.
    add_parameter_arguments(
        finetune, *FINETUNE_OPTIONS, training=True, cache={"help": "HDF5 cache of the codes the head starts from"}
    )
    prediction = finetune.add_argument_group(
        "the fitted model's predictions (training runs in fp32 on a CPU; with the head alone, --tta averages "
        "the codes its probe is fit on too; --tta auto keeps the views that keep the class where they score better)"
    )
    add_parameter_arguments(prediction, *PREDICTION_OPTIONS, training=True)  # fine-tuning's tta: "auto"
    add_on_error_argument(finetune)
    finetune.set_defaults(run=_finetune)

    predict = commands.add_parser(
        "predict",
        help="predict image files with an exported .onnx file (without torch) or a fitted model file: "
        "a CSV row per image",
        description="Predict image files. Writes CSV: path; for a classifier, label and one column per class (its "
        "probability, or decision scores for a classifier without probabilities); for a multi-label one, labels "
        "(separated by ;) and one probability per label; for a regressor, prediction (one column per target); and "
        "error (why a file could not be used).",
    )
    predict.add_argument("model", help=f"a .onnx file from `skcnn export`, or {MODEL_FILE}")
    predict.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    predict.add_argument("--out", default=None, help="the CSV file to write (none given: stdout)")
    predict.add_argument("--batch-size", type=int, default=None, help="images per forward pass (none: the model's)")
    predict.add_argument(
        "--device", default=None, help="with a model file: auto, cpu, cuda, cuda:N or mps (none: the model's)"
    )
    add_on_error_argument(predict)
    predict.set_defaults(run=_predict)

    export = commands.add_parser("export", help="write a fitted model file as one ONNX file (skcnn.export)")
    export.add_argument("model", help=MODEL_FILE)
    export.add_argument("out", help="the .onnx file to write")
    export.set_defaults(run=_export)

    inspect = commands.add_parser(
        "inspect",
        help="where a fitted model fails on FOLDER/<class>/<images>, or on images and targets listed in a CSV file "
        "(--targets): top losses, label errors, duplicates",
    )
    inspect.add_argument("model", help=MODEL_FILE)
    inspect.add_argument("folder", help="one subfolder of images per class; with --targets, the images' folder")
    inspect.add_argument(
        "--targets",
        default=None,
        metavar="CSV",
        help="a CSV file as skcnn finetune --targets reads it (path,target... per image, paths relative to FOLDER); "
        "what it holds is what the model predicts: numbers for a regressor, labels separated by ; for a multi-label "
        "classifier (the model's columns are the CSV's label names, sorted), one label for a classifier",
    )
    inspect.add_argument("--out", required=True, help="the report folder to write")
    inspect.add_argument(
        "--test",
        default=None,
        help="a folder of test images: with class subfolders (and no --targets), the top losses and confusion "
        "matrix are the fitted model's on them; in any case, those with a copy in FOLDER are reported (with "
        "--targets, that leak check alone: the report is out of fold)",
    )
    inspect.add_argument(
        "--cv", type=int, default=5, help="folds of the out-of-fold label check (and of the losses, without --test)"
    )
    inspect.add_argument("--top", type=int, default=16, help="images in top_losses.png")
    add_on_error_argument(inspect)
    inspect.set_defaults(run=_inspect)

    cache_parser = commands.add_parser("cache", help="look after a code cache file, or the exported ONNX graphs")
    cache_commands = cache_parser.add_subparsers(dest="cache_command", required=True)
    info = cache_commands.add_parser("info", help="configurations stored, with counts and sizes")
    info.add_argument("file", help=CACHE_FILE)
    info.set_defaults(run=_cache_info)
    prune = cache_commands.add_parser("prune", help="keep only the given configurations")
    prune.add_argument("file", help=CACHE_FILE)
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
    compact.add_argument("file", help=CACHE_FILE)
    compact.set_defaults(run=_cache_compact)
    clear_graphs = cache_commands.add_parser(
        "clear-graphs",
        help="empty the folder of ONNX graphs exported for the CPU runtime (--runtime auto); they are exported "
        "again when next needed",
    )
    clear_graphs.set_defaults(run=_cache_clear_graphs)
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
    except (ValueError, ImportError, KeyError, OSError) as exc:  # CacheError is a ValueError
        print(f"skcnn {args.command}: error: {shown_path(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
