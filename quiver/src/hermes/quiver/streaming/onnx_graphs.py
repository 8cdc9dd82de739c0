"""The snapshotter and online averager written directly as ONNX graphs (no torch needed).

Both are a handful of slicing and reduction operators, so hermes writes them with
``onnx.helper`` instead of tracing the torch modules: building takes milliseconds, the
opset is exactly :data:`OPSET`, and an ONNX streaming model needs neither torch nor
onnxscript. The graphs compute what :class:`~hermes.quiver.streaming.Snapshotter` and
:class:`~hermes.quiver.streaming.OnlineAverager` compute (the tests check it), with the same
input/output layout, the leading axis being ``"sequences"`` when batched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hermes.quiver._deps import require
from hermes.quiver.streaming.specs import OnlineAveragerSpec, SnapshotterSpec

if TYPE_CHECKING:
    import onnx

__all__ = [
    "OPSET",
    "Builder",
    "online_averager_graph",
    "online_averager_nodes",
    "snapshotter_graph",
    "snapshotter_nodes",
]

OPSET = 18
"""The ONNX opset of the streaming graphs (ONNX Runtime ≥ 1.14, Triton ≥ 23.02)."""


class Builder:
    """Collects nodes and constants of one graph, naming intermediates uniquely."""

    def __init__(self) -> None:
        self.onnx = require("onnx", "building an ONNX streaming model")
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, values: list[int] | int | float, hint: str = "c") -> str:
        name = self._name(hint)
        dtype = np.float32 if isinstance(values, float) else np.int64
        self.initializers.append(
            self.onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name=name)
        )
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def slice(self, x: str, start: int, stop: int, axis: int, output: str | None = None) -> str:
        return self.op("Slice", [x, self.const([start]), self.const([stop]), self.const([axis])], output)

    def squeeze(self, x: str, axis: int, output: str | None = None) -> str:
        return self.op("Squeeze", [x, self.const([axis])], output)

    def unsqueeze(self, x: str, axis: int, output: str | None = None) -> str:
        return self.op("Unsqueeze", [x, self.const([axis])], output)

    def identity(self, x: str, output: str) -> str:
        return self.op("Identity", [x], output)

    def model(
        self, name: str, inputs: list[tuple[str, list[Any]]], outputs: list[tuple[str, list[Any]]]
    ) -> onnx.ModelProto:
        helper, float_type = self.onnx.helper, self.onnx.TensorProto.FLOAT
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(n, float_type, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, float_type, s) for n, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hermes.quiver"
        )
        model.ir_version = 8
        self.onnx.checker.check_model(model, full_check=True)
        return model


def snapshotter_nodes(
    b: Builder, spec: SnapshotterSpec, *, batched: bool, update: str, state_in: str, outputs: list[str],
    state_out: str,
) -> None:  # fmt: skip
    """Add the snapshotter's nodes to ``b`` (see :func:`snapshotter_graph` for the arguments)."""
    kernel, stride, batch = spec.kernel_size, spec.stride, spec.batch_size
    x = b.op("Concat", [state_in, update], axis=2)  # (n, C, K + s·B)
    # Each window is sliced straight out of x, channels and time at once, and the slices are
    # concatenated once, so the (B, C, K) windows are copied one time less than when every channel
    # was stacked first and each tensor's channels sliced out of the stack (measured for C = 21,
    # K = 4096, B = 8: 525-640 -> 212-253 us alone, 1.8 -> 1.3 ms inside a fused network's graph).
    window_axis = 1 if batched else 0  # unbatched: n = 1, so the B slices (1, c, K) stack on axis 0
    for tensor, channel_slice, name in zip(spec.tensors, spec.channel_slices, outputs, strict=True):
        squeeze = tensor.channels is None
        windows = []
        for j in range(batch):
            start = (j + 1) * stride
            window = b.op("Slice", [
                x, b.const([channel_slice.start, start]), b.const([channel_slice.stop, start + kernel]),
                b.const([1, 2]),
            ])  # fmt: skip
            windows.append(b.unsqueeze(window, 1) if batched else window)  # ([n, 1,] c, K)
        last = name if not squeeze else None
        if batch > 1:
            stacked = b.op("Concat", windows, output=last, axis=window_axis)  # ([n,] B, c, K)
        else:
            stacked = windows[0] if last is None else b.identity(windows[0], last)
        if squeeze:
            b.squeeze(stacked, window_axis + 1, output=name)  # ([n,] B, K)
    b.slice(x, stride * batch, stride * batch + kernel, 2, output=state_out)


