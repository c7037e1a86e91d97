"""The parameters skcnn's estimators share, each declared once in :data:`PARAMETERS`.

Each :class:`Parameter` gives a default, what scikit-learn's validation
accepts (built by :func:`constraints_of` into ``_parameter_constraints``),
the strings it takes, and its ``skcnn`` command-line option and help line.
:class:`~skcnn.CNNFeatureTransformer`, :class:`~skcnn.CNNClassifier`,
:class:`~skcnn.LayerSearchCV`, :mod:`skcnn.dask` and the ``skcnn`` command
take their defaults and option lists from here (:data:`DEFAULTS`,
:data:`FINETUNING`). No torch and no scikit-learn at import: the command
line builds its parser from this module where neither is installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field, make_dataclass
from numbers import Integral, Real

POOLINGS = ("avg", "max", "gem", "flatten", "spp")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DECODES = ("auto", "exact", "draft")
ON_ERRORS = ("raise", "skip")
RUNTIMES = ("auto", "torch", "onnxruntime")
#: ``tta``: the views whose codes are averaged (:mod:`skcnn.decoding.symmetry`).
TTA_POLICIES = ("flips", "dihedral")
#: ``batchnorm`` of fine-tuning: what batch norm layers do while training (``skcnn.finetuning.training``).
BATCHNORMS = ("auto", "frozen", "adapt", "train")
#: ``augment``'s named policies besides ``"auto"``, None and a callable (``skcnn.finetuning.augment``).
AUGMENT_POLICIES = ("photo", "crop", "flips", "dihedral")
#: ``scoring`` of fine-tuning's validation (the keys of ``skcnn.finetuning.training.SCORERS``).
SCORINGS = ("accuracy", "balanced_accuracy")

#: The input of the classifier head: the codes the literature calls *CNN codes*.
PENULTIMATE = "penultimate"

#: Default limit on the pixels of an image file (width x height): 100
#: megapixels, above any phone camera's default output, below the size of a
#: "decompression bomb". Decoded to float32 RGB such an image takes 1.2 GB.
MAX_PIXELS = 100_000_000


#: Images per task of :func:`skcnn.dask.extract` when given a list: at ~0.1 s
#: per task on a GPU, Dask's few milliseconds per task stay a small share.
PATHS_PER_TASK = 256


@dataclass(frozen=True)
class Range:
    """Numbers between two bounds: scikit-learn's ``Interval``, built only when
    the constraints are (:func:`constraints_of`).

    Parameters
    ----------
    kind : Integral or Real
        Whole numbers, or any real number.
    low, high : float or None
        The bounds; None: unbounded on that side.
    closed : {"left", "right", "both", "neither"}, default="left"
        Which bounds belong to the range.
    """

    kind: type
    low: float | None
    high: float | None = None
    closed: str = "left"

    @property
    def number(self) -> type:
        """How the command line reads a number of the range: ``int`` or ``float``."""
        return int if self.kind is Integral else float

    def __contains__(self, value) -> bool:
        with_low, with_high = self.closed in ("left", "both"), self.closed in ("right", "both")
        above = self.low is None or value > self.low or (with_low and value == self.low)
        below = self.high is None or value < self.high or (with_high and value == self.high)
        return above and below

    def __str__(self) -> str:
        """``a whole number >= 1``, ``a number in (0, 1]``."""
        noun = "a whole number" if self.kind is Integral else "a number"
        with_low, with_high = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.high is None:
            return f"{noun} {'>=' if with_low else '>'} {self.low}"
        return f"{noun} in {'[' if with_low else '('}{self.low}, {self.high}{']' if with_high else ')'}"


@dataclass(frozen=True)
class TypeAt:
    """A class accepted as a value, imported only when the constraints are built:
    torch's ``device`` and the code cache stay unimported by the command line."""

    module: str
    name: str

    def resolve(self) -> type:
        """The class itself."""
        return getattr(importlib.import_module(self.module), self.name)


