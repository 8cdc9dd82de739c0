"""Fused streaming models on the real local Triton server, against the offline reference and the ensemble.

One server (module scope) serves models built once from one network with two streaming
groups (``strain`` with an initial history, ``aux``) and two outputs (``clean`` with N = 3,
``multi`` with N = 2):

* ``fused_onnx`` / ``fused_ts``: fused, one sequence per instance, two instances;
* ``fused_onnx_batched`` / ``fused_ts_batched``: fused, batched state (four sequences on one
  instance, oldest strategy; the network sees ``(n·B, …)``);
* ``ensemble``: the same streaming as a three-step ensemble (snapshotters → network → averagers);
* ``ensemble_batched``: that ensemble with batched state (four sequences on one instance of each
  stateful step), the ONNX network behind :func:`add_sequence_axis` so it sees ``(n·B, …)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from hermes.aeriel import serve  # noqa: E402
from hermes.aeriel.testing import leftover_resources  # noqa: E402
from hermes.quiver import Model, ModelRepository, Platform  # noqa: E402
from hermes.quiver.streaming import (  # noqa: E402
    FusedInput,
    FusedOutput,
    FusedStreamingModel,
    add_fused_streaming_model,
    add_sequence_axis,
    online_average,
    sliding_windows,
)

from ._streaming_client import stream_sequences  # noqa: E402
from ._two_input_net import BATCH, K, Net, add_network  # noqa: E402

STRIDE = 2
UPDATES = 9
SIZE = STRIDE * BATCH


def fuse(
    repo: ModelRepository, network: str, name: str, history: np.ndarray, **options: object
) -> FusedStreamingModel:
    model = repo.models[network]
    ins, outs = list(model.inputs), list(model.outputs)
    return add_fused_streaming_model(
        model, stride=STRIDE, batch_size=BATCH, num_updates=3, name=name,
        inputs=[FusedInput(key="strain", tensors=(ins[0],), initial_state=history),
                FusedInput(key="aux", tensors=(ins[1],))],
        outputs=[FusedOutput(key="clean", tensor=outs[0]), FusedOutput(key="multi", tensor=outs[1], num_updates=2)],
        idle_timeout_s=30, **options,
    )  # fmt: skip


def reference(net: Net, x: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the streaming model returns for ``x (4, T)``: windows → net → online averages."""
    strain = sliding_windows(x[:3], kernel_size=K, stride=STRIDE, history=history)
    aux = sliding_windows(x[3], kernel_size=K, stride=STRIDE)
    ys, zs = [], []
    with torch.no_grad():
        for i in range(0, len(strain), BATCH):
            y, z = net(torch.from_numpy(strain[i : i + BATCH]), torch.from_numpy(aux[i : i + BATCH]))
            ys.append(y.numpy())
            zs.append(z.numpy())
    return (
        online_average(np.concatenate(ys), stride=STRIDE, num_updates=3),
        online_average(np.concatenate(zs), stride=STRIDE, num_updates=2),
    )


class Built:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.net = Net().eval()
        self.history = np.random.randn(3, K).astype(np.float32)
        repo = ModelRepository(root)
        ins, outs = add_network(repo, "net_onnx", Platform.ONNX, self.net)
        add_network(repo, "net_ts", Platform.TORCHSCRIPT, self.net)
        self.fused = {
            "fused_onnx": fuse(repo, "net_onnx", "fused_onnx", self.history, instances=2),
            "fused_ts": fuse(repo, "net_ts", "fused_ts", self.history, instances=2),
            "fused_onnx_batched": fuse(
                repo,
                "net_onnx",
                "fused_onnx_batched",
                self.history,
                sequences_per_instance=4,
                max_queue_delay_us=2000,
            ),
            "fused_ts_batched": fuse(
                repo,
                "net_ts",
                "fused_ts_batched",
                self.history,
                sequences_per_instance=4,
                max_queue_delay_us=2000,
            ),
        }
        net = repo.models["net_onnx"]
        ensemble = repo.add("ensemble", platform=Platform.ENSEMBLE)
        ensemble.add_streaming_inputs(
            net.inputs[ins[0]], stride=STRIDE, batch_size=BATCH, name="strain_snapshotter", key="strain",
            initial_state=self.history, instances=2,
        )  # fmt: skip
        ensemble.add_streaming_inputs(
            net.inputs[ins[1]],
            stride=STRIDE,
            batch_size=BATCH,
            name="aux_snapshotter",
            key="aux",
            instances=2,
        )
        ensemble.add_streaming_output(
            net.outputs[outs[0]], stride=STRIDE, num_updates=3, batch_size=BATCH, name="clean_averager", key="clean",
            instances=2,
        )  # fmt: skip
        ensemble.add_streaming_output(
            net.outputs[outs[1]], stride=STRIDE, num_updates=2, batch_size=BATCH, name="multi_averager", key="multi",
            instances=2,
        )  # fmt: skip
        ensemble.export_version()
        self.by_sequence = add_sequence_axis(net, batch_size=BATCH, max_sequences=4)
        self.ensemble_batched = add_ensemble(
            repo, "ensemble_batched", self.by_sequence, self.history, sequences_per_instance=4,
            max_queue_delay_us=2000,
        )  # fmt: skip


