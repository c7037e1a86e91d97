"""How the frozen network computes: precision, memory layout, folded batch norm.

None of this changes which function the network computes, only how its
arithmetic is done:

- **precision**: ``"fp32"``, or autocast to ``"bf16"`` / ``"fp16"``
  (matrix products and convolutions in half width, accumulations and
  pooling in fp32). ``"auto"`` picks fp16 on CUDA, bf16 on a CPU with
  native bf16 instructions (AVX512-BF16 or AMX), fp32 elsewhere. Half
  precision moves codes beyond float rounding (how far, and what it does
  to accuracy: ``benchmarks/RESULTS.md``), so the precision is part of
  the cache key.
- **channels_last** memory layout (NHWC), which oneDNN and cuDNN
  convolutions run faster on.
- **batch norm folded** into the convolution before it: in eval mode a
  BatchNorm is an affine map per channel, which the convolution's weights
  and bias absorb; one pass over the activations fewer.

Layout and folding are applied to a private copy of the network (the
shared :class:`~skcnn.network.backbones.Backbone` is never modified); a
convolution whose own output is tapped is not folded, and the folded copy
is checked against the original on a probe batch before use. In fp32
they change codes only by float rounding (about 1e-6 relative).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import onnx_runtime
from .backbones import Backbone
from .compiled import CheckedGraphs, CompiledNetwork
from .onnx_runtime import OnnxNetwork

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Largest difference allowed between the folded and the original network
#: on the probe batch, relative to the largest output value; beyond it the
#: original network is used.
FOLD_TOLERANCE = 1e-4


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> the fastest precision that this device computes natively."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_runtime(
    runtime: str, precision: str, device: torch.device, compile_options: dict | None, network: nn.Module | None = None
) -> tuple[str, str]:
    """The runtime and the resolved precision it computes in.

    ``"auto"``: ONNX Runtime where the network computes in fp32 on a CPU
    (CPUs without native bf16, or ``precision="fp32"``), where it measured
    faster than torch; torch where bf16 is native (torch's bf16 measured
    faster than ONNX Runtime's fp32 there), with ``compile``, and on CUDA
    and MPS (``benchmarks/RESULTS.md``, "Runtimes"). One exception: with
    both ``"auto"``, a ``network`` with depthwise convolutions
    (EfficientNet, MobileNet, ...) runs ONNX Runtime in fp32 even where
    bf16 is native, where that measured faster end to end (:func:`bf16_pays`).
    An explicit ``"onnxruntime"`` computes in fp32 and is checked against
    the other parameters.
    """
    resolved = resolve_precision(precision, device)
    if runtime == "torch":
        return runtime, resolved
    if runtime == "onnxruntime":
        why_not = _why_not_onnxruntime(device, "fp32" if precision == "auto" else precision, compile_options)
        why_not = why_not or _missing_packages()
        if why_not:
            raise ValueError(f"runtime='onnxruntime': {why_not}. Use runtime='torch' or 'auto'.")
        return runtime, "fp32"
    if precision == "auto" and resolved == "bf16" and network is not None and not bf16_pays(network):
        why_not = _why_not_onnxruntime(device, "fp32", compile_options) or _missing_packages()
        resolved = resolved if why_not else "fp32"
    if _why_not_onnxruntime(device, resolved, compile_options):
        return "torch", resolved
    missing = _missing_packages()
    if missing:
        _say_once(f"runtime='auto' runs torch: {missing}; with them the CPU runs faster.")
        return "torch", resolved
    return "onnxruntime", "fp32"


def bf16_pays(network: nn.Module) -> bool:
    """Whether torch's bf16 on a CPU beats ONNX Runtime's fp32 for ``network``.

    Not for networks with depthwise convolutions: on an AMX Xeon torch's bf16
    ran EfficientNet-Lite0 at 178 img/s against ONNX Runtime's 228 in fp32,
    and end to end 2.55x / 3.33x a naive loop on 500-1000 px photos, 4.8x /
    6.7x on 12 MP ones; on an AVX512-BF16 EPYC the network alone ran 348 vs
    358. Dense convolutions gain: ResNet-50 ran 86 vs 38 img/s in bf16
    (``benchmarks/RESULTS.md``, "Runtimes" and "Phone photos").
    """
    return not any(
        isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for module in network.modules()
    )


def _why_not_onnxruntime(device: torch.device, precision: str, compile_options: dict | None) -> str | None:
    """Why these parameters rule ONNX Runtime out, or None."""
    if device.type != "cpu":
        return f"it runs on the CPU, not on device {str(device)!r} (torch runs there)"
    if precision != "fp32":
        return f"it computes in fp32, not precision={precision!r}"
    if compile_options is not None:
        return "compile applies to runtime='torch'"
    return None


def _missing_packages() -> str | None:
    missing = onnx_runtime.missing()
    return f"the packages it needs are missing: {missing}" if missing else None


_said: set[str] = set()


def _say_once(message: str) -> None:
    """A RuntimeWarning the first time a process meets this case, then silence."""
    if message not in _said:
        _said.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


@dataclass(frozen=True)
class Inference:
    """How batches run through a backbone: which copy of the network, in
    which memory layout and precision."""

    network: nn.Module
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    #: Runs the tapped passes through another engine instead of eager torch:
    #: compiled graphs (:mod:`skcnn.network.compiled`) or ONNX Runtime
    #: (:mod:`skcnn.network.onnx_runtime`).
    runner: CheckedGraphs | None = None

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """Move a host batch to the device in the network's layout."""
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)