@dataclass(frozen=True)
class Parameter:
    """One parameter of skcnn's estimators and of the ``skcnn`` command, declared once.

    Parameters
    ----------
    name : str
        The keyword argument, and the estimator attribute of the same name.
    default : object
        Its default in every estimator (and command) that takes it.
    constraints : tuple, default=()
        What scikit-learn's parameter validation accepts besides ``choices``:
        types, None, its constraint strings (``"boolean"``,
        ``"random_state"``), :class:`Range` and :class:`TypeAt`.
    choices : tuple of str, default=()
        The strings it takes: a ``StrOptions`` constraint, and the option's
        choices on the command line where they are all it takes there.
    help : str, default=""
        The option's help line in ``skcnn ... --help``.
    cli_flag : str or None, default=None
        Its option in the ``skcnn`` commands; None where they do not offer
        it. A bool parameter's option is a switch (``--no-relu``,
        ``--compile``).
    cli_words : dict of str to object, default={}
        Words of the command line that stand for other values than
        themselves (``--weights none``: None; ``--crop weights``: True).
    repeated : bool, default=False
        A list, given on the command line by repeating the option.
    per_backbone : tuple, default=()
        What :class:`~skcnn.CNNFeatureTransformer` accepts besides, for
        ``backbone=[...]``: a value for each network.
    training : bool, default=False
        A parameter of training a classifier (:class:`~skcnn.CNNClassifier`,
        and :class:`~skcnn.LayerSearchCV`'s ``class_weight``). ``batch_size``,
        ``layer`` and ``tta`` are declared twice, for extraction and for
        training, where they mean something else (``tta="auto"`` is
        fine-tuning's alone: it measures).
    """

    name: str
    default: object
    constraints: tuple = ()
    choices: tuple[str, ...] = ()
    help: str = ""
    cli_flag: str | None = None
    cli_words: dict = field(default_factory=dict)
    repeated: bool = False
    per_backbone: tuple = ()
    training: bool = False

    @property
    def range(self) -> Range | None:
        """The numbers it takes, if any."""
        return next((constraint for constraint in self.constraints if isinstance(constraint, Range)), None)

    @property
    def number(self) -> type | None:
        """How the command line reads a number it takes: ``int``, ``float``, or None where it takes none."""
        if "random_state" in self.constraints:  # scikit-learn's seed: a whole number
            return int
        return None if self.range is None else self.range.number

    @property
    def switch(self) -> bool:
        """Whether its option takes no value: a bool default, with no words for its values."""
        return isinstance(self.default, bool) and not self.cli_words

    @property
    def cli_default(self):
        """The default as the command line writes it (``--crop``'s ``weights``)."""
        return next((word for word, value in self.cli_words.items() if value is self.default), self.default)

    def from_text(self, text: str):
        """The value ``text`` stands for on the command line; a ValueError saying what it takes if none."""
        words = {**{choice: choice for choice in self.choices}, **self.cli_words}
        if text.lower() in words:
            return words[text.lower()]
        if self.number is not None:
            try:
                value = self.number(text)
            except ValueError:
                value = None
            if value is not None and (self.range is None or value in self.range):
                return value
        if str in self.constraints:
            return text
        taken = [*words, str(self.range) if self.range is not None else "a whole number"]
        listed = f"{', '.join(taken[:-1])} or {taken[-1]}" if len(taken) > 1 else taken[0]
        raise ValueError(f"expected {listed}; got {text!r}")


