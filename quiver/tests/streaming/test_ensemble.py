"""add_streaming_inputs / add_streaming_output build, wire and validate at build time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hermes.quiver import EnsembleModel, Model, ModelRepository, Platform
from hermes.quiver.streaming import StreamingConfigError, add_streaming_inputs, add_streaming_output


def declared(
    repo: ModelRepository, name: str, inputs: dict[str, list[int]], outputs: dict[str, list[int]]
) -> Model:
    """A model with declared tensors only (wiring needs no weights)."""
    model = repo.add(name, platform=Platform.ONNX)
    for key, dims in inputs.items():
        model.config.add_input(key, dims)
    for key, dims in outputs.items():
        model.config.add_output(key, dims)
    model.config.write()
    return model


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo")


@pytest.fixture
def net(repo: ModelRepository) -> Model:
    return declared(
        repo,
        "net",
        {"strain": [8, 2, 64], "aux": [8, 64], "short": [8, 32], "flat": [64]},
        {"noise": [8, 64]},
    )


@pytest.fixture
def ensemble(repo: ModelRepository) -> EnsembleModel:
    model = repo.add("stream", platform=Platform.ENSEMBLE)
    assert isinstance(model, EnsembleModel)
    return model


def test_streaming_inputs_wire_a_snapshotter_into_the_ensemble(
    repo: ModelRepository, net: Model, ensemble: EnsembleModel
) -> None:
    group = ensemble.add_streaming_inputs(
        [net.inputs["strain"], net.inputs["aux"]], stride=4, batch_size=8, idle_timeout_s=600
    )
    assert group.model.name == "snapshotter"
    assert (group.input.name, group.input.shape, group.update_shape) == (
        "snapshotter_update",
        (1, 3, 32),
        (1, 3, 32),
    )
    assert group.zero_state_updates == 2  # ceil((64 / 4 - 1) / 8)
    steps = {s.model_name: s for s in ensemble.config.proto.ensemble_scheduling.step}
    assert dict(steps["net"].input_map) == {"strain": "net.strain", "aux": "net.aux"}
    assert dict(steps["snapshotter"].output_map) == {"net.strain": "net.strain", "net.aux": "net.aux"}
    recorded = json.loads(ensemble.config.parameters["hermes.streaming_input.snapshotter_update"])
    assert recorded == {"version": 1, "model": "snapshotter", "kernel_size": 64, "stride": 4, "batch_size": 8, "channels": [2, None],
                        "tensors": ["net.strain", "net.aux"], "zero_state_updates": 2, "max_sequences": 1}  # fmt: skip
    reread = ModelRepository(repo.root)["snapshotter"].config.proto
    assert reread.sequence_batching.max_sequence_idle_microseconds == 600_000_000


def test_two_named_streaming_groups_and_an_output_in_one_ensemble(
    net: Model, ensemble: EnsembleModel
) -> None:
    a = ensemble.add_streaming_inputs(
        net.inputs["strain"], stride=4, batch_size=8, name="strain_snap", key="strain"
    )
    b = ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, update_size=32, name="aux_snap", key="aux")
    out = ensemble.add_streaming_output(
        net.outputs["noise"], stride=4, num_updates=10, name="avg", key="cleaned"
    )
    assert (a.input.name, b.input.name, out.output.name) == ("strain", "aux", "cleaned")
    assert (b.snapshotter.spec.batch_size, out.output.shape, out.delay, out.zero_state_updates) == (
        8,
        (1, 32),
        36,
        2,
    )
    assert sorted(ensemble.inputs) == ["aux", "strain"]


def test_streaming_inputs_reject_stride_not_smaller_than_kernel(
    net: Model, ensemble: EnsembleModel, repo: ModelRepository
) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"stride 64 must be smaller than the kernel length K=64 of streaming tensors net.aux",
    ):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=64, batch_size=8)
    assert "snapshotter" not in repo and not ensemble.config.proto.ensemble_scheduling.step


def test_streaming_inputs_reject_kernels_that_differ_across_tensors(
    net: Model, ensemble: EnsembleModel
) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"'net.short' has kernel length 32 but .* have 64: every tensor of a streaming group must share K",
    ):
        ensemble.add_streaming_inputs([net.inputs["aux"], net.inputs["short"]], stride=4, batch_size=8)


def test_streaming_inputs_reject_update_size_not_a_multiple_of_stride(
    net: Model, ensemble: EnsembleModel
) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"update size 30 for streaming tensors net.aux is not a multiple of the stride 4",
    ):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, update_size=30)


def test_streaming_inputs_reject_unsupported_rank(net: Model, ensemble: EnsembleModel) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"'net.flat' has shape \[64\] of rank 1: a snapshotter feeds tensors of rank 2",
    ):
        ensemble.add_streaming_inputs(net.inputs["flat"], stride=4)


def test_streaming_inputs_reject_a_batch_that_differs_from_the_tensor(
    net: Model, ensemble: EnsembleModel
) -> None:
    with pytest.raises(
        StreamingConfigError, match=r"net.aux has batch axis 8 but the snapshotter emits batch_size=4"
    ):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=4)


def test_streaming_inputs_reject_colliding_names(
    net: Model, ensemble: EnsembleModel, repo: ModelRepository
) -> None:
    with pytest.raises(
        StreamingConfigError, match=r"model name 'net' collides with a model in the repository"
    ):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, name="net")
    # a failed build step rolls the (unexported) ensemble back: start it again
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    with pytest.raises(StreamingConfigError, match=r"streaming tensor net.aux is given twice"):
        ensemble.add_streaming_inputs([net.inputs["aux"], net.inputs["aux"]], stride=4, batch_size=8)
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs(net.inputs["strain"], stride=4, batch_size=8, key="data")
    with pytest.raises(
        StreamingConfigError,
        match=r"streaming update name 'data' collides with a tensor of ensemble 'stream'",
    ) as info:
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="data")
    assert sorted(m.name for m in repo) == ["net"]  # all or nothing: the snapshotter went too
    assert "the ensemble build was rolled back: removed snapshotter, stream" in "\n".join(
        info.value.__notes__
    )


def test_streaming_output_rejects_more_updates_than_fit_the_kernel(
    net: Model, ensemble: EnsembleModel
) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"num_updates 17 \* stride 4 = 68 exceeds the prediction length K=64 of 'noise'",
    ):
        ensemble.add_streaming_output(net.outputs["noise"], stride=4, num_updates=17)


def test_streaming_output_rejects_unsupported_rank(repo: ModelRepository, ensemble: EnsembleModel) -> None:
    model = declared(repo, "scalar", {"x": [8, 64]}, {"score": [8]})
    with pytest.raises(
        StreamingConfigError,
        match=r"streaming output 'score' has shape \[8\] of rank 1: an online averager takes",
    ):
        add_streaming_output(ensemble, model.outputs["score"], stride=4, num_updates=2)


def test_batched_state_needs_a_downstream_sequence_axis(net: Model, ensemble: EnsembleModel) -> None:
    with pytest.raises(
        StreamingConfigError,
        match=r"sequences_per_instance 4 batches sequences .* but net.aux has no batch axis",
    ):
        add_streaming_inputs(ensemble, net.inputs["aux"], stride=4, batch_size=8, sequences_per_instance=4)


def test_unknown_streaming_option_is_a_type_error(net: Model, ensemble: EnsembleModel) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['idle_timeout'\]"):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, idle_timeout=3)


# -- issue 16: strides that disagree, and all-or-nothing builds ------------------------------


def test_an_output_stride_that_differs_from_the_input_stride_is_refused(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    conv = declared(repo, "conv", {"x": [4, 3, 256]}, {"y": [4, 256]})
    group = ensemble.add_streaming_inputs(conv.inputs["x"], stride=8, batch_size=4, key="update")
    assert group.update_shape == (1, 3, 32)
    with pytest.raises(StreamingConfigError) as info:
        ensemble.add_streaming_output(conv.outputs["y"], stride=16, num_updates=8, key="output")
    message = str(info.value)
    assert "stride 16 differs from stride 8 of the streaming input 'update' that feeds conv" in message
    assert "each update of 32 samples would come back as 64 samples. Use stride=8" in message


def test_an_output_reached_through_another_model_is_checked_against_the_input_stride(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    pre = declared(repo, "pre", {"x": [4, 1, 64]}, {"z": [4, 1, 64]})
    post = declared(repo, "post", {"z": [4, 1, 64]}, {"y": [4, 64]})
    ensemble.add_streaming_inputs(pre.inputs["x"], stride=4, batch_size=4, key="update")
    ensemble.pipe(pre.outputs["z"], post.inputs["z"])
    with pytest.raises(
        StreamingConfigError, match=r"stride 2 differs from stride 4 of the streaming input 'update'"
    ):
        ensemble.add_streaming_output(post.outputs["y"], stride=2, num_updates=2)


def test_a_failed_streaming_build_leaves_nothing_behind_and_can_be_rerun(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    net = declared(repo, "net", {"aux": [8, 64]}, {"noise": [8, 64]})
    ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="update")
    assert sorted(m.name for m in repo) == ["net", "snapshotter", "stream"]
    with pytest.raises(StreamingConfigError, match="num_updates") as info:
        ensemble.add_streaming_output(net.outputs["noise"], stride=4, num_updates=0)
    assert "rolled back: removed snapshotter, stream" in "\n".join(info.value.__notes__)
    assert sorted(m.name for m in repo) == ["net"]
    assert sorted(p.name for p in Path(repo.root).iterdir()) == ["net"]  # on disk too
    assert sorted(m.name for m in ModelRepository(repo.root)) == ["net"]
    with pytest.raises(
        StreamingConfigError, match=r"ensemble 'stream' is no longer in .* start again with repo.add"
    ):
        ensemble.add_streaming_output(net.outputs["noise"], stride=4, num_updates=2)
    # the same build again, now correct, succeeds under the same names
    again = repo.add("stream", platform=Platform.ENSEMBLE)
    assert isinstance(again, EnsembleModel)
    again.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="update")
    again.add_streaming_output(net.outputs["noise"], stride=4, num_updates=2, key="out")
    assert again.export_version().version == 1
    assert sorted(m.name for m in ModelRepository(repo.root)) == [
        "aggregator",
        "net",
        "snapshotter",
        "stream",
    ]


def test_a_failed_first_export_rolls_the_ensemble_back(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    from hermes.quiver.exceptions import EnsembleError

    net = declared(repo, "net", {"aux": [8, 64]}, {"noise": [8, 64]})
    ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="update")
    with pytest.raises(EnsembleError, match="the ensemble has no outputs"):
        ensemble.export_version()
    assert sorted(m.name for m in repo) == ["net"]


def test_a_failed_step_on_an_exported_ensemble_restores_its_exported_config(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    net = declared(repo, "net", {"aux": [8, 64]}, {"noise": [8, 64]})
    ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="update")
    ensemble.add_streaming_output(net.outputs["noise"], stride=4, num_updates=2, key="out")
    ensemble.export_version()
    exported = ensemble.config.to_text()
    with pytest.raises(StreamingConfigError):
        ensemble.add_streaming_inputs(net.inputs["aux"], stride=4, batch_size=8, key="out", name="late")
    assert ensemble.config.to_text() == exported
    assert sorted(m.name for m in repo) == ["aggregator", "net", "snapshotter", "stream"]
    assert ensemble.versions == [1]


def test_batched_state_wires_a_network_whose_batch_axis_carries_the_sequences(
    repo: ModelRepository, ensemble: EnsembleModel
) -> None:
    net = repo.add("seqnet", platform=Platform.ONNX)
    net.config.max_batch_size = 6
    net.config.add_input("strain", [4, 2, 64])  # (sequences, B = 4, C = 2, K = 64)
    net.config.add_output("noise", [4, 64])
    net.config.write()
    group = add_streaming_inputs(
        ensemble, net.inputs["strain"], stride=8, batch_size=4, sequences_per_instance=6
    )
    output = add_streaming_output(
        ensemble, net.outputs["noise"], stride=8, num_updates=4, sequences_per_instance=6
    )
    assert group.update_shape == (1, 2, 32)
    assert output.delay == 24
    record = json.loads(ensemble.config.parameters["hermes.streaming_input.snapshotter_update"])
    assert (record["kernel_size"], record["batch_size"], record["max_sequences"]) == (64, 4, 6)
    other = repo.add("stream2", platform=Platform.ENSEMBLE)
    wrong = declared(repo, "wrongnet", {}, {})
    wrong.config.max_batch_size = 6
    wrong.config.add_input("strain", [3, 2, 64])
    wrong.config.write()
    with pytest.raises(
        StreamingConfigError, match=r"has batch axis 3 but the snapshotter emits batch_size=4"
    ):
        add_streaming_inputs(other, wrong.inputs["strain"], stride=8, batch_size=4, sequences_per_instance=6)
