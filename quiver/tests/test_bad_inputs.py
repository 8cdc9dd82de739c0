"""Bad input to quiver gets an error naming what was wrong and what was expected (issue 16)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hermes.quiver import ModelRepository, Platform
from hermes.quiver.exceptions import (
    ExportError,
    ModelConfigError,
    ModelExistsError,
    RepositoryError,
    VerificationError,
)

torch = pytest.importorskip("torch")


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()


class _AllNaN(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo")


def test_a_fixed_first_axis_with_max_batch_size_is_refused_not_made_the_batch_axis(
    repo: ModelRepository,
) -> None:
    model = repo.add("m", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 8
    with pytest.raises(ModelConfigError) as info:
        model.export_version(torch.nn.Identity(), input_shapes={"x": (16, 16)})
    message = str(info.value)
    assert (
        "input_shapes['x'] is (16, 16), but with max_batch_size=8 the first axis is the batch axis" in message
    )
    assert "write (None, 16, 16) for samples of shape (16, 16), or (None, 16) if 16 is the batch" in message
    assert model.versions == []
    assert model.config.inputs == []  # the config was not touched


def test_a_shape_mismatch_names_the_model_the_inputs_and_the_declaration(repo: ModelRepository) -> None:
    model = repo.add("mlp", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 4
    with pytest.raises(ExportError) as info:
        model.export_version(_mlp(), input_shapes={"x": (None, 12)})
    message = str(info.value)
    assert message.startswith("mlp: the module fails on the example inputs (x (4, 12) float32)")
    assert "mat1 and mat2 shapes cannot be multiplied" in message  # torch's own words come last
    assert model.versions == []


def test_a_dtype_mismatch_names_the_input_dtype(repo: ModelRepository) -> None:
    model = repo.add("mlp", platform=Platform.TORCHSCRIPT)
    with pytest.raises(
        ExportError, match=r"mlp: the module fails on the example inputs \(input \(2, 16\) int64\)"
    ):
        model.export_version(_mlp(), example_inputs=[torch.ones(2, 16, dtype=torch.int64)])


@pytest.mark.parametrize("name", ["my input", "x!", "", "a b/c", "é"])
def test_tensor_names_with_spaces_or_symbols_are_refused(repo: ModelRepository, name: str) -> None:
    model = repo.add("m", platform=Platform.ONNX)
    with pytest.raises(
        ModelConfigError, match=r"(expected letters, digits, '_', '.', '-', '/' and ':' only|non-empty)"
    ):
        model.config.add_input(name, [4])
    with pytest.raises(ModelConfigError, match=r"(expected letters, digits|non-empty)"):
        model.export_version(_mlp(), example_inputs={name or " ": torch.ones(1, 16)})
    with pytest.raises(ModelConfigError, match=r"(expected letters, digits|non-empty)"):
        model.export_version(_mlp(), example_inputs=[torch.ones(1, 16)], output_names=[name or " "])
    assert model.versions == []


@pytest.mark.parametrize("url", ["ftp://example.invalid/repo", "foo://bar", "http://example.invalid/x"])
def test_unsupported_repository_schemes_list_the_supported_ones(url: str) -> None:
    with pytest.raises(RepositoryError) as info:
        ModelRepository(url)
    scheme = url.split("://")[0] + "://"
    assert f"unsupported scheme {scheme!r}" in str(info.value)
    assert (
        "a local path, gs://bucket/prefix (hermes-quiver[gcs]), s3://bucket/prefix (hermes-quiver[s3])"
        in str(info.value)
    )


def test_an_unknown_platform_lists_the_valid_values(repo: ModelRepository) -> None:
    with pytest.raises(ModelConfigError) as info:
        repo.add("m", platform="tensorflow")
    assert "platform: unknown value 'tensorflow'; expected one of ['ensemble', 'onnxruntime_onnx'" in str(
        info.value
    )
    assert "'TORCHSCRIPT'" in str(info.value)
    assert "m" not in repo
    assert repo.add("m", platform="onnx").platform is Platform.ONNX  # member names are accepted


def test_model_exists_error_names_the_ways_out(repo: ModelRepository) -> None:
    repo.add("m", platform=Platform.ONNX)
    with pytest.raises(ModelExistsError) as info:
        repo.add("m", platform=Platform.ONNX)
    message = str(info.value)
    assert "a model named 'm' exists" in message
    assert "repo.remove('m')" in message and "force=True" in message and "repo.models['m']" in message


def test_outputs_that_are_all_nan_fail_verification_unless_allowed(repo: ModelRepository) -> None:
    model = repo.add("nan", platform=Platform.TORCHSCRIPT)
    with pytest.raises(VerificationError) as info:
        model.export_version(_AllNaN(), example_inputs=[torch.ones(2, 3)])
    report = info.value.report
    assert not report.passed
    assert (
        "non-finite (NaN/inf) values: 6 from the module, 6 from the export; pass allow_non_finite=True"
        in str(report)
    )  # 6 eager + ... per output
    assert model.versions == []
    result = model.export_version(_AllNaN(), example_inputs=[torch.ones(2, 3)], allow_non_finite=True)
    assert result.report is not None and result.report.passed
    assert model.versions == [1]


def test_onnx_export_prints_no_torchvision_notices_or_future_warnings(
    repo: ModelRepository, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    pytest.importorskip("onnx")
    model = repo.add("mlp", platform=Platform.ONNX)
    model.config.max_batch_size = 4
    with caplog.at_level(logging.WARNING):
        model.export_version(_mlp(), input_shapes={"x": (None, 16)})
    assert [r.getMessage() for r in caplog.records if "torchvision" in r.getMessage()] == []
    assert [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)] == []


def test_a_string_for_output_names_is_refused_not_split_into_letters(repo: ModelRepository) -> None:
    model = repo.add("mlp", platform=Platform.TORCHSCRIPT)
    with pytest.raises(
        ExportError,
        match=r"output_names must be a list of names, got the string 'out'; write output_names=\['out'\]",
    ):
        model.export_version(_mlp(), example_inputs=[torch.ones(1, 16)], output_names="out")  # type: ignore[arg-type]


def test_a_string_for_output_keys_is_refused(repo: ModelRepository) -> None:
    from hermes.quiver.streaming import StreamingConfigError

    net = repo.add("net", platform=Platform.ONNX)
    net.config.add_input("x", [4, 1, 64])
    net.config.add_output("y", [4, 64])
    net.config.write()
    ensemble = repo.add("stream", platform=Platform.ENSEMBLE)
    with pytest.raises(
        StreamingConfigError, match=r"output_keys must be a list of names, .* got the string 'win'"
    ):
        ensemble.add_streaming_inputs(net.inputs["x"], stride=4, batch_size=4, output_keys="win")


def test_an_ensemble_key_with_spaces_is_refused(repo: ModelRepository) -> None:
    pre = repo.add("pre", platform=Platform.ONNX)
    pre.config.add_input("x", [4])
    pre.config.add_output("y", [4])
    post = repo.add("post", platform=Platform.ONNX)
    post.config.add_input("y", [4])
    post.config.add_output("z", [4])
    ensemble = repo.add("ens", platform=Platform.ENSEMBLE)
    with pytest.raises(ModelConfigError, match=r"ensemble tensor.name 'my key!': expected letters, digits"):
        ensemble.pipe(pre.outputs["y"], post.inputs["y"], key="my key!")
    with pytest.raises(ModelConfigError, match=r"input.name 'in put': expected letters"):
        ensemble.add_input(pre.inputs["x"], key="in put")
