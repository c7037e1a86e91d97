"""The tapped forward pass under ``torch.compile`` (opt-in: ``compile=True``).

The network is cut after its last tap by FX feature extraction (timm's
wrapper of torchvision's ``create_feature_extractor``: nodes no tap needs
are dropped, which is the early stop of the eager pass), its outputs are
the tapped activations, and that graph is compiled. Pooling stays eager:
it is cheap, and the compiled graph stays one per network copy, layer list
and batch shape.

- Partial batches are padded to the batch size, so one compiled graph
  serves a whole run instead of a recompilation for the last batch.
- The first batch runs both ways and the codes are compared. A network FX
  cannot trace, a compiler that fails (inductor needs a C++ compiler on
  the CPU) or codes that differ beyond rounding make that network run
  uncompiled, with a warning: ``compile`` only ever changes speed.

On the benchmark CPU inductor (with weight freezing) was about as fast
as the eager pass, after seconds of compilation per process
(``benchmarks/RESULTS.md``, "torch.compile"), which is why it is off by
default.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..options import PENULTIMATE
from .taps import run_taps

#: Largest difference allowed between compiled and eager codes (relative L2
#: over the first batch) in fp32: the reordered float sums of a compiled
#: graph moved codes by about 1e-7 (the same bound as folded batch norm).
FP32_TOLERANCE = 1e-4
#: In half precision, in units of the format's epsilon: bf16 and fp16 codes
#: measured 15-20 eps from fp32 ones (relative L2, median), so two correct
#: half-precision passes stay well within 64 eps; a wrong graph is off by ~1.
HALF_TOLERANCE_EPS = 64

#: Output name under which the extractor returns the head's output, whose
#: input is the penultimate code.
_HEAD_OUTPUT = "__skcnn_head__"


def check_compile_options(compile) -> dict | None:
    """``compile`` parameter -> keyword arguments of ``torch.compile`` (None: off).

    ``True`` compiles with inductor and weight freezing; a dict gives
    ``torch.compile``'s own arguments (``backend``, ``mode``, ``options``...).
    """
    if compile is False:
        return None
    if compile is True:
        return {"options": {"freezing": True}}
    if not isinstance(compile, Mapping):
        raise ValueError(f"compile must be True, False or a dict of torch.compile arguments; got {compile!r}.")
    allowed = set(inspect.signature(torch.compile).parameters) - {"model"}
    unknown = sorted(set(compile) - allowed)
    if unknown:
        raise ValueError(
            f"compile={dict(compile)!r}: {unknown} are not torch.compile arguments; allowed: {sorted(allowed)}."
        )
    backend = compile.get("backend", "inductor")
    backends = torch._dynamo.list_backends(exclude_tags=())
    if isinstance(backend, str) and backend not in backends:
        raise ValueError(f"compile={dict(compile)!r}: backend {backend!r} is not one of {backends}.")
    return dict(compile)


def tapped_graph(network: nn.Module, layers: tuple[str, ...], head: str) -> torch.fx.GraphModule:
    """``network`` as an FX graph returning ``{layer: activation}``, cut after the last tap."""
    from timm.models import create_feature_extractor  # timm's leaf modules, over torchvision's

    return_nodes = {layer: layer for layer in layers if layer != PENULTIMATE}
    if PENULTIMATE in layers:
        return_nodes[head] = _HEAD_OUTPUT
    graph = create_feature_extractor(network, return_nodes=return_nodes)
    output = next(node for node in graph.graph.nodes if node.op == "output")
    returned = dict(output.args[0])
    if PENULTIMATE in layers:
        head_node = returned.pop(_HEAD_OUTPUT)
        if head_node.op != "call_module" or not head_node.args:
            raise ValueError(f"the head {head!r} is not a module call in the traced graph")
        returned[PENULTIMATE] = head_node.args[0]
    output.args = ({layer: returned[layer] for layer in layers},)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


@dataclass
class _Graph:
    """One layer list's graph: its callable, or None once it failed; whether
    its first batch was checked against the eager pass."""

    forward: Callable | None
    checked: bool = False


@dataclass(eq=False)
class CheckedGraphs:
    """Runs tapped forward passes of one network copy through graphs that
    another engine built, one per layer list (:meth:`build`).

    Called like :func:`skcnn.network.taps.run_taps`, by a caller holding the
    network's lock, in inference mode and the precision's autocast. The
    first batch of each graph also runs eagerly and the codes are compared;
    a graph that cannot be built or run, or whose codes differ beyond
    rounding, is dropped with one warning, and its passes run eagerly: an
    engine only ever changes speed.
    """

    network: nn.Module
    #: Of the autocast the passes run in (float32: none).
    dtype: torch.dtype
    graphs: dict[tuple[tuple[str, ...], str], _Graph] = field(default_factory=dict)

    #: How the warning names the engine and what happens instead.
    engine = "the graph engine"
    fallback = "running it eagerly"

    def build(self, layers: tuple[str, ...], head: str) -> Callable[[torch.Tensor], Mapping[str, torch.Tensor]]:
        """The engine's callable: a batch in, ``{layer: activation}`` out."""
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor, layers, head: str, on_tap) -> dict[str, torch.Tensor]:
        layers = tuple(dict.fromkeys(layers))
        graph = self.graphs.get((layers, head))
        if graph is None:
            graph = self.graphs[(layers, head)] = self._built(layers, head)
        if graph.forward is None:
            return run_taps(self.network, batch, layers, head, on_tap)
        try:
            activations = graph.forward(batch)
        except Exception as exc:
            self._give_up(graph, f"{type(exc).__name__}: {_first_line(exc)}")
            return run_taps(self.network, batch, layers, head, on_tap)
        taken = {layer: on_tap(activations[layer][: len(batch)], layer) for layer in layers}
        if not graph.checked:
            eager = run_taps(self.network, batch, layers, head, on_tap)
            differences = {layer: _difference(taken[layer], eager[layer]) for layer in layers}
            worst = max(differences, key=differences.get)
            if differences[worst] > self._tolerance():
                self._give_up(graph, f"its codes of {worst!r} differ from the eager pass by {differences[worst]:.1e}")
                return eager
            graph.checked = True
        return taken

    def _built(self, layers: tuple[str, ...], head: str) -> _Graph:
        try:
            return _Graph(self.build(layers, head))
        except Exception as exc:
            graph = _Graph(None)
            self._give_up(graph, f"{type(exc).__name__}: {_first_line(exc)}")
            return graph

    def _give_up(self, graph: _Graph, reason: str) -> None:
        graph.forward = None
        warnings.warn(
            f"{self.engine} of {type(self.network).__name__} failed ({reason}); {self.fallback}.",
            RuntimeWarning,
            stacklevel=4,
        )

    def _tolerance(self) -> float:
        if self.dtype == torch.float32:
            return FP32_TOLERANCE
        return HALF_TOLERANCE_EPS * torch.finfo(self.dtype).eps


