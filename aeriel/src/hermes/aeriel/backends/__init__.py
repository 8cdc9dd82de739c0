"""Portable Triton backends: python-based stand-ins for Triton's ``onnxruntime`` and ``pytorch``.

Triton's ONNX Runtime and PyTorch backends ship only inside NVIDIA's containers. hermes ships
its own backends with the same names, written for Triton's python backend, so a standard
model folder (``<version>/model.onnx`` with ``platform: "onnxruntime_onnx"``, or
``<version>/model.pt`` with ``platform: "pytorch_libtorch"``) serves unchanged on any CPU
machine. The local runtime copies ``<name>/model.py`` of this folder into its backend
directory; Triton then runs those files through the python backend.

Layout:

* ``onnxruntime/model.py``, ``pytorch/model.py``: the files Triton loads (tiny).
* :mod:`._config`: the model configuration as the backends need it, parsed into
  ``model_config_pb2.ModelConfig`` (pure Python; tensors, types and sequence kinds are quiver's).
* :mod:`._state`: per-sequence implicit state (pure numpy).
* :mod:`._executor`: batching, sequences and state around one model call (pure numpy).
* :mod:`._triton`: the bridge between Triton's python backend and the executor.
* :mod:`._onnxruntime`, :mod:`._torchscript`: how each framework loads and runs a model.

Nothing here imports torch or onnxruntime at import time.
"""

from hermes.aeriel.backends._config import BackendConfig, BackendConfigError
from hermes.aeriel.backends._executor import BatchExecutor, Request
from hermes.aeriel.backends._state import SequenceStates

__all__ = [
    "BackendConfig",
    "BackendConfigError",
    "BatchExecutor",
    "Request",
    "SequenceStates",
]
