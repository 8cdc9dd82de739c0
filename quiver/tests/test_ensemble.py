"""EnsembleModel: wiring by add_input / pipe / add_output, checks at pipe time, versioned steps."""

from __future__ import annotations

import pytest

from hermes.quiver import EnsembleError, EnsembleModel, ExportError, ModelRepository, Platform


def declare(repo: ModelRepository, name: str, inputs: dict, outputs: dict, max_batch_size: int = 0):
    model = repo.add(name, platform=Platform.ONNX)
    model.config.max_batch_size = max_batch_size
    for key, (dims, dtype) in inputs.items():
        model.config.add_input(key, dims, dtype)
    for key, (dims, dtype) in outputs.items():
        model.config.add_output(key, dims, dtype)
    model.config.write()
    return model


@pytest.fixture
def chain(memory_repo: ModelRepository):
    pre = declare(memory_repo, "pre", {"x": ([2, 8], "FP32")}, {"y": ([2, 8], "FP32")})
    net = declare(
        memory_repo, "net", {"y": ([2, -1], "FP32")}, {"score": ([1], "FP32"), "aux": ([4], "INT64")}
    )
    return memory_repo, pre, net


def test_chain_of_two_models_writes_steps_and_maps(chain) -> None:
    repo, pre, net = chain
    ensemble = repo.add("pipeline", platform=Platform.ENSEMBLE)
    assert isinstance(ensemble, EnsembleModel)
    exposed = ensemble.add_input(pre.inputs["x"], key="data")
    key = ensemble.pipe(pre.outputs["y"], net.inputs["y"])
    out = ensemble.add_output(net.outputs["score"])
    assert (exposed.name, exposed.shape, key, out.name) == ("data", (2, 8), "y", "score")
    assert ensemble.steps == [("pre", -1), ("net", -1)]
    steps = ensemble.config.proto.ensemble_scheduling.step
    assert dict(steps[0].input_map) == {"x": "data"} and dict(steps[0].output_map) == {"y": "y"}
    assert dict(steps[1].input_map) == {"y": "y"} and dict(steps[1].output_map) == {"score": "score"}
    result = ensemble.export_version()
    assert result.version == 1 and ensemble.versions == [1]
    assert repo.storage.listfiles("pipeline", "1") == ["model.empty"]
    again = ModelRepository(repo.root).models["pipeline"]
    assert again.steps == [("pre", -1), ("net", -1)] and [m.name for m in again.models] == ["pre", "net"]


def test_pipe_rejects_shape_mismatch_naming_both_tensors(chain) -> None:
    repo, pre, _ = chain
    other = declare(repo, "other", {"z": ([3, 8], "FP32")}, {"o": ([1], "FP32")})
    ensemble = repo.add("e", platform=Platform.ENSEMBLE)
    with pytest.raises(
        EnsembleError, match=r"cannot pipe pre.y with shape \[2, 8\] into other.z with shape \[3, 8\]"
    ):
        ensemble.pipe(pre.outputs["y"], other.inputs["z"])
    rank = declare(repo, "rank", {"z": ([16], "FP32")}, {"o": ([1], "FP32")})
    with pytest.raises(
        EnsembleError, match=r"cannot pipe pre.y with shape \[2, 8\] into rank.z with shape \[16\]"
    ):
        ensemble.pipe(pre.outputs["y"], rank.inputs["z"])
    assert ensemble.steps == []


def test_pipe_rejects_dtype_mismatch(chain) -> None:
    repo, _, net = chain
    ints = declare(repo, "ints", {"a": ([4], "FP32")}, {"o": ([1], "FP32")})
    ensemble = repo.add("e", platform=Platform.ENSEMBLE)
    with pytest.raises(EnsembleError, match=r"cannot pipe net.aux \(INT64\) into ints.a \(FP32\)"):
        ensemble.pipe(net.outputs["aux"], ints.inputs["a"])


