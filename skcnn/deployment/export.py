"""One ONNX file for a fitted model: uint8 crops in; labels and probabilities, or codes, out.

The network part is skcnn's own: the frozen (or fine-tuned) network cut
after its taps (``skcnn.network.compiled.tapped_graph``), with the
normalisation before it and ReLU and pooling after it, exported by torch.
The scikit-learn steps after a :class:`~skcnn.CNNFeatureTransformer` are
converted by ``skl2onnx`` and joined to it into one graph
(:func:`onnx.compose.merge_models`). What a predictor needs besides the
graph (the classes, the resize and crop, the decoding rule, skcnn's
version) is in the file's metadata, read by :mod:`skcnn.serving` without
torch.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import is_regressor
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .. import __version__
from ..codes.extraction import check_tta
from ..codes.pooling import pooled
from ..decoding import symmetry
from ..decoding.preprocessing import DECODE_MARGINS, Preprocessing
from ..files import atomic_path
from ..finetuning.estimator import FineTuning, predicted_views
from ..finetuning.regressor import CNNRegressor
from ..frozen.transformer import CNNFeatureTransformer
from ..network.compiled import tapped_graph
from .serving import FORMAT_VERSION, validate_metadata

#: ONNX opset of the whole graph (torch's exporter and skl2onnx's converters), and of its ML domain.
OPSET, ML_OPSET = 18, 3
#: The graph's input: uint8 RGB crops at the network's input size, channels last.
INPUT_NAME, INPUT_LAYOUT = "images", "NHWC uint8 RGB"
#: Metadata keys of the file (values are JSON).
METADATA_KEY = "skcnn"


def to_onnx(model, path) -> Path:
    """Write a fitted model as one ONNX file that predicts from uint8 image crops.

    Parameters
    ----------
    model : CNNClassifier, CNNRegressor, Pipeline or CNNFeatureTransformer
        A fitted :class:`~skcnn.CNNClassifier` (multi-label included) or
        :class:`~skcnn.CNNRegressor`; a fitted scikit-learn
        pipeline whose first step is a :class:`~skcnn.CNNFeatureTransformer`
        (one backbone or several sharing one resize and crop), followed by
        steps ``skl2onnx`` converts (``StandardScaler``, ``PCA``,
        ``LogisticRegression``, ``LinearSVC``, ``SVC``, ``RidgeClassifier``,
        ``GaussianNB``, ``Ridge``, ``SVR``, ...); or a lone transformer (codes out).
    path : str or path
        The ``.onnx`` file to write (written under a temporary name, then
        renamed).

    Returns
    -------
    path : Path

    Notes
    -----
    The graph's input ``images`` is ``(N, h, w, 3)`` uint8 at the network's
    input size (the centre crop of the resized image); it normalises
    inside. A classifier's outputs are ``label``, ``probabilities`` where
    it has ``predict_proba`` and ``scores`` where it has
    ``decision_function`` (shaped as scikit-learn's: ``(N,)`` for two
    classes, ``(N, n_classes)`` otherwise; a ``CNNClassifier``'s logits);
    the metadata lists them. A multi-label ``CNNClassifier``'s ``label`` is
    the ``(N, n_labels)`` indicator matrix, its ``probabilities`` one per
    label. A regressor's output is ``predictions``, a transformer's ``codes``.
    :class:`skcnn.serving.OnnxImageClassifier` and
    :class:`~skcnn.serving.OnnxImageRegressor` (:func:`skcnn.serving.load_onnx`
    picks the one of the file's kind) decode and crop images as the fitted
    model does (its resize of enlarged images is torch's own integer
    arithmetic) and run the file without torch.

    Examples
    --------
    >>> import tempfile, os
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skcnn import CNNFeatureTransformer
    >>> from skcnn.datasets import load_texture_patches
    >>> from skcnn.export import to_onnx
    >>> from skcnn.serving import OnnxImageClassifier
    >>> X, y = load_texture_patches(n_per_class=5, patch_size=64)
    >>> model = make_pipeline(CNNFeatureTransformer(input_size=64, progress=False), LogisticRegression())
    >>> path = to_onnx(model.fit(X, y), os.path.join(tempfile.mkdtemp(), "model.onnx"))
    >>> served = OnnxImageClassifier(path)
    >>> served.classes_.tolist(), bool((served.predict(X) == model.predict(X)).all())
    (['brick', 'grass', 'gravel'], True)
    """
    import onnx

    check_is_fitted(model)
    if isinstance(model, FineTuning):
        graph, recipe, meta = _fine_tuned_graph(model)
    elif isinstance(model, CNNFeatureTransformer):
        graph, recipe = _codes_graph(model)
        meta = {"kind": "transformer", "outputs": ["codes"], "n_features": int(model.n_features_out_)}
    elif isinstance(model, Pipeline) and isinstance(model.steps[0][1], CNNFeatureTransformer):
        steps, meta = _sklearn_steps(model)  # first: it is quick, and says at once what cannot convert
        graph, recipe = _codes_graph(model[0])
        graph = _joined(graph, steps)
    else:
        raise TypeError(
            "to_onnx takes a fitted CNNClassifier or CNNRegressor, a fitted Pipeline whose first step is a "
            "CNNFeatureTransformer, "
            f"or a fitted CNNFeatureTransformer; got {type(model).__name__}."
        )
    decoding = model[0] if isinstance(model, Pipeline) else model  # whose decode parameter applies
    meta.update(
        {
            "format_version": FORMAT_VERSION,
            "skcnn_version": __version__,
            "input": {"name": INPUT_NAME, "layout": INPUT_LAYOUT, "size": list(recipe.crop_size)},
            "preprocessing": {**recipe.as_dict(), "jpeg_dct_margin": DECODE_MARGINS[decoding.decode]},
        }
    )
    validate_metadata(meta, path)  # a file the predictor would refuse (a resize past its bound) is not written
    onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(meta)})
    onnx.checker.check_model(graph)
    return _saved(graph, Path(path))


class _Normalised(nn.Module):
    """uint8 ``(N, h, w, 3)`` crops -> the normalised float ``(N, 3, h, w)`` batch of one recipe."""

    def __init__(self, recipe: Preprocessing):
        super().__init__()
        std = torch.tensor(recipe.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        mean = torch.tensor(recipe.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).float() * self.scale + self.shift


def _viewed(batch: torch.Tensor, tta: str | None) -> torch.Tensor:
    """A normalised ``(N, 3, h, w)`` batch with its test-time views stacked after it, view by view."""
    views = symmetry.views(tta)
    return batch if len(views) == 1 else torch.cat([view(batch) for view in views])


def _view_mean(codes: torch.Tensor, tta: str | None) -> torch.Tensor:
    """``(V * N, C)`` codes of :func:`_viewed` batches -> ``(N, C)``: each image's averaged over its views."""
    n_views = len(symmetry.views(tta))
    return codes if n_views == 1 else codes.reshape(n_views, -1, codes.shape[1]).mean(0)


class _Codes(nn.Module):
    """Each backbone's network, normalised input to pooled taps (averaged over the test-time views, as
    ``skcnn.codes.extraction`` averages them after pooling), its codes side by side."""

    def __init__(self, parts: list[tuple[Preprocessing, nn.Module, tuple[str, ...], str, bool, str | None]]):
        super().__init__()
        self.normalised = nn.ModuleList([_Normalised(recipe) for recipe, *_ in parts])
        self.tapped = nn.ModuleList([graph for _, graph, *_ in parts])
        self.plans = [(layers, pooling, relu, tta) for *_, layers, pooling, relu, tta in parts]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        blocks = []
        plans = zip(self.normalised, self.tapped, self.plans, strict=True)
        for normalised, tapped, (layers, pooling, relu, tta) in plans:
            taken = tapped(_viewed(normalised(images), tta))
            blocks += [_view_mean(pooled(taken[layer], pooling, relu), tta) for layer in layers]
        return torch.cat(blocks, dim=1)


class _FineTuned(nn.Module):
    """A fine-tuned network: normalised input, the tapped layer's codes (averaged over the test-time
    views, as the model's prediction pass does), the head's outputs."""

    def __init__(self, recipe: Preprocessing, tapped: nn.Module, layer: str, head: nn.Linear, tta: str | None):
        super().__init__()
        self.normalised, self.tapped, self.layer, self.head = _Normalised(recipe), tapped, layer, head
        self.tta = tta

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        taken = self.tapped(_viewed(self.normalised(images), self.tta))[self.layer]
        return self.head(_view_mean(pooled(taken, "avg", True), self.tta))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # a regressor's predictions
        return self.outputs(images)


class _Classifier(_FineTuned):
    """A fine-tuned classifier's scores and softmax: ``CNNClassifier.decision_function``'s scores are the
    logits, or for two classes the second's over the first's."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.outputs(images)
        scores = logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits
        return scores, torch.softmax(logits, dim=1)


class _MultiLabel(_FineTuned):
    """A multi-label classifier's logits, each label's probability (sigmoid) and the indicator matrix."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.outputs(images)
        return logits, torch.sigmoid(logits), (logits > 0).to(torch.int64)


def _codes_graph(transformer: CNNFeatureTransformer):
    """The ONNX model of a fitted transformer's codes (input ``images``, output ``codes``), and its recipe."""
    parts = transformer.parts_ if not isinstance(transformer.backbone, str) else [transformer]
    described = []
    for part in parts:
        extractor = part.extractor_
        backbone = extractor.load()
        plan = extractor.plan
        graph = tapped_graph(_copy_in_fp32(backbone.network), plan.layers, plan.head)
        described.append((extractor.preprocessing(backbone), graph, plan.layers, plan.pooling, plan.relu, plan.tta))
    recipes = {(r.crop_size, r.resize_size, r.interpolation) for r, *_ in described}
    if len(recipes) > 1:
        raise ValueError(
            "to_onnx: the backbones resize or crop differently (one input cannot feed them all): "
            f"{sorted(str(r) for r in recipes)}; give them one input_size and weights with one resize."
        )
    return _exported(_Codes(described), described[0][0], ["codes"]), described[0][0]


def _fine_tuned_graph(model: FineTuning):
    """The ONNX model of a fitted CNNClassifier (``label``, ``probabilities``, ``scores``; a multi-label one's
    ``label`` is the indicator matrix) or CNNRegressor (``predictions``), its recipe and metadata."""
    module = model.module_
    recipe = Preprocessing.from_dict(model.preprocessing_)
    network = _copy_in_fp32(module.network)
    tapped = tapped_graph(network, (module.layer,), module.network_head)
    head = nn.Linear(module.head.in_features, module.head.out_features)
    head.load_state_dict({k: v.detach().float().cpu() for k, v in module.head.state_dict().items()})
    tta = predicted_views(model)
    check_tta(tta, recipe.crop_size)  # set after the fit: checked as prediction checks it
    parts = (recipe, tapped, module.layer, head, tta)
    if isinstance(model, CNNRegressor):
        meta = _regressor_meta(model.n_outputs_, 1 if model.n_outputs_ == 1 else 2)
        return _exported(_FineTuned(*parts), recipe, ["predictions"]), recipe, meta
    meta = _classifier_meta(model.classes_, ["probabilities", "scores"])
    if getattr(model, "target_type_", None) == "multilabel-indicator":
        graph = _exported(_MultiLabel(*parts), recipe, ["scores", "probabilities", "label"])
        graph.graph.output.insert(0, graph.graph.output.pop())  # label first, as a single-label file's
        return graph, recipe, {**meta, "multilabel": True}
    graph = _exported(_Classifier(*parts), recipe, ["scores", "probabilities"])
    return _with_labels(graph, model.classes_), recipe, meta


def _sklearn_steps(pipeline: Pipeline):
    """``skl2onnx``'s ONNX model of the steps after the transformer (input ``codes``), and the metadata.

    A classifier's ``probabilities`` (a plain ``(N, n_classes)`` tensor, not
    skl2onnx's default list of dicts) and its decision ``scores`` come from
    two conversions of the steps, joined into one graph: skl2onnx gives one
    or the other (its option ``raw_scores``), not both.
    """
    steps = pipeline[1:]
    width = int(pipeline[0].n_features_out_)
    classifier = steps.steps[-1][1]
    if is_regressor(classifier):
        return _regressor_steps(steps, width)
    if not hasattr(classifier, "classes_"):  # a last step that is no classifier (PCA: codes out)
        converted = _converted(steps, width, None)
        return converted, {"kind": "transformer", "outputs": [output.name for output in converted.graph.output]}
    parts = {}
    if hasattr(steps, "predict_proba"):
        parts["probabilities"] = _converted(steps, width, {id(classifier): {"zipmap": False}})
    if hasattr(steps, "decision_function"):
        scored = _without_probabilities(steps)
        options = {"raw_scores": True, **({"zipmap": False} if "probabilities" in parts else {})}
        parts["scores"] = _converted(scored, width, {id(scored.steps[-1][1]): options})
    if not parts:
        raise ValueError(
            f"to_onnx: the pipeline's classifier ({type(classifier).__name__}) has neither predict_proba nor "
            "decision_function; skcnn exports classifiers that have one of them."
        )
    graph = _steps_graph(parts, binary=len(classifier.classes_) == 2)
    return graph, _classifier_meta(classifier.classes_, list(parts))


def _regressor_steps(steps: Pipeline, width: int):
    """``skl2onnx``'s ONNX model of steps ending in a regressor, its output renamed ``predictions``, and the
    metadata: how many targets, and whether ``predict`` gives them as a vector (asked of the fitted steps)."""
    from onnx import helper

    converted = _converted(steps, width, None)
    shape = np.shape(steps.predict(np.zeros((1, width), dtype=np.float32)))
    output = converted.graph.output[0]
    converted.graph.node.append(helper.make_node("Identity", [output.name], ["predictions"]))
    del converted.graph.output[:]
    converted.graph.output.append(
        helper.make_tensor_value_info("predictions", output.type.tensor_type.elem_type, [None, None])
    )
    return converted, _regressor_meta(1 if len(shape) == 1 else shape[1], len(shape))


def _regressor_meta(n_outputs: int, output_ndim: int) -> dict:
    return {"kind": "regressor", "outputs": ["predictions"], "n_outputs": int(n_outputs), "output_ndim": output_ndim}


def _converted(steps: Pipeline, width: int, options: dict | None):
    """``skl2onnx``'s conversion of ``steps`` from ``codes`` of ``width`` floats, or a ValueError naming them."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        return convert_sklearn(
            steps, initial_types=[("codes", FloatTensorType([None, width]))], options=options,
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
        )  # fmt: skip
    except Exception as error:  # skl2onnx raises its own kinds for what it cannot convert
        names = ", ".join(f"{name} ({type(step).__name__})" for name, step in steps.steps)
        raise ValueError(
            f"to_onnx: skl2onnx cannot convert the steps after the transformer [{names}]: {error} "
            "It converts scikit-learn's scalers, decompositions and most classifiers (StandardScaler, PCA, "
            "LogisticRegression, LinearSVC, SVC, RidgeClassifier, GaussianNB, ...)."
        ) from error


def _without_probabilities(steps: Pipeline) -> Pipeline:
    """``steps`` with an SVC fitted with ``probability=True`` that skl2onnx converts to its decision scores.

    skl2onnx's ``raw_scores`` of such an SVC are not its
    ``decision_function`` (measured: off by 1 to 2); without ``probA_`` and
    ``probB_`` they are. The SVC is a shallow copy: the fitted one is not changed.
    """
    from sklearn.svm import SVC, NuSVC

    name, classifier = steps.steps[-1]
    if not (isinstance(classifier, SVC | NuSVC) and len(classifier.probA_)):
        return steps
    scored = copy.copy(classifier)
    scored._probA, scored._probB = np.empty(0), np.empty(0)
    return Pipeline([*steps.steps[:-1], (name, scored)])


def _steps_graph(parts: dict, binary: bool):
    """One graph from ``codes``: ``label`` (the first part's) and each part's values under its name.

    Each part is prefixed and fed ``codes``. skl2onnx's ``raw_scores`` of two
    classes are ``(N, 2)``, ``-s`` and ``s``; scikit-learn's
    ``decision_function`` is ``s``, ``(N,)``: the second column is taken.
    """
    import onnx
    from onnx import helper

    nodes, initializers, outputs, opsets = [], [], [], {}
    for index, (name, part) in enumerate(parts.items()):
        prefix = f"skcnn_{name}_"
        part = onnx.compose.add_prefix(part, prefix)
        nodes.append(helper.make_node("Identity", ["codes"], [f"{prefix}codes"]))
        nodes.extend(part.graph.node)
        initializers.extend(part.graph.initializer)
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        label, values = part.graph.output[0], part.graph.output[1]  # skl2onnx's "label" and "probabilities"
        if index == 0:
            nodes.append(helper.make_node("Identity", [label.name], ["label"]))
            outputs.append(helper.make_value_info("label", label.type))
        if name == "scores" and binary:
            column = helper.make_tensor("skcnn_scores_column", onnx.TensorProto.INT64, [], [1])
            initializers.append(column)
            nodes.append(helper.make_node("Gather", [values.name, column.name], ["scores"], axis=1))
            outputs.append(helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [None]))
        else:
            nodes.append(helper.make_node("Identity", [values.name], [name]))
            outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None, None]))
    first = next(iter(parts.values()))
    graph = helper.make_graph(nodes, "skcnn_steps", [first.graph.input[0]], outputs, initializers)
    joined = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    joined.ir_version = first.ir_version
    return joined


def _joined(codes_graph, steps_graph):
    """The codes graph feeding the steps' graph: one model."""
    import onnx

    steps_graph.ir_version = codes_graph.ir_version
    return onnx.compose.merge_models(codes_graph, steps_graph, io_map=[("codes", "codes")])


def _classifier_meta(classes, outputs: list[str]) -> dict:
    """A classifier's metadata: its outputs besides ``label`` (``probabilities``, ``scores``), its classes.

    Files of skcnn 0.6 and earlier had outputs ``label`` and ``probabilities`` and a key
    ``scores`` saying what the latter held; :mod:`skcnn.serving` reads both.
    """
    classes = np.asarray(classes)
    return {
        "kind": "classifier",
        "outputs": ["label", *outputs],
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.kind,
    }


def _with_labels(graph, classes):
    """``label``: the class of the largest probability, appended to the graph."""
    import onnx
    from onnx import helper, numpy_helper

    classes = np.asarray(classes)
    values = classes.astype(object) if classes.dtype.kind in "US" else classes.astype(np.int64)
    if classes.dtype.kind not in "USiu":
        raise ValueError(f"to_onnx: classes must be strings or integers; got dtype {classes.dtype}.")
    table = numpy_helper.from_array(np.asarray(values), name="skcnn_classes")
    graph.graph.initializer.append(table)
    graph.graph.node.extend(
        [
            helper.make_node("ArgMax", ["probabilities"], ["skcnn_best"], axis=1, keepdims=0),
            helper.make_node("Gather", ["skcnn_classes", "skcnn_best"], ["label"], axis=0),
        ]
    )
    kind = onnx.TensorProto.STRING if classes.dtype.kind in "US" else onnx.TensorProto.INT64
    graph.graph.output.insert(0, helper.make_tensor_value_info("label", kind, [None]))
    return graph


def _copy_in_fp32(network: nn.Module) -> nn.Module:
    return copy.deepcopy(network).float().cpu().eval()


def _exported(module: nn.Module, recipe: Preprocessing, outputs: list[str]):
    """``module`` exported by torch (a dynamic batch), loaded as an ONNX model."""
    import onnx

    example = torch.zeros(2, *recipe.crop_size, 3, dtype=torch.uint8)
    with tempfile.TemporaryDirectory(prefix="skcnn-export-") as folder:
        path = os.path.join(folder, "graph.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            # The exporter's notes on its own deprecated paths (torch releases before 2.14 gave some); anything
            # else it warns of reaches the user.
            for note in (DeprecationWarning, FutureWarning):
                warnings.simplefilter("ignore", note)
            torch.onnx.export(
                module.eval(), (example,), path, input_names=[INPUT_NAME], output_names=outputs,
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, opset_version=OPSET,
                dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
        return onnx.load(path)


def _saved(graph, path: Path) -> Path:
    """``graph`` written to a temporary file beside ``path``, then renamed: no reader sees half a file.

    The file gets a new file's usual mode (``0o666`` less the umask), as
    the user's other files: it is theirs to ship.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        onnx.save(graph, temporary)
    return path


__all__ = ["INPUT_NAME", "to_onnx"]
