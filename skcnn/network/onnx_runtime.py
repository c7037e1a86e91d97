"""The tapped forward pass on ONNX Runtime: skcnn's fast CPU runtime.

The network copy torch would run (batch norm folded) is cut after its last
tap (:func:`skcnn.network.compiled.tapped_graph`), each tap an output, and exported
to ONNX once per machine: per backbone, weights, tapped layers, input size
and exporter and runtime versions. The file is kept in a per-user cache
folder (:func:`cache_dir`), written atomically, and read again by later
processes and by every Dask worker of the machine; a file that does not
load is exported again. ONNX Runtime then runs the batches; pooling stays
in torch, on the tapped activations, exactly as for the eager pass.

Every fine-tuned model and every new list of layers adds a graph (13 MB
for EfficientNet-Lite0, about 100 MB for a ResNet-50), so the folder is
bounded (:func:`max_cache_bytes`): after each export the graphs used least
recently go (each use touches its file's time), never the one just
written nor one another process is exporting or loading right now.
:func:`clear_graph_cache` empties it.

As with ``compile=True``, the first batch of each session also runs on
torch and the codes are compared (relative L2 within 1e-4): a network that
does not export (an operator ONNX lacks), a session that fails, or codes
that differ make that network run on torch, with one warning naming the
reason. Codes move by float rounding only, so the cache key does not
depend on the runtime: codes cached by one are hits for the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_path, remove_dead_temporaries
from .compiled import CheckedGraphs, tapped_graph

#: Environment variable that names the folder of exported graphs.
CACHE_DIR_ENV = "SKCNN_ONNX_CACHE"
#: Environment variable that bounds the folder of exported graphs (bytes).
CACHE_MAX_BYTES_ENV = "SKCNN_ONNX_CACHE_MAX_BYTES"
#: The bound of the folder of exported graphs by default: 1 GiB holds the
#: graphs of a dozen networks and their layer lists at once (EfficientNet-
#: Lite0's is 13 MB, a ResNet-50's about 100 MB), more than one project
#: uses in turn, while an unbounded folder grew to 356 MB of stale graphs
#: on one machine. An evicted graph is only exported again (seconds).
MAX_CACHE_BYTES = 2**30
#: ONNX opset of the exports: the torch.export-based exporter's own default
#: in torch 2.9+, which ONNX Runtime 1.17 and later run.
OPSET = 18
#: Name of the graph's input (a batch of normalised images, NCHW).
INPUT_NAME = "images"
#: Bumped whenever the exported graph changes for the same network and taps.
EXPORT_VERSION = 1
#: Whether ONNX Runtime's idle intra-op threads spin-wait for the next
#: operator. Spinning saves microseconds per operator on an idle machine but
#: takes cores from the decoding threads that feed the network
#: (``benchmarks/RESULTS.md``, "Runtimes").
ALLOW_SPINNING = False


def missing() -> str | None:
    """Why the ONNX Runtime path cannot run here (a package missing), or None."""
    for package in ("onnxruntime", "onnxscript", "onnx"):
        try:
            __import__(package)
        except ImportError:
            return f"{package} is not installed (pip install {package})"
    return None


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$SKCNN_ONNX_CACHE``, else the
    platform's per-user cache folder (``~/.cache/skcnn/onnx`` on Linux)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("skcnn", appauthor=False)) / "onnx"


def max_cache_bytes() -> int:
    """How many bytes of graphs :func:`cache_dir` keeps after an export.

    ``$SKCNN_ONNX_CACHE_MAX_BYTES`` where set (``0`` keeps only the graph
    just exported), else :data:`MAX_CACHE_BYTES`.
    """
    configured = os.environ.get(CACHE_MAX_BYTES_ENV, "").strip()
    if not configured:
        return MAX_CACHE_BYTES
    try:
        bound = int(configured)
    except ValueError:
        bound = -1
    if bound < 0:
        raise ValueError(f"${CACHE_MAX_BYTES_ENV}={configured!r}: give a number of bytes (0 or more).")
    return bound


def clear_graph_cache() -> int:
    """Remove the ONNX graphs exported for ``runtime="onnxruntime"``; return the bytes freed.

    The graphs in :func:`cache_dir` are exports of the networks that
    :class:`~skcnn.CNNFeatureTransformer` and a fine-tuned
    :class:`~skcnn.CNNClassifier` run on ONNX Runtime, made again (in
    seconds) where a later fit needs one. A graph that another process is
    exporting or loading at this moment is kept, as are the temporary files
    of exports still running.

    Returns
    -------
    n_bytes : int
        The size of the files removed.

    Examples
    --------
    In a folder of its own (``$SKCNN_ONNX_CACHE``), here with a dummy graph:

    >>> import os, tempfile
    >>> from unittest import mock
    >>> from skcnn.network.onnx_runtime import clear_graph_cache
    >>> with tempfile.TemporaryDirectory() as folder, mock.patch.dict(os.environ, SKCNN_ONNX_CACHE=folder):
    ...     _ = open(os.path.join(folder, "resnet18-0123.onnx"), "wb").write(bytes(1000))
    ...     clear_graph_cache(), os.listdir(folder)
    (1000, [])
    """
    return _evict(cache_dir(), 0)


@dataclass(eq=False)
class OnnxNetwork(CheckedGraphs):
    """Tapped passes of one network copy through ONNX Runtime sessions.

    ``identity`` names what the copy computes (backbone, weights, which
    convolutions were left unfolded) for the file name of its exports.
    """

    identity: Mapping = None
    input_size: tuple[int, int] = (224, 224)
    #: ONNX Runtime's intra-op threads (0: its own default, one per core).
    threads: int = 0

    engine = "runtime='onnxruntime': ONNX Runtime"
    fallback = "running it on torch (same codes, torch's speed)"

    def build(self, layers: tuple[str, ...], head: str) -> Callable[[torch.Tensor], Mapping[str, torch.Tensor]]:
        with self.exported(layers, head) as path:  # not evicted by another process while it loads
            session = _session(path, self.threads)
        names = [output.name for output in session.get_outputs()]

        def forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
            # NCHW, as exported; a channels_last batch is laid out again (one copy).
            images = batch.detach().to("cpu", torch.float32).contiguous().numpy()
            outputs = session.run(names, {INPUT_NAME: images})
            return {layer: torch.from_numpy(output) for layer, output in zip(layers, outputs, strict=True)}

        return forward

    @contextlib.contextmanager
    def exported(self, layers: tuple[str, ...], head: str) -> Iterator[Path]:
        """The ``.onnx`` file of these taps, exported now unless a valid one is kept, locked while in the block.

        Processes that start together (the workers of a machine) take turns:
        the first exports, the others wait and read its file. Readers hold
        the file's lock shared, an export holds it alone, and eviction
        passes over a graph whose lock it cannot take.
        """
        path = cache_dir() / f"{self._file_stem(layers, head)}.onnx"
        lock = _opened_lock(path)
        if lock is None:  # a folder this user may only read (a shared cache, filled beforehand)
            if not (path.is_file() and _loads(path)):
                raise PermissionError(f"cannot write to {os.fspath(path.parent)!r} (${CACHE_DIR_ENV})")
            yield path
            return
        with lock:  # the lock goes with the file's closing, or the process's death
            fcntl.flock(lock, fcntl.LOCK_SH)
            if not (path.is_file() and _loads(path)):
                # Not atomic: the shared lock goes first, so two processes never wait on each other.
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (path.is_file() and _loads(path)):
                    _export(tapped_graph(self.network, layers, head), layers, self.input_size, path)
                    _evict(path.parent, max_cache_bytes(), keep=path)
            with contextlib.suppress(OSError):  # used now: the last to be evicted (not where another user's)
                os.utime(path)
            yield path

    def _file_stem(self, layers: tuple[str, ...], head: str) -> str:
        import onnxruntime

        described = {
            **dict(self.identity or {}),
            "layers": list(layers),
            "head": head,
            "input_size": list(self.input_size),
            "export_version": EXPORT_VERSION,
            "opset": OPSET,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in str(described.get("backbone", "network")))
        return f"{name}-{digest}"


class _Outputs(nn.Module):
    """The tapped graph with its outputs as a tuple, in layer order (ONNX has no dicts)."""

    def __init__(self, tapped: nn.Module, layers: tuple[str, ...]):
        super().__init__()
        self.tapped = tapped  # not "graph": the exporter reads a module's .graph as an FX graph
        self.layers = layers

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taken = self.tapped(images)
        return tuple(taken[layer] for layer in self.layers)


def _export(graph: nn.Module, layers: tuple[str, ...], input_size: tuple[int, int], path: Path) -> None:
    """Export to a temporary file beside ``path``, then rename it: readers never
    see half a file, and concurrent exporters leave one whole file."""
    import warnings

    example = torch.zeros(2, 3, *input_size)
    outputs = [f"tap{i}" for i in range(len(layers))]
    # private: a per-user cache of copies of the user's networks, their
    # weights included (possibly fine-tuned, not public), readable by the
    # owner only, as the files have been since the first release.
    with atomic_path(path, private=True) as temporary:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The exporter's notes on its own deprecated paths (torch releases before 2.14 gave some); anything
            # else it warns of reaches the user.
            for note in (DeprecationWarning, FutureWarning):
                warnings.simplefilter("ignore", note)
            torch.onnx.export(
                _Outputs(graph, layers).eval(),
                (example,),
                temporary,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )


def _opened_lock(graph: Path):
    """The lock file of a graph, open (created where missing), or None where the folder may not be written."""
    try:
        graph.parent.mkdir(parents=True, exist_ok=True)
        return open(graph.with_suffix(".lock"), "a")
    except OSError:
        return None


def _evict(folder: Path, limit: int, keep: Path | None = None) -> int:
    """Remove graphs from ``folder``, least recently used first, until they take ``limit`` bytes or less.

    ``keep`` stays, as does a graph whose lock another process holds (it
    exports or loads it). Lock files without a graph and temporary files of
    dead exporters go too. Returns the bytes freed.
    """
    freed = remove_dead_temporaries(folder)
    graphs = []
    for graph in folder.glob("*.onnx"):
        with contextlib.suppress(OSError):  # removed meanwhile
            info = graph.stat()
            graphs.append((info.st_mtime, info.st_size, graph))
    total = sum(size for _, size, _ in graphs)
    for _, size, graph in sorted(graphs):
        if total <= limit:
            break
        if graph != keep and _remove_unless_locked(graph):
            freed, total = freed + size, total - size
    for lock in folder.glob("*.lock"):
        if not lock.with_suffix(".onnx").exists():
            _remove_unless_locked(lock.with_suffix(".onnx"))
    return freed


def _remove_unless_locked(graph: Path) -> bool:
    """Remove a graph and its lock file, unless another process holds the lock; whether it went."""
    lock_path = graph.with_suffix(".lock")
    lock = _opened_lock(graph)
    if lock is None:
        return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # in use: exported or loaded right now
            return False
        try:
            graph.unlink(missing_ok=True)
        except OSError:  # another user's, in a shared folder
            return False
        # A process waiting on this lock file goes on with a file no longer in the folder: at worst the
        # graph is exported twice, each export whole.
        lock_path.unlink(missing_ok=True)
    return True


def _loads(path: Path) -> bool:
    """Whether a kept file is a whole ONNX model (a damaged one is exported again)."""
    try:
        import onnx

        onnx.checker.check_model(os.fspath(path))
        return True
    except Exception:
        return False


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if ALLOW_SPINNING else "0")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_MAX_BYTES_ENV",
    "MAX_CACHE_BYTES",
    "OnnxNetwork",
    "cache_dir",
    "clear_graph_cache",
    "max_cache_bytes",
    "missing",
]