#: Device types where channels_last and folded batch norm measured faster
#: (CPU: ``benchmarks/bench_throughput.py``) or are the vendor's advice (CUDA).
FAST_LAYOUT_DEVICES = ("cpu", "cuda")


def inference_for(
    backbone: Backbone,
    precision: str = "fp32",
    *,
    channels_last: bool | None = None,
    fold_batchnorm: bool | None = None,
    keep: frozenset[str] = frozenset(),
    input_size: tuple[int, int] = (224, 224),
    compile_options: dict | None = None,
    batch_size: int = 8,
    runtime: str = "torch",
    threads: int = 0,
) -> Inference:
    """An :class:`Inference` for ``backbone``; ``keep`` names tapped layers,
    whose own outputs must not change (convolutions in it are not folded).
    ``None``: channels_last and folding where they pay (CPU and CUDA).
    ``compile_options``: ``torch.compile`` arguments, graphs for batches of
    ``batch_size`` (None: eager). ``runtime="onnxruntime"``: the copy runs
    on ONNX Runtime with ``threads`` intra-op threads (0: its default)."""
    precision = resolve_precision(precision, backbone.device)
    fast = backbone.device.type in FAST_LAYOUT_DEVICES
    channels_last = fast if channels_last is None else channels_last
    fold_batchnorm = fast if fold_batchnorm is None else fold_batchnorm
    network = backbone.network
    convolutions = {name for name, module in network.named_modules() if isinstance(module, nn.Conv2d)}
    if channels_last or fold_batchnorm:
        # Only tapped convolutions change the folding: other layer lists share one copy.
        copy_key = (channels_last, fold_batchnorm, keep & convolutions, tuple(input_size))
        network = backbone.derive("private copy", copy_key, lambda: _private_copy(backbone, *copy_key), MAX_COPIES)
    if runtime == "onnxruntime":
        identity = {
            "backbone": backbone.spec.name,
            "weights": backbone.weights_id,
            "folded": fold_batchnorm,
            "unfolded": sorted(keep & convolutions) if fold_batchnorm else [],
        }
        runner = backbone.derive(
            "onnxruntime",
            (id(network), tuple(input_size), threads),
            lambda: OnnxNetwork(
                network, torch.float32, identity=identity, input_size=tuple(input_size), threads=threads
            ),
            MAX_COPIES,
        )
        # ONNX Runtime takes NCHW batches: no channels_last copy of each batch.
        return Inference(network, backbone.device, "fp32", channels_last=False, runner=runner)
    runner = None
    if compile_options is not None:
        dtype = DTYPES.get(precision, torch.float32)
        runner = backbone.derive(
            "compiled",
            (id(network), repr(sorted(compile_options.items())), batch_size, dtype),
            lambda: CompiledNetwork(network, dtype, options=compile_options, batch_size=batch_size),
            MAX_COPIES,
        )
    return Inference(network, backbone.device, precision, channels_last, runner)