def snapshotter_graph(
    spec: SnapshotterSpec,
    *,
    batched: bool,
    update: str,
    state_in: str,
    outputs: list[str],
    state_out: str,
) -> onnx.ModelProto:
    """The snapshotter as an ONNX model.

    Args:
        spec: the group.
        batched: a leading ``"sequences"`` axis instead of 1 (and no squeezing of it).
        update: the update input's name, ``(n, C, s·B)``.
        state_in: the state input's name, ``(n, C, K)``.
        outputs: the windows outputs' names, one per tensor of ``spec``.
        state_out: the new state's name.
    """
    b = Builder()
    snapshotter_nodes(
        b, spec, batched=batched, update=update, state_in=state_in, outputs=outputs, state_out=state_out
    )
    lead: list[Any] = ["sequences"] if batched else [1]
    channels, kernel = spec.num_channels, spec.kernel_size
    out_shapes = [[*([lead[0]] if batched else []), *spec.output_shape(t)] for t in spec.tensors]
    return b.model(
        "snapshotter",
        [(update, [*lead, channels, spec.update_size]), (state_in, [*lead, channels, kernel])],
        [*zip(outputs, out_shapes, strict=True), (state_out, [*lead, channels, kernel])],
    )


def online_averager_nodes(
    b: Builder, spec: OnlineAveragerSpec, *, batched: bool, predictions: str, state_in: str, output: str,
    state_out: str,
) -> None:  # fmt: skip
    """Add the online averager's nodes to ``b`` (see :func:`online_averager_graph` for the arguments)."""
    kernel, stride, batch, num = spec.kernel_size, spec.stride, spec.batch_size, spec.num_updates
    channels = spec.channels or 1
    preds = predictions if batched else b.unsqueeze(predictions, 0)  # (n, B, [C,] K)
    state = state_in
    if spec.channels is None:
        preds = b.unsqueeze(preds, 2)
        state = b.unsqueeze(state, 1)
    tails = b.slice(preds, kernel - num * stride, kernel, 3)  # (n, B, C, N·s)
    padded = b.op("Pad", [tails, b.const([0, 0, 0, 0, 0, 0, 0, batch * stride])])
    rows = b.op("Transpose", [padded], perm=[0, 2, 1, 3])  # (n, C, B, (N + B)·s)
    flat = b.op("Reshape", [rows, b.const([0, channels, batch * (num + batch) * stride])])
    cut = b.slice(flat, 0, batch * (num + batch - 1) * stride, 2)
    skewed = b.op("Reshape", [cut, b.const([0, channels, batch, (num + batch - 1) * stride])])
    total = b.op("ReduceSum", [skewed, b.const([2])], keepdims=0)  # (n, C, (B + N - 1)·s)
    if num > 1:
        total = b.op("Add", [total, b.op("Pad", [state, b.const([0, 0, 0, 0, 0, batch * stride])])])
        new_state = b.slice(total, batch * stride, (batch + num - 1) * stride, 2)
    else:
        new_state = b.op("Mul", [state, b.const(0.0)])
    averaged = b.op("Div", [b.slice(total, 0, batch * stride, 2), b.const(float(num))])
    if spec.channels is None:
        averaged = b.squeeze(averaged, 1)
        new_state = b.squeeze(new_state, 1)
    b.identity(averaged, output)
    b.identity(new_state, state_out)


def online_averager_graph(
    spec: OnlineAveragerSpec,
    *,
    batched: bool,
    predictions: str,
    state_in: str,
    output: str,
    state_out: str,
) -> onnx.ModelProto:
    """The online averager as an ONNX model.

    Args:
        spec: the averager.
        batched: a leading ``"sequences"`` axis on every tensor.
        predictions: the input's name, ``([n,] B, [C,] K)``.
        state_in: the state input's name, ``(n, [C,] L)``.
        output: the output's name, ``(n, [C,] s·B)``.
        state_out: the new state's name.
    """
    b = Builder()
    online_averager_nodes(
        b,
        spec,
        batched=batched,
        predictions=predictions,
        state_in=state_in,
        output=output,
        state_out=state_out,
    )
    lead: list[Any] = ["sequences"] if batched else [1]
    channel_axis = [] if spec.channels is None else [spec.channels]
    pred_shape = ([lead[0]] if batched else []) + list(spec.input_shape)
    state_shape = [*lead, *channel_axis, spec.state_length]
    return b.model(
        "online_averager",
        [(predictions, pred_shape), (state_in, state_shape)],
        [(output, [*lead, *channel_axis, spec.update_size]), (state_out, state_shape)],
    )