#: Every shared parameter: those of extraction (:class:`~skcnn.CNNFeatureTransformer`'s,
#: in its signature's order), then those of training a classifier.
PARAMETERS = (
    Parameter(
        "backbone",
        "efficientnet_lite0",
        (str,),
        help="the network, e.g. resnet50, vgg16, timm/convnext_tiny",
        cli_flag="--backbone",
        per_backbone=(list, tuple),
    ),
    Parameter(
        "weights",
        "DEFAULT",
        (str, os.PathLike, None),
        help="DEFAULT, an enum name, a checkpoint path, or none",
        cli_flag="--weights",
        cli_words={"none": None},
        per_backbone=(list, tuple, dict),
    ),
    # `skcnn extract --layer` is a list of layers, `skcnn layers --layer` the search's
    # candidates: neither is this parameter as it is, so it has no option of its own.
    Parameter(
        "layer",
        PENULTIMATE,
        (str, list, tuple),
        help="where to tap: penultimate or a layer name (skcnn layers lists them)",
        per_backbone=(dict,),
    ),
    Parameter(
        "pooling",
        "avg",
        (list, tuple),
        POOLINGS,
        help="how a conv map becomes a vector: average, max, generalised mean, flattened, spatial pyramid",
        cli_flag="--pooling",
    ),
    Parameter(
        "relu", True, ("boolean",), help="keep negative activations (without it: codes ReLU'd)", cli_flag="--no-relu"
    ),
    Parameter(
        "input_size",
        None,
        (Range(Integral, 1), tuple, list, None),
        help="input side in pixels (none given: the weights' own)",
        cli_flag="--input-size",
        per_backbone=(dict,),
    ),
    Parameter(
        "crop",
        True,
        ("boolean", Range(Real, 0, 1, "right")),
        help="weights (their centre crop), none (the image whole), or the fraction kept",
        cli_flag="--crop",
        cli_words={"weights": True, "none": False},
    ),
    # On a 2-core CPU 4-8 images per pass measured faster per image than 32
    # (benchmarks/RESULTS.md), and a GPU user sets more.
    Parameter("batch_size", 8, (Range(Integral, 1),), help="images per forward pass", cli_flag="--batch-size"),
    Parameter(
        "num_workers",
        "auto",
        (Range(Integral, 0),),
        ("auto",),
        help="decoding threads, or auto (one per two cores)",
        cli_flag="--num-workers",
    ),
    Parameter(
        "precision",
        "auto",
        choices=PRECISIONS,
        help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32",
        cli_flag="--precision",
    ),
    Parameter(
        "decode",
        "auto",
        choices=DECODES,
        help="auto: JPEGs DCT-scaled while >= 3x the resize target; exact: never; draft: down to it",
        cli_flag="--decode",
    ),
    Parameter(
        "compile",
        False,
        ("boolean", dict),
        help="run the network through torch.compile (pays on long runs only)",
        cli_flag="--compile",
    ),
    Parameter(
        "runtime",
        "auto",
        choices=RUNTIMES,
        help="auto: ONNX Runtime on a CPU computing in fp32, else torch",
        cli_flag="--runtime",
    ),
    Parameter(
        "device",
        "auto",
        (str, TypeAt("torch", "device")),
        help="auto, cpu, cuda, cuda:N or mps",
        cli_flag="--device",
    ),
    # A command always shows its progress: no option.
    Parameter("progress", "auto", ("boolean",), ("auto",), help="a progress bar (auto: when someone watches)"),
    Parameter(
        "on_error",
        "raise",
        choices=ON_ERRORS,
        help="what a file that cannot be used does: skip leaves it out and names it with its reason, on stderr "
        "and in the output; raise exits with status 2 (extract, predict and inspect after the other images "
        "are done, layers --search and finetune before fitting)",
        cli_flag="--on-error",
    ),
    Parameter(
        "max_pixels",
        MAX_PIXELS,
        (Range(Integral, 1), None),
        help="image files with more pixels are refused (none: no limit)",
        cli_flag="--max-pixels",
        cli_words={"none": None},
    ),
    Parameter(
        "cache",
        None,
        (str, os.PathLike, TypeAt(f"{__package__}.cache", "CodeCache"), None),
        help="HDF5 code cache file, e.g. codes.h5",
        cli_flag="--cache",
    ),
    Parameter(
        "cache_layers",
        None,
        (list, tuple, None),
        help="a further layer to store in the same pass (repeat), for later searches",
        cli_flag="--cache-layer",
        repeated=True,
        per_backbone=(dict,),
    ),
    Parameter(
        "tta",
        None,
        (None,),
        TTA_POLICIES,
        help="codes averaged over the flips (or flips and rotations) of each image",
        cli_flag="--tta",
    ),
    # Fine-tuning's tta: "auto" weighs the views the measured symmetries allow against one view.
    Parameter(
        "tta",
        "auto",
        (None,),
        ("auto", *TTA_POLICIES),
        help="views whose codes are averaged at prediction: auto (those the data's symmetries allow, where "
        "they score better), flips, dihedral or none",
        cli_flag="--tta",
        cli_words={"none": None},
        training=True,
    ),
    # Fine-tuning's input_size: "auto" sees images with no up or down whole, at their own size.
    Parameter(
        "input_size",
        "auto",
        (Range(Integral, 1), tuple, list, None),
        ("auto",),
        help="input side in pixels: auto (the images' own size, no crop, where they have no up or down; "
        "else the weights'), or none (the weights' own)",
        cli_flag="--input-size",
        cli_words={"none": None},
        training=True,
    ),
    # Training a classifier. 32 images per step is the common choice for
    # fine-tuning, and batch norm stays frozen, so small batches do not hurt it.
    Parameter("batch_size", 32, (Range(Integral, 1),), help="images per step", cli_flag="--batch-size", training=True),
    Parameter(
        "layer",
        "auto",
        (str,),
        help="where the new head reads: auto, penultimate, or a layer name",
        cli_flag="--layer",
        training=True,
    ),
    Parameter(
        "unfreeze",
        "auto",
        (str,),
        help="what trains: auto, head, all, or a layer name and those after",
        cli_flag="--unfreeze",
        training=True,
    ),
    Parameter("max_epochs", 10, (Range(Integral, 1),), help="epochs at most", cli_flag="--max-epochs", training=True),
    Parameter(
        "learning_rate",
        1e-3,
        (Range(Real, 0, None, "neither"),),
        help="the largest learning rate",
        cli_flag="--learning-rate",
        training=True,
    ),
    # 0.1 measured better than 0.01 on animal-mnist (benchmarks/RESULTS.md).
    Parameter(
        "backbone_lr_ratio",
        0.1,
        (Range(Real, 0),),
        help="the backbone's learning rate over the head's",
        training=True,
    ),
    Parameter("weight_decay", 1e-4, (Range(Real, 0),), help="AdamW's weight decay", training=True),
    Parameter("batchnorm", "auto", choices=BATCHNORMS, help="what batch norm layers do while training", training=True),
    Parameter(
        "augment",
        "auto",
        (None, callable),
        ("auto", *AUGMENT_POLICIES),
        help="the augmentation of training images",
        training=True,
    ),
    Parameter("early_stopping", True, ("boolean",), help="stop when validation stops improving", training=True),
    Parameter(
        "validation_fraction",
        0.1,
        (Range(Real, 0, 1, "neither"),),
        help="the share of training images held out for early stopping",
        training=True,
    ),
    Parameter(
        "n_iter_no_change",
        3,
        (Range(Integral, 1),),
        help="epochs without improvement before stopping (counted once the learning rates are at half their peak)",
        training=True,
    ),
    Parameter("scoring", "accuracy", choices=SCORINGS, help="the validation score", training=True),
    Parameter(
        "class_weight",
        None,
        (dict, None),
        ("balanced",),
        help="weigh classes by the inverse of their size",
        cli_flag="--class-weight",
        training=True,
    ),
    Parameter(
        "random_state",
        None,
        ("random_state",),
        help="a seed, for a run that repeats",
        cli_flag="--random-state",
        training=True,
    ),
    Parameter(
        "checkpoint",
        None,
        (str, os.PathLike, None),
        help="a file saved every epoch; run again to resume",
        cli_flag="--checkpoint",
        training=True,
    ),
    # The decoded training images' budget: a quarter of the memory available.
    Parameter(
        "memory_limit",
        "auto",
        (Range(Integral, 0), str),
        help="memory the decoded images may take (bytes, e.g. 2GB, or auto); beyond it they go to --store-dir",
        cli_flag="--memory-limit",
        training=True,
    ),
    Parameter(
        "store_dir",
        None,
        (str, os.PathLike, None),
        help="folder for decoded images beyond --memory-limit",
        cli_flag="--store-dir",
        training=True,
    ),
)

