"""One ONNX graph for a whole streaming model: snapshotters, the user's network, online averagers.

```
update_i (n, C_i, s·B) ─▶ snapshotter_i ─▶ windows ─▶ network/ (the user's graph, prefixed) ─▶ predictions
state_i (n, C_i, K)    ◀─┘                                                                           │
output_j (n, [C,] s·B) ◀── online averager_j (state_j (n, [C,] L)) ◀──────────────────────────────────┘
```

The user's graph is copied with every name prefixed ``network/`` (``onnx.compose.add_prefix``)
so no name of it can collide with the streaming nodes, and keeps its opset: the streaming
nodes use operators whose form is the same from opset 13 on. With batched state (``n``
sequences) the windows are reshaped to ``(n·B, C_i, K)`` before the network and its
predictions back to ``(n, B, [C,] K)`` after it, so the network needs a variable batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hermes.quiver._deps import require
from hermes.quiver.exceptions import ExportError, StreamingConfigError
from hermes.quiver.streaming.onnx_graphs import Builder, online_averager_nodes, snapshotter_nodes
from hermes.quiver.streaming.specs import OnlineAveragerSpec, SnapshotterSpec

if TYPE_CHECKING:
    import onnx

__all__ = [
    "FusedGroupNames",
    "FusedOutputNames",
    "check_network_graph",
    "fused_onnx_graph",
    "network_opset",
    "sequence_axis_graph",
]

MIN_OPSET = 13
"""The oldest default-domain opset whose Slice/Squeeze/Unsqueeze/ReduceSum/Pad forms the streaming nodes use."""

PREFIX = "network/"


@dataclass(frozen=True, kw_only=True)
class FusedGroupNames:
    """One snapshotter of a fused graph: its spec, graph names and the network inputs it feeds.

    Attributes:
        spec: the group.
        update: the update input.
        state_in, state_out: the state tensors.
        network_inputs: the network input fed by each tensor of ``spec``, in order.
    """

    spec: SnapshotterSpec
    update: str
    state_in: str
    state_out: str
    network_inputs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class FusedOutputNames:
    """One online averager of a fused graph.

    Attributes:
        spec: the averager.
        network_output: the network output it averages.
        output: the averaged output.
        state_in, state_out: the state tensors.
    """

    spec: OnlineAveragerSpec
    network_output: str
    output: str
    state_in: str
    state_out: str


def network_opset(network: onnx.ModelProto) -> int:
    """The default-domain opset of ``network``.

    Raises:
        StreamingConfigError: it is older than opset 13.
    """
    versions = {o.domain: o.version for o in network.opset_import}
    opset = versions.get("") or versions.get("ai.onnx") or 0
    if opset < MIN_OPSET:
        raise StreamingConfigError(
            f"the network's ONNX graph uses opset {opset}; a fused streaming model needs opset >= {MIN_OPSET} "
            "(re-export the network with a newer opset, or stream it as an ensemble)"
        )
    return int(opset)


def _dims(value_info: Any) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def check_network_graph(
    network: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str], *, batched: bool, batch_size: int
) -> None:
    """Check that ``network`` takes ``inputs`` and gives ``outputs``, with a variable batch axis when batched.

    Raises:
        StreamingConfigError: a name is missing, or batched state meets a fixed batch axis.
    """
    graph_inputs = {i.name: i for i in network.graph.input}
    initializers = {i.name for i in network.graph.initializer}
    graph_outputs = {o.name for o in network.graph.output}
    for name in inputs:
        if name not in graph_inputs:
            raise StreamingConfigError(
                f"network input {name!r} is not an input of its ONNX graph (inputs: {sorted(graph_inputs)})"
            )
    unfed = [n for n in graph_inputs if n not in inputs and n not in initializers]
    if unfed:
        raise StreamingConfigError(
            f"network inputs {unfed} are fed by no streaming group: a fused model feeds every network input "
            "from the updates (stream other inputs with an ensemble)"
        )
    missing = [n for n in outputs if n not in graph_outputs]
    if missing:
        raise StreamingConfigError(
            f"network outputs {missing} are not outputs of its ONNX graph (outputs: {sorted(graph_outputs)})"
        )
    for name in inputs:
        lead = (_dims(graph_inputs[name]) or [None])[0]
        if batched and isinstance(lead, int):
            raise StreamingConfigError(
                f"network input {name!r} has a fixed batch axis {lead}: batched state feeds it "
                f"(sequences * {batch_size}) windows, so export the network with a variable batch axis "
                "(max_batch_size > 0 / dynamic axis 0) or use sequences_per_instance=1"
            )
        if not batched and isinstance(lead, int) and lead != batch_size:
            raise StreamingConfigError(
                f"network input {name!r} has batch axis {lead}, but each update carries batch_size={batch_size} "
                "windows: they must agree"
            )


def fused_onnx_graph(
    network: onnx.ModelProto,
    groups: Sequence[FusedGroupNames],
    averagers: Sequence[FusedOutputNames],
    *,
    batched: bool,
    name: str = "fused_streaming",
) -> onnx.ModelProto:
    """The snapshotters, ``network`` and the averagers as one ONNX model with state inputs/outputs.

    Graph inputs: every update, then every snapshotter state, then every averager state.
    Graph outputs: every averaged output, then the snapshotter states, then the averager states.

    Raises:
        StreamingConfigError: the network's opset is too old or its names do not fit.
        ExportError: the composed graph fails ONNX's checker (names the reason).
    """
    onnx = require("onnx", "building a fused ONNX streaming model")
    opset = network_opset(network)
    net = onnx.compose.add_prefix(network, PREFIX)
    b = Builder()
    lead: list[Any] = ["sequences"] if batched else [1]
    updates, snapshots_in, snapshots_out = _snapshotters(b, groups, batched=batched, lead=lead)
    b.nodes.extend(net.graph.node)
    outputs, averages_in, averages_out = _averagers(b, averagers, batched=batched, lead=lead)
    return _around_network(
        network, net, b, updates + snapshots_in + averages_in, outputs + snapshots_out + averages_out, name=name,
        opset=opset,
    )  # fmt: skip


def _snapshotters(
    b: Builder, groups: Sequence[FusedGroupNames], *, batched: bool, lead: list[Any]
) -> tuple[list[Any], list[Any], list[Any]]:
    """Every group's snapshotter nodes, feeding the prefixed network inputs; (updates, states in, states out)."""
    onnx = b.onnx
    info, float_type = onnx.helper.make_tensor_value_info, onnx.TensorProto.FLOAT
    updates: list[Any] = []
    states_in: list[Any] = []
    states_out: list[Any] = []
    for group in groups:
        spec = group.spec
        targets = [PREFIX + n for n in group.network_inputs]
        outs = [f"{t}__windows" for t in targets] if batched else targets
        snapshotter_nodes(
            b, spec, batched=batched, update=group.update, state_in=group.state_in, outputs=outs,
            state_out=group.state_out,
        )  # fmt: skip
        if batched:  # (n, B, C_i, K) -> (n·B, C_i, K)
            for tensor, out, target in zip(spec.tensors, outs, targets, strict=True):
                tail = spec.output_shape(tensor)[1:]
                b.op("Reshape", [out, b.const([-1, *tail])], output=target)
        state = [*lead, spec.num_channels, spec.kernel_size]
        updates.append(info(group.update, float_type, [*lead, spec.num_channels, spec.update_size]))
        states_in.append(info(group.state_in, float_type, state))
        states_out.append(info(group.state_out, float_type, state))
    return updates, states_in, states_out