@dataclass(eq=False)
class CompiledNetwork(CheckedGraphs):
    """Tapped passes through ``torch.compile``d graphs (``compile=True``)."""

    options: dict = field(default_factory=dict)
    batch_size: int = 8

    engine = "compile: torch.compile"
    fallback = "running it uncompiled (same codes, eager speed)"

    def build(self, layers: tuple[str, ...], head: str) -> Callable[[torch.Tensor], Mapping[str, torch.Tensor]]:
        forward = torch.compile(tapped_graph(self.network, layers, head), **{"dynamic": False, **self.options})
        return lambda batch: forward(_padded(batch, self.batch_size))


def _padded(batch: torch.Tensor, rows: int) -> torch.Tensor:
    """``batch`` with zero rows appended up to ``rows`` (one shape per run)."""
    if len(batch) >= rows:
        return batch
    padding = batch.new_zeros((rows - len(batch), *batch.shape[1:]))
    return torch.cat([batch, padding]).contiguous(memory_format=_memory_format(batch))


def _memory_format(batch: torch.Tensor) -> torch.memory_format:
    if batch.ndim == 4 and batch.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _difference(codes: torch.Tensor, reference: torch.Tensor) -> float:
    """Relative L2 distance of two batches of codes."""
    codes, reference = codes.float(), reference.float()
    return ((codes - reference).norm() / reference.norm().clamp_min(1e-12)).item()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"
