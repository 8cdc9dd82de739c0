"""A model repository written the way the predecessor (ml4gw-hermes) writes one (test helper).

Built with ``onnx.helper`` and plain ``config.pbtxt`` text, not with hermes.quiver, so the
layout is exactly the predecessor's (anchor-hermes.md §1.1.8, its probe_quiver.py config):

* ``snapshotter``: ``snapshot_update (1, C, s·B)`` -> ``net.x_snapshot (B, C, K)``; implicit
  state ``input_snapshot``/``output_snapshot`` ``(1, C, K)`` (initial ``snapshot``, zeros);
  ``sequence_batching { max_sequence_idle_microseconds: 10000000 direct {} }``;
* ``net``: ``x (B, C, K)`` -> ``y (B, K)``;
* ``aggregator``: ``update (B, K)`` -> ``output_stream (1, B·s)``; state
  ``input_online_average``/``output_online_average`` ``((B + N - 1)·s)``;
* every model ``instance_group { count: streams_per_gpu kind: KIND_GPU }``; the ensemble
  ``stream`` carries only ``parameters { key: "states" ... }``, no ``hermes.streaming_*``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS, KERNEL, STRIDE, BATCH, NUM_UPDATES = 2, 16, 2, 4, 4
WEIGHTS = np.array([0.75, -0.5], dtype=np.float32)  # net: y = tanh(sum_c w_c x_c)


def _const(name: str, values: list[int] | np.ndarray) -> onnx.TensorProto:
    array = np.asarray(values)
    return numpy_helper.from_array(array.astype(np.int64 if array.dtype.kind in "iu" else np.float32), name)


def _slice(
    out: str, x: str, start: int, stop: int, axis: int, consts: list[onnx.TensorProto]
) -> onnx.NodeProto:
    names = [f"{out}_start", f"{out}_stop", f"{out}_axis"]
    consts += [_const(names[0], [start]), _const(names[1], [stop]), _const(names[2], [axis])]
    return helper.make_node("Slice", [x, *names], [out])


def _model(nodes: list, inputs: list, outputs: list, consts: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def snapshotter_onnx() -> onnx.ModelProto:
    """The predecessor's Snapshotter: x = [snapshot[..., s:], update]; window j = x[..., j·s : j·s + K]."""
    consts: list[onnx.TensorProto] = []
    nodes = [
        _slice("kept", "input_snapshot", STRIDE, KERNEL, 2, consts),
        helper.make_node("Concat", ["kept", "snapshot_update"], ["x"], axis=2),
    ]
    length = KERNEL - STRIDE + STRIDE * BATCH
    windows = []
    for j in range(BATCH):
        nodes.append(_slice(f"w{j}", "x", j * STRIDE, j * STRIDE + KERNEL, 2, consts))
        windows.append(f"w{j}")
    nodes.append(helper.make_node("Concat", windows, ["net.x_snapshot"], axis=0))
    nodes.append(_slice("output_snapshot", "x", length - KERNEL, length, 2, consts))
    f32 = TensorProto.FLOAT
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("snapshot_update", f32, [1, CHANNELS, STRIDE * BATCH]),
            helper.make_tensor_value_info("input_snapshot", f32, [1, CHANNELS, KERNEL]),
        ],
        [
            helper.make_tensor_value_info("net.x_snapshot", f32, [BATCH, CHANNELS, KERNEL]),
            helper.make_tensor_value_info("output_snapshot", f32, [1, CHANNELS, KERNEL]),
        ],
        consts,
    )


def net_onnx() -> onnx.ModelProto:
    consts = [_const("w", WEIGHTS.reshape(1, CHANNELS, 1)), _const("axes", [1])]
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["wx"]),
        helper.make_node("ReduceSum", ["wx", "axes"], ["s"], keepdims=0),
        helper.make_node("Tanh", ["s"], ["y"]),
    ]
    f32 = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", f32, [BATCH, CHANNELS, KERNEL])],
        [helper.make_tensor_value_info("y", f32, [BATCH, KERNEL])],
        consts,
    )


