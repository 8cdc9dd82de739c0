"""A leading sequence axis for a network, so batched state streams through an ensemble.

With batched state (``sequences_per_instance`` S > 1) a streaming ensemble's snapshotter runs
the updates of several sequences as one batch, and Triton's batch axis then carries the
sequences: each request hands ``(1, B, C, K)`` windows to the next model, which therefore
needs per-request dims ``[B, C, K]``. A network exported the usual way takes ``(N, C, K)``.
:func:`add_sequence_axis` writes the model in between, from the network itself:

```
(S, B, C_i, K) ─▶ Reshape ─▶ (S·B, C_i, K) ─▶ network ─▶ (S·B, [C,] K) ─▶ Reshape ─▶ (S, B, [C,] K)
```

one ONNX graph, so the network runs once on the windows of every sequence in the batch.
Fused models (:func:`~hermes.quiver.streaming.add_fused_streaming_model`) do the same inside
their own graph and need no such model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver._deps import require
from hermes.quiver.exceptions import StreamingConfigError
from hermes.quiver.streaming.fused import _install, _load_network
from hermes.quiver.streaming.fused_onnx import check_network_graph, sequence_axis_graph
from hermes.quiver.streaming.specs import StreamingPlatform

if TYPE_CHECKING:
    from hermes.quiver.model import ExposedTensor, Model

__all__ = ["add_sequence_axis"]

logger = logging.getLogger("hermes.quiver.streaming")


def add_sequence_axis(
    network: Model,
    *,
    batch_size: int,
    max_sequences: int | None = None,
    name: str | None = None,
    version: int | None = None,
) -> Model:
    """Add a model to ``network``'s repository that runs it on the windows of several sequences at once.

    Wire the new model between :func:`~hermes.quiver.streaming.add_streaming_inputs` and
    :func:`~hermes.quiver.streaming.add_streaming_output` with the same
    ``sequences_per_instance``: it takes ``(S, B, *dims)`` per input and gives ``(S, B,
    *dims)`` per output, and the network receives ``(S·B, *dims)``.

    Args:
        network: an exported ONNX model with a variable batch axis (``max_batch_size`` > 0)
            and fixed window dims.
        batch_size: ``B``, windows per update of each sequence.
        max_sequences: ``S``, the most sequences per call (the new model's ``max_batch_size``);
            default ``max_batch_size // B`` of the network.
        name: the new model's name; default ``"<network>-by-sequence"``.
        version: the network version to wrap (default: the newest).

    Returns:
        The new model (dynamic batching on, the network's instance groups and parameters).

    Raises:
        StreamingConfigError: the network is not ONNX, has no variable batch axis, has a
            variable window dim, or ``B``/``S`` do not fit; nothing is written.
        ExportError: writing the model failed (nothing is left in the repository).
    """
    sequences = _sequences(network, batch_size, max_sequences)
    if network.platform.value != "onnxruntime_onnx":
        raise StreamingConfigError(
            f"network {network.name!r} runs on {network.platform.value!r}; add_sequence_axis rewrites ONNX "
            "networks only: export the network to ONNX, export one that takes (sequences, B, C, K) itself, or "
            "fuse it (add_fused_streaming_model, ONNX or TorchScript)"
        )
    inputs = {n: _window_dims(t) for n, t in network.inputs.items()}
    outputs = {n: _window_dims(t) for n, t in network.outputs.items()}
    graph, _ = _load_network(network, version)
    check_network_graph(graph, list(inputs), list(outputs), batched=True, batch_size=batch_size)
    wrapped = sequence_axis_graph(graph, inputs, outputs, batch_size=batch_size)
    model_name = name or f"{network.name}-by-sequence"
    config = _config(network, model_name, batch_size, sequences)
    onnx = require("onnx", "writing an ONNX network with a sequence axis")

    def write(directory: Path) -> tuple[pb.ModelConfig]:
        (directory / "1").mkdir(parents=True)
        onnx.save(wrapped, str(directory / "1" / "model.onnx"))
        return (config,)

    model, _ = _install(network.repository, model_name, StreamingPlatform.ONNX, write)
    logger.info(
        "%s: %s behind a sequence axis, (S <= %d, B = %d) windows per call", model.name, network.name, sequences,
        batch_size,
    )  # fmt: skip
    return model


def _sequences(network: Model, batch_size: int, max_sequences: int | None) -> int:
    limit = network.config.max_batch_size
    if limit <= 0:
        raise StreamingConfigError(
            f"network {network.name!r} has no batch axis (max_batch_size {limit}); add_sequence_axis feeds it "
            "S·B windows at once, so export it with a variable batch axis (max_batch_size > 0)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise StreamingConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    sequences = limit // batch_size if max_sequences is None else max_sequences
    if isinstance(sequences, bool) or not isinstance(sequences, int) or sequences < 1:
        raise StreamingConfigError(
            f"max_sequences must be a positive int, got {sequences!r}"
            + (f" (max_batch_size {limit} of {network.name!r} // batch_size {batch_size})" if max_sequences is None
               else "")
        )  # fmt: skip
    return sequences


def _window_dims(tensor: ExposedTensor) -> list[int]:
    dims = list(tensor.shape[1:])
    if any(d is None or d < 0 for d in dims):
        raise StreamingConfigError(
            f"{tensor.model.name}.{tensor.name} has a variable window dim (shape {list(tensor.shape)}); "
            "add_sequence_axis needs every dim but the batch axis fixed"
        )
    return [int(d) for d in dims if d is not None]


def _config(network: Model, name: str, batch_size: int, sequences: int) -> pb.ModelConfig:
    """The network's config with ``[B, *dims]`` per tensor, ``max_batch_size`` S and dynamic batching."""
    config = pb.ModelConfig()
    config.CopyFrom(network.config.proto)
    config.name = name
    config.max_batch_size = sequences
    for field in ("default_model_filename", "model_warmup", "sequence_batching"):
        config.ClearField(field)  # type: ignore[arg-type]
    for tensor in (*config.input, *config.output):
        dims = [batch_size, *tensor.dims]
        del tensor.dims[:]
        tensor.dims.extend(dims)
    if not config.HasField("dynamic_batching"):
        config.dynamic_batching.SetInParent()
    return config
