"""torch helpers shared by the exporters (imported only when exporting)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hermes.quiver._deps import require
from hermes.quiver.exceptions import ExportError

__all__ = ["flatten_outputs", "forward_parameter_names", "quiet_torch_deprecations", "to_numpy", "torch"]


def torch() -> Any:
    """The torch module, or MissingDependencyError with a hint."""
    return require("torch", "exporting a torch module")


@contextlib.contextmanager
def quiet_torch_deprecations() -> Iterator[None]:
    """Silence the DeprecationWarnings torch 2.13 emits on every torch.jit / legacy ONNX call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\..*")
        # raised from copyreg (so no torch module to match) while torch.export copies tree specs
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec", category=FutureWarning)
        registration = logging.getLogger("torch.onnx._internal.exporter._registration")
        registration.addFilter(_drop_torchvision_notice)
        try:
            yield
        finally:
            registration.removeFilter(_drop_torchvision_notice)


def _drop_torchvision_notice(record: logging.LogRecord) -> bool:
    """Drop the four "torchvision is not installed. Skipping torchvision::nms" lines of every ONNX export."""
    return not str(record.msg).startswith("torchvision is not installed")


def forward_parameter_names(module: Any) -> list[str]:
    """Names of ``module.forward``'s positional parameters (empty if it has *args or none can be read)."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    names = []
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(param.name)
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            return []
    return names


def flatten_outputs(outputs: Any, names: Sequence[str] | None = None) -> tuple[list[Any], list[str] | None]:
    """The tensors a module returned, in order, and their names when it returned a dict.

    Raises:
        ExportError: the module returned something other than tensors.
    """
    t = torch()
    if isinstance(outputs, t.Tensor):
        return [outputs], None
    if isinstance(outputs, Mapping):
        return list(outputs.values()), [str(k) for k in outputs]
    if isinstance(outputs, (tuple, list)) and all(isinstance(o, t.Tensor) for o in outputs):
        return list(outputs), None
    raise ExportError(
        f"the module returned {type(outputs).__name__}; expected a tensor, a tuple/list of tensors or a dict of tensors"
    )


def to_numpy(tensor: Any) -> np.ndarray:
    """A CPU numpy copy of a tensor (bfloat16 is widened to float32)."""
    t = torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype == t.bfloat16:
        tensor = tensor.float()
    return np.asarray(tensor.numpy())
