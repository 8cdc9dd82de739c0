"""Channel: ordering, shared-memory rings, wrap-around, pipe fallback, wake-ups, ownership (real processes)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import pytest
import stillwater_test_stages as st

from hermes.stillwater import ArraySpec, Channel, ChannelClosed, EndOfStream, PipelineStateError
from hermes.stillwater.channel import SLOT_BYTES, Receiver

CTX = mp.get_context("spawn")


def test_channel_keeps_order_of_ring_arrays_and_pickled_objects() -> None:
    spec = ArraySpec(shape=(3, 4), dtype="float32")
    channel = Channel(CTX, capacity=4, spec=spec)
    try:
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        items = [a, {"meta": 1}, a * 2, np.arange(5)]  # the last one does not match: pickled
        for item in items:
            channel.sender.send(item)
        channel.sender.send_end()
        got = [channel.receiver.recv() for _ in items]
        with pytest.raises(EndOfStream):
            channel.receiver.recv()
    finally:
        channel.close()
    np.testing.assert_array_equal(got[0], a)
    assert got[1] == {"meta": 1}
    np.testing.assert_array_equal(got[2], a * 2)
    np.testing.assert_array_equal(got[3], np.arange(5))


def test_channel_ring_slots_are_reused_round_robin_without_corruption() -> None:
    spec = ArraySpec(shape=(16,), dtype="int64")
    channel = Channel(CTX, capacity=2, spec=spec)
    try:
        received = []
        for i in range(7):
            channel.sender.send(np.full(16, i, dtype=np.int64))
            received.append(channel.receiver.recv())
    finally:
        channel.close()
    assert [int(r[0]) for r in received] == list(range(7))
    assert all((r == r[0]).all() for r in received)


def test_receiver_view_is_read_only_and_holds_its_slot_until_release() -> None:
    spec = ArraySpec(shape=(8,), dtype="float32")
    channel = Channel(CTX, capacity=1, spec=spec, copy=False)
    try:
        channel.sender.send(np.ones(8, np.float32))
        view = channel.receiver.recv()
        assert not view.flags.writeable
        assert not view.flags.owndata
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 5
        # Capacity 1 and the view still held: a second send must wait for release().
        sent = threading.Event()
        thread = threading.Thread(target=lambda: (channel.sender.send(np.zeros(8, np.float32)), sent.set()))
        thread.start()
        assert not sent.wait(0.2)
        channel.receiver.release()
        assert sent.wait(10)
        thread.join()
        np.testing.assert_array_equal(channel.receiver.recv(), np.zeros(8))
        channel.receiver.release()
    finally:
        channel.close()


def test_channel_blocks_the_sender_when_capacity_items_are_in_flight() -> None:
    channel = Channel(CTX, capacity=3)
    try:
        for i in range(3):
            channel.sender.send(i)
        sent = threading.Event()
        thread = threading.Thread(target=lambda: (channel.sender.send(3), sent.set()))
        thread.start()
        assert not sent.wait(0.2)
        assert channel.receiver.recv() == 0
        assert sent.wait(10)
        thread.join()
        assert [channel.receiver.recv() for _ in range(3)] == [1, 2, 3]
    finally:
        channel.close()


def test_channel_owner_unlinks_its_segment_on_close_and_close_is_idempotent() -> None:
    channel = Channel(CTX, capacity=2, spec=ArraySpec(shape=(4,)))
    name = channel.shm_name
    assert name is not None and Path(f"/dev/shm/{name}").exists()
    channel.close()
    channel.close()
    assert not Path(f"/dev/shm/{name}").exists()
    with pytest.raises(PipelineStateError, match="closed"):
        channel.sender.send(1)


def test_channel_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity must be an int >= 1, got 0"):
        Channel(CTX, capacity=0)


# ----------------------------------------------------------------------------- the shared-memory ring
def _drain(receiver: Receiver) -> list[object]:
    items = []
    while True:
        try:
            items.append(receiver.recv())
        except EndOfStream:
            return items


def _run_child(target: object, *args: object) -> BaseProcess:
    proc = CTX.Process(target=target, args=args)
    proc.start()
    return proc


def test_channel_keeps_order_across_ints_floats_pickles_arrays_and_pipe_items_from_another_process() -> None:
    spec = ArraySpec(shape=(2, 3), dtype="int32")
    big = bytes(range(256)) * 4000  # ~1 MB: larger than a slot and than the pipe's buffer
    items: list[object] = [
        7, -(2**63), 2**63 - 1, 2**70, 1.5, True, None, "text", {"k": [1, 2]},
        np.full((2, 3), 4, np.int32), big, np.arange(3), 8, big[::-1], np.full((2, 3), 5, np.int32), 9,
    ]  # fmt: skip
    channel = Channel(CTX, capacity=3, spec=spec)
    try:
        proc = _run_child(st.send_all, channel.sender, items)
        got = _drain(channel.receiver)
        proc.join()
    finally:
        channel.close()
    assert proc.exitcode == 0
    assert len(got) == len(items)
    for sent, received in zip(items, got, strict=True):
        if isinstance(sent, np.ndarray):
            np.testing.assert_array_equal(received, sent)
            assert received.dtype == sent.dtype
        else:
            assert received == sent and type(received) is type(sent)


def test_a_two_slot_ring_wraps_around_many_times_without_losing_or_reordering_items() -> None:
    spec = ArraySpec(shape=(16,), dtype="float64")
    items: list[object] = []
    for i in range(600):
        items.append(i if i % 3 else np.full(16, i, dtype=np.float64))
        if i % 50 == 0:
            items.append(("large", i, b"x" * (SLOT_BYTES + i)))  # through the pipe, in between
    channel = Channel(CTX, capacity=2, spec=spec)
    try:
        proc = _run_child(st.send_all, channel.sender, items)
        got = _drain(channel.receiver)
        proc.join()
    finally:
        channel.close()
    assert len(got) == len(items) == 612
    for sent, received in zip(items, got, strict=True):
        if isinstance(sent, np.ndarray):
            np.testing.assert_array_equal(received, sent)
        else:
            assert received == sent


def test_item_just_larger_than_a_slot_falls_back_to_the_pipe_and_one_that_fits_does_not() -> None:
    channel = Channel(CTX, capacity=1)
    try:
        # pickle adds a few bytes of framing to bytes: find the largest payload that fits a slot.
        fits = next(
            n for n in range(SLOT_BYTES, 0, -1) if len(pickle.dumps(b"a" * n, protocol=5)) <= SLOT_BYTES - 16
        )
        proc = _run_child(st.send_all, channel.sender, [b"a" * fits, b"b" * (fits + 1), b"c"])
        got = _drain(channel.receiver)
        proc.join()
    finally:
        channel.close()
    assert [(len(x), x[:1]) for x in got] == [(fits, b"a"), (fits + 1, b"b"), (1, b"c")]  # type: ignore[arg-type]


def test_fan_in_writers_keep_their_own_order_with_pipe_items_interleaved() -> None:
    channel = Channel(CTX, capacity=2, writers=2)
    a = [("a", i, b"p" * (6000 if i % 7 == 0 else 1)) for i in range(150)]
    b = [("b", i) for i in range(150)]
    try:
        procs = [_run_child(st.send_all, channel.sender, a), _run_child(st.send_all, channel.sender, b)]
        got = _drain(channel.receiver)
        for proc in procs:
            proc.join()
    finally:
        channel.close()
    assert [x for x in got if x[0] == "a"] == a  # type: ignore[index]
    assert [x for x in got if x[0] == "b"] == b  # type: ignore[index]


def test_receiver_blocked_in_another_process_is_woken_by_abort_and_its_wait_used_no_cpu() -> None:
    channel = Channel(CTX, capacity=2)
    report_r, report_w = CTX.Pipe(duplex=False)
    try:
        proc = _run_child(st.recv_one_and_report, channel.receiver, report_w)
        report_w.close()
        assert not report_r.poll(0.5)  # still waiting on the empty ring
        channel.abort()
        assert report_r.poll(30)
        kind, message, cpu_s = report_r.recv()
        proc.join()
    finally:
        channel.close()
        report_r.close()
    assert (kind, message) == (
        "ChannelClosed",
        "the channel was closed by its owner (the pipeline is stopping)",
    )
    assert cpu_s < 0.1  # half a second asleep in sem_wait: no polling


def test_sender_blocked_on_a_full_channel_is_woken_by_abort_and_later_sends_fail_too() -> None:
    channel = Channel(CTX, capacity=1)
    errors: list[BaseException] = []

    def send_two() -> None:
        try:
            channel.sender.send("first")
            channel.sender.send("second")  # blocks: one slot, nobody reading
        except ChannelClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=send_two)
    try:
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and not errors
        channel.abort()
        thread.join(30)
        assert not thread.is_alive()
        with pytest.raises(ChannelClosed, match="closed by its owner"):
            channel.receiver.recv()
    finally:
        channel.close()
    assert [str(e) for e in errors] == ["the channel was closed by its owner (the pipeline is stopping)"]


def test_interrupt_wakes_a_receiving_thread_of_the_same_process() -> None:
    channel = Channel(CTX, capacity=2)
    outcome: list[str] = []

    def receive() -> None:
        try:
            channel.receiver.recv()
            outcome.append("item")
        except ChannelClosed as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=receive)
    try:
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()
        channel.receiver.interrupt()
        thread.join(30)
    finally:
        channel.close()
    assert outcome == ["the channel was closed by its owner (the pipeline is stopping)"]
