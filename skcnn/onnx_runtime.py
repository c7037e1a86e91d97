"""The tapped forward pass on ONNX Runtime: skcnn's fast CPU runtime.

The network copy torch would run (batch norm folded) is cut after its last
tap (:func:`skcnn.compiled.tapped_graph`), each tap an output, and exported
to ONNX once per machine: per backbone, weights, tapped layers, input size
and exporter and runtime versions. The file is kept in a per-user cache
folder (:func:`cache_dir`), written atomically, and read again by later
processes and by every Dask worker of the machine; a file that does not
load is exported again. ONNX Runtime then runs the batches; pooling stays
in torch, on the tapped activations, exactly as for the eager pass.

As with ``compile=True``, the first batch of each session also runs on
torch and the codes are compared (relative L2 within 1e-4): a network that
does not export (an operator ONNX lacks), a session that fails, or codes
that differ make that network run on torch, with one warning naming the
reason. Codes move by float rounding only, so the cache key does not
depend on the runtime: codes cached by one are hits for the other.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .compiled import CheckedGraphs, tapped_graph
from .files import atomic_path

#: Environment variable that names the folder of exported graphs.
CACHE_DIR_ENV = "SKCNN_ONNX_CACHE"
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
        path = self.exported(layers, head)
        session = _session(path, self.threads)
        names = [output.name for output in session.get_outputs()]

        def forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
            # NCHW, as exported; a channels_last batch is laid out again (one copy).
            images = batch.detach().to("cpu", torch.float32).contiguous().numpy()
            outputs = session.run(names, {INPUT_NAME: images})
            return {layer: torch.from_numpy(output) for layer, output in zip(layers, outputs, strict=True)}

        return forward

    def exported(self, layers: tuple[str, ...], head: str) -> Path:
        """The ``.onnx`` file of these taps, exported now unless a valid one is kept.

        Processes that start together (the workers of a machine) take turns:
        the first exports, the others wait and read its file.
        """
        path = cache_dir() / f"{self._file_stem(layers, head)}.onnx"
        if path.is_file() and _loads(path):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            if not (path.is_file() and _loads(path)):
                _export(tapped_graph(self.network, layers, head), layers, self.input_size, path)
        return path

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
            warnings.simplefilter("ignore")  # the exporter's progress and deprecation notes
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


__all__ = ["CACHE_DIR_ENV", "OnnxNetwork", "cache_dir", "missing"]
