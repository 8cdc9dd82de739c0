"""Stages keep their declared contracts, and bad input is refused before work starts (issue 16)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import stillwater_test_stages as st

from hermes.stillwater import ArraySpec, Map, PipelineDefinitionError, Source, StageFailed


def test_a_source_emitting_the_wrong_shape_for_its_array_spec_fails_naming_both() -> None:
    spec = ArraySpec(shape=(4, 256))
    pipeline = Source([np.zeros((4, 255), np.float32)], output=spec, name="frames") >> Map(st.describe_array)
    with pytest.raises(StageFailed) as info:
        pipeline.run(timeout_s=60)
    message = str(info.value)
    assert "stage 'frames' declares output=ArraySpec(shape=(4, 256), dtype=float32)" in message
    assert "but emitted a ndarray of shape (4, 255) and dtype float32" in message
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize(
    ("target", "emitted"),
    [
        (st.wrong_shape, "a ndarray of shape (4, 255) and dtype float32"),
        (st.as_text, "a str ("),
    ],
)
def test_a_map_emitting_other_than_its_array_spec_fails(target: object, emitted: str) -> None:
    spec = ArraySpec(shape=(4, 256))
    pipeline = Source(st.frames, args=(3,), output=spec) >> Map(target, output=spec, name="m")
    with pytest.raises(StageFailed, match="stage 'm' declares output=ArraySpec") as info:
        pipeline.run(timeout_s=60)
    assert emitted in str(info.value)


def test_a_wrong_dtype_is_refused_too() -> None:
    spec = ArraySpec(shape=(4, 256), dtype="float64")
    pipeline = Source(st.frames, args=(2,), output=spec) >> Map(st.describe_array)
    with pytest.raises(
        StageFailed, match=r"dtype=float64\) but emitted a ndarray of shape \(4, 256\) and dtype float32"
    ):
        pipeline.run(timeout_s=60)


def test_a_client_error_in_a_stage_keeps_its_type_across_the_process() -> None:
    from hermes.aeriel import ConnectionFailed

    pipeline = Source(range(1)) >> Map(st.connect_to_nothing, name="client")
    with pytest.raises(ConnectionFailed) as info:  # the child's own type can be caught
        pipeline.run(timeout_s=60)
    assert isinstance(info.value, StageFailed) and info.value.stage == "client"
    assert "stage 1 'client' raised ConnectionFailed: cannot reach the inference server at 127.0.0.1:" in str(
        info.value
    )
    cause = info.value.__cause__
    assert type(cause) is ConnectionFailed
    # the tritonclient error it was raised from does not unpickle: it crosses as a stand-in
    assert type(cause.__cause__).__name__ == "RemoteError"
    assert "InferenceServerException" in str(cause.__cause__)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sequence_id": 0}, "sequence_id must be a positive int or a non-empty str"),
        ({"sequence_id": ""}, "sequence_id must be a positive int or a non-empty str"),
        ({"sequence_id": True}, "sequence_id must be a positive int or a non-empty str"),
        ({"sequence_id": -3}, r"sequence_id must be in 1..2\*\*64-1, got -3"),
        ({"result_timeout_s": -1}, "result_timeout_s must be > 0"),
    ],
)
def test_inference_stage_refuses_bad_settings_when_built(kwargs: dict, message: str) -> None:
    pytest.importorskip("hermes.aeriel.client")
    from hermes.stillwater.inference import InferenceStage

    with pytest.raises(ValueError, match=message):
        InferenceStage("127.0.0.1:8001", "stream", **kwargs)


_UNGUARDED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import stillwater_test_stages as st
    from hermes.stillwater import Map, Source

    print((Source(range(3)) >> Map(st.square)).run(timeout_s=60))
    """
)


def test_a_script_without_a_main_guard_is_refused_before_any_stage_starts(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED.format(tests=str(Path(__file__).parent)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert "PipelineDefinitionError: the main script" in proc.stderr
    assert 'has no if __name__ == "__main__": guard' in proc.stderr
    assert proc.stderr.count("Traceback") == 1  # refused once, in the parent; no stage process started
    guarded = tmp_path / "guarded.py"
    body = _UNGUARDED.format(tests=str(Path(__file__).parent)).replace(
        "print(", 'if __name__ == "__main__":\n    print('
    )
    guarded.write_text(body)
    ok = subprocess.run(
        [sys.executable, str(guarded)], capture_output=True, text=True, timeout=120, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "[0, 1, 4]"


def test_the_definition_error_is_importable_from_the_package() -> None:
    assert issubclass(PipelineDefinitionError, ValueError)


@pytest.mark.parametrize("args", [20, "abc", None])
def test_stage_args_must_be_a_tuple(args: object) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"args must be a tuple of positional arguments, got"):
        Source(st.frames, args=args)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"write args=\("):
        Map(st.square, args=args)  # type: ignore[arg-type]