def aggregator_onnx() -> onnx.ModelProto:
    """The predecessor's OnlineAverager: each sample is the mean of the N predictions covering it."""
    span, size = NUM_UPDATES * STRIDE, (BATCH + NUM_UPDATES - 1) * STRIDE
    pending = (NUM_UPDATES - 1) * STRIDE
    consts: list[onnx.TensorProto] = [
        _const("n", np.float32(NUM_UPDATES)),
        _const("tail_zeros", np.zeros(BATCH * STRIDE, np.float32)),
    ]
    nodes = [
        _slice("tails", "update", KERNEL - span, KERNEL, 1, consts),
        helper.make_node("Div", ["tails", "n"], ["parts"]),
        _slice("carried", "input_online_average", 0, pending, 0, consts),
    ]
    consts.append(_const("carried_pad", [0, size - pending]))
    nodes.append(helper.make_node("Pad", ["carried", "carried_pad"], ["acc_0"]))
    for j in range(BATCH):
        consts.append(_const(f"pad_{j}", [j * STRIDE, size - span - j * STRIDE]))
        nodes += [
            _slice(f"row_{j}", "parts", j, j + 1, 0, consts),
            helper.make_node("Squeeze", [f"row_{j}", "axes0"], [f"flat_{j}"]),
            helper.make_node("Pad", [f"flat_{j}", f"pad_{j}"], [f"placed_{j}"]),
            helper.make_node("Add", [f"acc_{j}", f"placed_{j}"], [f"acc_{j + 1}"]),
        ]
    consts.append(_const("axes0", [0]))
    nodes += [
        _slice("done", f"acc_{BATCH}", 0, BATCH * STRIDE, 0, consts),
        helper.make_node("Unsqueeze", ["done", "axes0"], ["output_stream"]),
        _slice("rest", f"acc_{BATCH}", BATCH * STRIDE, size, 0, consts),
        helper.make_node("Concat", ["rest", "tail_zeros"], ["output_online_average"], axis=0),
    ]
    f32 = TensorProto.FLOAT
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("update", f32, [BATCH, KERNEL]),
            helper.make_tensor_value_info("input_online_average", f32, [size]),
        ],
        [
            helper.make_tensor_value_info("output_stream", f32, [1, BATCH * STRIDE]),
            helper.make_tensor_value_info("output_online_average", f32, [size]),
        ],
        consts,
    )


def _state(name: str, dims: list[int]) -> str:
    d = ", ".join(str(x) for x in dims)
    return f"""sequence_batching {{
  max_sequence_idle_microseconds: 10000000
  direct {{ }}
  state {{
    input_name: "input_{name}"
    output_name: "output_{name}"
    data_type: TYPE_FP32
    dims: [ {d} ]
    initial_state {{ data_type: TYPE_FP32 dims: [ {d} ] zero_data: true name: "{name}" }}
  }}
}}
"""


def _io(kind: str, name: str, dims: list[int]) -> str:
    return f'{kind} {{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(str(x) for x in dims)} ] }}\n'


def _gpu(count: int) -> str:
    return f"instance_group {{ count: {count} kind: KIND_GPU }}\n"


def write_predecessor_repository(root: Path, streams_per_gpu: int = 2) -> Path:
    """Write the repository; returns ``root``."""
    size = (BATCH + NUM_UPDATES - 1) * STRIDE
    update = [1, CHANNELS, STRIDE * BATCH]
    windows = [BATCH, CHANNELS, KERNEL]
    models = {
        "snapshotter": (
            snapshotter_onnx(),
            _io("input", "snapshot_update", update) + _io("output", "net.x_snapshot", windows)
            + _gpu(streams_per_gpu) + _state("snapshot", [1, CHANNELS, KERNEL]),
        ),
        "net": (net_onnx(), _io("input", "x", windows) + _io("output", "y", [BATCH, KERNEL]) + _gpu(1)),
        "aggregator": (
            aggregator_onnx(),
            _io("input", "update", [BATCH, KERNEL]) + _io("output", "output_stream", [1, BATCH * STRIDE])
            + _gpu(streams_per_gpu) + _state("online_average", [size]),
        ),
    }  # fmt: skip
    for name, (model, body) in models.items():
        (root / name / "1").mkdir(parents=True)
        onnx.save(model, str(root / name / "1" / "model.onnx"))
        (root / name / "config.pbtxt").write_text(f'name: "{name}"\nplatform: "onnxruntime_onnx"\n{body}')
    (root / "stream" / "1").mkdir(parents=True)
    (root / "stream" / "1" / "model.empty").write_bytes(b"")
    (root / "stream" / "config.pbtxt").write_text(
        'name: "stream"\nplatform: "ensemble"\n'
        + _io("input", "snapshot_update", update)
        + _io("output", "output_stream", [1, BATCH * STRIDE])
        + 'parameters { key: "states" value { string_value: "net/x" } }\n'
        + """ensemble_scheduling {
  step { model_name: "net" model_version: -1 input_map { key: "x" value: "net.x_snapshot" } output_map { key: "y" value: "y" } }
  step { model_name: "snapshotter" model_version: -1 input_map { key: "snapshot_update" value: "snapshot_update" }
         output_map { key: "net.x_snapshot" value: "net.x_snapshot" } }
  step { model_name: "aggregator" model_version: -1 input_map { key: "update" value: "y" }
         output_map { key: "output_stream" value: "output_stream" } }
}
"""
    )
    return root


def net_numpy(windows: np.ndarray) -> np.ndarray:
    """What ``net`` computes, for the offline reference: ``(B, C, K) -> (B, K)``."""
    return np.tanh((windows * WEIGHTS[None, :, None]).sum(axis=1)).astype(np.float32)
