"""hermes.stillwater: multiprocessing pipelines with shared-memory transport.

```python
from hermes.stillwater import ArraySpec, Map, Sink, Source

frames = Source(read_frames, args=("/data",), rate_hz=512.0, output=ArraySpec(shape=(2, 8192)))
with frames >> Map(whiten, output=ArraySpec(shape=(2, 8192))) >> Sink(write) as pipeline:
    pass  # leaving the block waits for the sink to finish; an error in any stage is re-raised here
```
"""

from importlib.metadata import version as _version

import hermes.stillwater._namespace  # noqa: F401  (first: refuses a regular hermes/__init__.py)
from hermes.stillwater.array_spec import ArraySpec
from hermes.stillwater.channel import Channel, EndOfStream, Receiver, Sender
from hermes.stillwater.exceptions import (
    ChannelClosed,
    PipelineDefinitionError,
    PipelineError,
    PipelineStateError,
    PipelineTimeout,
    StageDied,
    StageFailed,
    StillwaterError,
)
from hermes.stillwater.inference import InferenceRequest, InferenceStage
from hermes.stillwater.pipeline import Pipeline
from hermes.stillwater.progress import PipelineProgress
from hermes.stillwater.stage import Map, Sink, Source, Stage
from hermes.stillwater.stats import StageStats
from hermes.stillwater.throttle import Throttle

__version__ = _version("hermes-stillwater")

merge = Pipeline.merge

__all__ = [
    "ArraySpec",
    "Channel",
    "ChannelClosed",
    "EndOfStream",
    "InferenceRequest",
    "InferenceStage",
    "Map",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineError",
    "PipelineProgress",
    "PipelineStateError",
    "PipelineTimeout",
    "Receiver",
    "Sender",
    "Sink",
    "Source",
    "Stage",
    "StageDied",
    "StageFailed",
    "StageStats",
    "StillwaterError",
    "Throttle",
    "__version__",
    "merge",
]
