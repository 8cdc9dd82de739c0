"""Triton platforms (and backends) that hermes.quiver writes, with their file conventions."""

from __future__ import annotations

import enum

from hermes.quiver.exceptions import ModelConfigError

__all__ = ["Platform"]


class Platform(enum.StrEnum):
    """Where a model runs in Triton.

    The value is what ``config.pbtxt`` says: the ``platform`` field, or for the python
    backend the ``backend`` field (``backend: "python"``).
    """

    ONNX = "onnxruntime_onnx"
    TORCHSCRIPT = "pytorch_libtorch"
    TENSORRT = "tensorrt_plan"
    PYTHON = "python"
    TORCH_AOTI = "torch_aoti"
    ENSEMBLE = "ensemble"

    def __str__(self) -> str:
        return self.value

    @property
    def filename(self) -> str:
        """The file (in ``<model>/<version>/``) Triton loads for this platform."""
        return _FILENAMES[self]

    @property
    def is_backend(self) -> bool:
        """True when config.pbtxt names it in ``backend`` rather than ``platform``."""
        return self is Platform.PYTHON

    @classmethod
    def _missing_(cls, value: object) -> Platform:
        """A member's name in any case (``"onnx"``); otherwise an error listing the valid values."""
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls.__members__[value.upper()]
        raise ModelConfigError(
            f"platform: unknown value {value!r}; expected one of {sorted(p.value for p in cls)} "
            f"or a name {sorted(cls.__members__)} (e.g. Platform.ONNX)"
        )

    @classmethod
    def from_config(cls, platform: str, backend: str) -> Platform:
        """The platform a config's ``platform``/``backend`` fields describe.

        Raises:
            ModelConfigError: neither field names a platform hermes.quiver knows.
        """
        if platform:
            try:
                return cls(platform)
            except ValueError:
                raise ModelConfigError(
                    f"platform: unknown value {platform!r}; expected one of {sorted(p.value for p in cls)}"
                ) from None
        if backend in _BACKENDS:
            return _BACKENDS[backend]
        raise ModelConfigError(
            f"backend: unknown value {backend!r}; expected a platform "
            f"{sorted(p.value for p in cls)} or a backend {sorted(_BACKENDS)}"
        )


_FILENAMES = {
    Platform.ONNX: "model.onnx",
    Platform.TORCHSCRIPT: "model.pt",
    Platform.TENSORRT: "model.plan",
    Platform.PYTHON: "model.py",
    Platform.TORCH_AOTI: "model.pt2",
    Platform.ENSEMBLE: "model.empty",
}

# Backends whose models hermes.quiver can read back when config.pbtxt names no platform.
_BACKENDS = {
    "python": Platform.PYTHON,
    "onnxruntime": Platform.ONNX,
    "pytorch": Platform.TORCHSCRIPT,
    "tensorrt": Platform.TENSORRT,
}