def add_ensemble(repo: ModelRepository, name: str, net: Model, history: np.ndarray, **options: Any) -> Model:
    """Snapshotters ``strain`` (with ``history``) and ``aux`` → ``net`` → averagers ``clean`` and ``multi``."""
    ins, outs = list(net.inputs), list(net.outputs)
    ensemble = repo.add(name, platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(
        net.inputs[ins[0]], stride=STRIDE, batch_size=BATCH, name=f"{name}_strain", key="strain",
        initial_state=history, **options,
    )  # fmt: skip
    ensemble.add_streaming_inputs(
        net.inputs[ins[1]], stride=STRIDE, batch_size=BATCH, name=f"{name}_aux", key="aux", **options
    )
    ensemble.add_streaming_output(
        net.outputs[outs[0]], stride=STRIDE, num_updates=3, batch_size=BATCH, name=f"{name}_clean", key="clean",
        **options,
    )  # fmt: skip
    ensemble.add_streaming_output(
        net.outputs[outs[1]], stride=STRIDE, num_updates=2, batch_size=BATCH, name=f"{name}_multi", key="multi",
        **options,
    )  # fmt: skip
    ensemble.export_version()
    return ensemble


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("fused") / "repo")


@pytest.fixture(scope="module")
def url(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    server = serve(
        built.root, models=[*built.fused, "ensemble", "ensemble_batched"], log_file=log, exit_timeout_s=20
    )
    try:
        yield server.grpc_url
    finally:
        server.close()
        assert leftover_resources(server) == []


def _stream(
    url: str, model: str, inputs: dict[str, str], outputs: dict[str, str], data: dict[int, np.ndarray]
):
    """``{sid: (clean (T,), multi (2, T))}`` served for ``data {sid: (4, T)}``."""
    got = {}
    for key in ("clean", "multi"):
        responses = stream_sequences(
            url, model, outputs[key],
            {sid: [{inputs["strain"]: x[None, :3, u * SIZE : (u + 1) * SIZE],
                    inputs["aux"]: x[None, 3:, u * SIZE : (u + 1) * SIZE]} for u in range(UPDATES)]
             for sid, x in data.items()},
        )  # fmt: skip
        for sid, parts in responses.items():
            got.setdefault(sid, []).append(np.concatenate(parts, axis=-1)[0])
    return {sid: tuple(v) for sid, v in got.items()}


def _data(sids: tuple[int, ...]) -> dict[int, np.ndarray]:
    return {sid: np.random.randn(4, SIZE * UPDATES).astype(np.float32) for sid in sids}


@pytest.mark.parametrize("name", ["fused_onnx", "fused_ts"])
def test_fused_model_equals_the_ensemble_and_the_offline_reference(built: Built, url: str, name: str) -> None:
    fused = built.fused[name]
    data = _data((31, 32))
    served = _stream(url, name, fused.inputs, fused.outputs, data)
    ensemble = _stream(
        url, "ensemble", {"strain": "strain", "aux": "aux"}, {"clean": "clean", "multi": "multi"}, data
    )
    for sid, x in data.items():
        clean, multi = reference(built.net, x, built.history)
        assert served[sid][0].shape == (SIZE * UPDATES,) and served[sid][1].shape == (2, SIZE * UPDATES)
        np.testing.assert_allclose(served[sid][0], clean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[sid][1], multi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[sid][0], ensemble[sid][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[sid][1], ensemble[sid][1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(served[31][0], served[32][0])  # the two sequences keep separate state


@pytest.mark.parametrize("name", ["fused_onnx_batched", "fused_ts_batched"])
def test_batched_state_serves_four_sequences_on_one_instance(built: Built, url: str, name: str) -> None:
    fused = built.fused[name]
    assert fused.max_sequences == 4 and fused.sequence.instances == 1
    data = _data((1, 2, 3, 4))
    served = _stream(url, name, fused.inputs, fused.outputs, data)
    for sid, x in data.items():
        clean, multi = reference(built.net, x, built.history)
        np.testing.assert_allclose(served[sid][0], clean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[sid][1], multi, rtol=1e-5, atol=1e-6)


def test_an_ensemble_with_batched_state_feeds_the_network_every_sequence_at_once(
    built: Built, url: str
) -> None:
    proto = built.by_sequence.config.proto
    assert proto.max_batch_size == 4 and [list(t.dims) for t in proto.input] == [[BATCH, 3, K], [BATCH, K]]
    data = _data((51, 52, 53, 54))
    keys = {"strain": "strain", "aux": "aux"}
    served = _stream(url, "ensemble_batched", keys, {"clean": "clean", "multi": "multi"}, data)
    for sid, x in data.items():
        clean, multi = reference(built.net, x, built.history)
        np.testing.assert_allclose(served[sid][0], clean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(served[sid][1], multi, rtol=1e-5, atol=1e-6)
    assert not np.allclose(served[51][0], served[52][0])  # the sequences keep separate state
    record = json.loads(built.ensemble_batched.config.parameters["hermes.streaming_input.strain"])
    assert (
        record["max_sequences"] == 4 and record["batch_size"] == BATCH
    )  # what clients size their sequences by


def test_fused_model_records_what_clients_discover(built: Built) -> None:
    fused = built.fused["fused_ts_batched"]
    params = fused.model.config.parameters
    record = json.loads(params["hermes.streaming_input.INPUT__0"])
    assert record["key"] == "strain" and record["fused"] and record["max_sequences"] == 4
    assert record["stride"] == STRIDE and record["batch_size"] == BATCH and record["kernel_size"] == K
    assert record["zero_state_updates"] == 0  # a history precedes every sequence
    out = json.loads(params["hermes.streaming_output.OUTPUT__1"])
    assert out["key"] == "multi" and out["delay"] == STRIDE and out["num_updates"] == 2
    assert fused.delay("clean") == 2 * STRIDE
    proto = fused.model.config.proto
    assert proto.max_batch_size == 4 and proto.sequence_batching.oldest.max_candidate_sequences == 4
    assert [s.input_name for s in proto.sequence_batching.state] == [f"INPUT__{i}" for i in range(2, 6)]


def test_the_hermes_client_streams_batched_state_and_refuses_a_fifth_sequence(built: Built, url: str) -> None:
    from hermes.aeriel import SequenceError
    from hermes.aeriel.client import InferenceClient

    fused = built.fused["fused_onnx_batched"]
    data = _data((41, 42, 43, 44))
    with InferenceClient(url, "fused_onnx_batched") as client:
        assert client.max_sequences == 4
        sequences = {sid: client.sequence(sid) for sid in data}
        with pytest.raises(SequenceError, match=r"max_sequences=4.*add_fused_streaming_model"):
            client.sequence(45)
        futures: dict[int, list] = {sid: [] for sid in data}
        for u in range(
            UPDATES
        ):  # every sequence's update u is in flight at once: the oldest strategy batches them
            for sid, x in data.items():
                part = {
                    "strain": x[None, :3, u * SIZE : (u + 1) * SIZE],
                    "aux": x[None, 3:, u * SIZE : (u + 1) * SIZE],
                }
                futures[sid].append(sequences[sid].send(part, end=u == UPDATES - 1))
        for sid, x in data.items():
            clean, _ = reference(built.net, x, built.history)
            served = np.concatenate(
                [f.result(timeout=60).outputs[fused.outputs["clean"]] for f in futures[sid]], -1
            )
            np.testing.assert_allclose(served[0], clean, rtol=1e-5, atol=1e-6)
        assert client.live_sequences == 0
