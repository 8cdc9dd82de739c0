"""ModelRepository over local disk and memory://: add, remove, read back, errors, atomic versions."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hermes.quiver import (
    EnsembleModel,
    MissingDependencyError,
    ModelExistsError,
    ModelNotFoundError,
    ModelRepository,
    Platform,
    RepositoryError,
)


@pytest.fixture(params=["local", "memory"])
def repo(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        yield ModelRepository(tmp_path / "repo")
    else:
        repository = ModelRepository(f"memory://repo-{uuid.uuid4().hex[:8]}")
        yield repository
        repository.storage.remove()


def test_add_writes_config_and_reads_back(repo: ModelRepository) -> None:
    model = repo.add("net", platform=Platform.ONNX)
    model.config.max_batch_size = 4
    model.config.add_input("x", [3], "FP32")
    model.config.add_output("y", [2], "INT64")
    model.config.write()
    repo.add("ens", platform="ensemble")
    again = ModelRepository(repo.root)
    assert list(again.models) == ["ens", "net"]
    assert again.models["net"].platform is Platform.ONNX
    assert isinstance(again.models["ens"], EnsembleModel)
    assert again.models["net"].config.to_text() == model.config.to_text()
    assert {n: (t.shape, t.dtype.value) for n, t in again.models["net"].outputs.items()} == {
        "y": ((None, 2), "INT64")
    }


def test_add_refuses_taken_name_unless_forced(repo: ModelRepository) -> None:
    repo.add("snapshotter", platform=Platform.ONNX)
    with pytest.raises(ModelExistsError, match="a model named 'snapshotter' exists"):
        repo.add("snapshotter", platform=Platform.ONNX)
    assert repo.add("snapshotter", platform=Platform.ONNX, force=True).name == "snapshotter_0"
    assert repo.add("snapshotter", platform=Platform.ONNX, force=True).name == "snapshotter_1"


def test_add_rejects_bad_names(repo: ModelRepository) -> None:
    with pytest.raises(RepositoryError, match=r"model name '\.hidden'"):
        repo.add(".hidden", platform=Platform.ONNX)
    with pytest.raises(RepositoryError, match=r"model name 'a/b'"):
        repo.add("a/b", platform=Platform.ONNX)


def test_remove_deletes_the_folder(repo: ModelRepository) -> None:
    repo.add("a", platform=Platform.ONNX)
    repo.add("b", platform=Platform.PYTHON)
    repo.remove("a")
    assert list(repo.models) == ["b"]
    assert list(ModelRepository(repo.root).models) == ["b"]
    with pytest.raises(ModelNotFoundError, match=r"no model 'a'; models are \['b'\]"):
        repo.remove("a")
    with pytest.raises(ModelNotFoundError, match="no model 'zzz'"):
        repo["zzz"]


def test_folder_without_config_raises_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    with pytest.raises(
        RepositoryError, match=r"repo/broken/config.pbtxt: missing; every model folder needs a config.pbtxt"
    ):
        ModelRepository(tmp_path / "repo")


def test_unknown_platform_raises_naming_the_file_and_value(tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "tf"
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text('name: "tf"\nplatform: "tensorflow_savedmodel"\n')
    with pytest.raises(
        RepositoryError, match=r"tf/config.pbtxt: platform: unknown value 'tensorflow_savedmodel'"
    ):
        ModelRepository(tmp_path / "repo")


def test_unknown_backend_and_unparsable_config_raise(tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "x"
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text('name: "x"\nbackend: "fil"\n')
    with pytest.raises(RepositoryError, match=r"x/config.pbtxt: backend: unknown value 'fil'"):
        ModelRepository(tmp_path / "repo")
    (folder / "config.pbtxt").write_text("name: x y z")
    with pytest.raises(RepositoryError, match=r"x/config.pbtxt: not a valid Triton model config"):
        ModelRepository(tmp_path / "repo")
    (folder / "config.pbtxt").write_text('name: "other"\nbackend: "python"\n')
    with pytest.raises(
        RepositoryError, match=r"x/config.pbtxt: name 'other' differs from the folder name 'x'"
    ):
        ModelRepository(tmp_path / "repo")


def test_reads_versions_and_ignores_temporary_folders(tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "net"
    for version in ("1", "3", "12", ".hermes-tmp-abc", "notaversion"):
        (folder / version).mkdir(parents=True)
    (folder / "config.pbtxt").write_text('name: "net"\nplatform: "onnxruntime_onnx"\n')
    (tmp_path / "repo" / ".hermes-tmp-x").mkdir()
    repo = ModelRepository(tmp_path / "repo")
    assert list(repo.models) == ["net"]
    assert repo.models["net"].versions == [1, 3, 12]
    repo.models["net"].remove_version(3)
    assert repo.models["net"].versions == [1, 12]


def test_memory_repository_round_trips_configs_byte_for_byte() -> None:
    text = (Path(__file__).parent / "golden" / "handwritten.pbtxt").read_text()
    repo = ModelRepository(f"memory://rt-{uuid.uuid4().hex[:8]}")
    try:
        repo.storage.write_text(text, "classic", "config.pbtxt")
        repo.refresh()
        model = repo.models["classic"]
        model.config.write()
        assert repo.storage.read_text("classic", "config.pbtxt") == text
        assert ModelRepository(repo.root).models["classic"].config.to_text() == text
    finally:
        repo.storage.remove()


def test_object_stores_need_their_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed")
    with pytest.raises(MissingDependencyError, match=r'pip install "hermes-quiver\[s3\]"'):
        ModelRepository("s3://some-bucket/models")


def test_local_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError, match="exists and is not a directory"):
        ModelRepository(tmp_path / "file")


def test_warmup_and_initial_state_files_are_written_beside_the_config(repo: ModelRepository) -> None:
    import numpy as np

    model = repo.add("stateful", platform=Platform.PYTHON)
    where = model.write_warmup_file("x.bin", np.arange(4, dtype=np.float32))
    model.write_initial_state_file("state.bin", np.zeros((2, 3), dtype=np.float16))
    assert where.endswith("stateful/warmup/x.bin")
    assert np.frombuffer(repo.storage.read_bytes("stateful", "warmup", "x.bin"), np.float32).tolist() == [
        0,
        1,
        2,
        3,
    ]
    assert len(repo.storage.read_bytes("stateful", "initial_state", "state.bin")) == 12
    assert ModelRepository(repo.root).models["stateful"].versions == []
    with pytest.raises(RepositoryError, match=r"warmup file name '\.\./x': expected a plain file name"):
        model.write_warmup_file("../x", np.zeros(1))
