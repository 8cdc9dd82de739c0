"""Triton tensor data types and their numpy / torch equivalents: hermes' one dtype table.

Every hermes layer converts between Triton's type names (``"FP32"``, ``TYPE_FP32``, the
protobuf enum), numpy and torch through :class:`DataType`; no other table exists.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver.exceptions import ModelConfigError

__all__ = ["DataType"]


class DataType(enum.StrEnum):
    """A Triton tensor data type; the value is the name without ``TYPE_`` (``"FP32"``)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    BF16 = "BF16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    def __str__(self) -> str:
        return self.value

    @property
    def proto(self) -> int:
        """The ``model_config_pb2.DataType`` value (BYTES is ``TYPE_STRING`` in configs)."""
        return int(pb.DataType.Value("TYPE_STRING" if self is DataType.BYTES else f"TYPE_{self.value}"))

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype of this type (BF16 has none in numpy: float32 is used to carry it)."""
        return _NUMPY_DTYPES[self]

    @property
    def torch(self) -> Any:
        """The ``torch.dtype`` of this type (imports torch)."""
        import torch

        if self is DataType.BYTES:
            raise ModelConfigError("data_type: BYTES has no torch dtype")
        return getattr(torch, _TORCH[self])

    @classmethod
    def from_proto(cls, value: int) -> DataType:
        """The type of a ``model_config_pb2.DataType`` value."""
        name = pb.DataType.Name(value)
        if name == "TYPE_INVALID":
            raise ModelConfigError("data_type: TYPE_INVALID is not a tensor type")
        return cls.BYTES if name == "TYPE_STRING" else cls(name.removeprefix("TYPE_"))

    @classmethod
    def of(cls, value: Any) -> DataType:
        """Convert anything naming a type: a DataType, ``"FP32"``, ``"TYPE_FP32"``, ``"float32"``,
        a numpy dtype or scalar type, a torch dtype, or an int proto value.

        Raises:
            ModelConfigError: ``value`` names no Triton type.
        """
        if isinstance(value, DataType):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls.from_proto(value)
        if isinstance(value, str):
            upper = value.upper().removeprefix("TYPE_")
            if upper == "STRING":
                return cls.BYTES
            if upper in cls.__members__:
                return cls[upper]
            if value.lower() in _ALIASES:
                return _ALIASES[value.lower()]
        text = str(value)
        if text.startswith("torch."):
            name = text.removeprefix("torch.")
            for member, torch_name in _TORCH.items():
                if torch_name == name:
                    return member
        else:
            try:
                dtype = np.dtype(value)
            except TypeError:
                dtype = None
            if dtype is not None:
                if dtype.kind in "OSU":
                    return cls.BYTES
                for member, numpy_name in _NUMPY.items():
                    if member is not DataType.BF16 and np.dtype(numpy_name) == dtype:
                        return member
        raise ModelConfigError(
            f"data_type: {value!r} names no Triton type; expected one of {[m.value for m in cls]}, "
            "a numpy dtype or a torch dtype"
        )


_NUMPY = {
    DataType.BOOL: "bool",
    DataType.UINT8: "uint8",
    DataType.UINT16: "uint16",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.INT8: "int8",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.FP16: "float16",
    DataType.BF16: "float32",
    DataType.FP32: "float32",
    DataType.FP64: "float64",
    DataType.BYTES: "object",
}
_NUMPY_DTYPES: dict[DataType, np.dtype[Any]] = {member: np.dtype(name) for member, name in _NUMPY.items()}
_TORCH = {
    DataType.BOOL: "bool",
    DataType.UINT8: "uint8",
    DataType.UINT16: "uint16",
    DataType.UINT32: "uint32",
    DataType.UINT64: "uint64",
    DataType.INT8: "int8",
    DataType.INT16: "int16",
    DataType.INT32: "int32",
    DataType.INT64: "int64",
    DataType.FP16: "float16",
    DataType.BF16: "bfloat16",
    DataType.FP32: "float32",
    DataType.FP64: "float64",
}
_ALIASES = {
    "bool": DataType.BOOL,
    "uint8": DataType.UINT8,
    "uint16": DataType.UINT16,
    "uint32": DataType.UINT32,
    "uint64": DataType.UINT64,
    "int8": DataType.INT8,
    "int16": DataType.INT16,
    "int32": DataType.INT32,
    "int64": DataType.INT64,
    "float16": DataType.FP16,
    "half": DataType.FP16,
    "bfloat16": DataType.BF16,
    "float32": DataType.FP32,
    "float": DataType.FP32,
    "float64": DataType.FP64,
    "double": DataType.FP64,
    "bytes": DataType.BYTES,
    "object": DataType.BYTES,
}