def test_branches_one_input_feeds_two_models_and_both_outputs_exposed(memory_repo: ModelRepository) -> None:
    a = declare(memory_repo, "a", {"x": ([4], "FP32")}, {"out": ([1], "FP32")})
    b = declare(memory_repo, "b", {"x": ([4], "FP32")}, {"out": ([1], "FP32")})
    ensemble = memory_repo.add("fan", platform=Platform.ENSEMBLE)
    ensemble.add_input(a.inputs["x"])
    ensemble.add_input(b.inputs["x"])
    ensemble.add_output(a.outputs["out"], key="a_out")
    ensemble.add_output(b.outputs["out"], key="b_out")
    assert [t.name for t in ensemble.config.inputs] == ["x"]
    assert [t.name for t in ensemble.config.outputs] == ["a_out", "b_out"]
    with pytest.raises(EnsembleError, match="the ensemble already has an output 'a_out'"):
        ensemble.add_output(b.outputs["out"], key="a_out")


def test_versioned_steps_run_one_model_at_two_versions(memory_repo: ModelRepository) -> None:
    m = declare(memory_repo, "m", {"x": ([4], "FP32")}, {"out": ([1], "FP32")})
    ensemble = memory_repo.add("canary", platform=Platform.ENSEMBLE)
    ensemble.add_input(m.inputs["x"], version=1)
    ensemble.add_input(m.inputs["x"], version=2)
    ensemble.add_output(m.outputs["out"], key="production", version=1)
    ensemble.add_output(m.outputs["out"], key="canary", version=2)
    assert ensemble.steps == [("m", 1), ("m", 2)]
    with pytest.raises(EnsembleError, match="step version of m must be an integer >= 1 or None, got 0"):
        ensemble.add_input(m.inputs["x"], version=0)


def test_input_already_fed_and_taken_keys_are_rejected(chain) -> None:
    repo, pre, net = chain
    ensemble = repo.add("e", platform=Platform.ENSEMBLE)
    ensemble.pipe(pre.outputs["y"], net.inputs["y"])
    with pytest.raises(EnsembleError, match=r"net.y is already fed by 'y'"):
        ensemble.add_input(net.inputs["y"], key="other")
    with pytest.raises(EnsembleError, match=r"pre.y is already mapped to 'y', not 'z'"):
        ensemble.add_output(pre.outputs["y"], key="z")


def test_batched_ensemble_needs_batched_members(memory_repo: ModelRepository) -> None:
    unbatched = declare(memory_repo, "u", {"x": ([4], "FP32")}, {"o": ([1], "FP32")})
    batched = declare(memory_repo, "b", {"x": ([4], "FP32")}, {"o": ([1], "FP32")}, max_batch_size=8)
    ensemble = memory_repo.add("e", platform=Platform.ENSEMBLE)
    ensemble.config.max_batch_size = 8
    with pytest.raises(EnsembleError, match="u has no batch axis"):
        ensemble.add_input(unbatched.inputs["x"])
    exposed = ensemble.add_input(batched.inputs["x"])
    assert exposed.shape == (None, 4) and ensemble.config.inputs[0].dims == (4,)


def test_incomplete_ensemble_is_not_exported(chain) -> None:
    repo, pre, net = chain
    ensemble = repo.add("e", platform=Platform.ENSEMBLE)
    ensemble.add_input(pre.inputs["x"])
    ensemble.add_output(net.outputs["score"])
    with pytest.raises(EnsembleError, match=r"inputs fed by nothing: \['net.y'\]"):
        ensemble.export_version()
    with pytest.raises(ExportError, match="an ensemble exports no module"):
        ensemble.export_version(object())
    assert ensemble.versions == []


def test_unknown_tensor_names_are_rejected(chain) -> None:
    repo, pre, net = chain
    ensemble = repo.add("e", platform=Platform.ENSEMBLE)
    with pytest.raises(EnsembleError, match="pre has no output 'x'"):
        ensemble.pipe(pre.inputs["x"], net.inputs["y"])