#: Private copies (and compiled graphs) kept per loaded backbone: each is a
#: whole network. Layer lists that tap no convolution share one copy, so a
#: few cover a layer search; more would only hold memory.
MAX_COPIES = 4


def _private_copy(
    backbone: Backbone, channels_last: bool, fold: bool, keep: frozenset[str], input_size: tuple[int, int]
) -> nn.Module:
    with backbone.lock:
        network = copy.deepcopy(backbone.network)
    if fold:
        example = torch.rand(2, 3, *input_size, device=backbone.device)
        network = fold_batchnorm(network, example, keep)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network


def fold_batchnorm(network: nn.Module, example: torch.Tensor, keep: frozenset[str] = frozenset()) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d``
    into it, in place; return ``network``, or an unfolded copy's original if
    the folded outputs drift beyond :data:`FOLD_TOLERANCE`.

    Pairs are found by running ``example``: a BatchNorm whose input is the
    very tensor a convolution just returned. The BatchNorm is replaced, at
    the same name, by what it does besides normalising (timm's
    ``BatchNormAct2d`` keeps its activation), so taps on it see the same
    values; convolutions named in ``keep`` are left as they are.
    """
    modules = dict(network.named_modules())
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def after_conv(name):
        def hook(module, args, output):
            produced[id(output)] = (name, output)

        return hook

    def before_norm(name):
        def hook(module, args, output):
            source = produced.get(id(args[0]))
            if source is not None and source[1] is args[0]:
                pairs.append((source[0], name))

        return hook

    handles = []
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d) and name not in keep:
            handles.append(module.register_forward_hook(after_conv(name)))
        elif type(module) is nn.BatchNorm2d or _is_batchnorm_act(module):
            handles.append(module.register_forward_hook(before_norm(name)))
    try:
        with torch.inference_mode():
            reference = network(example)
    finally:
        for handle in handles:
            handle.remove()
    calls = {}
    for conv_name, _ in pairs:
        calls[conv_name] = calls.get(conv_name, 0) + 1
    original = copy.deepcopy(network)
    for conv_name, norm_name in pairs:
        if calls[conv_name] == 1:  # a conv feeding two norms keeps its output
            _fold_pair(network, modules[conv_name], modules[norm_name], norm_name)
    with torch.inference_mode():
        folded = network(example)
    scale = reference.abs().max().clamp_min(1e-12)
    if ((folded - reference).abs().max() / scale).item() > FOLD_TOLERANCE:
        return original
    return network


def _is_batchnorm_act(module: nn.Module) -> bool:
    """timm's ``BatchNormAct2d``: a BatchNorm2d followed by dropout and activation."""
    return isinstance(module, nn.BatchNorm2d) and hasattr(module, "act") and hasattr(module, "drop")


def _fold_pair(network: nn.Module, conv: nn.Conv2d, norm: nn.BatchNorm2d, norm_name: str) -> None:
    if not norm.track_running_stats or norm.running_var is None:
        return
    with torch.no_grad():
        scale = norm.running_var.add(norm.eps).rsqrt()
        if norm.affine:
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.affine:
            shift = shift + norm.bias
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias, requires_grad=False)
    parent_name, _, child = norm_name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    after = nn.Sequential(norm.drop, norm.act) if _is_batchnorm_act(norm) else nn.Identity()
    setattr(parent, child, after)
