"""Pipelines of real stage processes: composition, transport, end of stream, backpressure, logging."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import stillwater_test_stages as st

from hermes.stillwater import (
    ArraySpec,
    Map,
    Pipeline,
    PipelineDefinitionError,
    PipelineStateError,
    Sink,
    Source,
    merge,
)


def test_source_and_map_return_outputs_in_order() -> None:
    assert (Source(range(50)) >> Map(st.square)).run() == [i * i for i in range(50)]


def test_map_passes_extra_args_and_kwargs() -> None:
    assert (Source([1, 2, 3]) >> Map(st.add, kwargs={"y": 10})).run() == [11, 12, 13]


def test_rshift_composes_stages_and_pipelines_in_every_order() -> None:
    a, b, c, d = (
        Source(range(3), name="a"),
        Map(st.square, name="b"),
        Map(st.negate, name="c"),
        Map(st.add, args=(1,), name="d"),
    )
    assert (a >> b).names == ["a", "b"]
    assert ((a >> b) >> c).names == ["a", "b", "c"]
    assert ((a >> b) >> (c >> d)).names == ["a", "b", "c", "d"]
    assert (a >> (b >> c)).names == ["a", "b", "c"]
    assert (a >> b >> c >> d).run() == [-(i * i) + 1 for i in range(3)]


def test_arrays_cross_three_stages_through_shared_memory_with_views_and_copies() -> None:
    spec = ArraySpec(shape=(4, 256), dtype="float32")
    pipeline = (
        Source(st.frames, args=(20,), output=spec)
        >> Map(st.negate, output=spec, copy=False)
        >> Map(st.describe_array, copy=False)
    )
    with pipeline:
        segments = pipeline.shm_names
        assert all(Path(f"/dev/shm/{name}").exists() for name in segments)
        out = list(pipeline)
    assert len(segments) == 4  # three channel rings (the last one to the parent) and the counters
    assert not any(Path(f"/dev/shm/{name}").exists() for name in segments)
    writeable = [o[0] for o in out]
    assert writeable == [False] * 20  # views into shared memory
    assert [o[1] for o in out] == [-4.0 * i for i in range(20)]
    assert {o[2] for o in out} == {(4, 256)} and {o[3] for o in out} == {"float32"}


def test_parent_receives_owned_copies_of_ring_arrays() -> None:
    spec = ArraySpec(shape=(4, 256), dtype="float32")
    with Source(st.frames, args=(12,), output=spec) as pipeline:
        out = list(pipeline)
    expected = list(st.frames(12))
    assert len(out) == 12
    for got, want in zip(out, expected, strict=True):
        assert got.flags.owndata and got.flags.writeable
        np.testing.assert_array_equal(got, want)


def test_map_class_runs_setup_flush_and_teardown_inside_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "teardown.txt"
    out = (Source(range(5)) >> Map(st.Accumulator, args=(str(marker),))).run()
    sums, pids = zip(*out[:-1], strict=True)
    assert sums == (0, 1, 3, 6, 10)
    assert len(set(pids)) == 1 and pids[0] != os.getpid()
    assert out[-1] == ("total", 10)
    assert marker.read_text() == f"{pids[0]} 10"


def test_generator_map_emits_zero_or_more_items_per_input() -> None:
    assert (Source(range(6)) >> Map(st.repeat_n_times)).run() == [1, 2, 2, 4, 5, 5]


def test_leaving_a_sink_pipeline_waits_until_every_item_is_written(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    with Source(range(300)) >> Map(st.square) >> Sink(st.LineWriter, args=(str(path),)) as pipeline:
        pass
    assert path.read_text().splitlines() == [str(i * i) for i in range(300)]
    assert pipeline.pids and all(pid is not None for pid in pipeline.pids)


def test_end_of_stream_drains_every_stage_in_order_and_counts_match() -> None:
    pipeline = Source(range(100), capacity=1) >> Map(st.square, capacity=1) >> Map(st.negate, capacity=1)
    with pipeline:
        out = list(pipeline)
        stats = pipeline.stats()
    assert out == [-(i * i) for i in range(100)]
    assert [(s.items_in, s.items_out) for s in stats] == [(0, 100), (100, 100), (100, 100)]


def test_fast_source_is_held_back_by_capacity_so_memory_stays_bounded() -> None:
    pipeline = Source(st.count_forever, capacity=2) >> Map(st.square, capacity=3)
    with pipeline:
        for consumed, item in enumerate(pipeline, start=1):
            assert item == (consumed - 1) ** 2
            emitted = pipeline.stats()[0].items_out
            # Source's sends ≤ consumed + both channels' capacity + the one item inside the map.
            assert emitted <= consumed + 2 + 3 + 1
            if consumed == 200:
                break
    assert emitted >= 200


def test_child_log_records_reach_the_parent_handlers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stillwater_test")
    (Source(range(3)) >> Map(st.log_items)).run()
    records = [r for r in caplog.records if r.name == "stillwater_test.stage"]
    assert [r.getMessage().split(" in pid")[0] for r in records] == [f"stage saw item {i}" for i in range(3)]
    assert all(r.levelno == logging.INFO for r in records)
    assert {r.process for r in records} != {os.getpid()}


def test_throttled_source_reports_its_lag_and_emits_everything() -> None:
    with Source(range(64), rate_hz=512.0) as pipeline:
        out = list(pipeline)
        stats = pipeline.stats()
    assert out == list(range(64))
    assert stats[0].items_out == 64
    assert 0.0 <= stats[0].lag_s < 1.0


def test_stage_is_a_context_manager_for_a_one_stage_pipeline() -> None:
    with Source(["a", "b"]) as pipeline:
        assert list(pipeline) == ["a", "b"]


def test_pipeline_refuses_to_start_twice_or_iterate_when_closed() -> None:
    pipeline = Source(range(2)) >> Map(st.square)
    assert pipeline.run() == [0, 1]
    with pytest.raises(PipelineStateError, match="starts once; this one is closed"):
        pipeline.start()
    with pytest.raises(PipelineStateError, match="start the pipeline before iterating"):
        iter(pipeline)


def test_sink_pipeline_has_nothing_to_iterate() -> None:
    with (
        Source(range(2)) >> Sink(st.square) as pipeline,
        pytest.raises(PipelineStateError, match="ends in a Sink"),
    ):
        iter(pipeline)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Sink(st.square) >> Map(st.square), "a Sink must be the last stage"),
        (lambda: Map(st.square) >> Source(range(2)), "a Source must be the first stage"),
        (lambda: Source(iter([1, 2])), "cannot move into a process; pass the generator function"),
        (lambda: Source(42), "must be an iterable or a callable"),
        (lambda: Map(3), "target must be callable, got 3"),
        (lambda: Map(st.square, capacity=0), "capacity must be an int >= 1, got 0"),
        (lambda: Source(range(3), rate_hz=0), "rate_hz must be > 0 or None, got 0"),
        (lambda: Pipeline([Source(range(3))], start_method="fork"), "fork is unsafe"),
        (lambda: Pipeline([]), "at least one stage"),
    ],
)
def test_bad_pipeline_definitions_are_refused_with_a_reason(build: object, message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        build()  # type: ignore[operator]


def test_pipeline_without_a_source_is_refused_at_start() -> None:
    with pytest.raises(PipelineDefinitionError, match="first stage must be a Source, got Map"):
        (Map(st.square) >> Map(st.square)).start()


def test_forkserver_start_method_runs_too() -> None:
    pipeline = Pipeline([Source(range(4)), Map(st.square)], start_method="forkserver")
    assert pipeline.run() == [0, 1, 4, 9]


def test_progress_display_draws_final_counts_of_every_stage() -> None:
    rich_console = pytest.importorskip("rich.console")
    buffer = io.StringIO()
    console = rich_console.Console(file=buffer, width=120, force_terminal=False)
    pipeline = Pipeline([Source(range(40), name="numbers"), Map(st.square, name="squares")], progress=console)
    assert pipeline.run() == [i * i for i in range(40)]
    final = buffer.getvalue().split("pipeline (")[-1]
    assert "numbers" in final and "squares" in final
    rows = {line.split("│")[1].strip(): line for line in final.splitlines() if line.count("│") >= 5}
    assert rows["numbers"].split("│")[3].strip() == "40"
    assert rows["squares"].split("│")[2].strip() == "40"


def test_source_class_runs_setup_and_teardown_in_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "source.txt"
    out = (Source(st.Countdown, args=(3, str(marker))) >> Map(st.describe_item)).run()
    assert out == ["3 True", "2 True", "1 True"]
    text = marker.read_text()
    assert text.startswith("done in ") and text != f"done in {os.getpid()}"


def test_a_stage_that_cannot_be_pickled_is_refused_with_a_hint() -> None:
    pipeline = Source(range(3)) >> Map(lambda x: x + 1)
    with pytest.raises(PipelineDefinitionError, match="must be importable \\(defined at module level\\)"):
        pipeline.start()


def test_merged_sources_keep_each_source_order_and_end_after_the_last() -> None:
    pipeline = merge(Source(st.tagged, args=("a", 200)), Source(st.tagged, args=("b", 150))) >> Map(
        st.describe_item
    )
    out = pipeline.run()
    assert len(out) == 350
    assert [s for s in out if s.startswith("a")] == [f"a {i}" for i in range(200)]
    assert [s for s in out if s.startswith("b")] == [f"b {i}" for i in range(150)]


def test_merged_sources_share_one_shared_memory_ring_without_mixing_slots() -> None:
    spec = ArraySpec(shape=(2, 64), dtype="float64")
    sources = [Source(st.tagged_frames, args=(tag, 100), output=spec, capacity=3) for tag in (1, 2, 3)]
    with merge(*sources) >> Map(st.describe_array, copy=False) as pipeline:
        assert len(pipeline.shm_names) == 3  # one ring for the three sources, one to the parent, the counters
        out = list(pipeline)
        stats = pipeline.stats()
    firsts = [int(o[1] / 2) for o in out]  # describe_array sums column 0 over 2 rows
    for tag in (1, 2, 3):
        assert [v - 1000 * tag for v in firsts if v // 1000 == tag] == list(range(100))
    assert [s.items_out for s in stats] == [100, 100, 100, 300]


def test_merge_refuses_sources_with_different_array_specs_and_a_source_after_a_stage() -> None:
    with pytest.raises(PipelineDefinitionError, match="merged sources must share one output ArraySpec"):
        merge(Source(range(2), output=ArraySpec(shape=(2,))), Source(range(2)))
    with pytest.raises(PipelineDefinitionError, match="use merge"):
        Source(range(2)) >> Source(range(3))
