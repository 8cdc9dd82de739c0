"""hermes.quiver: Triton model repositories, typed configs, verified exporters and ensembles.

```python
from hermes.quiver import ModelRepository, Platform

repo = ModelRepository("model-repo")
model = repo.add("net", platform=Platform.ONNX)
model.config.max_batch_size = 8
result = model.export_version(net, example_inputs=[x])
print(result.report)
```
``import hermes.quiver`` does not import torch; exporters import it when they run.
"""

from importlib.metadata import version as _version

import hermes.quiver._namespace  # noqa: F401  (first: refuses a regular hermes/__init__.py)
from hermes.quiver.config import (
    Accelerator,
    ControlInput,
    ControlKind,
    DataType,
    DynamicBatching,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    Optimization,
    SequenceBatching,
    SequenceState,
    SequenceStrategy,
    StreamingRecords,
    StreamInputRecord,
    StreamOutputRecord,
    TensorSpec,
    Warmup,
)
from hermes.quiver.ensemble import EnsembleModel
from hermes.quiver.exceptions import (
    EnsembleError,
    ExportError,
    MissingDependencyError,
    ModelConfigError,
    ModelExistsError,
    ModelNotFoundError,
    QuiverError,
    RepositoryError,
    StreamingConfigError,
    StreamingRecordError,
    StreamingRecordVersionError,
    VerificationError,
)
from hermes.quiver.exporters.pipeline import ExportResult
from hermes.quiver.model import ExposedTensor, Model
from hermes.quiver.model_repository import ModelRepository
from hermes.quiver.platform import Platform
from hermes.quiver.verification import OutputComparison, VerificationReport

__version__ = _version("hermes-quiver")

__all__ = [
    "Accelerator",
    "ControlInput",
    "ControlKind",
    "DataType",
    "DynamicBatching",
    "EnsembleError",
    "EnsembleModel",
    "ExportError",
    "ExportResult",
    "ExposedTensor",
    "InstanceGroup",
    "InstanceKind",
    "MissingDependencyError",
    "Model",
    "ModelConfig",
    "ModelConfigError",
    "ModelExistsError",
    "ModelNotFoundError",
    "ModelRepository",
    "Optimization",
    "OutputComparison",
    "Platform",
    "QuiverError",
    "RepositoryError",
    "SequenceBatching",
    "SequenceState",
    "SequenceStrategy",
    "StreamInputRecord",
    "StreamOutputRecord",
    "StreamingConfigError",
    "StreamingRecordError",
    "StreamingRecordVersionError",
    "StreamingRecords",
    "TensorSpec",
    "VerificationError",
    "VerificationReport",
    "Warmup",
    "__version__",
]