_DECLARED = {(parameter.name, parameter.training): parameter for parameter in PARAMETERS}


def declared(name: str, *, training: bool = False) -> Parameter:
    """The declaration of parameter ``name``. Of ``batch_size`` and ``layer``,
    declared for both, ``training`` picks the one for training a classifier."""
    for key in ((name, training), (name, not training)):
        if key in _DECLARED:
            return _DECLARED[key]
    raise KeyError(f"{name!r} is not declared in skcnn.options.PARAMETERS.")


def constraints_of(*names: str, training: bool = False, several_backbones: bool = False) -> dict[str, list]:
    """The ``_parameter_constraints`` entries of ``names``, as scikit-learn validates them.

    ``training``: those of ``batch_size`` and ``layer`` for training
    (:func:`declared`); ``several_backbones``: with what ``backbone=[...]`` accepts.
    """
    # Imported here, not above: the command line imports this module where scikit-learn is absent.
    from .compat import Interval, StrOptions

    def built(constraint):
        if isinstance(constraint, Range):
            return Interval(constraint.kind, constraint.low, constraint.high, closed=constraint.closed)
        return constraint.resolve() if isinstance(constraint, TypeAt) else constraint

    constraints = {}
    for name in names:
        parameter = declared(name, training=training)
        given = [*parameter.constraints, *(parameter.per_backbone if several_backbones else ())]
        constraints[name] = [*([StrOptions(set(parameter.choices))] if parameter.choices else []), *map(built, given)]
    return constraints


