"""torch helpers shared by the exporters (imported only when exporting)."""

from __future__ import annotations

import contextlib
import inspect
import linecache
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hermes.quiver._deps import require
from hermes.quiver.exceptions import ExportError

__all__ = [
    "TRACER_WARNING_POLICIES",
    "check_tracer_warning_policy",
    "flatten_outputs",
    "forward_parameter_names",
    "quiet_torch_deprecations",
    "to_numpy",
    "torch",
    "watch_tracer_warnings",
]

TRACER_WARNING_POLICIES = ("error", "accept")


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


def check_tracer_warning_policy(policy: str) -> str:
    """Validate the ``tracer_warnings`` exporter option."""
    if policy not in TRACER_WARNING_POLICIES:
        raise ExportError(f"tracer_warnings: {policy!r} is not one of {TRACER_WARNING_POLICIES}")
    return policy


def _describe(record: warnings.WarningMessage) -> str:
    line = linecache.getline(record.filename, record.lineno).strip()
    where = f"{record.filename}:{record.lineno}"
    return f"{where}: {line}\n    TracerWarning: {record.message}" if line else f"{where}: {record.message}"


@contextlib.contextmanager
def watch_tracer_warnings(policy: str, what: str) -> Iterator[list[warnings.WarningMessage]]:
    """Collect the ``TracerWarning``s torch emits while tracing; fail the export on them.

    Tracing records the operations one input runs: a Python branch on tensor data, a
    tensor turned into a Python number, or an iterator over a tensor is frozen to what
    that input did, and torch says so with a ``TracerWarning``. With ``policy="error"``
    the export fails, quoting each warning's message and source line; with ``"accept"``
    they are logged as warnings and the export goes on. Other warnings pass through.

    Raises:
        ExportError: ``policy="error"`` and tracing warned.
    """
    t = torch()
    category = t.jit.TracerWarning
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", category)
        yield records
    traced = [r for r in records if issubclass(r.category, category)]
    for record in records:
        if not issubclass(record.category, category):
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    if not traced:
        return
    unique = list(dict.fromkeys(_describe(r) for r in traced))
    text = "\n  ".join(unique)
    if policy == "error":
        raise ExportError(
            f"{what}: tracing warned that the traced graph may not match the module for other inputs "
            f"(data-dependent control flow is frozen to the example's branch):\n  {text}\n"
            "Fix the module (torch.where or torch.cond instead of a Python if), export TorchScript "
            "with method='script' (keeps the branch), or pass tracer_warnings='accept' if the "
            "branch never depends on the data"
        )
    warnings.warn(f"{what}: accepted tracer warnings:\n  {text}", UserWarning, stacklevel=3)