def _averagers(
    b: Builder, averagers: Sequence[FusedOutputNames], *, batched: bool, lead: list[Any]
) -> tuple[list[Any], list[Any], list[Any]]:
    """Every averager's nodes on the prefixed network outputs; (outputs, states in, states out)."""
    onnx = b.onnx
    info, float_type = onnx.helper.make_tensor_value_info, onnx.TensorProto.FLOAT
    outputs: list[Any] = []
    states_in: list[Any] = []
    states_out: list[Any] = []
    for averager in averagers:
        avg = averager.spec
        predictions = PREFIX + averager.network_output
        if batched:  # (n·B, [C,] K) -> (n, B, [C,] K)
            predictions = b.op("Reshape", [predictions, b.const([-1, *avg.input_shape])])
        online_averager_nodes(
            b, avg, batched=batched, predictions=predictions, state_in=averager.state_in, output=averager.output,
            state_out=averager.state_out,
        )  # fmt: skip
        channel_axis = [] if avg.channels is None else [avg.channels]
        outputs.append(info(averager.output, float_type, [*lead, *channel_axis, avg.update_size]))
        state = [*lead, *channel_axis, avg.state_length]
        states_in.append(info(averager.state_in, float_type, state))
        states_out.append(info(averager.state_out, float_type, state))
    return outputs, states_in, states_out


