"""add_sequence_axis: an ONNX network ``(N, C, K)`` behind a leading sequence axis ``(S, B, C, K)``.

The served form (an ensemble with batched state through it, against the offline reference) is
in ``test_fused.py``; here the graph is run with onnxruntime against the torch network, and
every refusal is checked to leave the repository as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from hermes.quiver import Model, ModelRepository, Platform  # noqa: E402
from hermes.quiver.exceptions import StreamingConfigError  # noqa: E402
from hermes.quiver.streaming import add_sequence_axis, add_streaming_inputs  # noqa: E402

from ._two_input_net import BATCH, K, Net, add_network  # noqa: E402


def _network(repo: ModelRepository, platform: Platform) -> tuple[Model, Net]:
    net = Net().eval()
    name = f"net_{platform.name.lower()}"
    add_network(repo, name, platform, net, max_batch_size=32, instances=2)
    return repo.models[name], net


@pytest.fixture(scope="module")
def onnx_network(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, Model, Net]:
    repo = ModelRepository(tmp_path_factory.mktemp("seq") / "repo")
    model, net = _network(repo, Platform.ONNX)
    return repo, model, net


def test_the_network_sees_every_window_of_every_sequence_and_outputs_keep_their_sequence(
    onnx_network: tuple[ModelRepository, Model, Net],
) -> None:
    repo, network, net = onnx_network
    model = add_sequence_axis(network, batch_size=BATCH, name="net_by_seq")
    proto = model.config.proto
    assert (model.name, proto.max_batch_size, proto.platform) == (
        "net_by_seq",
        32 // BATCH,
        "onnxruntime_onnx",
    )
    assert [list(t.dims) for t in (*proto.input, *proto.output)] == [[BATCH, 3, K], [BATCH, K], [BATCH, K],
                                                                      [BATCH, 2, K]]  # fmt: skip
    assert proto.HasField("dynamic_batching") and proto.instance_group[0].count == 2
    path = Path(repo.root) / "net_by_seq" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.randn(3, BATCH, 3, K).astype(np.float32)
    aux = np.random.randn(3, BATCH, K).astype(np.float32)
    y, z = session.run(["y", "z"], {"x": x, "aux": aux})
    with torch.no_grad():
        ty, tz = net(torch.from_numpy(x.reshape(-1, 3, K)), torch.from_numpy(aux.reshape(-1, K)))
    assert y.shape == (3, BATCH, K) and z.shape == (3, BATCH, 2, K)
    np.testing.assert_allclose(y, ty.numpy().reshape(3, BATCH, K), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z, tz.numpy().reshape(3, BATCH, 2, K), rtol=1e-5, atol=1e-6)
    # sequence 1's outputs come from sequence 1's windows only
    y1, _ = session.run(["y", "z"], {"x": x[1:2], "aux": aux[1:2]})
    np.testing.assert_allclose(y1[0], y[1], rtol=1e-5, atol=1e-6)


def test_batched_state_on_the_plain_network_names_add_sequence_axis(
    onnx_network: tuple[ModelRepository, Model, Net],
) -> None:
    repo, network, _ = onnx_network
    ensemble = repo.add("plain", platform=Platform.ENSEMBLE)
    with pytest.raises(StreamingConfigError, match=r"add_sequence_axis\(net_onnx, batch_size=4\)"):
        add_streaming_inputs(
            ensemble, network.inputs["x"], stride=2, batch_size=BATCH, sequences_per_instance=4
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, r"batch_size must be a positive int, got 0"),
        ({"batch_size": 64}, r"got 0 \(max_batch_size 32 of 'net_onnx' // batch_size 64\)"),
        ({"batch_size": BATCH, "max_sequences": 0}, r"max_sequences must be a positive int, got 0"),
        ({"batch_size": BATCH, "version": 7}, r"network 'net_onnx' has no version 7 \(versions: \[1\]\)"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    onnx_network: tuple[ModelRepository, Model, Net], kwargs: dict, message: str
) -> None:
    repo, network, _ = onnx_network
    before = sorted(repo.models)
    with pytest.raises(StreamingConfigError, match=message):
        add_sequence_axis(network, name="refused", **kwargs)
    assert sorted(repo.models) == before and not (Path(repo.root) / "refused").exists()


def test_a_torchscript_network_or_one_without_a_batch_axis_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    torchscript, _ = _network(repo, Platform.TORCHSCRIPT)
    with pytest.raises(
        StreamingConfigError, match=r"runs on 'pytorch_libtorch'; add_sequence_axis rewrites ONNX"
    ):
        add_sequence_axis(torchscript, batch_size=BATCH)
    fixed = repo.add("fixed", platform=Platform.ONNX)
    fixed.config.add_input("x", [BATCH, 3, K])
    fixed.config.add_output("y", [BATCH, K])
    with pytest.raises(StreamingConfigError, match=r"network 'fixed' has no batch axis \(max_batch_size 0\)"):
        add_sequence_axis(fixed, batch_size=BATCH)
    assert sorted(repo.models) == ["fixed", "net_torchscript"]
