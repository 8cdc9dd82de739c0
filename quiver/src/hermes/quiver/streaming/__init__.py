"""Streaming models: server-side state for timeseries.

* :class:`Snapshotter` (streaming input): keeps the newest ``K`` samples per channel and
  turns each update ``(1, C, s·B)`` into ``B`` windows per downstream tensor.
* :class:`OnlineAverager` (streaming output): averages overlapping per-window predictions
  into one continuous output ``(1, [C,] s·B)``, :attr:`OnlineAveragerModel.delay` samples late.
* :func:`add_streaming_inputs` / :func:`add_streaming_output`: build and wire both into an
  ensemble, with Triton implicit state.
* :func:`offline_stream`, :func:`sliding_windows`, :func:`online_average`: numpy references.
* :func:`add_sequence_axis`: a network ``(N, C, K)`` behind a leading sequence axis, for
  ensembles with batched state (several sequences per instance).
* :func:`add_fused_streaming_model`: snapshotters, the network and averagers fused into ONE
  stateful ONNX graph or TorchScript module (no windows between models).
* :func:`export_streaming_model`: any stateful torch module
  (``forward(*inputs, *states) -> (*outputs, *new_states)``) as a model with implicit state.

The torch modules are imported on first use, so this package imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hermes.quiver.exceptions import StreamingConfigError
from hermes.quiver.streaming.ensemble import (
    StreamingInputGroup,
    StreamingOutput,
    add_streaming_inputs,
    add_streaming_output,
)
from hermes.quiver.streaming.fused import (
    FusedInput,
    FusedOutput,
    FusedStreamingModel,
    add_fused_streaming_model,
    write_fused_streaming_model,
)
from hermes.quiver.streaming.models import (
    OnlineAveragerModel,
    SnapshotterModel,
    write_online_averager,
    write_snapshotter,
)
from hermes.quiver.streaming.reference import offline_stream, online_average, sliding_windows
from hermes.quiver.streaming.sequence_axis import add_sequence_axis
from hermes.quiver.streaming.specs import (
    OnlineAveragerSpec,
    SequenceOptions,
    SnapshotterSpec,
    StreamingPlatform,
    StreamingTensor,
)
from hermes.quiver.streaming.stateful_model import (
    StateTensor,
    StreamTensor,
    export_streaming_model,
    streaming_model_config,
)

if TYPE_CHECKING:
    from hermes.quiver.streaming.online_averager import OnlineAverager
    from hermes.quiver.streaming.snapshotter import Snapshotter

__all__ = [
    "FusedInput",
    "FusedOutput",
    "FusedStreamingModel",
    "OnlineAverager",
    "OnlineAveragerModel",
    "OnlineAveragerSpec",
    "SequenceOptions",
    "Snapshotter",
    "SnapshotterModel",
    "SnapshotterSpec",
    "StateTensor",
    "StreamTensor",
    "StreamingConfigError",
    "StreamingInputGroup",
    "StreamingOutput",
    "StreamingPlatform",
    "StreamingTensor",
    "add_fused_streaming_model",
    "add_sequence_axis",
    "add_streaming_inputs",
    "add_streaming_output",
    "export_streaming_model",
    "offline_stream",
    "online_average",
    "sliding_windows",
    "streaming_model_config",
    "write_fused_streaming_model",
    "write_online_averager",
    "write_snapshotter",
]

_LAZY = {
    "Snapshotter": "hermes.quiver.streaming.snapshotter",
    "OnlineAverager": "hermes.quiver.streaming.online_averager",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from hermes.quiver._deps import require

        require("torch", f"hermes.quiver.streaming.{name}")
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hermes.quiver.streaming' has no attribute {name!r}")