def _defaults(name: str, doc: str, *, training: bool) -> type:
    """A frozen dataclass whose fields are the parameters' defaults, in the table's order."""
    declarations = [parameter for parameter in PARAMETERS if parameter.training is training]
    defaults = make_dataclass(name, [(p.name, object, field(default=p.default)) for p in declarations], frozen=True)
    defaults.__doc__, defaults.__module__ = doc, __name__
    return defaults


TransformerDefaults = _defaults(
    "TransformerDefaults", "Default of every :class:`~skcnn.CNNFeatureTransformer` parameter.", training=False
)
#: ``DEFAULTS.batch_size`` and so on: the defaults of extraction.
DEFAULTS = TransformerDefaults()
FinetuningDefaults = _defaults(
    "FinetuningDefaults",
    "Defaults of the parameters of training a classifier (:class:`~skcnn.CNNClassifier`'s own).",
    training=True,
)
#: ``FINETUNING.batch_size`` and so on: the defaults of training.
FINETUNING = FinetuningDefaults()


def parameter_names() -> tuple[str, ...]:
    """Names of the transformer's parameters, in signature order."""
    return tuple(parameter.name for parameter in PARAMETERS if not parameter.training)


def show_progress(setting, n_images: int, batch_size: int) -> bool:
    """The ``progress`` parameter resolved: ``"auto"`` shows a bar when someone
    watches (:func:`watched`) and there is more than one batch."""
    if setting == "auto":
        return watched() and n_images > batch_size
    return bool(setting)


def watched() -> bool:
    """Whether progress has a reader: stderr is a terminal, or this is a Jupyter
    kernel (whose stderr is a pipe to the notebook, where ``tqdm.auto`` draws a widget)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


__all__ = [
    "AUGMENT_POLICIES",
    "BATCHNORMS",
    "DECODES",
    "DEFAULTS",
    "FINETUNING",
    "MAX_PIXELS",
    "ON_ERRORS",
    "PARAMETERS",
    "PATHS_PER_TASK",
    "PENULTIMATE",
    "POOLINGS",
    "PRECISIONS",
    "RUNTIMES",
    "SCORINGS",
    "TTA_POLICIES",
    "FinetuningDefaults",
    "Parameter",
    "Range",
    "TransformerDefaults",
    "TypeAt",
    "constraints_of",
    "declared",
    "parameter_names",
    "show_progress",
    "watched",
]