def sequence_axis_graph(
    network: onnx.ModelProto,
    inputs: Mapping[str, Sequence[int]],
    outputs: Mapping[str, Sequence[int]],
    *,
    batch_size: int,
    name: str = "sequence_axis",
) -> onnx.ModelProto:
    """``network`` behind a leading sequence axis: ``(S, B, *dims)`` in, ``(S, B, *dims)`` out.

    Each input is reshaped to ``(S·B, *dims)``, the network runs once on all windows, and each
    output ``(S·B, *dims)`` is reshaped back to ``(S, B, *dims)``. Names and types are kept.

    Args:
        network: the network, with a variable batch axis.
        inputs, outputs: ``{name: dims of one window}`` (fixed sizes).
        batch_size: ``B``, windows per sequence.

    Raises:
        StreamingConfigError: the network's opset is too old.
        ExportError: the composed graph fails ONNX's checker.
    """
    onnx = require("onnx", "building an ONNX network with a sequence axis")
    opset = network_opset(network)
    net = onnx.compose.add_prefix(network, PREFIX)
    b = Builder()
    types = {t.name: t.type.tensor_type.elem_type for t in (*network.graph.input, *network.graph.output)}
    info = onnx.helper.make_tensor_value_info
    for tensor, dims in inputs.items():
        b.op("Reshape", [tensor, b.const([-1, *dims])], output=PREFIX + tensor)
    b.nodes.extend(net.graph.node)
    for tensor, dims in outputs.items():
        b.op("Reshape", [PREFIX + tensor, b.const([-1, batch_size, *dims])], output=tensor)
    graph_inputs = [info(t, types[t], ["sequences", batch_size, *d]) for t, d in inputs.items()]
    graph_outputs = [info(t, types[t], ["sequences", batch_size, *d]) for t, d in outputs.items()]
    return _around_network(network, net, b, graph_inputs, graph_outputs, name=name, opset=opset)


def _around_network(
    network: onnx.ModelProto, net: onnx.ModelProto, b: Builder, inputs: list[Any], outputs: list[Any], *,
    name: str, opset: int,
) -> onnx.ModelProto:  # fmt: skip
    """One model of ``b``'s nodes around the prefixed network ``net``, checked by ONNX's checker."""
    onnx = require("onnx", "building an ONNX streaming model")
    graph = onnx.helper.make_graph(
        b.nodes,
        name,
        inputs,
        outputs,
        initializer=[*b.initializers, *net.graph.initializer],
        value_info=list(net.graph.value_info),
    )
    graph.sparse_initializer.extend(net.graph.sparse_initializer)
    model = onnx.helper.make_model(
        graph,
        opset_imports=list(network.opset_import),
        producer_name="hermes.quiver",
        functions=list(net.functions),
    )
    model.ir_version = max(network.ir_version, 8)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(
            f"the {name} graph (network opset {opset}) fails ONNX's checker: {type(exc).__name__}: {exc}"
        ) from exc
    return model
