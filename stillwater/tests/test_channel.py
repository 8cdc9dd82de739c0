"""Channel: ordering, shared-memory rings, views, backpressure, ownership (real pipes and segments)."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import numpy as np
import pytest

from hermes.stillwater import ArraySpec, Channel, EndOfStream, PipelineStateError

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
