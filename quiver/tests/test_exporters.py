"""Exporters: each writes the right file and config, and verification compares it with eager torch."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from hermes.quiver import (
    ExportError,
    ModelConfigError,
    ModelRepository,
    Platform,
    VerificationError,
)

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def tmp_folders(repo: ModelRepository, name: str) -> list[str]:
    return [n for n in repo.storage.listdir(name) if n.startswith(".")]


def test_onnx_dynamo_export_has_dynamic_batch_checked_opset_and_report(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("affine", platform=Platform.ONNX)
    model.config.max_batch_size = 8
    net = nets.Affine()
    x = torch.randn(3, 4)
    result = model.export_version(net, example_inputs=[x], opset=18)
    assert (result.version, model.versions) == (1, [1])
    sets = ["examples", "draw 1", "draw 2 (-draw 1)", "draw 3", "draw 4 (-draw 3)"]
    assert result.report.input_sets == sets
    assert [(c.inputs, c.batch_size, c.output, c.passed) for c in result.report.comparisons] == [
        (s, b, "output_0", True) for s in sets for b in (1, 8)
    ]
    assert result.report.max_abs < 1e-5
    proto = onnx.load_from_string(memory_repo.storage.read_bytes("affine", "1", "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == [
        "output_0"
    ]
    config = ModelRepository(memory_repo.root).models["affine"].config
    assert [(t.name, t.dims, t.dtype.value) for t in config.inputs] == [("x", (4,), "FP32")]
    assert [(t.name, t.dims, t.dtype.value) for t in config.outputs] == [("output_0", (3,), "FP32")]


def test_onnx_legacy_exporter_writes_the_asked_low_opset(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("legacy", platform=Platform.ONNX)
    model.config.max_batch_size = 4
    result = model.export_version(
        nets.TwoHeads(),
        example_inputs={"x": torch.randn(2, 4), "scale": torch.rand(2, 1)},
        output_names=["a", "b"],
        exporter="legacy",
        opset=17,
    )
    assert result.report.passed
    proto = onnx.load_from_string(memory_repo.storage.read_bytes("legacy", "1", "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    assert [t.name for t in model.config.inputs] == ["x", "scale"]
    assert [(t.name, t.dims) for t in model.config.outputs] == [("a", (2,)), ("b", (5,))]


class MeanPool(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x, -1).mean(dim=1)


def test_onnx_opset_silently_changed_by_torch_fails_the_export(memory_repo: ModelRepository) -> None:
    model = memory_repo.add("lowopset", platform=Platform.ONNX)
    # torch 2.13's dynamo exporter cannot down-convert ReduceMean to opset 17: it logs and writes 18
    with pytest.raises(ExportError, match="asked for ONNX opset 17 but torch wrote opset 18"):
        model.export_version(MeanPool(), example_inputs=torch.randn(1, 4), exporter="dynamo", opset=17)
    assert model.versions == [] and tmp_folders(memory_repo, "lowopset") == []
    assert model.config.inputs == []


def test_onnx_file_check_names_opset_names_and_fixed_batch(tmp_path) -> None:
    from onnx import TensorProto, helper

    from hermes.quiver.exporters.base import ExportSpec
    from hermes.quiver.exporters.onnx import check_onnx_file

    def write(batch, opset: int):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        )
        path = tmp_path / "model.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
        return path

    spec = ExportSpec(
        model_name="m", input_names=("x",), input_dtypes=(), output_names=("y",), max_batch_size=4
    )
    check_onnx_file(write("batch", 18), opset=18, spec=spec)
    with pytest.raises(ExportError, match="asked for ONNX opset 17 but torch wrote opset 18"):
        check_onnx_file(write("batch", 18), opset=17, spec=spec)
    with pytest.raises(ExportError, match="x has a fixed batch axis of 2"):
        check_onnx_file(write(2, 18), opset=18, spec=spec)
    with pytest.raises(
        ExportError, match=r"tensor names \['x'\] -> \['y'\] differ from the config's \['a'\]"
    ):
        check_onnx_file(
            write("batch", 18),
            opset=18,
            spec=ExportSpec(
                model_name="m", input_names=("a",), input_dtypes=(), output_names=("y",), max_batch_size=4
            ),
        )


def test_torchscript_trace_names_inputs_from_forward_and_outputs_by_index(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("heads", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 4
    result = model.export_version(nets.TwoHeads(), example_inputs=[torch.randn(3, 4), torch.rand(3, 1)])
    assert [t.name for t in model.config.inputs] == ["x", "scale"]
    assert [(t.name, t.dims) for t in model.config.outputs] == [("OUTPUT__0", (2,)), ("OUTPUT__1", (5,))]
    assert [(c.batch_size, c.output) for c in result.report.comparisons if c.inputs == "examples"] == [
        (1, "OUTPUT__0"),
        (1, "OUTPUT__1"),
        (4, "OUTPUT__0"),
        (4, "OUTPUT__1"),
    ]
    assert result.report.max_abs == 0.0
    assert memory_repo.storage.listfiles("heads", "1") == ["model.pt"]


def test_tracing_a_data_dependent_branch_fails_with_the_tracer_warning_and_its_source_line(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("branchy", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 4
    before = memory_repo.storage.read_text("branchy", "config.pbtxt")
    example = torch.tensor([[-1.0, -1.0], [5.0, 5.0]])
    with pytest.raises(ExportError, match="tracing warned") as caught:
        model.export_version(nets.SignBranch(), example_inputs=example, method="trace")
    message = str(caught.value)
    lines = Path(nets.__file__).read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "if x.sum() > 0:" in text)
    assert f"quiver_test_nets.py:{line}: if x.sum() > 0:" in message
    assert "TracerWarning: Converting a tensor to a Python boolean" in message
    assert "method='script'" in message and "tracer_warnings='accept'" in message
    assert model.versions == [] and tmp_folders(memory_repo, "branchy") == []
    assert memory_repo.storage.read_text("branchy", "config.pbtxt") == before


def test_accepted_tracer_warnings_still_fail_verification_on_the_draws_and_the_examples(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("branchy", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 4
    before = memory_repo.storage.read_text("branchy", "config.pbtxt")
    # the whole example sums > 0 (traced branch: x * 2); its first row alone sums < 0 (eager: -x)
    example = torch.tensor([[-1.0, -1.0], [5.0, 5.0]])
    with (
        pytest.warns(UserWarning, match="accepted tracer warnings"),
        pytest.raises(VerificationError, match="does not compute what the module computes") as caught,
    ):
        model.export_version(
            nets.SignBranch(), example_inputs=example, method="trace", tracer_warnings="accept"
        )
    report = caught.value.report
    examples = [(c.batch_size, c.passed) for c in report.comparisons if c.inputs == "examples"]
    assert examples == [(1, False), (4, True)]
    assert report.comparisons[0].max_abs == pytest.approx(3.0)  # eager 1, traced -2
    # each antithetic pair of draws takes both branches: one draw of every pair fails, by construction
    for first, second in (("draw 1", "draw 2 (-draw 1)"), ("draw 3", "draw 4 (-draw 3)")):
        at_max = {c.inputs: c.passed for c in report.comparisons if c.batch_size == 4}
        assert at_max[first] != at_max[second]
    assert "FAIL" in str(report) and "draw 2 (-draw 1)" in str(report)
    assert model.versions == [] and tmp_folders(memory_repo, "branchy") == []
    assert memory_repo.storage.read_text("branchy", "config.pbtxt") == before
    # scripting keeps the control flow, so the same module exports fine on every draw
    result = model.export_version(nets.SignBranch(), example_inputs=example, method="script")
    assert result.report.passed and model.versions == [1]
    assert result.report.input_sets == [
        "examples",
        "draw 1",
        "draw 2 (-draw 1)",
        "draw 3",
        "draw 4 (-draw 3)",
    ]


def test_verification_runs_user_given_input_sets_and_lists_them(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("affine", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 2
    given = [torch.full((2, 4), 3.0), {"x": torch.zeros(1, 4)}]
    result = model.export_version(
        nets.Affine(), example_inputs=torch.randn(2, 4), verify_inputs=given, verify_draws=1
    )
    assert result.report.input_sets == ["examples", "given 0", "given 1", "draw 1"]
    assert all(c.passed for c in result.report.comparisons) and len(result.report.comparisons) == 8
    with pytest.raises(ExportError, match=r"verify_inputs\[0\]: missing inputs \['x'\]"):
        model.export_version(
            nets.Affine(), example_inputs=torch.randn(2, 4), verify_inputs=[{"y": torch.ones(1, 4)}]
        )
    with pytest.raises(ExportError, match="verify_draws: expected an integer >= 0, got -1"):
        model.export_version(nets.Affine(), example_inputs=torch.randn(2, 4), verify_draws=-1)


def test_python_backend_from_weights_rebuilds_the_module(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("py", platform=Platform.PYTHON)
    model.config.max_batch_size = 6
    result = model.export_version(
        nets.Affine(features=5, outputs=2),
        example_inputs=torch.randn(2, 5),
        module_kwargs={"features": 5, "outputs": 2},
        code_paths=[nets.__file__],
    )
    assert result.report.passed and result.report.max_abs == 0.0
    assert memory_repo.storage.listdir("py", "1") == ["code"]
    assert memory_repo.storage.listfiles("py", "1") == ["model.py", "module.json", "weights.pt"]
    assert 'backend: "python"' in model.config.to_text() and "platform" not in model.config.to_text()


def test_python_backend_with_wrong_constructor_arguments_fails(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("pybad", platform=Platform.PYTHON)
    with pytest.raises(ExportError, match=r"(?s)does not load: .*size mismatch"):
        model.export_version(
            nets.Affine(features=5), example_inputs=torch.randn(1, 5), module_kwargs={"features": 4}
        )
    assert model.versions == []


def test_python_backend_from_whole_module(memory_repo: ModelRepository, nets: ModuleType) -> None:
    model = memory_repo.add("pywhole", platform=Platform.PYTHON)
    result = model.export_version(nets.Affine(), example_inputs=torch.randn(3, 4), source="module")
    assert result.report.comparisons[0].batch_size is None and result.report.passed
    assert memory_repo.storage.listfiles("pywhole", "1") == ["model.py", "module.json", "module.pt"]


def test_failed_export_leaves_nothing_behind(tmp_path, nets: ModuleType) -> None:
    class Unscriptable(torch.nn.Module):
        def forward(self, x, *rest):
            return x + sum(rest)

    repo = ModelRepository(tmp_path / "repo")
    model = repo.add("bad", platform=Platform.TORCHSCRIPT)
    with pytest.raises(ExportError, match="pytorch_libtorch export failed"):
        model.export_version(Unscriptable(), example_inputs=torch.randn(2), method="script")
    assert sorted(p.name for p in (tmp_path / "repo" / "bad").iterdir()) == ["config.pbtxt"]


def test_declared_config_must_match_the_module(memory_repo: ModelRepository, nets: ModuleType) -> None:
    model = memory_repo.add("declared", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 2
    model.config.add_input("x", [7], "FP32")
    with pytest.raises(
        ModelConfigError, match=r"input\[x\].dims: the config says \[7\], the module gives \[4\]"
    ):
        model.export_version(nets.Affine(), example_inputs=torch.randn(1, 4))
    with pytest.raises(
        ModelConfigError, match=r"the config declares \['x'\] but the inputs given are named \['y'\]"
    ):
        model.export_version(nets.Affine(), example_inputs={"y": torch.randn(1, 4)})


def test_input_shapes_generate_inputs_when_no_examples(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("shapes", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 3
    result = model.export_version(nets.Affine(), input_shapes={"x": (None, 4)}, output_names=["y"])
    assert [t.name for t in model.config.outputs] == ["y"] and result.report.passed
    second = model.export_version(nets.Affine())  # shapes now come from the config
    assert second.version == 2 and model.versions == [1, 2]


def test_exporter_options_are_checked(memory_repo: ModelRepository, nets: ModuleType) -> None:
    model = memory_repo.add("opts", platform=Platform.ONNX)
    with pytest.raises(ExportError, match=r"OnnxExporter: unknown option\(s\) \['method'\]"):
        model.export_version(nets.Affine(), example_inputs=torch.randn(1, 4), method="trace")
    with pytest.raises(ExportError, match="ONNX exporter: 'tf2onnx' is not 'dynamo' or 'legacy'"):
        model.export_version(nets.Affine(), example_inputs=torch.randn(1, 4), exporter="tf2onnx")


def test_unbatched_export_verifies_once_at_the_example_shape(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    model = memory_repo.add("unbatched", platform=Platform.TORCHSCRIPT)
    result = model.export_version(nets.Affine(), example_inputs=torch.randn(5, 4))
    assert [(c.batch_size, c.output) for c in result.report.comparisons if c.inputs == "examples"] == [
        (None, "OUTPUT__0")
    ]
    assert model.inputs["x"].shape == (5, 4) and model.outputs["OUTPUT__0"].shape == (5, 3)


def test_loose_tolerances_accept_and_tight_ones_reject(memory_repo: ModelRepository) -> None:
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + 1e-3 * torch.sin(1000.0 * x)  # trace-stable but compared against a rounded copy

    class Rounded(torch.nn.Module):
        def forward(self, x):
            return x

    # exporting Rounded but comparing with Noisy is what a lossy export looks like
    model = memory_repo.add("tol", platform=Platform.PYTHON)
    example = torch.linspace(-1, 1, 8).reshape(2, 4)

    class Lossy(Noisy):
        def state_dict(self, *args, **kwargs):  # the exported module forgets the perturbation
            return {}

    from hermes.quiver.verification import compare_outputs

    expected = {"y": Noisy()(example).numpy()}
    actual = {"y": Rounded()(example).numpy()}
    tight = compare_outputs(expected, actual, batch_size=1, atol=1e-6, rtol=1e-6)
    loose = compare_outputs(expected, actual, batch_size=1, atol=2e-3, rtol=0.0)
    assert not tight[0].passed and loose[0].passed
    assert tight[0].max_abs == pytest.approx(float(np.abs(expected["y"] - actual["y"]).max()))
    assert model.versions == []


def test_tensorrt_without_tensorrt_or_gpu_says_what_is_missing(
    memory_repo: ModelRepository, nets: ModuleType
) -> None:
    from hermes.quiver.exporters.tensorrt import tensorrt_available

    reason = tensorrt_available()
    if reason is None:
        pytest.skip("TensorRT and a GPU are available here")
    model = memory_repo.add("trt", platform=Platform.TENSORRT)
    with pytest.raises(ImportError, match="TensorRT export cannot run here: "):
        model.export_version(nets.Affine(), example_inputs=torch.randn(1, 4))
    assert model.versions == []


def test_tensorrt_profiles_cover_the_batch_range() -> None:
    from hermes.quiver.exporters.tensorrt import optimization_profiles

    assert optimization_profiles({"x": (3, 16)}, 8) == {"x": ((1, 3, 16), (8, 3, 16), (8, 3, 16))}
    assert optimization_profiles({"x": (2,)}, 0) == {"x": ((2,), (2,), (2,))}
    with pytest.raises(ExportError, match=r"input x has variable dims \[-1\]"):
        optimization_profiles({"x": (-1,)}, 4)


@pytest.mark.gpu
def test_tensorrt_export_verifies_against_torch(memory_repo: ModelRepository, nets: ModuleType) -> None:
    from hermes.quiver.exporters.tensorrt import tensorrt_available

    reason = tensorrt_available()
    if reason is not None:
        pytest.skip(reason)
    model = memory_repo.add("trt", platform=Platform.TENSORRT)
    model.config.max_batch_size = 8
    result = model.export_version(nets.Affine(), example_inputs=torch.randn(2, 4))
    assert result.report.passed
    assert "tensorrt_version" in model.config.parameters


@pytest.mark.slow
def test_aoti_export_runs_the_compiled_package(memory_repo: ModelRepository, nets: ModuleType) -> None:
    model = memory_repo.add("aoti", platform=Platform.TORCH_AOTI)
    result = model.export_version(nets.Affine(), example_inputs=torch.randn(2, 4))
    assert result.report.passed
    assert memory_repo.storage.listfiles("aoti", "1") == ["model.pt2"]
    assert (
        'platform: "torch_aoti"' in model.config.to_text() and 'backend: "pytorch"' in model.config.to_text()
    )


class _Lookup(torch.nn.Module):
    """An embedding: integer inputs are indices, valid only below 5."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(5, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


class _LogOnly(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("x must be >= 0")
        return x.sqrt()


def test_integer_draws_keep_to_the_example_values(memory_repo: ModelRepository) -> None:
    model = memory_repo.add("lookup", platform=Platform.TORCHSCRIPT)
    model.config.max_batch_size = 2
    result = model.export_version(_Lookup(), example_inputs=torch.tensor([[0, 4], [2, 1]]), verify_draws=2)
    assert result.report.passed and result.report.input_sets == ["examples", "draw 1", "draw 2 (-draw 1)"]


def test_a_module_failing_on_a_draw_says_how_to_verify_instead(memory_repo: ModelRepository) -> None:
    model = memory_repo.add("sqrt", platform=Platform.TORCHSCRIPT)
    with pytest.raises(ExportError, match=r"fails on the draw \d.*verify_draws=0"):
        model.export_version(_LogOnly(), example_inputs=torch.ones(3), method="script", verify_draws=2)
    assert model.versions == []
    result = model.export_version(
        _LogOnly(), example_inputs=torch.ones(3), method="script", verify_draws=0,
        verify_inputs=[torch.full((3,), 4.0)],
    )  # fmt: skip
    assert result.report.input_sets == ["examples", "given 0"]
