"""The Triton contract: typed model configurations (builder, sections, data types) and the
streaming records quiver writes into them for clients."""

from hermes.quiver.config.dtypes import DataType
from hermes.quiver.config.model_config import ModelConfig, ParameterMap, TensorSpec
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
from hermes.quiver.config.streaming_record import (
    RECORD_VERSION,
    StreamingRecords,
    StreamInputRecord,
    StreamOutputRecord,
)

__all__ = [
    "RECORD_VERSION",
    "Accelerator",
    "ControlInput",
    "ControlKind",
    "DataType",
    "DynamicBatching",
    "InstanceGroup",
    "InstanceKind",
    "ModelConfig",
    "Optimization",
    "ParameterMap",
    "SequenceBatching",
    "SequenceState",
    "SequenceStrategy",
    "StreamInputRecord",
    "StreamOutputRecord",
    "StreamingRecords",
    "TensorSpec",
    "Warmup",
]
