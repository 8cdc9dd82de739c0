"""Typed Triton model configurations (builder, sections and data types)."""

from hermes.quiver.config.dtypes import DataType
from hermes.quiver.config.model_config import ModelConfig, TensorSpec
from hermes.quiver.config.sections import (
    Accelerator,
    ControlInput,
    ControlKind,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    Optimization,
    SequenceBatching,
    SequenceState,
    SequenceStrategy,
    Warmup,
)

__all__ = [
    "Accelerator",
    "ControlInput",
    "ControlKind",
    "DataType",
    "DynamicBatching",
    "InstanceGroup",
    "InstanceKind",
    "ModelConfig",
    "Optimization",
    "SequenceBatching",
    "SequenceState",
    "SequenceStrategy",
    "TensorSpec",
    "Warmup",
]
