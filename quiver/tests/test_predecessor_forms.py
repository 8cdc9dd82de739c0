"""The predecessor's (ml4gw-hermes) call forms: kept with their meaning, or refused loudly."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from hermes.quiver import (
    ExportError,
    InstanceGroup,
    InstanceKind,
    ModelConfig,
    ModelConfigError,
    ModelRepository,
    Platform,
    RepositoryError,
)


def declare(repo: ModelRepository, name: str, inputs: dict, outputs: dict):
    model = repo.add(name, platform=Platform.ONNX)
    for key, dims in inputs.items():
        model.config.add_input(key, dims)
    for key, dims in outputs.items():
        model.config.add_output(key, dims)
    model.config.write()
    return model


# -- ModelRepository(root, clean=True) and storage options ---------------------------------


def test_clean_true_clears_every_model_folder_including_half_written_ones(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    declare(repo, "net", {"x": [4]}, {"y": [4]})
    (tmp_path / "half-exported" / "1").mkdir(parents=True)  # no config.pbtxt: refresh would refuse it
    (tmp_path / "notes.txt").write_text("kept")
    with pytest.raises(RepositoryError, match="half-exported"):
        ModelRepository(tmp_path)
    cleaned = ModelRepository(tmp_path, clean=True)
    assert cleaned.models == {} and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    # the predecessor's positional form means the same
    declare(cleaned, "again", {"x": [1]}, {"y": [1]})
    assert ModelRepository(tmp_path, True).models == {}


def test_clean_refuses_a_home_directory_and_a_non_bool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RepositoryError, match="refusing clean=True on a home directory"):
        ModelRepository(tmp_path, clean=True)
    with pytest.raises(RepositoryError, match="clean: expected True or False, got 'yes'"):
        ModelRepository(tmp_path / "r", clean="yes")  # type: ignore[arg-type]


def test_unknown_storage_options_are_refused_not_passed_to_fsspec(tmp_path: Path) -> None:
    with pytest.raises(
        RepositoryError, match=r"unknown storage option\(s\) \['cleann'\] for a file:// repository"
    ):
        ModelRepository(tmp_path, cleann=True)
    with pytest.raises(RepositoryError, match=r"\['credentials'\] for a memory:// repository"):
        ModelRepository("memory://opts", credentials="key.json")
    # options the filesystem declares still pass
    assert ModelRepository(tmp_path, auto_mkdir=True).models == {}


# -- EnsembleModel.add_input / add_output: keyword-only key and version ---------------------


def test_add_input_and_add_output_refuse_positional_key_or_version(memory_repo: ModelRepository) -> None:
    net = declare(memory_repo, "net", {"x": [4]}, {"y": [4]})
    ensemble = memory_repo.add("ens", platform=Platform.ENSEMBLE)
    # the predecessor's add_input(tensor, version, key): positional args would swap meanings
    with pytest.raises(
        TypeError, match=r"order was \(input, version, key\).*add_input\(tensor, key=\.\.\., version=\.\.\.\)"
    ):
        ensemble.add_input(net.inputs["x"], 1, "data")
    with pytest.raises(TypeError, match=r"add_output\(tensor, key=\.\.\., version=\.\.\.\)"):
        ensemble.add_output(net.outputs["y"], None, "out")
    assert ensemble.steps == [] and ensemble.inputs == {}
    exposed = ensemble.add_input(net.inputs["x"], version=1, key="data")
    out = ensemble.add_output(net.outputs["y"], key="out", version=1)
    assert (exposed.name, out.name, ensemble.steps) == ("data", "out", [("net", 1)])


# -- streaming: stream_size / update_size and the old positional add_streaming_output --------


@pytest.fixture
def windowed(memory_repo: ModelRepository):
    pytest.importorskip("torch")
    net = declare(memory_repo, "net", {"x": [4, 2, 16]}, {"y": [4, 16]})
    return memory_repo, net


def test_stream_size_is_accepted_for_stride_with_a_deprecation_warning(windowed) -> None:
    repo, net = windowed
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    with pytest.warns(
        DeprecationWarning,
        match=r"add_streaming_inputs\(stream_size=\.\.\.\).*add_streaming_inputs\(stride=2\)",
    ):
        group = ensemble.add_streaming_inputs(
            [net.inputs["x"]], stream_size=2, batch_size=4, streams_per_gpu=3
        )
    assert group.update_shape == (1, 2, 8)
    assert repo["snapshotter"].config.instance_groups[0].count == 3
    with pytest.raises(TypeError, match="stream_size= is the old name of stride=; give only stride="):
        ensemble.add_streaming_inputs([net.inputs["x"]], 2, stream_size=2, name="other")


def test_old_positional_add_streaming_output_keeps_its_meaning_with_a_warning(windowed) -> None:
    repo, net = windowed
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    ensemble.add_streaming_inputs([net.inputs["x"]], 2, 4)
    # the predecessor: add_streaming_output(output, update_size, num_updates, batch_size, name, streams_per_gpu)
    with pytest.warns(
        DeprecationWarning,
        match=r"positional batch_size, name, streams_per_gpu.*batch_size=4, name='agg', streams_per_gpu=2",
    ):
        output = ensemble.add_streaming_output(net.outputs["y"], 2, 4, 4, "agg", 2)
    assert output.model.name == "agg" and output.delay == 6
    assert repo["agg"].config.instance_groups[0].count == 2
    with pytest.warns(DeprecationWarning, match=r"add_streaming_output\(update_size=\.\.\.\).*stride=2"):
        again = ensemble.add_streaming_output(
            net.outputs["y"], update_size=2, num_updates=2, name="agg2", key="o2"
        )
    assert again.delay == 2


def test_new_keyword_forms_raise_no_warning(windowed) -> None:
    repo, net = windowed
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        ensemble.add_streaming_inputs(net.inputs["x"], stride=2, batch_size=4)
        output = ensemble.add_streaming_output(
            net.outputs["y"], stride=2, num_updates=4, name="agg", batch_size=4
        )
    assert output.model.name == "agg"


# -- ModelConfig: a typed way to change an existing instance group ---------------------------


def test_set_instance_group_changes_kind_and_count_keeping_other_fields() -> None:
    config = ModelConfig(name="m", platform=Platform.ONNX)
    config.add_instance_group(kind="gpu", count=2, gpus=[0, 1], name="streams")
    config.proto.instance_group[0].profile.append("p0")
    group = config.set_instance_group(kind="cpu", count=6)
    assert group == InstanceGroup(kind=InstanceKind.CPU, count=6, gpus=(), name="streams")
    proto = config.proto.instance_group[0]
    assert (proto.kind, proto.count, list(proto.gpus), list(proto.profile)) == (
        pb.ModelInstanceGroup.KIND_CPU,
        6,
        [],
        ["p0"],
    )
    assert config.set_instance_group(name="streams", kind="gpu", gpus=1).gpus == (0,)
    config.add_instance_group(kind="cpu", count=1, name="spare")
    with pytest.raises(ModelConfigError, match="2 groups; choose one with name= or index="):
        config.set_instance_group(count=3)
    with pytest.raises(ModelConfigError, match=r"instance_group\[nope\]: no group of that name"):
        config.set_instance_group(name="nope", count=3)
    with pytest.raises(ModelConfigError, match=r"instance_group.gpus: \(0,\) given for kind KIND_CPU"):
        config.set_instance_group(index=1, gpus=[0])
    config.scale_instance_group(4, index=-1)
    assert [(g.name, g.count) for g in config.instance_groups] == [("streams", 6), ("spare", 4)]


def test_move_instance_groups_to_cpu_reports_each_group() -> None:
    text = (
        'name: "snapshotter" platform: "onnxruntime_onnx" '
        "instance_group { count: 6 kind: KIND_GPU } instance_group { count: 1 kind: KIND_CPU }"
        ' instance_group { name: "g" count: 2 kind: KIND_GPU gpus: [1] }'
    )
    config = ModelConfig.from_text(text)
    changes = config.move_instance_groups_to_cpu()
    assert changes == [
        "snapshotter instance group #0: KIND_GPU -> KIND_CPU (count 6)",
        "snapshotter instance group g: KIND_GPU on GPUs [1] -> KIND_CPU (count 2)",
    ]
    assert [(g.kind, g.count, g.gpus) for g in config.instance_groups] == [
        (InstanceKind.CPU, 6, ()),
        (InstanceKind.CPU, 1, ()),
        (InstanceKind.CPU, 2, ()),
    ]
    assert config.move_instance_groups_to_cpu() == []


def test_the_predecessors_exporter_options_are_refused_with_the_new_name(
    memory_repo: ModelRepository,
) -> None:
    torch = pytest.importorskip("torch")
    model = memory_repo.add("net", platform=Platform.ONNX)
    with pytest.raises(
        ExportError, match=r"unknown option\(s\) \['opset_version'\].*opset_version= is now opset="
    ):
        model.export_version(torch.nn.Linear(2, 2), example_inputs=torch.ones(1, 2), opset_version=13)
    assert model.versions == []
