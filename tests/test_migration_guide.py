"""docs/migration.md: linked from the README, covers the predecessor's API, shows the scripts as they run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "migration.md"

# Every public name of ml4gw-hermes (anchor study §1: quiver, aeriel, stillwater, old cloudbreak).
PREDECESSOR_NAMES = [
    "Platform.ONNX", "Platform.SAVEDMODEL", "ModelRepository(root, clean=False, **fs_kwargs)", "repo.refresh()",
    "repo.models", "repo.add(name, platform, force=False)", "repo.remove(", "repo.delete()", "Model.fs",
    "Model.repository", ".versions", "model.export_version(model_fn", "ExposedTensor(model, name, shape)",
    "EnsembleModel.models", "ensemble.add_input(input, version=None, key=None)",
    "ensemble.add_output(output, version=None, key=None)", "ensemble.pipe(outbound, inbound, key=None)",
    "ensemble.add_streaming_inputs(inputs, stream_size", "ensemble.add_streaming_output(output, update_size",
    "ModelConfig(model, **kwargs)", "config.write()", "config.add_input(name, shape", "config.add_instance_group(",
    "config.scale_instance_group(count, name=None)", "copy.deepcopy(config)", "EnsembleConfig.add_step(",
    "exporters.Exporter", "TorchOnnx", "TorchScript", "TorchTensorRT", "KerasSavedModel", "find_exporter(",
    "convert_network(", "io.FileSystem", "io.LocalFileSystem", "io.GCSFileSystem",
    "streaming.utils.add_streaming_model(", "streaming.Snapshotter(", "streaming.make_streaming_input_model(",
    "streaming.OnlineAverager(", "streaming.make_streaming_output_model(",
    "serve(model_repo_dir, image", "instance.wait()", "InferenceClient(address, model_name",
    "sequence_start=", "client.get(", "callback(y, request_id, sequence_id)", "ProfilerClock",
    "ServerMonitor(", "PipelineProcess(", "Pipeline([a, b])", "ExceptionWrapper(", "Throttle(target_rate",
    "stillwater.InferenceClient", "GoogleClusterManager(", "GoogleCluster", "GoogleNodePool",
    "create_gpu_node_pool_config(", "Cluster.deploy(", "K8sApiClient", "deploy_gpu_drivers()",
    "GoogleVMManager(", "make_simple_debian_instance_description(", "wait_for(",
]  # fmt: skip


def test_the_readme_links_the_guide() -> None:
    assert "docs/migration.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", PREDECESSOR_NAMES)
def test_the_table_maps_each_public_name_of_the_predecessor(name: str) -> None:
    rows = [line for line in GUIDE.read_text().splitlines() if line.startswith("| ")]
    assert any(name in row for row in rows), f"{name} has no row in the migration table"


def test_every_after_block_is_the_scripts_own_code() -> None:
    text = GUIDE.read_text()
    blocks = re.findall(r"<!-- after: (\S+):(\w+) -->\n```python\n(.*?)```\n", text, re.S)
    assert {(p, t) for p, t, _ in blocks} == {
        (f"examples/migration/{s}.py", t) for s in ("deepclean", "aframe") for t in ("export", "infer")
    }
    for path, tag, code in blocks:
        source = (ROOT / path).read_text()
        region = re.search(rf"# --8<-- \[start:{tag}\]\n(.*?)# --8<-- \[end:{tag}\]\n", source, re.S)
        assert region is not None and region.group(1).rstrip() == code.rstrip(), (
            f"{path}:{tag} differs from the guide"
        )


def test_the_guide_tells_how_to_uninstall_the_predecessor() -> None:
    text = GUIDE.read_text()
    assert "pip uninstall ml4gw-hermes" in text and "import hermes; print(hermes.__file__)" in text
